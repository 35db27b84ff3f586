"""The Redis engine: broker and presence shared by every node connected to the same Redis.

Importing this module raises :class:`~hubbub.extras.MissingExtra` when the ``redis`` extra is
not installed. The engine lives in modules of one concept each; this one gathers their public
names:

* :mod:`.redis_client`: the pooled client and the guard that turns an unreachable Redis into
  the engine's temporary error;
* :mod:`.redis_scripts`: the key layout and the Lua scripts;
* :mod:`.redis_codec`: how publications and client infos are packed;
* :mod:`.redis_broker`: :class:`RedisBroker`;
* :mod:`.redis_presence`: :class:`RedisPresenceManager`.
"""

from __future__ import annotations

from hubbub.engines.redis_broker import RedisBroker
from hubbub.engines.redis_client import POOL_SIZE, POOL_TIMEOUT
from hubbub.engines.redis_codec import pack_publication, unpack_publication
from hubbub.engines.redis_presence import RedisPresenceManager

__all__ = [
    "POOL_SIZE",
    "POOL_TIMEOUT",
    "RedisBroker",
    "RedisPresenceManager",
    "pack_publication",
    "unpack_publication",
]
