"""A FastAPI backend answering hubbub's proxy requests (the Centrifugo v6 proxy format).

The user of a connection comes from the application's own FastAPI dependency,
:func:`current_user`: a signed session cookie (``session``, set by ``POST /login``) or a
bearer token (``Authorization: Bearer ...``), both made by :func:`sign`. hubbub forwards those
headers of the WebSocket handshake to the connect proxy (``http_headers = ["Cookie",
"Authorization"]`` in ``examples/proxy.toml``), so the dependency works on the proxy request as
on any other route.

* ``/centrifugo/connect``: the dependency's user, or a terminal disconnect 4501;
* ``/centrifugo/subscribe``, ``/centrifugo/publish``: channels ``team:<name>`` are for the
  team's members (:data:`TEAMS`); a publication is ``{"text": "..."}`` and gets its author;
* ``/centrifugo/rpc``: method ``whoami``.

Run it:  EXAMPLE_SECRET=... uvicorn examples.fastapi_backend:app --port 9000
The proxy routes trust the ``user`` field of hubbub's requests: serve them where browsers
cannot reach them, or check a shared secret sent with ``http.static_headers``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Annotated, Any

from fastapi import Cookie, Depends, FastAPI, Header, Response
from pydantic import BaseModel

SECRET = os.environ.get("EXAMPLE_SECRET", "example-only-not-secret").encode()
PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}  # your user database
TEAMS = {"ops": {"alice"}, "dev": {"alice", "bob"}}
MAX_TEXT = 1000

app = FastAPI(title="hubbub proxy backend (FastAPI)")


def sign(user: str) -> str:
    """A credential for ``user``: ``<user>.<HMAC of user>``, used as cookie or bearer token."""
    mac = hmac.new(SECRET, user.encode(), hashlib.sha256).hexdigest()
    return f"{user}.{mac}"


def verify(credential: str) -> str | None:
    """The user a credential made by :func:`sign` names, or None if it is forged."""
    user, _, _mac = credential.rpartition(".")
    if user and hmac.compare_digest(sign(user), credential):
        return user
    return None


def current_user(
    session: Annotated[str | None, Cookie()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> str | None:
    """The dependency: the user of the session cookie or of the bearer token, if valid."""
    if session:
        return verify(session)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return verify(token.strip())
    return None


User = Annotated[str | None, Depends(current_user)]


class ProxyRequest(BaseModel):
    """The fields every proxy request carries (unknown fields are ignored)."""

    client: str = ""
    transport: str = ""
    protocol: str = ""
    encoding: str = ""


class ConnectRequest(ProxyRequest):
    name: str = ""
    version: str = ""
    data: Any = None


class ChannelRequest(ProxyRequest):
    user: str = ""
    channel: str = ""
    data: Any = None


class RPCRequest(ProxyRequest):
    user: str = ""
    method: str = ""
    data: Any = None


def error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def may_use_team(user: str, channel: str) -> bool:
    """The permission rule: ``team:<name>`` is open to the team's members."""
    namespace, _, team = channel.partition(":")
    return namespace == "team" and user in TEAMS.get(team, set())


class Login(BaseModel):
    username: str
    password: str


@app.post("/login")
def login(credentials: Login, response: Response) -> dict[str, str]:
    """Check the password and set the session cookie (the browser then sends it with the
    WebSocket handshake to hubbub on the same host)."""
    expected = PASSWORDS.get(credentials.username)
    if expected is None or not hmac.compare_digest(expected, credentials.password):
        response.status_code = 401
        return {"error": "wrong username or password"}
    response.set_cookie("session", sign(credentials.username), httponly=True, samesite="lax")
    return {"user": credentials.username}


@app.post("/centrifugo/connect")
def connect(request: ConnectRequest, user: User) -> dict[str, Any]:
    """The connect proxy: the dependency's user, or a terminal disconnect."""
    if user is None:
        return {"disconnect": {"code": 4501, "reason": "unauthorized"}}
    return {
        "result": {"user": user, "info": {"teams": sorted(t for t in TEAMS if user in TEAMS[t])}}
    }


@app.post("/centrifugo/subscribe")
def subscribe(request: ChannelRequest) -> dict[str, Any]:
    """The subscribe proxy: members of the team only."""
    if not may_use_team(request.user, request.channel):
        return error(403, "permission denied")
    return {"result": {}}


@app.post("/centrifugo/publish")
def publish(request: ChannelRequest) -> dict[str, Any]:
    """The publish proxy: members only, ``{"text": "..."}`` only, signed with the author."""
    if not may_use_team(request.user, request.channel):
        return error(403, "permission denied")
    text = request.data.get("text") if isinstance(request.data, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        return error(400, f"publish {{'text': '...'}} of 1 to {MAX_TEXT} characters")
    return {"result": {"data": {"text": text.strip(), "by": request.user}}}


@app.post("/centrifugo/rpc")
def rpc(request: RPCRequest) -> dict[str, Any]:
    """The RPC proxy: ``whoami``; any other method is an error 404."""
    if request.method != "whoami":
        return error(404, "unknown method")
    if not request.user:
        return error(403, "permission denied")
    teams = sorted(t for t in TEAMS if request.user in TEAMS[t])
    return {"result": {"data": {"user": request.user, "teams": teams}}}
