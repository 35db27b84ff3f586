// hubbub's browser client: the JSON client protocol over one WebSocket.
//
// It connects with a token (asked for again on every connect, so it may be refreshed), answers
// the server's pings and notices when they stop, reconnects with exponential backoff and jitter,
// and resubscribes with the last offset and epoch of each subscription so that the server sends
// exactly the publications that were missed (or says it cannot: `recovered` is false and the
// page reloads what it shows from the archive).
//
// Events on the client: "state" ({state, code, reason}), "publication" ({channel, pub}) for
// server-side subscriptions such as the personal channel. Events on a subscription:
// "subscribed" ({recovered, wasRecovering}), "publication" (pub), "join" / "leave" (info),
// "unsubscribed" ({code, reason}), "error" ({code, message}).

const TERMINAL = (code) => (code >= 3500 && code < 4000) || (code >= 4500 && code < 5000);

export class ProtocolError extends Error {
  constructor(code, message, temporary = false) {
    super(message);
    this.code = code;
    this.temporary = temporary;
  }
}

export class Subscription extends EventTarget {
  constructor(client, channel) {
    super();
    this.client = client;
    this.channel = channel;
    this.offset = 0;
    this.epoch = "";
    this.recoverable = false;
    this.state = "unsubscribed"; // unsubscribed | subscribing | subscribed
    this.wanted = false;
  }

  subscribe() {
    this.wanted = true;
    if (this.client.state === "connected" && this.state === "unsubscribed") this._send();
  }

  unsubscribe() {
    this.wanted = false;
    const was = this.state;
    this.state = "unsubscribed";
    this.client.subs.delete(this.channel);
    if (was !== "unsubscribed" && this.client.state === "connected") {
      this.client._call({ unsubscribe: { channel: this.channel } }).catch(() => {});
    }
  }

  async presence() {
    const reply = await this.client._call({ presence: { channel: this.channel } });
    return Object.values(reply.presence.presence || {});
  }

  async _send() {
    this.state = "subscribing";
    const req = { channel: this.channel };
    if (this.recoverable && this.epoch) {
      Object.assign(req, { recover: true, offset: this.offset, epoch: this.epoch });
    }
    try {
      const reply = await this.client._call({ subscribe: req });
      if (!this.wanted || this.state !== "subscribing") return;
      const res = reply.subscribe;
      const recovering = Boolean(res.was_recovering);
      if (res.epoch !== undefined) {
        if (res.epoch !== this.epoch) this.offset = 0;
        this.epoch = res.epoch;
      }
      this.recoverable = Boolean(res.recoverable);
      this.state = "subscribed";
      const recovered = recovering && Boolean(res.recovered);
      if (!recovered) this.offset = res.offset || 0;
      this.dispatchEvent(new CustomEvent("subscribed", {
        detail: { recovered, wasRecovering: recovering },
      }));
      for (const pub of res.publications || []) this._publication(pub);
    } catch (err) {
      this.state = "unsubscribed";
      if (err instanceof ProtocolError) {
        this.dispatchEvent(new CustomEvent("error", { detail: err }));
        if (err.temporary && this.wanted) setTimeout(() => this.subscribe(), 1000);
      }
    }
  }

  _publication(pub) {
    if (pub.offset) {
      if (pub.offset <= this.offset) return; // already seen
      this.offset = pub.offset;
    }
    this.dispatchEvent(new CustomEvent("publication", { detail: pub }));
  }

  _push(push) {
    if (push.pub) this._publication(push.pub);
    else if (push.join) this.dispatchEvent(new CustomEvent("join", { detail: push.join.info }));
    else if (push.leave) this.dispatchEvent(new CustomEvent("leave", { detail: push.leave.info }));
    else if (push.unsubscribe) {
      const code = push.unsubscribe.code || 0;
      this.state = "unsubscribed";
      this.dispatchEvent(new CustomEvent("unsubscribed", { detail: push.unsubscribe }));
      if (code >= 2500 && this.wanted) this._send(); // resubscribe and recover
    }
  }
}

export class Client extends EventTarget {
  constructor(url, { getToken, name = "hubbub-web", minDelay = 300, maxDelay = 15000 } = {}) {
    super();
    this.url = url;
    this.getToken = getToken;
    this.name = name;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.state = "disconnected"; // disconnected | connecting | connected | failed
    this.subs = new Map();
    this.clientId = "";
    this.user = "";
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map();
    this._attempt = 0;
    this._retryTimer = null;
    this._pingTimer = null;
    this._pingWindow = 0;
    this._pong = false;
    this._wanted = false;
  }

  connect() {
    this._wanted = true;
    if (this.state === "disconnected" || this.state === "failed") this._open();
  }

  disconnect() {
    this._wanted = false;
    clearTimeout(this._retryTimer);
    if (this._ws) this._ws.close(1000, "bye");
    this._setState("disconnected", 1000, "disconnected by the page");
  }

  newSubscription(channel) {
    let sub = this.subs.get(channel);
    if (!sub) {
      sub = new Subscription(this, channel);
      this.subs.set(channel, sub);
    }
    return sub;
  }

  rpc(method, data = {}) {
    return this._call({ rpc: { method, data } }).then((reply) => reply.rpc.data);
  }

  _setState(state, code = 0, reason = "") {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, code, reason } }));
  }

  async _open() {
    this._setState("connecting");
    let token;
    try {
      token = await this.getToken();
    } catch (err) {
      // The token endpoint is down with the server, or briefly unreachable: try again later.
      this._retry(0, `could not get a token: ${err.message}`);
      return;
    }
    const ws = new WebSocket(this.url);
    this._ws = ws;
    ws.onopen = () => {
      const connect = { token, name: this.name };
      const subs = {};
      // Server-side subscriptions recover too: name the positions we have.
      for (const [channel, sub] of this.subs) {
        if (sub.serverSide && sub.recoverable) {
          subs[channel] = { recover: true, offset: sub.offset, epoch: sub.epoch };
        }
      }
      if (Object.keys(subs).length) connect.subs = subs;
      this._call({ connect }, ws).then(
        (reply) => this._connected(reply.connect),
        (err) => {
          if (err instanceof ProtocolError && !err.temporary) {
            this._wanted = false;
            this._setState("failed", err.code, err.message);
          }
          ws.close(4000, "connect failed");
        },
      );
    };
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => this._closed(ws, event.code, event.reason);
  }

  _connected(res) {
    this._attempt = 0;
    this.clientId = res.client;
    this._pong = Boolean(res.pong);
    this._pingWindow = res.ping ? (res.ping + 10) * 1000 : 0;
    this._armPingWatch();
    this._setState("connected");
    for (const [channel, result] of Object.entries(res.subs || {})) {
      const sub = this.newSubscription(channel);
      sub.serverSide = true;
      sub.wanted = true;
      sub.state = "subscribed";
      sub.recoverable = Boolean(result.recoverable);
      if (result.epoch !== undefined) sub.epoch = result.epoch;
      if (!(result.recovered && result.was_recovering)) sub.offset = result.offset || 0;
      for (const pub of result.publications || []) this._serverPublication(channel, pub);
    }
    for (const sub of this.subs.values()) {
      if (!sub.serverSide && sub.wanted) {
        sub.state = "unsubscribed";
        sub._send();
      }
    }
  }

  _serverPublication(channel, pub) {
    const sub = this.subs.get(channel);
    if (sub && pub.offset) {
      if (pub.offset <= sub.offset) return;
      sub.offset = pub.offset;
    }
    this.dispatchEvent(new CustomEvent("publication", { detail: { channel, pub } }));
  }

  _armPingWatch() {
    clearTimeout(this._pingTimer);
    if (!this._pingWindow || !this._ws) return;
    const ws = this._ws;
    // No ping within the window: the connection is dead without the socket knowing it yet.
    this._pingTimer = setTimeout(() => ws.close(4001, "no ping from the server"), this._pingWindow);
  }

  _receive(text) {
    this._armPingWatch();
    for (const line of text.split("\n")) {
      if (!line) continue;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      if (msg.id) {
        const waiter = this._pending.get(msg.id);
        if (!waiter) continue;
        this._pending.delete(msg.id);
        if (msg.error) {
          const e = msg.error;
          waiter.reject(new ProtocolError(e.code, e.message, Boolean(e.temporary)));
        } else waiter.resolve(msg);
      } else if (msg.push) {
        this._push(msg.push);
      } else if (this._pong && this._ws) {
        this._ws.send("{}"); // a ping: answer it
      }
    }
  }

  _push(push) {
    const sub = this.subs.get(push.channel);
    if (sub && sub.serverSide) {
      if (push.pub) this._serverPublication(push.channel, push.pub);
      return;
    }
    if (sub) sub._push(push);
    else if (push.disconnect && this._ws) this._ws.close(push.disconnect.code, push.disconnect.reason);
  }

  _call(command, ws = this._ws) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new ProtocolError(0, "not connected", true));
        return;
      }
      const id = this._nextId++;
      this._pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, ...command }));
    });
  }

  _closed(ws, code, reason) {
    if (ws !== this._ws) return;
    clearTimeout(this._pingTimer);
    this._ws = null;
    for (const waiter of this._pending.values()) {
      waiter.reject(new ProtocolError(0, "connection closed", true));
    }
    this._pending.clear();
    for (const sub of this.subs.values()) if (!sub.serverSide) sub.state = "unsubscribed";
    if (!this._wanted) return;
    if (TERMINAL(code)) {
      this._wanted = false;
      this._setState("failed", code, reason || `closed with code ${code}`);
      return;
    }
    this._retry(code, reason);
  }

  _retry(code, reason) {
    const delay = Math.min(this.maxDelay, this.minDelay * 2 ** this._attempt);
    const wait = delay / 2 + Math.random() * (delay / 2); // jitter: clients do not return in step
    this._attempt += 1;
    this._setState("disconnected", code, reason);
    this.dispatchEvent(new CustomEvent("retry", { detail: { in: wait } }));
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      if (this._wanted) this._open();
    }, wait);
  }
}
