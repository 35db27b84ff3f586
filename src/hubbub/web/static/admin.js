// The admin console. Every action is a POST to <base>/api/call/<method>, which hands it to the
// server API (the same code path as /api/<method>) and writes who did it to the audit log.
// The live numbers come over hubbub's own connection: the page is a client of the cluster,
// subscribed by its token to the admin channel where every node publishes a snapshot of itself.
// All text from the server goes into the page through textContent, never as HTML.
const { Centrifuge } = globalThis;

const $ = (id) => document.getElementById(id);
const BASE = location.pathname.replace(/\/+$/, "");
const STALE_AFTER = 3; // intervals without a snapshot before a node is shown as stale
const PAGES = ["cluster", "channels", "user", "publish", "rooms", "notifications"];

const state = {
  session: null, // {who, how, csrf, expires}
  client: null,
  live: null, // what POST /api/live answered
  nodes: new Map(), // uid -> {snap, seen}
  localUid: "",
  pollTimer: null,
  channel: "", // the channel shown in detail
  user: "",
};

// ---------------------------------------------------------------------------------------------
// Talking to the console's API

class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function post(path, body) {
  const headers = { "content-type": "application/json" };
  if (state.session && state.session.csrf) headers["x-csrf-token"] = state.session.csrf;
  const res = await fetch(`${BASE}/api/${path}`, {
    method: "POST",
    headers,
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  const reply = await res.json().catch(() => ({}));
  if (res.status === 401) {
    showSignIn("Your session has ended. Sign in again.");
  }
  if (!res.ok) {
    const err = reply.error || { code: res.status, message: `the server answered ${res.status}` };
    throw new ApiError(err.code, err.message, res.status);
  }
  return reply;
}

// A server API method: its result, or an ApiError with the API's code and message.
async function call(method, params) {
  const reply = await post(`call/${method}`, params);
  if (reply.error) throw new ApiError(reply.error.code, reply.error.message, 200);
  return reply.result;
}

function flash(text, ok = true) {
  const el = $("flash");
  el.textContent = text;
  el.dataset.ok = String(ok);
  el.hidden = !text;
}

function failed(err) {
  flash(`Failed: ${err.message || err} ${err.code ? `(${err.code})` : ""}`.trim(), false);
}

// ---------------------------------------------------------------------------------------------
// Small rendering helpers: cells are always text

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  row.append(td);
  return td;
}

function fill(tableId, rows, emptyId) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
  if (emptyId) $(emptyId).hidden = rows.length > 0;
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function bytes(n) {
  if (!n) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "–";
}

// ---------------------------------------------------------------------------------------------
// Sign-in

function showSignIn(message = "") {
  stopLive();
  state.session = null;
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("secret").value = "";
  $("secret").focus();
}

async function signIn(event) {
  event.preventDefault();
  const button = $("sign-in-button");
  button.disabled = true;
  $("sign-in-error").textContent = "";
  try {
    state.session = await post("sign-in", { secret: $("secret").value });
    start();
  } catch (err) {
    const text =
      err.status === 429
        ? "Too many attempts. Wait a minute and try again."
        : err.status === 401
          ? "Wrong password or token."
          : `Could not sign in: ${err.message}`;
    $("sign-in-error").textContent = text;
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  try {
    await post("sign-out");
  } catch (err) {
    // Signed out either way: the page forgets the session.
  }
  showSignIn("Signed out.");
}

// ---------------------------------------------------------------------------------------------
// Live numbers over hubbub's own connection

function setLive(stateName, text) {
  $("live").dataset.state = stateName;
  $("live").textContent = text;
}

function transports(live) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const list = [{ transport: "websocket", endpoint: `${scheme}://${location.host}${live.websocket}` }];
  if (live.http_stream) list.push({ transport: "http_stream", endpoint: `${location.origin}${live.http_stream}` });
  if (live.sse) list.push({ transport: "sse", endpoint: `${location.origin}${live.sse}` });
  return list;
}

async function liveToken() {
  state.live = await post("live");
  return state.live.token;
}

async function startLive() {
  try {
    state.live = await post("live");
  } catch (err) {
    setLive("off", "Offline");
    return;
  }
  if (!state.live.token) {
    // No HMAC secret to sign a token with: ask the API every few seconds instead.
    setLive("polling", "Polling");
    pollInfo();
    state.pollTimer = setInterval(pollInfo, Math.max(2000, state.live.interval * 1000));
    return;
  }
  const client = new Centrifuge(transports(state.live), {
    token: state.live.token,
    getToken: liveToken,
    name: "hubbub-admin",
    emulationEndpoint: state.live.emulation || "/emulation",
    minReconnectDelay: 300,
    maxReconnectDelay: 10000,
  });
  state.client = client;
  client.on("connecting", () => setLive("connecting", "Connecting…"));
  client.on("connected", () => setLive("connected", "Live"));
  client.on("disconnected", (ctx) => setLive("off", `Offline (${ctx.code})`));
  client.on("publication", (ctx) => {
    if (ctx.channel === state.live.channel) onSnapshot(ctx.data);
  });
  client.connect();
  pollInfo(); // the local node's uid, and numbers before the first snapshot
  state.pollTimer = setInterval(renderCluster, 1000); // ages and staleness
}

function stopLive() {
  if (state.client) state.client.disconnect();
  state.client = null;
  if (state.pollTimer) clearInterval(state.pollTimer);
  state.pollTimer = null;
  setLive("off", "Offline");
}

function onSnapshot(snap) {
  if (!snap || !snap.node || typeof snap.node.uid !== "string") return;
  state.nodes.set(snap.node.uid, { snap, seen: Date.now() });
  renderCluster();
}

async function pollInfo() {
  try {
    const info = await call("info", {});
    const nodes = info.nodes || [];
    if (nodes.length) state.localUid = nodes[0].uid;
    for (const node of nodes) {
      const known = state.nodes.get(node.uid);
      if (!known || !state.client) {
        // Without the live feed, info is all there is; with it, info fills in until the
        // node's first snapshot arrives.
        const snap = { ...(known ? known.snap : {}), node };
        state.nodes.set(node.uid, { snap, seen: Date.now() });
      }
    }
    renderCluster();
  } catch (err) {
    if (err.status !== 401) failed(err);
  }
}

function intervalMs() {
  return ((state.live && state.live.interval) || 2) * 1000;
}

function renderCluster() {
  const now = Date.now();
  const rows = [];
  const totals = { nodes: 0, clients: 0, users: 0, subs: 0 };
  const entries = [...state.nodes.values()].sort((a, b) => a.snap.node.name.localeCompare(b.snap.node.name));
  for (const { snap, seen } of entries) {
    const age = (now - seen) / 1000;
    if (age * 1000 > intervalMs() * STALE_AFTER * 5) {
      state.nodes.delete(snap.node.uid); // gone: not heard of for a long time
      continue;
    }
    const stale = age * 1000 > intervalMs() * STALE_AFTER;
    const n = snap.node;
    totals.nodes += 1;
    totals.clients += n.num_clients || 0;
    totals.users += n.num_users || 0;
    totals.subs += n.num_subs || 0;
    const row = document.createElement("tr");
    row.dataset.node = n.name;
    if (stale) row.className = "stale";
    cell(row, n.name + (n.uid === state.localUid ? " (this one)" : ""));
    cell(row, n.version);
    cell(row, duration((n.uptime || 0) + (snap.at ? 0 : 0)));
    cell(row, n.num_clients, "num");
    cell(row, n.num_users, "num");
    cell(row, n.num_subs, "num");
    cell(row, n.num_channels, "num");
    const engine = snap.engine ? `${snap.engine} ${snap.engine_ready ? "ok" : "down"}` : "–";
    cell(row, engine, snap.engine_ready === false ? "bad" : "");
    cell(row, snap.store || "–", snap.store === "down" ? "bad" : "");
    cell(row, bytes(snap.memory));
    cell(row, stale ? `stale (${duration(age)})` : `${duration(age)} ago`, stale ? "bad" : "");
    rows.push(row);
  }
  fill("nodes", rows);
  $("total-nodes").textContent = totals.nodes;
  $("total-clients").textContent = totals.clients;
  $("total-users").textContent = totals.users;
  $("total-subs").textContent = totals.subs;
}

// ---------------------------------------------------------------------------------------------
// Channels: the answering node's own list from the API (`channels`), and the other nodes'
// from their live snapshots (the API's list is per node; each snapshot carries its node's
// busiest channels).

function globToRegExp(pattern) {
  let re = "";
  for (const ch of pattern) {
    if (ch === "*") re += ".*";
    else if (ch === "?") re += ".";
    else re += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

async function searchChannels(event) {
  if (event) event.preventDefault();
  const pattern = $("channel-pattern").value.trim();
  try {
    const result = await call("channels", { pattern });
    const merged = new Map(); // name -> {count, nodes:Set}
    const add = (name, count, node) => {
      const entry = merged.get(name) || { count: 0, nodes: new Set() };
      entry.count += count;
      entry.nodes.add(node);
      merged.set(name, entry);
    };
    const localName = (state.nodes.get(state.localUid) || { snap: { node: { name: "this node" } } }).snap.node.name;
    for (const [name, info] of Object.entries(result.channels || {})) add(name, info.num_clients, localName);
    const match = globToRegExp(pattern || "*");
    for (const { snap } of state.nodes.values()) {
      if (snap.node.uid === state.localUid || !snap.channels) continue;
      for (const [name, count] of Object.entries(snap.channels)) {
        if (match.test(name)) add(name, count, snap.node.name);
      }
    }
    const rows = [...merged.entries()]
      .sort((a, b) => b[1].count - a[1].count || a[0].localeCompare(b[0]))
      .map(([name, entry]) => {
        const row = document.createElement("tr");
        row.dataset.channel = name;
        const first = cell(row, "");
        const link = document.createElement("button");
        link.type = "button";
        link.className = "link";
        link.textContent = name;
        link.addEventListener("click", () => showChannel(name));
        first.append(link);
        cell(row, entry.count, "num");
        cell(row, [...entry.nodes].sort().join(", "));
        return row;
      });
    fill("channel-list", rows, "channels-empty");
  } catch (err) {
    failed(err);
  }
}

async function showChannel(name) {
  state.channel = name;
  $("channel-detail").hidden = false;
  $("detail-name").textContent = name;
  $("detail-stats").textContent = "";
  const presence = [];
  try {
    const stats = await call("presence_stats", { channel: name });
    $("detail-stats").textContent = `${stats.num_clients} connections, ${stats.num_users} users present`;
    const result = await call("presence", { channel: name });
    for (const info of Object.values(result.presence || {})) {
      const li = document.createElement("li");
      li.textContent = `${info.user || "(anonymous)"} · ${info.client}`;
      presence.push(li);
    }
  } catch (err) {
    $("detail-stats").textContent = err.code === 108 ? "Presence is off in this channel." : err.message;
  }
  $("detail-presence").replaceChildren(...presence);
  const pubs = [];
  try {
    const history = await call("history", { channel: name, limit: 10, reverse: true });
    for (const pub of history.publications || []) {
      const li = document.createElement("li");
      const offset = document.createElement("span");
      offset.className = "muted";
      offset.textContent = `#${pub.offset} `;
      const code = document.createElement("code");
      code.textContent = JSON.stringify(pub.data);
      li.append(offset, code);
      pubs.push(li);
    }
    if (!pubs.length) pubs.push(textItem("No publications kept."));
    $("detail-remove").disabled = false;
  } catch (err) {
    pubs.push(textItem(err.code === 108 ? "History is off in this channel." : err.message));
    $("detail-remove").disabled = true;
  }
  $("detail-pubs").replaceChildren(...pubs);
  $("detail-remove").textContent = "Remove history";
  $("detail-remove").dataset.armed = "";
}

function textItem(text) {
  const li = document.createElement("li");
  li.className = "muted";
  li.textContent = text;
  return li;
}

async function removeHistory() {
  const button = $("detail-remove");
  if (!button.dataset.armed) {
    // Two clicks: the first asks, the second removes.
    button.dataset.armed = "1";
    button.textContent = "Click again to remove";
    return;
  }
  try {
    await call("history_remove", { channel: state.channel });
    flash(`History of ${state.channel} removed.`);
    await showChannel(state.channel);
  } catch (err) {
    failed(err);
  }
}

// ---------------------------------------------------------------------------------------------
// A user

async function findUser(event) {
  if (event) event.preventDefault();
  const user = $("user-name").value.trim();
  if (!user) return;
  state.user = user;
  $("user-detail").hidden = false;
  $("user-title").textContent = user;
  try {
    const result = await call("user_connections", { user });
    const rows = (result.connections || []).map((conn) => {
      const row = document.createElement("tr");
      row.dataset.client = conn.client;
      cell(row, conn.client.slice(0, 8), "mono");
      cell(row, conn.node || "another node");
      cell(row, conn.transport ? `${conn.transport}/${conn.protocol}` : "–");
      cell(row, conn.name ? `${conn.name} ${conn.version || ""}`.trim() : "–");
      cell(row, conn.channels ? conn.channels.join(", ") : "–");
      const actions = cell(row, "");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "danger small";
      button.textContent = "Disconnect";
      button.addEventListener("click", () => disconnect(user, conn.client));
      actions.append(button);
      return row;
    });
    fill("connections", rows, "connections-empty");
  } catch (err) {
    failed(err);
  }
}

async function disconnect(user, client = "") {
  try {
    await call("disconnect", client ? { user, client } : { user });
    flash(client ? `Connection ${client.slice(0, 8)} of ${user} disconnected.` : `${user} disconnected.`);
    setTimeout(findUser, 500);
  } catch (err) {
    failed(err);
  }
}

async function userSubscription(method) {
  const channel = $("user-channel").value.trim();
  if (!channel || !state.user) return;
  try {
    await call(method, { user: state.user, channel });
    flash(`${state.user} ${method}d ${method === "subscribe" ? "to" : "from"} ${channel}.`);
    setTimeout(findUser, 300);
  } catch (err) {
    failed(err);
  }
}

// ---------------------------------------------------------------------------------------------
// Publish, with the data checked as JSON while it is typed

function checkJson() {
  const text = $("pub-data").value;
  const out = $("pub-valid");
  try {
    JSON.parse(text);
    out.textContent = "Valid JSON.";
    out.dataset.ok = "true";
    $("pub-send").disabled = false;
    return true;
  } catch (err) {
    out.textContent = `Not JSON: ${err.message}`;
    out.dataset.ok = "false";
    $("pub-send").disabled = true;
    return false;
  }
}

function formatJson() {
  if (checkJson()) $("pub-data").value = JSON.stringify(JSON.parse($("pub-data").value), null, 2);
}

async function publish(event) {
  event.preventDefault();
  const channel = $("pub-channel").value.trim();
  if (!channel) {
    $("pub-result").textContent = "Name a channel.";
    return;
  }
  if (!checkJson()) return;
  try {
    const result = await call("publish", { channel, data: JSON.parse($("pub-data").value) });
    $("pub-result").textContent = result.offset
      ? `Published to ${channel} at offset ${result.offset}.`
      : `Published to ${channel}.`;
  } catch (err) {
    $("pub-result").textContent = `Not published: ${err.message} (${err.code})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Chat rooms and notifications

async function loadRooms() {
  try {
    const page = await call("chat_rooms", { limit: 500 });
    const rows = (page.rooms || []).map((room) => {
      const row = document.createElement("tr");
      cell(row, room.name);
      cell(row, room.messages, "num");
      cell(row, room.online, "num");
      cell(row, when(room.last_message_at));
      return row;
    });
    fill("rooms", rows, "rooms-empty");
  } catch (err) {
    fill("rooms", [], "rooms-empty");
    $("rooms-empty").textContent = err.code === 404 || err.code === 108 ? "Chat is off on this server." : err.message;
  }
}

async function loadNotifications() {
  try {
    const result = await call("notifications_recent", { seconds: 3600, limit: 200 });
    const rows = (result.notifications || []).map((note) => {
      const row = document.createElement("tr");
      cell(row, when(note.created_at));
      cell(row, note.user);
      cell(row, note.title);
      cell(row, note.body);
      cell(row, note.read ? "yes" : "no");
      return row;
    });
    fill("notes", rows, "notes-empty");
  } catch (err) {
    fill("notes", [], "notes-empty");
    $("notes-empty").textContent = err.code === 404 || err.code === 108 ? "Notifications are off on this server." : err.message;
  }
}

// ---------------------------------------------------------------------------------------------
// Pages

function route() {
  const [name, ...rest] = location.hash.replace(/^#/, "").split("/");
  const page = PAGES.includes(name) ? name : "cluster";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.dataset.page !== page;
  for (const link of document.querySelectorAll("#tabs a")) {
    link.classList.toggle("active", link.dataset.page === page);
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  flash("");
  const arg = decodeURIComponent(rest.join("/"));
  if (page === "channels") searchChannels();
  if (page === "rooms") loadRooms();
  if (page === "notifications") loadNotifications();
  if (page === "publish" && arg) $("pub-channel").value = arg;
  if (page === "user" && arg) {
    $("user-name").value = arg;
    findUser();
  }
}

function start() {
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = state.session.how === "proxy";
  $("who").textContent = `${state.session.who} · ${state.session.how}`;
  startLive();
  route();
}

async function boot() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("channel-search").addEventListener("submit", searchChannels);
  $("detail-remove").addEventListener("click", removeHistory);
  $("detail-publish").addEventListener("click", () => {
    location.hash = `#publish/${encodeURIComponent(state.channel)}`;
  });
  $("user-search").addEventListener("submit", findUser);
  $("disconnect-user").addEventListener("click", () => disconnect(state.user));
  $("user-sub").addEventListener("submit", (event) => {
    event.preventDefault();
    userSubscription("subscribe");
  });
  $("user-unsubscribe").addEventListener("click", () => userSubscription("unsubscribe"));
  $("pub-data").addEventListener("input", checkJson);
  $("pub-format").addEventListener("click", formatJson);
  $("publish-form").addEventListener("submit", publish);
  window.addEventListener("hashchange", () => {
    if (state.session) route();
  });
  const res = await fetch(`${BASE}/api/session`, { credentials: "same-origin" });
  const body = await res.json().catch(() => ({}));
  if (res.ok) {
    state.session = body;
    start();
  } else {
    const ways = body.sign_in || [];
    if (!ways.includes("password") && !ways.includes("token")) {
      $("sign-in-hint").textContent = "Sign in through your organisation's sign-on proxy.";
      $("sign-in-form").querySelector("button").disabled = true;
    }
    showSignIn();
  }
}

boot();
