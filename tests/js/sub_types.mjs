// Subscribes with the npm centrifuge client to one channel as a shared-poll, a map and a
// regular (stream) subscription, and prints how each ended up, as JSON lines.
// Usage: node sub_types.mjs URL TOKEN CHANNEL [FORMAT]
import WebSocket from 'ws';

const [url, token, channel, format = 'json'] = process.argv.slice(2);
const { Centrifuge } = await import(format === 'protobuf' ? 'centrifuge/build/protobuf' : 'centrifuge');
const emit = (event) => console.log(JSON.stringify(event));
const client = new Centrifuge(url, { token, websocket: WebSocket });

function watch(kind, sub) {
  return new Promise((resolve) => {
    sub.on('subscribed', () => { emit({ kind, event: 'subscribed' }); resolve(); });
    sub.on('unsubscribed', (ctx) => { emit({ kind, event: 'unsubscribed', code: ctx.code }); resolve(); });
    sub.on('error', (ctx) => emit({ kind, event: 'error', code: ctx.error && ctx.error.code }));
    sub.subscribe();
  });
}

client.connect();
await client.ready(5000);
// One at a time: the client keeps one subscription per channel.
const shared = client.newSharedPollSubscription(channel);
await watch('shared_poll', shared);
client.removeSharedPollSubscription(shared);
const map = client.newMapSubscription(channel);
await watch('map', map);
client.removeMapSubscription(map);
const stream = client.newSubscription(channel);
await watch('stream', stream);
client.disconnect();
process.exit(0);
