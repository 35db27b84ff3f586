"""Channel names and who may do what in them.

A channel name is ``[private prefix][namespace<boundary>]name[#user,user…]``:
``chat:lobby`` is in namespace ``chat``; ``$chat:vip`` is private (a subscription token is the
only way in); ``dialog:#alice,bob`` is limited to alice and bob; ``#alice`` is alice's personal
channel. Every check raises the protocol error a client should get, in a fixed order: 107 bad
name, 102 unknown namespace, 108 feature off, 103 not allowed.
"""

from __future__ import annotations

from hubbub.config import ChannelOptions, Settings
from hubbub.protocol.codes import DisconnectCode, ErrorCode, disconnect, error


class ChannelRules:
    """Parses channel names and applies namespace permissions for one configuration."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._channel = settings.channel

    # -----------------------------------------------------------------------------------------
    # Names

    def validate(self, channel: str) -> None:
        """Check a channel name.

        Raises:
            Disconnect: 3501 for an empty name (a client bug, not a user error).
            ProtocolError: 107 when longer than ``max_length`` or not printable ASCII.
        """
        if not channel:
            raise disconnect(DisconnectCode.BAD_REQUEST, "bad request: empty channel")
        if len(channel) > self._channel.max_length or not (
            channel.isascii() and channel.isprintable()
        ):
            raise error(ErrorCode.BAD_REQUEST)

    def is_private(self, channel: str) -> bool:
        prefix = self._channel.private_prefix
        return bool(prefix) and channel.startswith(prefix)

    def namespace_of(self, channel: str) -> str:
        """The namespace name ("" for channels without one)."""
        if self.is_private(channel):
            channel = channel[len(self._channel.private_prefix) :]
        # A boundary inside the user-limited part does not start a namespace.
        head = channel.split(self._channel.user_boundary, 1)[0]
        name, sep, _ = head.partition(self._channel.namespace_boundary)
        return name if sep else ""

    def options(self, channel: str) -> ChannelOptions:
        """The options of ``channel``'s namespace.

        Raises:
            ProtocolError: 102 when the namespace is not configured.
        """
        opts = self._settings.namespace(self.namespace_of(channel))
        if opts is None:
            raise error(ErrorCode.UNKNOWN_CHANNEL)
        return opts

    def user_limited_users(self, channel: str) -> frozenset[str] | None:
        """The users a ``name#a,b`` channel is limited to, or None when it is not limited."""
        boundary = self._channel.user_boundary
        if boundary not in channel:
            return None
        users = channel.rsplit(boundary, 1)[1]
        return frozenset(u for u in users.split(self._channel.user_separator) if u)

    def is_user_allowed(self, channel: str, user: str) -> bool:
        """Whether ``user`` may join ``channel`` through its user list."""
        users = self.user_limited_users(channel)
        if users is None or not user or user not in users:
            return False
        opts = self._settings.namespace(self.namespace_of(channel))
        return opts is not None and opts.allow_user_limited_channels

    def personal_channel(self, user: str) -> str:
        """The personal channel of ``user``: ``#user`` or ``<namespace>:#user``."""
        ns = self._settings.client.personal_channel_namespace
        channel = f"{self._channel.user_boundary}{user}"
        return f"{ns}{self._channel.namespace_boundary}{channel}" if ns else channel

    # -----------------------------------------------------------------------------------------
    # Permissions

    def _resolve(self, channel: str) -> ChannelOptions:
        self.validate(channel)
        return self.options(channel)

    def check_subscribe(
        self, channel: str, user: str, *, has_valid_token: bool, insecure: bool = False
    ) -> ChannelOptions:
        """Whether ``user`` may subscribe; the channel's options if so.

        A valid subscription token always admits; private channels admit nothing else. A
        channel with a user list (``name#alice,bob``, and personal channels ``#alice``) admits
        only the users listed, and only where the namespace allows user-limited channels:
        never through the general options, not even in development mode, so no one reads
        another user's channels. Otherwise ``allow_subscribe_for_client`` (plus
        ``allow_subscribe_for_anonymous`` for the anonymous user), or development mode.
        """
        opts = self._resolve(channel)
        if has_valid_token:
            return opts
        if self.is_private(channel):
            raise error(ErrorCode.PERMISSION_DENIED)
        if self.user_limited_users(channel) is not None:
            if self.is_user_allowed(channel, user):
                return opts
            raise error(ErrorCode.PERMISSION_DENIED)
        if insecure:
            return opts
        if opts.allow_subscribe_for_client and (user or opts.allow_subscribe_for_anonymous):
            return opts
        raise error(ErrorCode.PERMISSION_DENIED)

    def _permit(
        self,
        opts: ChannelOptions,
        channel: str,
        action: str,
        user: str,
        *,
        subscribed: bool,
        insecure: bool,
    ) -> ChannelOptions:
        """Apply ``allow_<action>_for_client``/``_for_subscriber``/``_for_anonymous``; in a
        channel with a user list, only the users listed get that far."""
        users = self.user_limited_users(channel)
        if users is not None and user not in users:
            raise error(ErrorCode.PERMISSION_DENIED)
        allowed = getattr(opts, f"allow_{action}_for_client") or (
            subscribed and getattr(opts, f"allow_{action}_for_subscriber")
        )
        anonymous_ok = bool(user) or getattr(opts, f"allow_{action}_for_anonymous")
        if insecure or (allowed and anonymous_ok):
            return opts
        raise error(ErrorCode.PERMISSION_DENIED)

    def check_publish(
        self, channel: str, user: str, *, subscribed: bool, insecure: bool = False
    ) -> ChannelOptions:
        """Whether ``user`` may publish from a client connection. Development mode opens every
        channel except the chat's rooms: their messages go through the chat service, which
        stores them first, so a client's own publication there would bypass the archive."""
        opts = self._resolve(channel)
        chat = self._settings.chat
        if insecure and chat.enabled and self.namespace_of(channel) == chat.namespace:
            insecure = False
        return self._permit(
            opts, channel, "publish", user, subscribed=subscribed, insecure=insecure
        )

    def check_presence(
        self, channel: str, user: str, *, subscribed: bool, insecure: bool = False
    ) -> ChannelOptions:
        """Whether ``user`` may read presence (108 when presence is off)."""
        opts = self._resolve(channel)
        if not opts.presence:
            raise error(ErrorCode.NOT_AVAILABLE)
        return self._permit(
            opts, channel, "presence", user, subscribed=subscribed, insecure=insecure
        )

    def check_history(
        self, channel: str, user: str, *, subscribed: bool, insecure: bool = False
    ) -> ChannelOptions:
        """Whether ``user`` may read history (108 when the channel keeps none)."""
        opts = self._resolve(channel)
        if not opts.use_history:
            raise error(ErrorCode.NOT_AVAILABLE)
        return self._permit(
            opts, channel, "history", user, subscribed=subscribed, insecure=insecure
        )
