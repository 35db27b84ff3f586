"""Admin password and token hashes, session cookies and the sign-in limiter."""

from __future__ import annotations

from hubbub.admin import passwords
from hubbub.admin.access import SignInLimiter
from hubbub.admin.sessions import SessionKeys
from hubbub.clock import FakeClock
from hubbub.config import Settings
from hubbub.config_admin import AdminSettings


def test_scrypt_hashes_verify_and_refuse() -> None:
    stored = passwords.hash_password("open sesame please", n=2**10)
    assert stored.startswith("scrypt$1024$8$1$")
    assert passwords.verify("open sesame please", stored)
    assert not passwords.verify("open sesame pleasE", stored)
    assert passwords.hash_password("same", n=2**10) != passwords.hash_password("same", n=2**10)
    for broken in ("", "scrypt$", "scrypt$x$8$1$a$b", "scrypt$1024$8$1$!!$??", "md5$abc",
                   "scrypt$4294967296$8$1$AAAA$AAAA"):  # fmt: skip
        assert not passwords.verify("open sesame please", broken), broken


def test_tokens_are_random_and_fast_to_check() -> None:
    token, stored = passwords.new_token()
    other, _ = passwords.new_token()
    assert token != other and len(token) > 40
    assert passwords.is_fast(stored) and passwords.verify(token, stored)
    assert not passwords.verify(other, stored)


def test_sessions_expire_and_change_with_the_password() -> None:
    settings = AdminSettings(password_hash="scrypt$1$1$1$a$b", secret="s" * 32)
    keys = SessionKeys(settings)
    cookie, principal = keys.issue("admin", "password", now=1000.0)
    opened = keys.open(cookie, now=1000.0 + settings.session_ttl - 1)
    assert opened is not None and opened.csrf == principal.csrf and opened.who == "admin"
    assert keys.open(cookie, now=1000.0 + settings.session_ttl) is None
    assert keys.open(cookie + "x", now=1000.0) is None
    assert keys.open("garbage", now=1000.0) is None
    changed = SessionKeys(settings.model_copy(update={"password_hash": "scrypt$2$1$1$a$b"}))
    assert changed.open(cookie, now=1000.0) is None
    assert not keys.csrf_ok(principal, "") and keys.csrf_ok(principal, principal.csrf)


def test_the_limiter_counts_per_address_and_overall() -> None:
    clock = FakeClock()
    admin = AdminSettings(sign_in_rate=1.0, sign_in_burst=2, sign_in_total_burst=3)
    limiter = SignInLimiter(Settings(admin=admin), clock)
    assert limiter.allow("a") == limiter.allow("a") == ""
    assert limiter.allow("a") == "address"
    assert limiter.allow("b") == ""
    assert limiter.allow("c") == "overall"
    clock.advance(1.0)
    assert limiter.allow("a") == ""
