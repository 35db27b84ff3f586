// Connects with the npm centrifuge client, subscribes, prints events as JSON lines, and exits
// after receiving N publications. With FORMAT "protobuf" it uses the client's Protobuf build,
// whose payloads are bytes (decoded here as JSON text for printing).
// Usage: node subscribe.mjs URL TOKEN CHANNEL N [FORMAT]
import WebSocket from 'ws';

const [url, token, channel, count, format = 'json'] = process.argv.slice(2);
const { Centrifuge } = await import(format === 'protobuf' ? 'centrifuge/build/protobuf' : 'centrifuge');
const want = Number(count);
const emit = (event) => console.log(JSON.stringify(event));
const decode = (data) => (data instanceof Uint8Array ? JSON.parse(new TextDecoder().decode(data)) : data);
const client = new Centrifuge(url, { token, websocket: WebSocket });
let received = 0;

client.on('connected', (ctx) => emit({ event: 'connected', client: ctx.client, transport: ctx.transport }));
client.on('disconnected', (ctx) => emit({ event: 'disconnected', code: ctx.code }));
const sub = client.newSubscription(channel);
sub.on('subscribed', (ctx) => emit({ event: 'subscribed', recoverable: ctx.recoverable }));
sub.on('error', (ctx) => emit({ event: 'error', error: String(ctx.error && ctx.error.message) }));
sub.on('publication', (ctx) => {
  emit({ event: 'publication', data: decode(ctx.data), offset: ctx.offset });
  received += 1;
  if (received >= want) {
    client.disconnect();
    process.exit(0);
  }
});
sub.subscribe();
client.connect();
setTimeout(() => { emit({ event: 'timeout' }); process.exit(1); }, 15000);
