"""The web pages ``hubbub serve`` shows: the chat with its notification bell."""

from hubbub.web.pages import page_routes

__all__ = ["page_routes"]
