"""The proxy settings (:mod:`hubbub.config_proxy`): Centrifugo's names, durations, and the
start-up errors of a configuration whose proxies do not add up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hubbub.config import ConfigError, load_settings
from hubbub.config_proxy import parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(1, 1), (0.25, 0.25), ("2", 2.0), ("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0)],
)
def test_timeouts_take_seconds_or_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_a_bad_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("1 second")


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "hubbub.toml"
    path.write_text(text)
    return load_settings(path)


def test_centrifugo_names_load(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
[client.proxy.connect]
enabled = true
endpoint = "http://127.0.0.1:9000/centrifugo/connect"
timeout = "1s"
http_headers = ["Cookie"]
http.static_headers = {X-A = "b"}

[channel.proxy.subscribe]
endpoint = "http://127.0.0.1:9000/sub"

[[channel.namespaces]]
name = "team"
subscribe_proxy_enabled = true
publish_proxy_enabled = true
publish_proxy_name = "pub"

[[proxies]]
name = "pub"
endpoint = "https://backend.example/publish"

[rpc]
namespace_boundary = "."

[rpc.without_namespace]
proxy_enabled = true
proxy_name = "pub"
""",
    )
    assert settings.client.proxy.connect.timeout == 1.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[client.proxy.connect]\nenabled = true\n", "client.proxy.connect.endpoint"),
        (
            '[[channel.namespaces]]\nname = "ns"\npublish_proxy_enabled = true\n',
            "namespace 'ns': publish_proxy_enabled needs channel.proxy.publish.endpoint",
        ),
        (
            '[rpc.without_namespace]\nproxy_enabled = true\nproxy_name = "nope"\n',
            "no [[proxies]] entry named 'nope'",
        ),
        ('[rpc.proxy]\nendpoint = "grpc://127.0.0.1:1"\n', "only http:// and https://"),
        ('[client.proxy.connect]\ntimeout = "soon"\n', "not a duration"),
        (
            '[[proxies]]\nname = "a"\nendpoint = "http://x"\n',
            "proxy name 'a'",
        ),
    ],
)
def test_inconsistent_proxies_fail_at_start_up(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as caught:
        load(tmp_path, text)
    assert message in str(caught.value)


def test_the_toml_of_docs_proxy_loads(tmp_path: Path) -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "proxy.md"
    blocks = re.findall(r"^```toml\n(.*?)^```", doc.read_text(), re.S | re.M)
    assert blocks
    for block in blocks:
        settings = load(tmp_path, block)
        assert settings.client.proxy.connect.enabled  # type: ignore[attr-defined]
