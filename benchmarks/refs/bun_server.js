// Reference server: Bun's built-in WebSocket pub/sub (Bun.serve, ws.subscribe, server.publish).
//
// A subscriber connects to /?channel=<name>: open() subscribes it to that topic and answers
// "ready"; a message without a newline subscribes to one more channel, answered "ready" too.
// The publisher connects without a channel and sends "<channel>\n<payload>": the payload is
// published to the topic with server.publish, then acknowledged with "ok". Default options
// otherwise (no compression; Bun's own idle timeout and keep-alive pings).
//
// Run: PORT=8000 bun run benchmarks/refs/bun_server.js

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT),
  fetch(req, server) {
    const channel = new URL(req.url).searchParams.get("channel") ?? "";
    if (server.upgrade(req, { data: { channel } })) {
      return undefined;
    }
    return new Response("WebSocket only\n", { status: 400 });
  },
  websocket: {
    open(ws) {
      if (ws.data.channel) {
        ws.subscribe(ws.data.channel);
      }
      ws.send("ready");
    },
    message(ws, message) {
      const text = String(message);
      const cut = text.indexOf("\n");
      if (cut < 0) {
        ws.subscribe(text);
        ws.send("ready");
        return;
      }
      server.publish(text.slice(0, cut), text.slice(cut + 1));
      ws.send("ok");
    },
  },
});

console.log(`listening on ${server.hostname}:${server.port}`);
