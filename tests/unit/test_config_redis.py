"""``[redis]`` with Sentinel: the options, and the start-up errors that name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubbub.config import ConfigError, load_settings
from hubbub.config_redis import parse_address

SENTINELS = '[redis]\nsentinel_addresses = ["127.0.0.1:26379", "[::1]:26380"]\n'


def test_sentinel_settings(tmp_path: Path) -> None:
    path = tmp_path / "hubbub.toml"
    path.write_text(
        'engine = "redis"\n' + SENTINELS + 'sentinel_master_name = "mymaster"\n'
        'sentinel_password = "s"\npassword = "m"\ndb = 2\n'
    )
    redis = load_settings(path).redis
    assert redis.sentinel and redis.sentinel_master_name == "mymaster"
    assert [parse_address(a) for a in redis.sentinel_addresses] == [
        ("127.0.0.1", 26379),
        ("::1", 26380),
    ]
    assert not load_settings().redis.sentinel


async def test_the_factory_finds_the_master_through_the_sentinels(tmp_path: Path) -> None:
    from hubbub.clock import SystemClock
    from hubbub.engines.factory import engine_from_settings
    from hubbub.engines.redis_sentinel import SentinelConnector

    path = tmp_path / "hubbub.toml"
    path.write_text('engine = "redis"\n' + SENTINELS + 'sentinel_master_name = "mymaster"\n')
    broker, presence = engine_from_settings(load_settings(path), SystemClock())
    target = broker._url  # type: ignore[attr-defined]
    assert isinstance(target, SentinelConnector) and target.master_name == "mymaster"
    await presence.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        (SENTINELS + 'url = "redis://10.0.0.5:6379/0"\nsentinel_master_name = "m"',
         "either url/urls or sentinel_addresses"),
        (SENTINELS + 'urls = ["redis://a:6379/0"]\nsentinel_master_name = "m"',
         "either url/urls or sentinel_addresses"),
        (SENTINELS, "sentinel_addresses needs sentinel_master_name"),
        ('[redis]\nsentinel_master_name = "m"', "sentinel_master_name needs sentinel_addresses"),
        ('[redis]\nsentinel_addresses = ["nohost"]\nsentinel_master_name = "m"',
         "'nohost' is not host:port"),
        ('[redis]\nsentinel_addresses = ["h:99999"]\nsentinel_master_name = "m"',
         "is not host:port"),
        ('[redis]\npassword = "p"', "put them in the URL"),
    ],
)  # fmt: skip
def test_errors_name_the_option(tmp_path: Path, toml: str, names: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as exc_info:
        load_settings(path)
    assert names in str(exc_info.value)
