"""Chat rooms: an archive in the store, live delivery through a room channel."""

from hubbub.apps.chat.service import ChatService, RoomPage, RoomView, message_view

__all__ = ["ChatService", "RoomPage", "RoomView", "message_view"]
