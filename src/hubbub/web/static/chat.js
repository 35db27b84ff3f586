// The chat page: rooms, messages with history from the archive, who is online, typing, the
// notification bell. Every piece of user text goes into the page through textContent, never as
// HTML, so messages that contain markup are shown as the text they are.
//
// It talks to the server with the npm `centrifuge` SDK's browser build (/static/vendor/
// centrifuge.js, loaded before this module, sets window.Centrifuge): WebSocket first, then
// HTTP streaming, then Server-Sent Events when WebSocket cannot get through. The SDK
// reconnects with backoff, resubscribes and recovers missed publications from each stream,
// answers pings, and refreshes the connection token before it expires.
const { Centrifuge } = globalThis;

const $ = (id) => document.getElementById(id);
const TYPING_SHOWN_MS = 3500;
const TYPING_SEND_MS = 2000;
const ROOMS_REFRESH_MS = 15000;
// Refusals of a subscription that creates a room: too many rooms (106), creating too fast (111).
// The page does not retry them; it says why and goes back to the room it was in.
// A room that does not exist and may not be created here (102), one the user may not enter
// (103) and a name the server does not accept (107) are refused the same way.
const ROOM_REFUSALS = new Set([102, 103, 106, 107, 111]);
const ROOM_PAGES_REFRESHED = 3; // pages of the room list reloaded every ROOMS_REFRESH_MS

const state = {
  config: null,
  user: "",
  token: "",
  client: null,
  rooms: [], // the pages of the room list loaded so far, in name order
  roomsNext: null, // cursor of the next page of rooms, null when all are loaded
  roomsTotal: 0,
  roomPages: 1, // pages shown: a refresh reloads as many
  room: "",
  previousRoom: "",
  sub: null,
  messages: new Map(), // archive id -> message view
  oldest: null,
  online: new Map(), // user -> number of connections in the room
  typing: new Map(), // user -> timer
  lastTypingSent: 0,
  notes: new Map(), // id -> notification view
  unread: 0,
};

// ---------------------------------------------------------------------------------------------
// Errors in words: the server's messages are "<what kind>: <detail>" for programs and logs;
// people see the detail as a sentence, or a sentence for the kind when there is no detail.

// Codes under 100 are the SDK's own (a timeout, a closed transport, no connection): offline.
const OFFLINE = (err) => Boolean(err) && typeof err.code === "number" && err.code < 100;

const ERROR_SENTENCES = {
  100: "The server had a problem. Try again in a moment.",
  101: "You are not signed in, or your sign-in has expired.",
  102: "That does not exist.",
  103: "You are not allowed to do that.",
  106: "That is over a limit of this server.",
  107: "The server did not accept that.",
  108: "That is not available on this server.",
  109: "Your sign-in has expired.",
  111: "Too many requests. Wait a moment and try again.",
  404: "That does not exist.",
};

function sentence(text) {
  const trimmed = text.trim();
  if (!trimmed) return "";
  const first = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?…]$/.test(first) ? first : `${first}.`;
}

function humanError(err) {
  if (OFFLINE(err)) return "You are offline.";
  const message = String((err && err.message) || "");
  const colon = message.indexOf(": ");
  const detail = colon >= 0 ? message.slice(colon + 2) : "";
  if (detail) return sentence(detail);
  return ERROR_SENTENCES[err && err.code] || sentence(message) || "Something went wrong.";
}

// ---------------------------------------------------------------------------------------------
// Sign-in: development mode mints a token for a chosen name; otherwise the application hands
// the page a token in the URL fragment (#token=...), which never reaches a server log.

async function loadConfig() {
  const res = await fetch("/web/config");
  return res.json();
}

async function mintToken(name) {
  const res = await fetch("/web/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: name }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw body.error || { code: res.status, message: `the server answered ${res.status}` };
  }
  return body;
}

function showLogin(message = "") {
  $("login").hidden = false;
  $("login-error").textContent = message;
  if (!state.config.development) {
    $("login-hint").textContent =
      "This server hands out tokens through your application. Open this page as " +
      "/#token=<connection token>.";
    $("login-name").hidden = true;
    $("login-form").querySelector("button").hidden = true;
  }
  $("login-name").focus();
}

async function signIn(name) {
  const minted = await mintToken(name);
  state.user = minted.user;
  state.token = minted.token;
  localStorage.setItem("hubbub.name", minted.user);
}

function userFromToken(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return String(payload.sub || "");
  } catch {
    return "";
  }
}

// ---------------------------------------------------------------------------------------------
// Connection state

const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Online",
  disconnected: "Offline — reconnecting",
  failed: "Error",
};

function setStatus(detail) {
  const el = $("status");
  el.dataset.state = detail.state;
  el.dataset.transport = detail.transport || ""; // which one the SDK connected with
  document.body.dataset.state = detail.state; // dims what may be out of date while offline
  let text = STATUS_TEXT[detail.state] || detail.state;
  if (detail.state === "failed" && detail.reason) text = `Error: ${detail.reason}`;
  el.textContent = text;
  el.title = detail.reason || "";
  const live = detail.state === "connected" && state.sub && state.sub.state === "subscribed";
  setComposer(live);
}

function setComposer(enabled) {
  $("text").disabled = !enabled;
  $("send").disabled = !enabled;
}

// An RPC's result data; refused with the server's {code, message} or the SDK's (code < 100).
async function rpc(method, data = {}) {
  return (await state.client.rpc(method, data)).data;
}

// ---------------------------------------------------------------------------------------------
// Rooms

// One page of the room list; servers without paging answer every room and no cursor.
async function roomsPage(after) {
  const page = await rpc("chat.rooms", after ? { after } : {});
  return { rooms: page.rooms, next: page.next ?? null, total: page.total ?? page.rooms.length };
}

async function refreshRooms() {
  if (state.client.state !== "connected") return;
  try {
    // The first few pages shown are reloaded; rooms further down keep their last counts, and
    // the list never shortens under the reader.
    const pages = Math.min(state.roomPages, ROOM_PAGES_REFRESHED);
    const rooms = [];
    let page = { next: null, total: 0 };
    for (let n = 0; n < pages; n++) {
      page = await roomsPage(n ? page.next : null);
      rooms.push(...page.rooms);
      if (!page.next) break;
    }
    if (page.next && state.roomPages > pages) {
      rooms.push(...state.rooms.filter((r) => r.name > page.next));
    } else {
      state.roomsNext = page.next;
      state.roomPages = pages;
    }
    state.rooms = rooms;
    state.roomsTotal = page.total;
    renderRooms();
  } catch (err) {
    // Kept as it is; the next refresh or reconnect tries again.
  }
}

async function loadMoreRooms() {
  if (!state.roomsNext || state.client.state !== "connected") return;
  const button = $("more-rooms");
  button.disabled = true;
  try {
    const page = await roomsPage(state.roomsNext);
    const known = new Set(state.rooms.map((r) => r.name));
    state.rooms.push(...page.rooms.filter((r) => !known.has(r.name)));
    state.roomsNext = page.next;
    state.roomsTotal = page.total;
    state.roomPages += 1;
    renderRooms();
  } catch (err) {
    $("rooms-error").textContent = `Could not load more rooms. ${humanError(err)}`;
  } finally {
    button.disabled = false;
  }
}

function renderRooms() {
  const list = $("rooms");
  list.replaceChildren();
  const shown = [...state.rooms];
  // The room you are in is listed even when its page is not loaded yet.
  if (state.room && !shown.some((r) => r.name === state.room)) {
    shown.push({ name: state.room, online: state.online.size, messages: 0 });
  }
  const more = $("more-rooms");
  more.hidden = !state.roomsNext;
  const left = Math.max(state.roomsTotal - state.rooms.length, 0);
  more.textContent = left ? `More rooms (${left} more)` : "More rooms";
  for (const room of shown) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.room = room.name;
    if (room.name === state.room) button.classList.add("active");
    const label = document.createElement("span");
    const hash = document.createElement("span");
    hash.className = "hash";
    hash.textContent = "#";
    label.append(hash, room.name);
    const pill = document.createElement("span");
    pill.className = "pill";
    pill.textContent = `${room.name === state.room ? state.online.size : room.online} online`;
    button.append(label, pill);
    button.addEventListener("click", () => {
      $("rooms-error").textContent = "";
      joinRoom(room.name);
      setDrawer(false);
    });
    li.append(button);
    list.append(li);
  }
}

// The rule of room names is the new-room input's pattern, as the browser reads it (v flag).
function validRoom(name) {
  return new RegExp(`^(?:${$("new-room-name").pattern})$`, "v").test(name);
}

function refusedName(name) {
  return `"${name}" cannot be a room name: use 1-64 letters, digits, "-", "_" or ".".`;
}

// Leave a room's channel: the SDK keeps one subscription per channel, so it is removed, not
// only unsubscribed (joining the room again makes a new one).
function leave(sub) {
  if (state.client.getSubscription(sub.channel) === sub) state.client.removeSubscription(sub);
  else sub.unsubscribe();
}

function joinRoom(room) {
  if (room === state.room && state.sub) return;
  if (state.sub) {
    if (state.sub.state === "subscribed") state.previousRoom = state.room;
    const old = state.sub;
    state.sub = null;
    leave(old);
  }
  state.room = room;
  localStorage.setItem("hubbub.room", room);
  history.replaceState(null, "", `?room=${encodeURIComponent(room)}${location.hash}`);
  state.messages.clear();
  state.oldest = null;
  state.online.clear();
  for (const timer of state.typing.values()) clearTimeout(timer);
  state.typing.clear();
  $("room-title").textContent = `# ${room}`;
  document.title = `#${room} · hubbub chat`;
  $("send-error").textContent = "";
  renderMessages();
  renderOnline();
  renderTyping();
  renderRooms();
  setComposer(false);

  const channel = `chat:${room}`;
  const stale = state.client.getSubscription(channel);
  if (stale) state.client.removeSubscription(stale);
  const sub = state.client.newSubscription(channel);
  state.sub = sub;
  sub.on("subscribed", async (ctx) => {
    if (state.sub !== sub) return;
    setComposer(true);
    // A fresh join, or a reconnect the stream could not cover: the archive has everything.
    if (!(ctx.wasRecovering && ctx.recovered)) await loadHistory();
    await loadPresence();
    refreshRooms();
  });
  sub.on("publication", (ctx) => {
    if (state.sub === sub) onRoomPublication(ctx);
  });
  sub.on("join", (ctx) => {
    if (state.sub !== sub) return;
    const user = ctx.info.user;
    const before = state.online.get(user) || 0;
    state.online.set(user, before + 1);
    if (!before) {
      renderOnline();
      renderRooms();
    }
  });
  sub.on("leave", (ctx) => {
    if (state.sub !== sub) return;
    const user = ctx.info.user;
    const left = (state.online.get(user) || 1) - 1;
    if (left > 0) state.online.set(user, left);
    else {
      state.online.delete(user);
      renderOnline();
      renderRooms();
    }
  });
  // A refusal the page does not retry: it says why and goes back to the room it was in.
  const refused = (err) => {
    $("rooms-error").textContent = `Cannot join #${room}. ${humanError(err)}`;
    state.sub = null;
    // After the SDK's event is dispatched: the subscription is removed from its registry.
    queueMicrotask(() => {
      leave(sub);
      const back = state.previousRoom && state.previousRoom !== room ? state.previousRoom : "lobby";
      if (back !== room) joinRoom(back);
    });
  };
  // Temporary errors (the SDK subscribes again after a backoff), e.g. 111 too many requests.
  sub.on("error", (ctx) => {
    if (state.sub !== sub || ctx.type !== "subscribe") return;
    if (ROOM_REFUSALS.has(ctx.error.code)) refused(ctx.error);
    else $("send-error").textContent = `Cannot join #${room}. ${humanError(ctx.error)}`;
  });
  // Permanent errors end the subscription with the error's code (codes under 100 are the
  // SDK's own: the page or the client ended it; 2000 and up: the server unsubscribed it).
  sub.on("unsubscribed", (ctx) => {
    if (state.sub !== sub) return;
    setComposer(false);
    const err = { code: ctx.code, message: ctx.reason };
    if (ROOM_REFUSALS.has(ctx.code)) refused(err);
    else if (ctx.code >= 100 && ctx.code < 1000) {
      $("send-error").textContent = `Cannot join #${room}. ${humanError(err)}`;
    }
  });
  sub.subscribe();
}

async function loadHistory(before = null) {
  const args = { room: state.room };
  if (before) args.before = before;
  const room = state.room;
  try {
    const { messages } = await rpc("chat.history", args);
    if (room !== state.room) return;
    for (const msg of messages) state.messages.set(msg.id, msg);
    if (messages.length && (state.oldest === null || messages[0].id < state.oldest)) {
      state.oldest = messages[0].id;
    }
    const more = messages.length >= 50;
    $("older").hidden = !more;
    renderMessages(before ? "keep" : "bottom");
  } catch (err) {
    $("send-error").textContent = `Could not load the history. ${humanError(err)}`;
  }
}

async function loadPresence() {
  const sub = state.sub;
  try {
    const { clients } = await sub.presence();
    if (state.sub !== sub) return;
    state.online.clear();
    for (const info of Object.values(clients)) {
      state.online.set(info.user, (state.online.get(info.user) || 0) + 1);
    }
    renderOnline();
    renderRooms();
  } catch {
    // The list stays as the join and leave pushes left it.
  }
}

function onRoomPublication(pub) {
  const data = pub.data || {};
  if (data.type === "typing") {
    if (data.user !== state.user) showTyping(data.user);
    return;
  }
  if (!data.message) return;
  const msg = data.message;
  const known = state.messages.get(msg.id);
  if (data.type === "message" && known) return;
  state.messages.set(msg.id, msg);
  if (data.type === "message") hideTyping(msg.user);
  renderMessages(data.type === "message" ? "follow" : "keep");
}

// ---------------------------------------------------------------------------------------------
// Messages

const COLORS = ["#4f46e5", "#0891b2", "#16a34a", "#d97706", "#db2777", "#7c3aed", "#0f766e", "#b45309"];

function colorOf(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return COLORS[hash % COLORS.length];
}

function timeOf(ts) {
  const date = new Date(ts * 1000);
  const today = new Date().toDateString() === date.toDateString();
  const opts = today ? { hour: "2-digit", minute: "2-digit" } : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  return date.toLocaleString([], opts);
}

function renderMessages(scroll = "bottom") {
  const box = $("messages");
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const previousHeight = box.scrollHeight;
  const list = $("message-list");
  list.replaceChildren();
  const ordered = [...state.messages.values()].sort((a, b) => a.id - b.id);
  for (const msg of ordered) list.append(messageItem(msg));
  $("messages-empty").hidden = ordered.length > 0;
  if (scroll === "bottom" || (scroll === "follow" && nearBottom)) box.scrollTop = box.scrollHeight;
  else if (scroll === "keep") box.scrollTop += box.scrollHeight - previousHeight;
}

function messageItem(msg) {
  const li = document.createElement("li");
  li.className = "msg";
  li.dataset.id = msg.id;
  if (msg.user === state.user) li.classList.add("mine");
  if (msg.deleted) li.classList.add("deleted");
  const avatar = document.createElement("div");
  avatar.className = "avatar";
  avatar.style.background = colorOf(msg.user);
  avatar.textContent = [...msg.user][0] || "?";
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const head = document.createElement("div");
  head.className = "msg-head";
  const user = document.createElement("span");
  user.className = "msg-user";
  user.textContent = msg.user;
  const time = document.createElement("span");
  time.className = "msg-time";
  time.textContent = timeOf(msg.ts);
  head.append(user, time);
  if (msg.edited && !msg.deleted) {
    const edited = document.createElement("span");
    edited.className = "msg-edited";
    edited.textContent = "(edited)";
    head.append(edited);
  }
  if (msg.user === state.user && !msg.deleted) {
    const actions = document.createElement("span");
    actions.className = "msg-actions";
    const edit = document.createElement("button");
    edit.type = "button";
    edit.textContent = "Edit";
    edit.addEventListener("click", () => startEdit(li, msg));
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "Delete";
    del.addEventListener("click", () => deleteMessage(msg));
    actions.append(edit, del);
    head.append(actions);
  }
  const text = document.createElement("div");
  text.className = "msg-text";
  text.textContent = msg.deleted ? "message deleted" : msg.text;
  bubble.append(head, text);
  li.append(avatar, bubble);
  return li;
}

function startEdit(li, msg) {
  const text = li.querySelector(".msg-text");
  const input = document.createElement("textarea");
  input.className = "msg-edit";
  input.value = msg.text;
  input.rows = Math.min(6, msg.text.split("\n").length + 1);
  text.replaceWith(input);
  input.focus();
  input.addEventListener("keydown", async (event) => {
    if (event.key === "Escape") renderMessages("keep");
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      try {
        const { message } = await rpc("chat.edit", { id: msg.id, text: input.value });
        state.messages.set(message.id, message);
        renderMessages("keep");
      } catch (err) {
        $("send-error").textContent = `Could not edit. ${humanError(err)}`;
      }
    }
  });
}

async function deleteMessage(msg) {
  try {
    const { message } = await rpc("chat.delete", { id: msg.id });
    state.messages.set(message.id, message);
    renderMessages("keep");
  } catch (err) {
    $("send-error").textContent = `Could not delete. ${humanError(err)}`;
  }
}

async function send(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value;
  if (!text.trim()) return;
  $("send-error").textContent = "";
  try {
    const { message } = await rpc("chat.send", { room: state.room, text });
    input.value = "";
    autosize();
    if (message.room === state.room) {
      state.messages.set(message.id, message);
      renderMessages("bottom");
    }
  } catch (err) {
    $("send-error").textContent = OFFLINE(err)
      ? "Not sent: you are offline. Your text is still in the box; send it again once online."
      : `Not sent. ${humanError(err)}`;
  }
}

function autosize() {
  const input = $("text");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

// ---------------------------------------------------------------------------------------------
// Online list and typing

function renderOnline() {
  const list = $("online");
  list.replaceChildren();
  const users = [...state.online.keys()].sort();
  for (const user of users) {
    const li = document.createElement("li");
    li.textContent = user === state.user ? `${user} (you)` : user;
    list.append(li);
  }
  $("online-count").textContent = users.length ? `(${users.length})` : "";
}

function showTyping(user) {
  clearTimeout(state.typing.get(user));
  state.typing.set(user, setTimeout(() => hideTyping(user), TYPING_SHOWN_MS));
  renderTyping();
}

function hideTyping(user) {
  if (!state.typing.has(user)) return;
  clearTimeout(state.typing.get(user));
  state.typing.delete(user);
  renderTyping();
}

function renderTyping() {
  const users = [...state.typing.keys()];
  let text = "";
  if (users.length === 1) text = `${users[0]} is typing…`;
  else if (users.length === 2) text = `${users[0]} and ${users[1]} are typing…`;
  else if (users.length > 2) text = "Several people are typing…";
  $("typing").textContent = text;
}

function onInput() {
  autosize();
  const now = Date.now();
  if (!$("text").value.trim() || now - state.lastTypingSent < TYPING_SEND_MS) return;
  state.lastTypingSent = now;
  rpc("chat.typing", { room: state.room }).catch(() => {});
}

// ---------------------------------------------------------------------------------------------
// Notifications

async function loadNotifications() {
  try {
    const { notifications, unread } = await rpc("notifications.list", { limit: 30 });
    state.notes.clear();
    for (const note of notifications) state.notes.set(note.id, note);
    setUnread(unread);
    renderNotes();
  } catch {
    // Loaded again on the next connect; live ones arrive meanwhile.
  }
}

function setUnread(count) {
  state.unread = Math.max(0, count);
  const badge = $("badge");
  badge.hidden = state.unread === 0;
  badge.textContent = state.unread > 99 ? "99+" : String(state.unread);
  $("bell").setAttribute("aria-label", `Notifications, ${state.unread} unread`);
}

function renderNotes() {
  const list = $("notes");
  list.replaceChildren();
  const ordered = [...state.notes.values()].sort((a, b) => b.id - a.id);
  for (const note of ordered) {
    const li = document.createElement("li");
    li.dataset.id = note.id;
    if (!note.read) li.classList.add("unread");
    const title = document.createElement("div");
    title.className = "note-title";
    title.textContent = note.title || "Notification";
    const body = document.createElement("div");
    body.className = "note-body";
    body.textContent = note.body;
    const meta = document.createElement("div");
    meta.className = "note-meta";
    meta.textContent = timeOf(note.ts);
    if (note.link) {
      const link = document.createElement("a");
      link.href = note.link; // the server only accepts http(s) URLs and site paths
      link.textContent = "Open";
      link.rel = "noopener";
      meta.append(" · ", link);
    }
    li.append(title, body, meta);
    li.addEventListener("click", () => markRead([note.id]));
    list.append(li);
  }
  $("notes-empty").hidden = ordered.length > 0;
}

async function markRead(ids) {
  const args = ids ? { ids } : { all: true };
  try {
    const { read, unread } = await rpc("notifications.read", args);
    applyRead(read, unread);
  } catch {
    // Still unread: the badge says so, and another click tries again.
  }
}

function applyRead(ids, unread) {
  for (const id of ids) {
    const note = state.notes.get(id);
    if (note) note.read = true;
  }
  setUnread(unread);
  renderNotes();
}

function onPersonal(ctx) {
  const data = ctx.data || {};
  if (data.type === "notification") {
    const note = data.notification;
    state.notes.set(note.id, note);
    setUnread(data.unread >= 0 ? data.unread : state.unread + 1);
    renderNotes();
    toast(note);
  } else if (data.type === "read") {
    applyRead(data.ids, data.unread);
  }
}

function toast(note) {
  if (!$("dropdown").hidden) return; // the open list shows it already
  const el = document.createElement("div");
  el.className = "toast";
  const title = document.createElement("strong");
  title.textContent = note.title || "Notification";
  const body = document.createElement("p");
  body.textContent = note.body;
  el.append(title, body);
  el.addEventListener("click", () => el.remove());
  $("toasts").append(el);
  setTimeout(() => el.remove(), 6000);
}

// The drawer: on a phone the sidebar (rooms, who is online, sign-out) opens over the chat.
function setDrawer(open) {
  document.body.classList.toggle("drawer-open", open);
  $("scrim").hidden = !open;
  $("menu").setAttribute("aria-expanded", String(open));
  if (open) $("drawer-close").focus();
}

function toggleDropdown(force) {
  const dropdown = $("dropdown");
  const open = force ?? dropdown.hidden;
  dropdown.hidden = !open;
  $("bell").setAttribute("aria-expanded", String(open));
  // The list has every notification: toasts would only cover it.
  if (open) $("toasts").replaceChildren();
}

// ---------------------------------------------------------------------------------------------
// Start

// The transports the SDK tries in order, from the server's /web/config: WebSocket, then HTTP
// streaming and SSE (each with the /emulation endpoint for what the page sends) when the
// server serves them. A transport that never opened is skipped for the next one.
function transports(config) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const list = [{ transport: "websocket", endpoint: `${scheme}://${location.host}${config.websocket}` }];
  if (config.http_stream) {
    list.push({ transport: "http_stream", endpoint: `${location.origin}${config.http_stream}` });
  }
  if (config.sse) list.push({ transport: "sse", endpoint: `${location.origin}${config.sse}` });
  return list;
}

async function getToken() {
  if (state.config.development && !location.hash.includes("token=")) {
    await signIn(state.user); // development: a fresh token for the name
  }
  return state.token;
}

function start() {
  $("me").textContent = state.user;
  $("drawer-me").textContent = state.user;
  $("sign-out").hidden = !state.config.development;
  $("drawer-sign-out").hidden = !state.config.development;
  const client = new Centrifuge(transports(state.config), {
    getToken, // on every connect (below), and before the token expires (the SDK refreshes it)
    name: "hubbub-web",
    emulationEndpoint: state.config.emulation || "/emulation",
    minReconnectDelay: 300,
    maxReconnectDelay: 15000,
  });
  state.client = client;
  client.on("connecting", (ctx) => {
    client.setToken(""); // the next attempt asks getToken for a fresh token
    // The first attempt is "connecting"; after a connection was lost, reconnecting.
    setStatus({ state: ctx.code === 0 ? "connecting" : "disconnected", code: ctx.code, reason: ctx.reason });
  });
  client.on("connected", (ctx) => {
    setStatus({ state: "connected", code: 0, reason: "", transport: ctx.transport });
    loadNotifications();
    refreshRooms();
  });
  // Disconnected for good: the SDK reconnects by itself from everything else.
  client.on("disconnected", (ctx) => {
    setStatus({ state: "failed", code: ctx.code, reason: ctx.reason });
    if ([3500, 3501].includes(ctx.code)) {
      showLogin(`The server did not accept your sign-in (${ctx.reason}).`);
    }
  });
  // Server-side subscriptions (the personal channel "#user"): their publications come here.
  client.on("publication", (ctx) => {
    if (ctx.channel.startsWith("#")) onPersonal(ctx);
  });
  client.connect();
  const params = new URLSearchParams(location.search);
  let room = params.get("room") || localStorage.getItem("hubbub.room") || "lobby";
  if (!validRoom(room)) {
    $("rooms-error").textContent = refusedName(room);
    room = "lobby";
  }
  joinRoom(room);
  setInterval(refreshRooms, ROOMS_REFRESH_MS);
}

async function main() {
  state.config = await loadConfig();
  $("composer").addEventListener("submit", send);
  $("text").addEventListener("input", onInput);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) send(event);
  });
  $("older").addEventListener("click", () => loadHistory(state.oldest));
  $("more-rooms").addEventListener("click", loadMoreRooms);
  $("new-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("new-room-name");
    input.value = input.value.trim();
    $("rooms-error").textContent = "";
    if (!input.value) return;
    // Checked here, before anything is listed or asked of the server.
    if (!validRoom(input.value)) {
      $("rooms-error").textContent = refusedName(input.value);
      input.focus();
      return;
    }
    joinRoom(input.value);
    input.value = "";
    setDrawer(false);
  });
  $("menu").addEventListener("click", () => setDrawer(!document.body.classList.contains("drawer-open")));
  $("drawer-close").addEventListener("click", () => setDrawer(false));
  $("scrim").addEventListener("click", () => setDrawer(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") setDrawer(false);
  });
  $("bell").addEventListener("click", (event) => {
    event.stopPropagation();
    toggleDropdown();
  });
  document.addEventListener("click", (event) => {
    if (!$("dropdown").contains(event.target)) toggleDropdown(false);
  });
  $("mark-all").addEventListener("click", () => markRead(null));
  for (const id of ["sign-out", "drawer-sign-out"]) {
    $(id).addEventListener("click", () => {
      localStorage.removeItem("hubbub.name");
      location.reload();
    });
  }
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("login-name");
    input.value = input.value.trim();
    if (!input.checkValidity()) {
      $("login-error").textContent = input.value
        ? `"${input.value}" cannot be a name: use 1-32 letters, digits, "-", "_" or ".".`
        : "Choose a name first.";
      input.focus();
      return;
    }
    try {
      await signIn(input.value);
      $("login").hidden = true;
      start();
    } catch (err) {
      $("login-error").textContent = humanError(err);
    }
  });

  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    state.token = fragment.get("token");
    state.user = userFromToken(state.token);
    start();
    return;
  }
  const saved = localStorage.getItem("hubbub.name");
  if (state.config.development && saved) {
    try {
      await signIn(saved);
      start();
      return;
    } catch {
      localStorage.removeItem("hubbub.name");
    }
  }
  setStatus({ state: "disconnected", reason: "not signed in" });
  $("status").textContent = "Signed out";
  showLogin();
}

main();
