"""Settings: TOML file, environment, flags, and errors that name the option."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hubbub.config import DEV_SECRET, ConfigError, Settings, load_settings


def test_defaults() -> None:
    settings = load_settings()
    assert settings.port == 8000 and settings.engine == "memory"
    assert settings.client.ping_interval == 25 and settings.client.pong_timeout == 8
    assert settings.client.max_message_size == 65536
    assert settings.namespace("") is settings.channel.without_namespace
    assert settings.namespace("nope") is None


def test_toml_env_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hubbub.toml"
    path.write_text(
        'port = 9001\nname = "from-file"\n[client]\nping_interval = 12\n'
        '[[channel.namespaces]]\nname = "chat"\npresence = true\n'
    )
    monkeypatch.setenv("HUBBUB_NAME", "from-env")
    monkeypatch.setenv("HUBBUB_TOKEN__HMAC_SECRET_KEY", "s3cret-s3cret-s3cret-s3cret-s3cret")
    settings = load_settings(path, port=9100)
    assert settings.port == 9100  # flag beats file
    assert settings.name == "from-env"  # environment beats file
    assert settings.client.ping_interval == 12
    assert settings.token.hmac_secret_key == "s3cret-s3cret-s3cret-s3cret-s3cret"
    chat = settings.namespace("chat")
    assert chat is not None and chat.presence


def test_env_json_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBBUB_CHANNEL__NAMESPACES", '[{"name": "news", "join_leave": true}]')
    news = load_settings().namespace("news")
    assert news is not None and news.join_leave


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("prot = 1", "prot"),
        ("port = 70000", "port"),
        ("[client]\nping_interval = 5\npong_timeout = 8", "pong_timeout"),
        ("[channel.without_namespace]\nhistory_size = 10", "history_ttl"),
        ('[[channel.namespaces]]\nname = "a b"', "namespace name"),
        ('[[channel.namespaces]]\nname = "x1"\n[[channel.namespaces]]\nname = "x1"', "twice"),
        ('[token]\nalgorithms = ["none"]', "none"),
        ("[channel.without_namespace]\nforce_recovery = true", "recovery needs history"),
        ("announce_interval = 2\nnode_lapse = 3", "node_lapse"),
        ("[redis]\npool_size = 1", "pool_size"),
        ("[redis]\npool_timeout = 0", "pool_timeout"),
    ],
)
def test_errors_name_the_option(tmp_path: Path, toml: str, names: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as exc_info:
        load_settings(path)
    assert names in str(exc_info.value)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_development_mode_secret() -> None:
    assert Settings(development=True).token.hmac_secret_key == DEV_SECRET
    configured = Settings(development=True, token={"hmac_secret_key": "m" * 32})
    assert configured.token.hmac_secret_key == "m" * 32
    assert Settings().token.hmac_secret_key == ""


def test_short_hmac_keys_are_taken_unless_strong_keys_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(token={"hmac_secret_key": "short"}).token.hmac_secret_key == "short"
    monkeypatch.setenv("HUBBUB_TOKEN__HMAC_SECRET_KEY", "short")
    monkeypatch.setenv("HUBBUB_TOKEN__REQUIRE_STRONG_KEYS", "true")
    with pytest.raises(ConfigError, match="require_strong_keys") as refused:
        load_settings()
    assert "hmac_secret_key" in str(refused.value) and "short" not in str(refused.value)
    monkeypatch.setenv("HUBBUB_TOKEN__HMAC_SECRET_KEY", "k" * 32)
    assert load_settings().token.require_strong_keys


def test_the_sqlite_archive_lives_next_to_the_configuration(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    bare = folder / "bare.toml"
    bare.write_text("port = 9000\n")
    assert load_settings(bare).store.url == f"sqlite:///{folder / 'hubbub.db'}"
    named = folder / "named.toml"
    named.write_text('[store]\nurl = "sqlite:///data/chat.db"\n')
    assert load_settings(named).store.url == f"sqlite:///{folder / 'data' / 'chat.db'}"
    absolute = folder / "absolute.toml"
    absolute.write_text('[store]\nurl = "sqlite:////srv/chat.db"\n')
    assert load_settings(absolute).store.url == "sqlite:////srv/chat.db"
    memory = folder / "memory.toml"
    memory.write_text('[store]\nurl = "sqlite:///:memory:"\n')
    assert load_settings(memory).store.url == "sqlite:///:memory:"
    assert load_settings().store.url == "sqlite:///hubbub.db"  # no file: the working directory


def test_the_listen_backlog_reaches_uvicorn() -> None:
    from hubbub.transports.serving import uvicorn_options

    assert uvicorn_options(Settings())["backlog"] == 4096
    assert uvicorn_options(Settings(listen_backlog=16384))["backlog"] == 16384
    with pytest.raises(ValidationError):
        Settings(listen_backlog=0)
