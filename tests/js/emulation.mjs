// The npm centrifuge client on ONE emulation transport (http_stream or sse), driven by a test:
// connects, subscribes with recovery, publishes, asks presence, history and an RPC, refreshes
// its token when it expires, and reconnects by itself after the test cuts its stream. Prints
// every event as a JSON line; exits 0 after a publication whose data has "last", 1 on timeout.
// Usage: node emulation.mjs BASE_URL TRANSPORT FORMAT USER_TOKEN_URL CHANNEL
//   TRANSPORT: http_stream | sse; FORMAT: json | protobuf (http_stream only)
//   USER_TOKEN_URL: a URL that answers a fresh connection token as text (getToken)
import { EventSource } from 'eventsource';

const [base, transport, format, tokenUrl, channel] = process.argv.slice(2);
const { Centrifuge } = await import(format === 'protobuf' ? 'centrifuge/build/protobuf' : 'centrifuge');
const emit = (event) => console.log(JSON.stringify(event));
const binary = format === 'protobuf';
const encode = (value) => (binary ? new TextEncoder().encode(JSON.stringify(value)) : value);
const decode = (data) => (data instanceof Uint8Array ? JSON.parse(new TextDecoder().decode(data)) : data);
const path = transport === 'sse' ? '/connection/sse' : '/connection/http_stream';

const client = new Centrifuge([{ transport, endpoint: base + path }], {
  emulationEndpoint: base + '/emulation',
  eventsource: EventSource,
  minReconnectDelay: 50,
  maxReconnectDelay: 500,
  getToken: async () => {
    const response = await fetch(tokenUrl);
    emit({ event: 'token' });
    return await response.text();
  },
});

client.on('connected', (ctx) => emit({ event: 'connected', transport: ctx.transport, client: ctx.client }));
client.on('connecting', (ctx) => emit({ event: 'connecting', code: ctx.code }));
client.on('disconnected', (ctx) => emit({ event: 'disconnected', code: ctx.code }));
client.on('error', (ctx) => emit({ event: 'client_error', error: String(ctx.error && ctx.error.message) }));

const sub = client.newSubscription(channel);
let first = true;
sub.on('subscribed', async (ctx) => {
  emit({ event: 'subscribed', recoverable: ctx.recoverable, wasRecovering: ctx.wasRecovering, recovered: ctx.recovered });
  if (!first) return;
  first = false;
  try {
    await sub.publish(encode({ from: 'js' }));
    emit({ event: 'published' });
    const presence = await sub.presence();
    emit({ event: 'presence', clients: Object.keys(presence.clients).length });
    const history = await sub.history({ limit: 10 });
    emit({ event: 'history', count: history.publications.length });
    const rpc = await client.rpc('echo', encode({ x: 1 }));
    emit({ event: 'rpc', data: decode(rpc.data) });
  } catch (e) {
    emit({ event: 'call_error', error: String(e && (e.message || e.code)) });
  }
});
sub.on('error', (ctx) => emit({ event: 'sub_error', error: String(ctx.error && ctx.error.message) }));
sub.on('publication', (ctx) => {
  const data = decode(ctx.data);
  emit({ event: 'publication', data, offset: ctx.offset });
  if (data && data.last) {
    client.disconnect();
    process.exit(0);
  }
});
sub.subscribe();
client.connect();
setTimeout(() => { emit({ event: 'timeout' }); process.exit(1); }, 30000);
