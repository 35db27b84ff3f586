"""The admin console's HTTP side over real sockets: sessions, CSRF, forged requests, the admin
token, the sign-on proxy header, the live feed and the audit log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from hubbub.admin.passwords import hash_password, new_token
from hubbub.client import ReplyError
from hubbub.config import ConfigError, Settings, load_settings
from hubbub.testing import Hub, run_hub
from tests.apps.conftest import app_settings
from tests.conftest import API_KEY

PASSWORD = "a long admin password"
TOKEN, TOKEN_HASH = new_token()


def admin_settings(**admin: Any) -> Settings:
    limits = admin.pop("limits", {})
    section = {
        "enabled": True,
        "password_hash": hash_password(PASSWORD, n=2**10),
        "token_hash": TOKEN_HASH,
        "secret": "k" * 32,
        "live_interval": 0.1,
        **admin,
    }
    return app_settings(admin=section, limits=limits)


@pytest.fixture
async def console() -> AsyncIterator[Hub]:
    async with run_hub(admin_settings()) as hub:
        yield hub


async def signed_in(http: httpx.AsyncClient) -> str:
    """Sign in with the password; the session's CSRF token."""
    reply = await http.post("/admin/api/sign-in", json={"secret": PASSWORD})
    assert reply.status_code == 200, reply.text
    csrf: str = reply.json()["csrf"]
    return csrf


async def test_the_console_is_off_unless_configured() -> None:
    async with run_hub(app_settings()) as hub, httpx.AsyncClient(base_url=hub.http) as http:
        assert (await http.get("/admin")).status_code == 404
        assert (await http.post("/admin/api/sign-in", json={"secret": "x"})).status_code == 404
        key = {"x-api-key": API_KEY}
        reply = await http.post("/api/user_connections", json={"user": "x"}, headers=key)
        assert reply.status_code == 404


async def test_a_session_cookie_and_its_csrf_token(console: Hub) -> None:
    async with httpx.AsyncClient(base_url=console.http) as http:
        page = await http.get("/admin")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (await http.get("/admin/api/session")).status_code == 401

        reply = await http.post("/admin/api/sign-in", json={"secret": PASSWORD})
        cookie = reply.headers["set-cookie"].lower()
        for part in ("httponly", "samesite=strict", "path=/admin", "max-age=28800"):
            assert part in cookie
        assert "secure" not in cookie  # served over plain http here
        csrf = reply.json()["csrf"]
        assert (await http.get("/admin/api/session")).json()["how"] == "password"

        # Without, or with a wrong, CSRF token: refused.
        assert (await http.post("/admin/api/call/info", json={})).status_code == 403
        wrong = {"x-csrf-token": csrf[:-2] + "xx"}
        assert (await http.post("/admin/api/call/info", json={}, headers=wrong)).status_code == 403
        ok = await http.post("/admin/api/call/info", json={}, headers={"x-csrf-token": csrf})
        assert ok.json()["result"]["nodes"][0]["uid"] == console.node.uid

        # Signing out clears the cookie.
        out = await http.post("/admin/api/sign-out", json={}, headers={"x-csrf-token": csrf})
        assert out.status_code == 200
        assert (await http.get("/admin/api/session")).status_code == 401


async def test_a_forged_cookie_is_no_session(console: Hub) -> None:
    async with httpx.AsyncClient(base_url=console.http) as http:
        await signed_in(http)
        real = http.cookies["hubbub_admin"]
        payload, _, signature = real.partition(".")
        http.cookies.clear()
        http.cookies.set("hubbub_admin", payload + "." + signature[::-1], path="/admin")
        assert (await http.get("/admin/api/session")).status_code == 401


async def test_requests_another_site_could_forge_are_refused(console: Hub) -> None:
    async with httpx.AsyncClient(base_url=console.http) as http:
        csrf = await signed_in(http)
        headers = {"x-csrf-token": csrf}
        form = await http.post(
            "/admin/api/call/publish",
            content=b'{"channel": "news", "data": {}}',
            headers={**headers, "content-type": "text/plain"},
        )
        assert form.status_code == 415
        foreign = await http.post(
            "/admin/api/call/publish",
            json={"channel": "news", "data": {}},
            headers={**headers, "origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        login = await http.post(
            "/admin/api/sign-in", json={"secret": PASSWORD}, headers={"origin": "https://x.io"}
        )
        assert login.status_code == 403


async def test_only_the_console_methods_and_bad_bodies(console: Hub) -> None:
    async with httpx.AsyncClient(base_url=console.http) as http:
        headers = {"x-csrf-token": await signed_in(http)}
        for method in ("batch", "nope", "notify"):
            reply = await http.post(f"/admin/api/call/{method}", json={}, headers=headers)
            assert reply.status_code == 404, method
        bad = await http.post(
            "/admin/api/call/publish",
            content=b"{not json",
            headers={**headers, "content-type": "application/json"},
        )
        assert bad.status_code == 400
        missing = await http.post("/admin/api/call/publish", json={}, headers=headers)
        assert missing.json()["error"]["code"] == 107
        sign_in = await http.post("/admin/api/sign-in", json={"password": PASSWORD})
        assert sign_in.status_code == 400
    assert console.node.counters["bad_input.107"] >= 2


async def test_the_admin_token_as_bearer_and_the_audit_log(
    console: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hubbub.admin.audit")
    async with (
        console.client("bob") as bob,
        httpx.AsyncClient(
            base_url=console.http, headers={"authorization": f"Bearer {TOKEN}"}
        ) as http,
    ):
        sub = await bob.subscribe("news")
        reply = await http.post("/admin/api/call/publish", json={"channel": "news", "data": [1]})
        assert reply.json() == {"result": {"offset": 1, "epoch": reply.json()["result"]["epoch"]}}
        assert (await bob.next(sub)).data == [1]
        conns = await http.post("/admin/api/call/user_connections", json={"user": "bob"})
        (conn,) = conns.json()["result"]["connections"]
        assert conn["node"] == console.node.name and "news" in conn["channels"]
        wrong = await http.post(
            "/admin/api/call/info", json={}, headers={"authorization": "Bearer hbadm_nope"}
        )
        assert wrong.status_code == 401
        # The token also signs in a browser session.
        session = await http.post("/admin/api/sign-in", json={"secret": TOKEN})
        assert session.json()["how"] == "token"
    lines = [r.getMessage() for r in caplog.records if r.name == "hubbub.admin.audit"]
    assert "admin admin (token) from 127.0.0.1: publish channel='news' -> ok" in lines
    assert not any("[1]" in line for line in lines)  # payloads stay out of the log


async def test_the_sign_on_proxy_header_is_believed_from_trusted_proxies_only() -> None:
    trusted = admin_settings(
        password_hash="", token_hash="", proxy_user_header="X-Forwarded-User",
        limits={"trusted_proxies": ["127.0.0.1"]},
    )  # fmt: skip
    async with run_hub(trusted) as hub, httpx.AsyncClient(base_url=hub.http) as http:
        who = await http.get("/admin/api/session", headers={"x-forwarded-user": "dora"})
        assert who.json()["who"] == "dora" and who.json()["how"] == "proxy"
        headers = {"x-forwarded-user": "dora", "x-csrf-token": who.json()["csrf"]}
        ok = await http.post("/admin/api/call/info", json={}, headers=headers)
        assert ok.status_code == 200
        no_csrf = await http.post(
            "/admin/api/call/info", json={}, headers={"x-forwarded-user": "dora"}
        )
        assert no_csrf.status_code == 403
        assert (await http.get("/admin/api/session")).json()["sign_in"] == ["proxy"]

    elsewhere = admin_settings(
        proxy_user_header="X-Forwarded-User", limits={"trusted_proxies": ["10.9.9.9"]}
    )
    async with run_hub(elsewhere) as hub, httpx.AsyncClient(base_url=hub.http) as http:
        who = await http.get("/admin/api/session", headers={"x-forwarded-user": "mallory"})
        assert who.status_code == 401


async def test_sign_in_is_rate_limited_per_address() -> None:
    settings = admin_settings(sign_in_rate=0.001, sign_in_burst=2)
    async with run_hub(settings) as hub, httpx.AsyncClient(base_url=hub.http) as http:
        for _ in range(2):
            assert (await http.post("/admin/api/sign-in", json={"secret": "x"})).status_code == 401
        limited = await http.post("/admin/api/sign-in", json={"secret": PASSWORD})
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "60"
        assert hub.node.counters["admin.sign_in_limited"] == 1


async def test_the_live_token_grants_the_admin_channel_to_nobody(console: Hub) -> None:
    async with httpx.AsyncClient(base_url=console.http) as http:
        csrf = await signed_in(http)
        live = (await http.post("/admin/api/live", json={}, headers={"x-csrf-token": csrf})).json()
    assert live["channel"] == "$hubbub.admin"
    async with console.client("", token=live["token"]) as admin:
        feed = admin.subscription(live["channel"])
        assert feed is not None
        snap = (await admin.next(feed)).data
        assert snap["node"]["uid"] == console.node.uid
        assert snap["engine_ready"] is True and snap["store"] == "ok" and snap["memory"] > 0
        assert admin.subscription("#") is None  # no personal channel: the token names no user
    # A client cannot subscribe to the admin channel on its own.
    async with console.client("eve") as eve:
        with pytest.raises(ReplyError) as refused:
            await eve.subscribe(live["channel"])
        assert refused.value.code == 103


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigError, match="password_hash, token_hash or proxy_user_header"):
        load_settings(None, admin={"enabled": True})
    with pytest.raises(ConfigError, match="admin-hash"):
        load_settings(None, admin={"enabled": True, "password_hash": "sha256$abc"})
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings(None, admin={"enabled": True, "proxy_user_header": "X-User"})
    with pytest.raises(ConfigError, match="32"):
        load_settings(None, admin={"token_hash": TOKEN_HASH, "secret": "short"})


def test_admin_hash_prints_the_lines_of_the_section(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from hubbub.admin import passwords
    from hubbub.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert main(["admin-hash"]) == 0
    line = capsys.readouterr().out.strip()
    stored = line.removeprefix('password_hash = "').removesuffix('"')
    assert passwords.verify("a long enough password", stored)

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["admin-hash"]) == 2
    assert "shorter than 12" in capsys.readouterr().err

    assert main(["admin-hash", "--new-token"]) == 0
    token, hash_line = capsys.readouterr().out.splitlines()
    assert passwords.verify(token, hash_line.split('"')[1])
