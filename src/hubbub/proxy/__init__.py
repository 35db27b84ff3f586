"""Centrifugo-compatible HTTP proxies to the application's backend, built on the hooks.

Connect, refresh, subscribe, publish, sub_refresh and RPC proxies send Centrifugo v6's
request bodies to the configured endpoints and apply their answers (``docs/proxy.md``):

* :mod:`hubbub.proxy.wire`: the request and response bodies;
* :mod:`hubbub.proxy.client`: the node's pooled HTTP client, bounded requests, metrics;
* :mod:`hubbub.proxy.hooks`: each proxy as a hook implementation (:class:`Proxies`).

The node installs them from its settings before the application registers its own hooks, so
a proxy decides before the application's hooks of the same kind.
"""

from __future__ import annotations

from hubbub.proxy.hooks import Proxies

__all__ = ["Proxies"]
