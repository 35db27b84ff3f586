"""Channel names and permissions, with the protocol codes a client gets."""

from __future__ import annotations

from typing import Any

import pytest

from hubbub.channels import ChannelRules
from hubbub.config import Settings
from hubbub.protocol.codes import Disconnect, ProtocolError


def rules(**client: Any) -> ChannelRules:
    return ChannelRules(
        Settings(
            client=client,
            channel={
                "without_namespace": {"allow_subscribe_for_client": True},
                "namespaces": [
                    {
                        "name": "chat",
                        "presence": True,
                        "history_size": 5,
                        "history_ttl": 60,
                        "allow_subscribe_for_client": True,
                        "allow_subscribe_for_anonymous": True,
                        "allow_publish_for_subscriber": True,
                        "allow_presence_for_subscriber": True,
                        "allow_history_for_client": True,
                    },
                    {"name": "dm", "allow_user_limited_channels": True},
                    {"name": "closed"},
                ],
            },
        )
    )


def code(call: Any, *args: Any, **kwargs: Any) -> int:
    with pytest.raises(ProtocolError) as exc_info:
        call(*args, **kwargs)
    return exc_info.value.code


def test_names() -> None:
    r = rules()
    assert r.namespace_of("chat:lobby") == "chat"
    assert r.namespace_of("$chat:vip") == "chat"
    assert r.namespace_of("lobby") == ""
    assert r.namespace_of("#alice") == ""
    assert r.namespace_of("dm:#a,b") == "dm"
    assert r.is_private("$chat:vip") and not r.is_private("chat:vip")
    assert r.user_limited_users("dm:#alice,bob") == frozenset({"alice", "bob"})
    assert r.user_limited_users("chat:lobby") is None


def test_validate() -> None:
    r = rules()
    with pytest.raises(Disconnect) as exc_info:
        r.validate("")
    assert exc_info.value.code == 3501
    assert code(r.validate, "x" * 256) == 107
    assert code(r.validate, "caf\u00e9") == 107
    assert code(r.validate, "a\tb") == 107
    r.validate("x" * 255)


def test_unknown_namespace() -> None:
    assert code(rules().options, "nope:x") == 102


def test_personal_channel() -> None:
    assert rules().personal_channel("alice") == "#alice"
    assert rules(personal_channel_namespace="chat").personal_channel("al") == "chat:#al"


def test_subscribe_permissions() -> None:
    r = rules()
    assert r.check_subscribe("chat:x", "alice", has_valid_token=False).presence
    assert r.check_subscribe("chat:x", "", has_valid_token=False)
    assert code(r.check_subscribe, "lobby", "", has_valid_token=False) == 103  # anonymous
    assert r.check_subscribe("lobby", "bob", has_valid_token=False) is not None
    assert code(r.check_subscribe, "closed:x", "bob", has_valid_token=False) == 103
    assert r.check_subscribe("closed:x", "bob", has_valid_token=True) is not None
    assert r.check_subscribe("closed:x", "bob", has_valid_token=False, insecure=True)
    assert code(r.check_subscribe, "$chat:vip", "bob", has_valid_token=False) == 103
    assert code(r.check_subscribe, "$chat:vip", "bob", has_valid_token=False, insecure=True) == 103
    assert code(r.check_subscribe, "nope:x", "bob", has_valid_token=True) == 102
    assert code(r.check_subscribe, "x" * 300, "bob", has_valid_token=True) == 107


def test_user_limited() -> None:
    r = rules()
    assert r.check_subscribe("dm:#alice,bob", "alice", has_valid_token=False) is not None
    assert code(r.check_subscribe, "dm:#alice,bob", "eve", has_valid_token=False) == 103
    assert code(r.check_subscribe, "dm:#alice,bob", "", has_valid_token=False) == 103
    # Namespaces without the option do not honour user lists.
    assert code(r.check_subscribe, "closed:#alice", "alice", has_valid_token=False) == 103


def test_publish_presence_history() -> None:
    r = rules()
    assert code(r.check_publish, "chat:x", "a", subscribed=False) == 103
    assert r.check_publish("chat:x", "a", subscribed=True) is not None
    assert code(r.check_publish, "chat:x", "", subscribed=True) == 103  # anonymous
    assert code(r.check_presence, "lobby", "a", subscribed=True) == 108
    assert code(r.check_presence, "chat:x", "a", subscribed=False) == 103
    assert r.check_presence("chat:x", "a", subscribed=True) is not None
    assert code(r.check_history, "lobby", "a", subscribed=True) == 108
    assert r.check_history("chat:x", "a", subscribed=False) is not None
    assert code(r.check_history, "chat:x", "", subscribed=False) == 103
    assert r.check_history("chat:x", "", subscribed=False, insecure=True) is not None


def test_user_lists_protect_personal_channels_everywhere() -> None:
    r = ChannelRules(
        Settings(
            channel={
                "without_namespace": {
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_client": True,
                    "allow_history_for_client": True,
                    "presence": True,
                    "allow_presence_for_client": True,
                    "history_size": 10,
                    "history_ttl": 60,
                }
            }
        )
    )
    # Open channels are open, but no one else's personal channel is, not even in dev mode.
    assert r.check_subscribe("lobby", "alice", has_valid_token=False) is not None
    for insecure in (False, True):
        assert (
            code(r.check_subscribe, "#bob", "alice", has_valid_token=False, insecure=insecure)
            == 103
        )
        assert code(r.check_publish, "#bob", "alice", subscribed=False, insecure=insecure) == 103
        assert code(r.check_history, "#bob", "alice", subscribed=False, insecure=insecure) == 103
        assert code(r.check_presence, "#bob", "alice", subscribed=False, insecure=insecure) == 103
    # Bob reads his own history; a subscription token still admits anyone it names.
    assert r.check_history("#bob", "bob", subscribed=False) is not None
    assert r.check_subscribe("#bob", "alice", has_valid_token=True) is not None
