"""hubbub mounted into a FastAPI application.

The tutorial's ConnectionManager becomes a hubbub node: FastAPI keeps its routes, hubbub serves
the WebSocket protocol at /connection/websocket, and any route can publish.

Run it:  uvicorn examples.fastapi_app:app --port 8000
Connect: any Centrifugo-compatible client to ws://127.0.0.1:8000/connection/websocket with a
         token from `hubbub token --dev --user alice`.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.routing import WebSocketRoute

from hubbub import Node, Settings, WebSocketEndpoint

settings = Settings(
    development=True,  # the public development secret; configure real keys in production
    channel={
        "namespaces": [
            {
                "name": "chat",
                "presence": True,
                "join_leave": True,
                "history_size": 100,
                "history_ttl": 3600,
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_presence_for_subscriber": True,
                "allow_history_for_subscriber": True,
            }
        ]
    },
)
node = Node(settings)
app = FastAPI(
    title="chat with hubbub",
    lifespan=node.lifespan,
    routes=[WebSocketRoute("/connection/websocket", WebSocketEndpoint(node))],
)


class Message(BaseModel):
    room: str
    user: str
    text: str


@app.post("/messages")
async def post_message(message: Message) -> dict[str, int | str]:
    """Validate a message in the backend, then publish it to the room's subscribers."""
    position = await node.publish(
        f"chat:{message.room}", {"user": message.user, "text": message.text}
    )
    return {"offset": position.offset, "epoch": position.epoch}


@app.get("/rooms/{room}/online")
async def online(room: str) -> dict[str, int]:
    stats = await node.presence_stats(f"chat:{room}")
    return {"clients": stats.num_clients, "users": stats.num_users}
