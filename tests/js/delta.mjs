// Subscribes with delta compression (`delta: 'fossil'`) through the npm centrifuge client and
// prints events as JSON lines: connected, connecting (first and after each disconnect),
// subscribed (with the recovery flags), publication (the decoded payload and offset), then
// done with the subscription's deltaStats() after N publications. With FORMAT "protobuf" it
// uses the client's Protobuf build (payload bytes, decoded here as JSON text).
// Usage: node delta.mjs URL TOKEN CHANNEL N [FORMAT]
import WebSocket from 'ws';

const [url, token, channel, count, format = 'json'] = process.argv.slice(2);
const { Centrifuge } = await import(format === 'protobuf' ? 'centrifuge/build/protobuf' : 'centrifuge');
const want = Number(count);
const emit = (event) => console.log(JSON.stringify(event));
const decode = (data) => (data instanceof Uint8Array ? JSON.parse(new TextDecoder().decode(data)) : data);
const client = new Centrifuge(url, { token, websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 500 });
let received = 0;

client.on('connected', () => emit({ event: 'connected' }));
client.on('connecting', (ctx) => emit({ event: 'connecting', code: ctx.code }));
const sub = client.newSubscription(channel, { delta: 'fossil' });
sub.on('subscribed', (ctx) => emit({ event: 'subscribed', recovered: ctx.recovered, wasRecovering: ctx.wasRecovering }));
sub.on('error', (ctx) => emit({ event: 'error', error: String(ctx.error && ctx.error.message) }));
sub.on('publication', (ctx) => {
  emit({ event: 'publication', data: decode(ctx.data), offset: ctx.offset });
  received += 1;
  if (received >= want) {
    client.disconnect();
    // Exit once stdout is flushed: a pipe that is full takes writes asynchronously.
    process.stdout.write(JSON.stringify({ event: 'done', stats: sub.deltaStats() }) + '\n', () => process.exit(0));
  }
});
sub.subscribe();
client.connect();
setTimeout(() => { emit({ event: 'timeout' }); process.exit(1); }, 20000);
