"""Optional dependencies: the package's extras, and the one-line error when one is missing.

``pip install hubbub`` installs what the server needs with the memory engine and the SQLite
store, and what the Python client needs. The rest is optional, one extra each:

* ``redis``: the Redis engine (``engine = "redis"``);
* ``nats``: the NATS engine (``engine = "nats"``);
* ``postgres``: the PostgreSQL store (``[store] url = "postgresql://…"``);
* ``chat-cli``: the interactive terminal of ``hubbub chat``;
* ``crypto``: RSA and ECDSA connection tokens (``token.rsa_public_key``,
  ``token.ecdsa_public_key``);
* ``uvloop``: the faster event loop, which uvicorn serves on when it is installed;
* ``proxy``: the HTTP proxies to the application's backend (``[client.proxy.connect]``...);
* ``all``: every one of them.

Code that needs an extra imports its module where it is used, never at the top of a module
that is always loaded, and raises :class:`MissingExtra` when it is absent.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubbub.config import Settings

# Each extra: the module it installs, and what needs it (the start of the error message).
EXTRAS: dict[str, tuple[str, str]] = {
    "redis": ("redis", "the Redis engine"),
    "nats": ("nats", "the NATS engine"),
    "postgres": ("asyncpg", "the PostgreSQL store"),
    "chat-cli": ("prompt_toolkit", "the terminal chat"),
    "crypto": ("cryptography", "an RSA or ECDSA token key"),
    "uvloop": ("uvloop", "the uvloop event loop"),  # optional: uvicorn uses it when found
    "proxy": ("aiohttp", "a proxy to the backend"),
}


class MissingExtra(ImportError):
    """A feature was asked for whose extra is not installed.

    The message is one line naming the extra and the command that installs it, e.g.
    ``the Redis engine needs the redis extra: pip install 'hubbub[redis]'``.

    Attributes:
        extra: the extra's name (a key of :data:`EXTRAS`).
    """

    def __init__(self, extra: str) -> None:
        module, what = EXTRAS[extra]
        super().__init__(
            f"{what} needs the {extra} extra: pip install 'hubbub[{extra}]'", name=module
        )
        self.extra = extra


def installed(extra: str) -> bool:
    """Whether the module of ``extra`` can be imported (found; it is not imported here)."""
    return importlib.util.find_spec(EXTRAS[extra][0]) is not None


def require(extra: str) -> None:
    """Raise :class:`MissingExtra` unless ``extra`` is installed."""
    if not installed(extra):
        raise MissingExtra(extra)


def missing(extra: str, error: ImportError) -> ImportError:
    """What to raise for ``error``, caught importing the module of ``extra``: a
    :class:`MissingExtra` when that module itself is absent, else ``error`` unchanged (the
    extra is installed but something inside it failed to import, which the original says)."""
    module = EXTRAS[extra][0]
    name = error.name or ""
    if name == module or name.startswith(module + "."):
        return MissingExtra(extra)
    return error


def needed_by(settings: Settings) -> list[str]:
    """The extras ``settings`` need, in :data:`EXTRAS` order."""
    url = settings.store.url.strip()
    token = settings.token
    wanted = {
        "redis": settings.engine == "redis"
        or (settings.engine == "nats" and settings.nats.uses_redis),
        "nats": settings.engine == "nats",
        "postgres": url.startswith(("postgresql://", "postgres://")),
        "crypto": bool(token.rsa_public_key or token.ecdsa_public_key),
        "proxy": _uses_proxies(settings),
    }
    return [extra for extra in EXTRAS if wanted.get(extra)]


def _uses_proxies(settings: Settings) -> bool:
    client, rpc = settings.client.proxy, settings.rpc
    spaces = [settings.channel.without_namespace, *settings.channel.namespaces]
    return (
        client.connect.enabled
        or client.refresh.enabled
        or rpc.without_namespace.proxy_enabled
        or any(ns.proxy_enabled for ns in rpc.namespaces)
        or any(
            ns.subscribe_proxy_enabled or ns.publish_proxy_enabled or ns.sub_refresh_proxy_enabled
            for ns in spaces
        )
    )


def check(settings: Settings) -> None:
    """Raise :class:`MissingExtra` for the first extra ``settings`` need that is missing.

    The server checks this before it starts, so a configuration naming an engine or a store
    that is not installed fails at once with one line instead of a traceback at start-up.
    """
    for extra in needed_by(settings):
        require(extra)
