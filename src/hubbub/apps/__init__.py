"""The applications built on the node: chat rooms and notification inboxes.

Both keep their durable state in a :class:`~hubbub.store.Store` and use only the node's public
API (publish, presence, RPC handlers, subscribe checks) for everything live, so they work the
same on one process and on many over Redis.
"""
