// Records the first frame the npm centrifuge client sends (connect and its pending subscribe
// share it), then waits for the subscription. Usage: node first_frame.mjs URL TOKEN
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [url, token] = process.argv.slice(2);
const emit = (event) => console.log(JSON.stringify(event));

class RecordingWebSocket extends WebSocket {
  send(data, ...rest) {
    if (!this.recorded) {
      this.recorded = true;
      emit({ event: 'first_frame', text: String(data) });
    }
    return super.send(data, ...rest);
  }
}

const client = new Centrifuge(url, { token, websocket: RecordingWebSocket });
const sub = client.newSubscription('news');
sub.on('subscribed', () => {
  emit({ event: 'subscribed' });
  client.disconnect();
  process.exit(0);
});
sub.subscribe();
client.connect();
setTimeout(() => { emit({ event: 'timeout' }); process.exit(1); }, 15000);
