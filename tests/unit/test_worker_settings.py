"""Settings validated a second time come out the same: with the command-line flags merged in
(``--port``, ``--dev``), and in the JSON ``hubbub serve --workers N`` hands to its workers.

An option written out that the user never set (the default ``[redis] url`` next to
``cluster_addresses`` or ``sentinel_addresses``) used to be refused there: ``--port`` and
``--workers`` did not start on a Redis Cluster or Sentinel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hubbub.commands.serve import settings_for_workers
from hubbub.config import Settings, load_settings

CONFIGS = {
    "one Redis": 'engine = "redis"\n[redis]\nurl = "redis://127.0.0.1:6390/0"\n',
    "cluster": 'engine = "redis"\n[redis]\ncluster_addresses = ["127.0.0.1:7000"]\n'
    'password = "secret"\n',
    "sentinel": 'engine = "redis"\n[redis]\nsentinel_addresses = ["127.0.0.1:26379"]\n'
    'sentinel_master_name = "main"\n',
    "nats on a cluster": 'engine = "nats"\n[nats]\nurl = "nats://127.0.0.1:4222"\n'
    '[redis]\ncluster_addresses = ["127.0.0.1:7000"]\n',
    "development, chat": 'development = true\nengine = "redis"\n[chat]\nenabled = true\n'
    '[redis]\ncluster_addresses = ["127.0.0.1:7000"]\n',
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_workers_rebuild_the_same_settings(name: str, tmp_path: Path) -> None:
    path = tmp_path / "hubbub.toml"
    path.write_text(CONFIGS[name])
    settings = load_settings(path, port=9123)
    rebuilt = Settings.model_validate_json(settings_for_workers(settings))
    assert rebuilt == settings
    assert rebuilt.port == 9123
