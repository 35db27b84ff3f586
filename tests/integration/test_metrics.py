"""``/metrics`` in the Prometheus text format, parsed with prometheus-client's own parser."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningServer, suite_settings
from tests.integration.test_bad_input import close_code, connect_ws, open_ws


async def scrape(http_base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=http_base) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_follow_traffic(server: RunningServer) -> None:
    ws = await connect_ws(server, "alice")
    await ws.send('{"id": 2, "subscribe": {"channel": "news"}}')
    await ws.recv()
    await server.node.publish("news", {"n": 1})
    await ws.recv()
    bad = await open_ws(server)
    await bad.send("not json")
    assert await close_code(bad) == 3501
    samples = await scrape(server.http)
    assert samples[("hubbub_clients", ())] == 1
    assert samples[("hubbub_subscriptions", ())] == 2  # news and the personal channel
    assert samples[("hubbub_publications_total", ())] >= 1
    assert samples[("hubbub_deliveries_total", ())] >= 1
    assert samples[("hubbub_connections_accepted_total", (("format", "json"),))] == 2
    assert samples[("hubbub_bad_input_total", (("code", "3501"),))] == 1
    assert samples[("hubbub_disconnects_total", (("code", "3501"),))] == 1
    assert samples[("hubbub_engine_healthy", ())] == 1
    assert samples[("hubbub_cluster_nodes", ())] == 1
    # The process itself: what the soak script watches for leaks.
    assert samples[("process_open_fds", ())] > 0
    assert samples[("process_resident_memory_bytes", ())] > 10 * 2**20
    assert samples[("hubbub_asyncio_tasks", ())] >= 1  # at least the one answering /metrics
    await ws.close()


async def test_metrics_see_every_node(start_server: Any, redis_url: str) -> None:
    import asyncio
    import uuid

    settings = suite_settings(
        engine="redis", redis={"url": redis_url, "prefix": f"m-{uuid.uuid4().hex[:8]}"}
    )
    first = await start_server(settings)
    second = await start_server(settings)
    for _ in range(100):
        if len(first.node.info()) == 2:
            break
        await asyncio.sleep(0.02)
    samples = await scrape(first.http)
    assert samples[("hubbub_cluster_nodes", ())] == 2
    names = {labels[0][1] for (name, labels) in samples if name == "hubbub_cluster_clients"}
    assert names == {first.node.name, second.node.name}
