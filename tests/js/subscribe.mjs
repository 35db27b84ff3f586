// Connects with the npm centrifuge client, subscribes, prints events as JSON lines, and exits
// after receiving N publications. Usage: node subscribe.mjs URL TOKEN CHANNEL N
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [url, token, channel, count] = process.argv.slice(2);
const want = Number(count);
const emit = (event) => console.log(JSON.stringify(event));
const client = new Centrifuge(url, { token, websocket: WebSocket });
let received = 0;

client.on('connected', (ctx) => emit({ event: 'connected', client: ctx.client }));
client.on('disconnected', (ctx) => emit({ event: 'disconnected', code: ctx.code }));
const sub = client.newSubscription(channel);
sub.on('subscribed', (ctx) => emit({ event: 'subscribed', recoverable: ctx.recoverable }));
sub.on('error', (ctx) => emit({ event: 'error', error: String(ctx.error && ctx.error.message) }));
sub.on('publication', (ctx) => {
  emit({ event: 'publication', data: ctx.data, offset: ctx.offset });
  received += 1;
  if (received >= want) {
    client.disconnect();
    process.exit(0);
  }
});
sub.subscribe();
client.connect();
setTimeout(() => { emit({ event: 'timeout' }); process.exit(1); }, 15000);
