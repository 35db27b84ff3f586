"""Notifications: per-user inboxes in the store, pushed live on each user's personal channel."""

from hubbub.apps.notify.service import NotificationService, notification_view

__all__ = ["NotificationService", "notification_view"]
