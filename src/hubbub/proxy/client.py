"""One pooled HTTP client per node for the proxies: a bounded POST, and its metrics.

aiohttp was chosen by measurement (``benchmarks/proxy_client.py``: on loopback against a
trivial backend, 50 requests at a time, aiohttp made about 20 times the requests per second
of httpx at a tenth of its p99). It is imported on first use: the ``proxy`` extra.

Every failure (timeout, refused or reset connection, a status other than 200 that no
``http.status_to_code_transforms`` entry remaps, a body that is not the expected JSON) raises
:class:`ProxyFailed` after being counted; the hooks turn it into the documented result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from hubbub.config_proxy import ProxySettings
from hubbub.extras import missing
from hubbub.hook_types import Handshake
from hubbub.proxy import wire

if TYPE_CHECKING:
    import aiohttp
    from prometheus_client.core import Metric

log = logging.getLogger("hubbub.proxy")

T = TypeVar("T")

MAX_BODY = 4 * 1024 * 1024
"""Bytes a backend's answer may take; more is a failure (``too_large``)."""

LOG_EVERY = 10.0
"""Seconds between two log lines of failures of one proxy kind (all are counted)."""

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the latency histogram."""


class ProxyFailed(Exception):
    """The backend gave no usable answer; ``reason`` is the metrics label (``timeout``,
    ``network``, ``status``, ``too_large``, ``decode``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class ProxyStats:
    """Latency histogram and failures, by proxy kind (``connect``, ``refresh``,
    ``subscribe``, ``publish``, ``sub_refresh``, ``rpc``)."""

    def __init__(self) -> None:
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}
        self.errors: Counter[tuple[str, str]] = Counter()

    def observe(self, kind: str, seconds: float) -> None:
        counts = self.buckets.get(kind)
        if counts is None:
            counts = self.buckets[kind] = [0] * (len(BUCKETS) + 1)
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.sums[kind] = self.sums.get(kind, 0.0) + seconds

    def families(self) -> Iterator[Metric]:
        """``hubbub_proxy_request_duration_seconds`` and ``hubbub_proxy_errors``."""
        if not self.buckets and not self.errors:
            return
        # Imported here: only a node serving /metrics needs the Prometheus client loaded.
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        latency = HistogramMetricFamily(
            "hubbub_proxy_request_duration_seconds",
            "Requests to the proxy backends, by proxy kind (failures included).",
            labels=["kind"],
        )
        for kind, counts in sorted(self.buckets.items()):
            cumulative, total = [], 0
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                total += count
                cumulative.append((_bound(bound), total))
            latency.add_metric([kind], cumulative, self.sums[kind])
        yield latency
        errors = CounterMetricFamily(
            "hubbub_proxy_errors",
            "Proxy requests without a usable answer, by kind and reason.",
            labels=["kind", "reason"],
        )
        for (kind, reason), value in sorted(self.errors.items()):
            errors.add_metric([kind, reason], value)
        yield errors


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def outgoing_headers(proxy: ProxySettings, handshake: Handshake) -> list[tuple[str, str]]:
    """The headers of a proxy request, later sources winning: ``http.static_headers``, the
    client's emulated headers listed in ``emulated_headers``, the opening request's headers
    listed in ``http_headers`` (every value), then ``Content-Type: application/json``."""
    found: dict[str, list[tuple[str, str]]] = {}
    for name, value in proxy.http.static_headers.items():
        found[name.lower()] = [(name, value)]
    wanted = {name.lower() for name in proxy.emulated_headers}
    for name, value in handshake.emulated:
        if name.lower() in wanted:
            found[name.lower()] = [(name, value)]
    wanted = {name.lower() for name in proxy.http_headers}
    transport: dict[str, list[tuple[str, str]]] = {}
    for name, value in handshake.headers:
        if name in wanted:
            transport.setdefault(name, []).append((name, value))
    found.update(transport)
    found["content-type"] = [("Content-Type", "application/json")]
    return [pair for pairs in found.values() for pair in pairs]


class ProxyClient:
    """The node's HTTP client for its proxies (made on first use, closed with the node)."""

    def __init__(self) -> None:
        self.stats = ProxyStats()
        self._http: aiohttp.ClientSession | None = None
        self._logged: dict[str, float] = {}

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            try:
                import aiohttp
            except ImportError as exc:
                raise missing("proxy", exc) from None
            # One pool for every proxy of the node; timeouts are per request.
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=60),
                auto_decompress=True,
                raise_for_status=False,
            )
        return self._http

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def post(
        self,
        kind: str,
        proxy: ProxySettings,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        decoder: msgspec.json.Decoder[wire.Response[T]],
    ) -> wire.Response[T]:
        """POST ``body`` to ``proxy``'s endpoint and decode the answer with ``decoder``.

        A non-200 status that ``http.status_to_code_transforms`` remaps comes back as a
        response holding that error or disconnect.

        Raises:
            ProxyFailed: timeout, network error, other status, answer too large or not
                decodable (counted in :attr:`stats`).
        """
        session = self._session()
        start = time.perf_counter()
        try:
            status, content = await asyncio.wait_for(
                self._exchange(session, proxy.endpoint, headers, body), proxy.timeout
            )
        except TimeoutError:
            raise self._failed(kind, "timeout", f"no answer in {proxy.timeout} s") from None
        except ProxyFailed as exc:
            raise self._failed(kind, exc.reason, str(exc)) from None
        except Exception as exc:  # aiohttp.ClientError, OSError: the backend is unreachable
            raise self._failed(kind, "network", f"{type(exc).__name__}: {exc}") from None
        finally:
            self.stats.observe(kind, time.perf_counter() - start)
        if status != 200:
            for rule in proxy.http.status_to_code_transforms:
                if rule.status_code == status:
                    return _transformed(rule.to_error, rule.to_disconnect)
            raise self._failed(kind, "status", f"HTTP {status}")
        try:
            return decoder.decode(content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self._failed(kind, "decode", str(exc)) from None

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> tuple[int, bytes]:
        async with session.post(url, data=body, headers=list(headers)) as response:
            if response.status != 200:
                return response.status, b""
            chunks, size = [], 0
            async for chunk in response.content.iter_chunked(65536):
                size += len(chunk)
                if size > MAX_BODY:
                    raise ProxyFailed("too_large", f"answer over {MAX_BODY} bytes")
                chunks.append(chunk)
            return 200, b"".join(chunks)

    def _failed(self, kind: str, reason: str, detail: str) -> ProxyFailed:
        self.stats.errors[(kind, reason)] += 1
        # Counted every time, logged at most once per kind and LOG_EVERY seconds: a backend
        # outage must not become a line per client's retry.
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY) >= LOG_EVERY:
            self._logged[kind] = now
            log.warning("%s proxy failed: %s: %s", kind, reason, detail)
        return ProxyFailed(reason, detail)


def _transformed(to_error: Any, to_disconnect: Any) -> wire.Response[Any]:
    if to_error is not None:
        return wire.Response(error=wire.Error(to_error.code, to_error.message, to_error.temporary))
    return wire.Response(disconnect=wire.Disconnect(to_disconnect.code, to_disconnect.reason))
