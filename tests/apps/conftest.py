"""Fixtures of the application tests: a hub with the chat and notification services on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from hubbub.config import Settings
from hubbub.testing import TEST_SECRET, Hub, run_hub
from tests.conftest import API_KEY


def app_settings(**overrides: Any) -> Settings:
    """Development mode (the chat's default namespace, every feature on), a known secret, an
    API key, and an in-memory store unless ``store`` says otherwise."""
    data: dict[str, Any] = {
        "development": True,
        "token": {"hmac_secret_key": TEST_SECRET},
        "http_api": {"key": API_KEY},
        "store": {"url": "sqlite:///:memory:"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings(**data)


@pytest.fixture
async def app_hub() -> AsyncIterator[Hub]:
    """A running hub with :func:`app_settings`."""
    async with run_hub(app_settings()) as hub:
        yield hub
