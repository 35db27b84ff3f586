// Reference server of the chat-shaped load: Bun's built-in WebSocket pub/sub with a topic per
// room and one per user (Bun.serve, ws.subscribe, server.publish). No history, no presence.
//
// A member connects to /?channel=<room>&user=<name>: open() subscribes it to the room's topic
// and to "user:<name>", publishes {"join": name} to the room, and answers "ready". What a
// client sends:
//   "<topic>\n<payload>"  the payload is published to the topic (messages and typing signals
//                         to a room, notifications to "user:<name>"); server.publish reaches
//                         every subscriber, the sender included, as the other servers do;
//   "-<room>"             leave: unsubscribed, {"leave": name} published, answered "left";
//   "+<room>"             (re)join: subscribed, {"join": name} published, answered "ready".
// A closing member's rooms get {"leave": name}. Default options otherwise (no compression;
// Bun's own idle timeout and keep-alive pings).
//
// Run: PORT=8000 bun run benchmarks/refs/bun_chat.js

function join(server, ws, room) {
  ws.subscribe(room);
  ws.data.rooms.add(room);
  server.publish(room, JSON.stringify({ join: ws.data.user }));
}

function leave(server, ws, room) {
  ws.unsubscribe(room);
  ws.data.rooms.delete(room);
  server.publish(room, JSON.stringify({ leave: ws.data.user }));
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT),
  fetch(req, server) {
    const params = new URL(req.url).searchParams;
    const data = {
      room: params.get("channel") ?? "",
      user: params.get("user") ?? "",
      rooms: new Set(),
    };
    if (server.upgrade(req, { data })) {
      return undefined;
    }
    return new Response("WebSocket only\n", { status: 400 });
  },
  websocket: {
    open(ws) {
      if (ws.data.user) {
        ws.subscribe(`user:${ws.data.user}`);
      }
      if (ws.data.room) {
        join(server, ws, ws.data.room);
      }
      ws.send("ready");
    },
    message(ws, message) {
      const text = String(message);
      const cut = text.indexOf("\n");
      if (cut >= 0) {
        server.publish(text.slice(0, cut), text.slice(cut + 1));
      } else if (text.startsWith("-")) {
        leave(server, ws, text.slice(1));
        ws.send("left");
      } else if (text.startsWith("+")) {
        join(server, ws, text.slice(1));
        ws.send("ready");
      }
    },
    close(ws) {
      for (const room of ws.data.rooms) {
        server.publish(room, JSON.stringify({ leave: ws.data.user }));
      }
    },
  },
});

console.log(`listening on ${server.hostname}:${server.port}`);
