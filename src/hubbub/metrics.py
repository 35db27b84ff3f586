"""Prometheus metrics of a node, served at ``/metrics``.

The hot paths only bump plain counters (``node.counters``); this collector turns them, and the
node's current state, into Prometheus families when scraped. Counter names in
``node.counters`` are ``<kind>`` or ``<kind>.<label value>``. Each app has its own registry, so
several nodes can live in one process (tests, embedding). The registry also holds the standard
process metrics (``process_open_fds``, ``process_resident_memory_bytes``, ...) and the number
of asyncio tasks, which is what a leak shows up in first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hubbub.node import Node

# counter key prefix -> (metric name, help, label name or "" for unlabelled)
_COUNTERS: dict[str, tuple[str, str, str]] = {
    "publications": ("hubbub_publications", "Publications made through this node.", ""),
    "deliveries": ("hubbub_deliveries", "Publications queued to local subscribers.", ""),
    "connections": ("hubbub_connections_accepted", "Connections accepted.", "format"),
    "transport": (
        "hubbub_transport_connections",
        "Connections accepted on the HTTP streaming transports, by transport.",
        "transport",
    ),
    "emulation": (
        "hubbub_emulation_requests",
        "Emulation requests sent to the node holding the session (routed, route_failed).",
        "outcome",
    ),
    "disconnect": ("hubbub_disconnects", "Connections closed by the server, by code.", "code"),
    "reply_error": ("hubbub_reply_errors", "Error replies sent to clients, by code.", "code"),
    "bad_input": ("hubbub_bad_input", "Protocol violations from clients, by code.", "code"),
    "recovery": ("hubbub_recoveries", "Recovery outcomes (ok, failed, forced).", "outcome"),
    "engine": ("hubbub_engine_events", "Engine events (reconnects, reaped presence).", "event"),
    "handshake": ("hubbub_handshakes_refused", "Handshakes refused, by reason.", "reason"),
    "api": ("hubbub_api_rejections", "HTTP API requests rejected, by reason.", "reason"),
    "limit": (
        "hubbub_limit_closes",
        "Connections closed for going over a per-connection limit, by limit.",
        "limit",
    ),
    "chat_refused": ("hubbub_chat_refusals", "Chat requests refused, by reason.", "reason"),
}


class NodeCollector(Collector):
    """Collects one node's metrics at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        families: dict[str, CounterMetricFamily] = {}
        for key, value in sorted(node.counters.items()):
            kind, _, label = key.partition(".")
            spec = _COUNTERS.get(kind)
            if spec is None:
                continue
            name, doc, label_name = spec
            family = families.get(name)
            if family is None:
                family = CounterMetricFamily(name, doc, labels=[label_name] if label_name else [])
                families[name] = family
            family.add_metric([label] if label_name else [], value)
        yield from families.values()
        yield from node.proxies.client.stats.families()

        me, *peers = node.info()
        for name, doc, value in (
            ("hubbub_clients", "Connections on this node.", me.num_clients),
            ("hubbub_users", "Distinct users connected to this node.", me.num_users),
            ("hubbub_channels", "Channels with subscribers on this node.", me.num_channels),
            ("hubbub_subscriptions", "Subscriptions on this node.", me.num_subs),
            ("hubbub_engine_healthy", "1 when the engine is reachable.", int(node.broker.healthy)),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        cluster = GaugeMetricFamily(
            "hubbub_cluster_clients",
            "Connections of every node of the cluster (peers as last announced).",
            labels=["node"],
        )
        for info in (me, *peers):
            cluster.add_metric([info.name], info.num_clients)
        yield cluster
        yield GaugeMetricFamily(
            "hubbub_cluster_nodes", "Nodes heard from within node_lapse.", value=1 + len(peers)
        )
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:
            return  # scraped outside an event loop (a thread, a test): there is no task count
        yield GaugeMetricFamily(
            "hubbub_asyncio_tasks", "asyncio tasks alive in the serving event loop.", value=tasks
        )


def registry_for(node: Node) -> CollectorRegistry:
    """A registry holding ``node``'s collector and the process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    return registry
