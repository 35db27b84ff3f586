"""The server API: publish and control a hubbub node from any backend over HTTP."""

from hubbub.api.methods import ServerAPI

__all__ = ["ServerAPI"]
