"""The hubbub Python client: one WebSocket connection that reconnects and recovers by itself.

Usage::

    async with hubbub.client.connect(url, token=...) as client:
        sub = await client.subscribe("chat:lobby")
        async for item in sub:
            ...

It speaks the JSON format of the client protocol, so it works with any Centrifugo-compatible
server. Behaviour on trouble:

* A dropped connection, a close code the protocol marks "reconnect", or silence longer than the
  server's ping interval plus ``max_ping_delay``: reconnect with exponential backoff and full
  jitter (``min_delay`` doubling up to ``max_delay``), then resubscribe every subscription with
  recovery from its position.
* A terminal close code (3500-3999, 4500-4999) or :meth:`Client.close`: disconnected for good;
  iterators raise :class:`ClientClosed`.
* An expiring token: refreshed through ``get_token`` before it expires; a connect answered with
  109 (token expired) fetches a new one and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from hubbub.client.events import ClientClosed, ReplyError, State
from hubbub.client.subscription import Subscription, SubState
from hubbub.protocol.codes import should_reconnect

log = logging.getLogger("hubbub.client")

TokenGetter = Callable[[], Awaitable[str]]

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Client:
    """A connection to a hubbub (or any Centrifugo-compatible) server.

    Args:
        url: the WebSocket endpoint, e.g. ``ws://127.0.0.1:8000/connection/websocket``.
        token: a connection JWT; ``get_token`` is asked when there is none or it expired.
        get_token: async callable returning a fresh connection token.
        timeout: seconds to wait for any reply.
        min_delay, max_delay: reconnect backoff bounds in seconds.
        max_ping_delay: extra seconds to wait for a server ping before reconnecting.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        get_token: TokenGetter | None = None,
        timeout: float = 5.0,
        min_delay: float = 0.1,
        max_delay: float = 10.0,
        max_ping_delay: float = 10.0,
        name: str = "hubbub-python",
    ) -> None:
        self.url = url
        self.token = token
        self.get_token = get_token
        self.timeout = timeout
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.max_ping_delay = max_ping_delay
        self.name = name
        self.state = State.DISCONNECTED
        self.client_id = ""
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._subs: dict[str, Subscription] = {}
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._was_connected = False
        self._closed: ClientClosed | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._refresh: asyncio.TimerHandle | None = None
        self._pong = False
        self.reconnects = 0
        self.last_error = ""
        """Why the last connection attempt failed ("connection refused", "server rejected
        WebSocket connection: HTTP 404"...), or empty."""
        self._failed = asyncio.Event()  # set when an attempt to connect fails
        self._listeners: list[Callable[[State], None]] = []

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    async def connect(self, *, retry: bool = True) -> None:
        """Start connecting and wait for the first successful connect.

        With ``retry`` (the default) failed attempts are retried with backoff until the
        ``timeout`` (twice over) runs out, and the client keeps trying in the background after
        that. Without it the first failed attempt ends it: the client is closed and
        :class:`ConnectionError` says why (:attr:`last_error`). Cancelling the caller (Ctrl-C
        under ``asyncio.run``) closes the client and leaves no task behind.

        Raises:
            ClientClosed: the server refused the connection for good (e.g. invalid token).
            ConnectionError: not ``retry``, and the attempt failed (refused, not a WebSocket
                endpoint, timed out).
            TimeoutError: no connection within ``timeout`` seconds (twice over).
        """
        if self._runner is None:
            self._closed = None
            self._runner = asyncio.create_task(self._run())
        self._failed.clear()
        waiter = asyncio.create_task(self._connected.wait())
        failed = asyncio.create_task(self._failed.wait())
        watched: set[asyncio.Future[Any]] = {waiter, self._runner}
        if not retry:
            watched.add(failed)
        try:
            done, _ = await asyncio.wait(
                watched, timeout=self.timeout * 2, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            await self._cancel_quietly(waiter, failed)
            await self.close()
            raise
        await self._cancel_quietly(waiter, failed)
        if waiter in done:
            return
        runner = self._runner
        if runner is not None and runner.done() and not runner.cancelled():
            error = runner.exception()  # an unusable URL, say: the loop cannot go on
            if error is not None:
                self._runner = None
                raise error
        if self._closed is not None:
            raise self._closed
        if failed in done:
            await self.close()
            raise ConnectionError(f"cannot connect to {self.url}: {self.last_error}")
        raise TimeoutError(f"could not connect to {self.url}")

    @staticmethod
    async def _cancel_quietly(*tasks: asyncio.Task[Any]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Disconnect for good; subscriptions' iterators raise :class:`ClientClosed`."""
        self._finish(ClientClosed(0, "closed by the client"))
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        if self._ws is not None:
            await self._ws.close()
        for task in list(self._tasks):
            task.cancel()

    def on_state(self, listener: Callable[[State], None]) -> None:
        """Call ``listener`` on every connection state change."""
        self._listeners.append(listener)

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            for listener in self._listeners:
                listener(state)

    def _finish(self, reason: ClientClosed) -> None:
        if self._closed is None:
            self._closed = reason
            self._set_state(State.DISCONNECTED)
            for sub in list(self._subs.values()):
                sub.on_closed(reason)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(reason)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except (ReplyError, ClientClosed, TimeoutError, ConnectionClosed) as exc:
                log.info("background client step failed: %s", exc)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -----------------------------------------------------------------------------------------
    # Connection loop

    async def _run(self) -> None:
        delay = self.min_delay
        while self._closed is None:
            self._set_state(State.CONNECTING)
            self._was_connected = False
            try:
                code, reason = await self._session()
            except (OSError, ConnectionClosed, TimeoutError, InvalidHandshake) as exc:
                # Refused, reset, timed out, or an answer that is not a WebSocket handshake
                # (a proxy's error page, a server restarting): all worth another try.
                code, reason = 1006, _describe(exc)
            except ClientClosed as exc:
                self._finish(exc)
                return
            finally:
                self._connected.clear()
                self._stop_timers()
                for sub in self._subs.values():
                    sub.on_disconnected()
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("connection lost"))
                self._pending.clear()
            if not should_reconnect(code) or self._closed is not None:
                self._finish(ClientClosed(code, reason))
                return
            if not self._was_connected:
                self.last_error = reason
                self._failed.set()
            # Listeners hear about the loss now, not after the backoff sleep: CONNECTING means
            # "not connected, trying again" (DISCONNECTED is final).
            self._set_state(State.CONNECTING)
            if self._was_connected:
                delay = self.min_delay  # a working connection ended: start the backoff over
            self.reconnects += 1
            wait = random.uniform(0, delay)  # full jitter
            log.info("reconnecting in %.2f s after %s %s", wait, code, reason)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.max_delay)

    async def _session(self) -> tuple[int, str]:
        """One connection: connect, resubscribe, read until it ends; its close code."""
        async with websockets.connect(
            self.url, max_size=None, compression=None, open_timeout=self.timeout
        ) as ws:
            self._ws = ws
            reader = asyncio.create_task(self._read(ws))
            try:
                await self._handshake()
                await reader
            except (ConnectionError, ConnectionClosed):
                pass  # the close code below tells what happened
            except ReplyError as exc:
                if exc.code == 109 and self.get_token is not None:
                    self.token = ""
                    return 3000, "token expired"  # reconnect with a fresh token
                if exc.temporary:
                    return 3004, exc.message
                raise ClientClosed(exc.code, exc.message) from None
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                self._ws = None
            rcvd = ws.protocol.close_rcvd
            return (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "connection lost")

    async def _handshake(self) -> None:
        if not self.token and self.get_token is not None:
            self.token = await self.get_token()
        request: dict[str, Any] = {"name": self.name}
        if self.token:
            request["token"] = self.token
        result = await self._call("connect", request)
        self.client_id = result.get("client", "")
        self._pong = bool(result.get("pong"))
        self._arm_watchdog(result.get("ping", 0))
        if result.get("expires"):
            self._arm_refresh(result.get("ttl", 0))
        server_side = result.get("subs") or {}
        for channel, sub_result in server_side.items():
            # Server-side subscriptions (the token's channels, the personal channel) are
            # iterable like any other: client.subscription("#alice").
            sub = self._subs.get(channel)
            if sub is None:
                sub = self._subs[channel] = Subscription(self, channel)
            sub.on_subscribed(sub_result)
        self._connected.set()
        self._was_connected = True
        self._set_state(State.CONNECTED)
        for sub in list(self._subs.values()):
            if sub.state is not SubState.UNSUBSCRIBED and sub.channel not in server_side:
                self._spawn(self._subscribe_now(sub))

    # -----------------------------------------------------------------------------------------
    # Timers: ping watchdog and token refresh

    def _stop_timers(self) -> None:
        for timer in (self._watchdog, self._refresh):
            if timer is not None:
                timer.cancel()
        self._watchdog = self._refresh = None

    def _arm_watchdog(self, ping: int) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._ping_interval = ping
        if ping > 0:
            self._watchdog = asyncio.get_running_loop().call_later(
                ping + self.max_ping_delay, self._no_ping
            )

    def _no_ping(self) -> None:
        log.info("no ping from the server: reconnecting")
        if self._ws is not None:
            self._ws.transport.abort()

    def _arm_refresh(self, ttl: int) -> None:
        if self.get_token is None:
            return
        # Refresh a little before expiry, with jitter so that many clients do not align.
        delay = max(ttl - min(5.0, ttl * 0.2) - random.uniform(0, 1), 0.1)
        self._refresh = asyncio.get_running_loop().call_later(
            delay, lambda: self._spawn(self._refresh_token())
        )

    async def _refresh_token(self) -> None:
        assert self.get_token is not None
        self.token = await self.get_token()
        result = await self._call("refresh", {"token": self.token})
        if result.get("expires"):
            self._arm_refresh(result.get("ttl", 0))

    # -----------------------------------------------------------------------------------------
    # Reading

    async def _read(self, ws: ClientConnection) -> None:
        try:
            await self._read_frames(ws)
        finally:
            # Commands waiting on this connection fail now, not after their timeout.
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost"))

    async def _read_frames(self, ws: ClientConnection) -> None:
        async for frame in ws:
            text = frame if isinstance(frame, str) else frame.decode()
            for line in text.split("\n"):
                if not line:
                    continue
                message = _decode(line)
                if not isinstance(message, dict):
                    continue
                msg_id = message.get("id", 0)
                if msg_id:
                    fut = self._pending.pop(msg_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(message)
                elif "push" in message:
                    self._on_push(message["push"])
                else:
                    self._arm_watchdog(self._ping_interval)
                    if self._pong:
                        await ws.send("{}")

    def _on_push(self, push: dict[str, Any]) -> None:
        sub = self._subs.get(push.get("channel", ""))
        if "pub" in push:
            if sub is None:
                return
            if sub.state is SubState.SUBSCRIBED:
                sub.on_publication(push["pub"])
            elif sub.state is SubState.SUBSCRIBING:
                sub.hold(push["pub"])
        elif "join" in push or "leave" in push:
            if sub is not None:
                joined = "join" in push
                sub.handle_join_leave(push["join" if joined else "leave"], joined)
        elif "unsubscribe" in push:
            if sub is not None:
                sub.on_unsubscribed(int(push["unsubscribe"].get("code", 0)))
        elif "subscribe" in push:
            channel = push.get("channel", "")
            if sub is None:
                sub = Subscription(self, channel)
                self._subs[channel] = sub
            sub.on_subscribed(push["subscribe"])
        elif "disconnect" in push and self._ws is not None:
            self._ws.transport.abort()

    # -----------------------------------------------------------------------------------------
    # Commands

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await ws.send(_encode({"id": msg_id, method: params}).decode())
        try:
            reply = await asyncio.wait_for(fut, self.timeout)
        finally:
            self._pending.pop(msg_id, None)
        if "error" in reply:
            err = reply["error"]
            raise ReplyError(err.get("code", 0), err.get("message", ""), bool(err.get("temporary")))
        result: dict[str, Any] = reply.get(method, {})
        return result

    async def _call_if_connected(self, method: str, params: dict[str, Any]) -> None:
        if self._ws is not None and self.state is State.CONNECTED:
            with contextlib.suppress(ReplyError, ConnectionError, TimeoutError, ConnectionClosed):
                await self._call(method, params)

    async def _ready(self) -> None:
        if self._closed is not None:
            raise self._closed
        await asyncio.wait_for(self._connected.wait(), self.timeout)

    async def _subscribe_now(self, sub: Subscription) -> None:
        try:
            result = await self._call("subscribe", sub.subscribe_request())
        except ReplyError as exc:
            if exc.code == 105:  # already subscribed server-side: keep going
                return
            if exc.temporary:
                await asyncio.sleep(random.uniform(self.min_delay, self.max_delay))
                self._spawn(self._subscribe_now(sub))
                return
            sub.on_closed(ClientClosed(exc.code, exc.message))
            self._forget(sub)
            return
        except (ConnectionError, ConnectionClosed, TimeoutError):
            return  # the reconnect resubscribes
        sub.on_subscribed(result)

    def _forget(self, sub: Subscription) -> None:
        if self._subs.get(sub.channel) is sub:
            del self._subs[sub.channel]

    # -----------------------------------------------------------------------------------------
    # Public API

    async def subscribe(
        self, channel: str, *, token: str = "", join_leave: bool = False, max_queue: int = 1000
    ) -> Subscription:
        """Subscribe to ``channel`` and wait for the server's confirmation.

        Raises:
            ReplyError: the server refused (e.g. 103 permission denied, 102 unknown channel).
        """
        if channel in self._subs:
            raise ValueError(f"already subscribed to {channel!r}")
        await self._ready()
        sub = Subscription(self, channel, token=token, join_leave=join_leave, max_queue=max_queue)
        sub.state = SubState.SUBSCRIBING
        self._subs[channel] = sub
        try:
            result = await self._call("subscribe", sub.subscribe_request())
        except BaseException:
            self._forget(sub)
            raise
        sub.on_subscribed(result)
        return sub

    def subscription(self, channel: str) -> Subscription | None:
        """The subscription of ``channel`` (including server-side ones), if any."""
        return self._subs.get(channel)

    async def publish(self, channel: str, data: Any) -> None:
        """Publish ``data`` (any JSON value) to ``channel``."""
        await self._ready()
        await self._call("publish", {"channel": channel, "data": data})

    async def presence(self, channel: str) -> dict[str, Any]:
        """Clients in ``channel`` by client id."""
        await self._ready()
        result = await self._call("presence", {"channel": channel})
        presence: dict[str, Any] = result.get("presence", {})
        return presence

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        """``(num_clients, num_users)`` of ``channel``."""
        await self._ready()
        result = await self._call("presence_stats", {"channel": channel})
        return int(result.get("num_clients", 0)), int(result.get("num_users", 0))

    async def history(
        self,
        channel: str,
        *,
        limit: int = 0,
        since: tuple[int, str] | None = None,
        reverse: bool = False,
    ) -> dict[str, Any]:
        """Read ``channel``'s stream: ``{"publications": [...], "offset": n, "epoch": e}``."""
        await self._ready()
        params: dict[str, Any] = {"channel": channel, "limit": limit, "reverse": reverse}
        if since is not None:
            params["since"] = {"offset": since[0], "epoch": since[1]}
        return await self._call("history", params)

    async def rpc(self, method: str, data: Any = None) -> Any:
        """Call a server RPC method; its reply data."""
        await self._ready()
        result = await self._call("rpc", {"method": method, "data": data})
        return result.get("data")


def _describe(exc: BaseException) -> str:
    """A failed connection attempt in words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code} instead of a WebSocket handshake"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


@asynccontextmanager
async def connect(
    url: str, *, token: str = "", get_token: TokenGetter | None = None, **options: Any
) -> AsyncIterator[Client]:
    """Connect, yield the client, and close it on exit. See :class:`Client` for ``options``."""
    client = Client(url, token=token, get_token=get_token, **options)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()
