"""Admin sessions: who signed in, how, and until when, in a signed cookie.

The cookie holds ``<payload>.<signature>``: the payload is unpadded base64url JSON
``{"who", "how", "exp", "n"}`` and the signature its HMAC-SHA256 under a key derived from
``admin.secret`` and the configured password and token hashes. So nodes that share the
configuration share sessions, and changing the password or the token ends every session
signed before. Sessions are not stored: signing out clears the browser's cookie, and ending
all of them at once is changing ``admin.secret``.

Every request that changes something carries the session's CSRF token (``X-CSRF-Token``),
which the console page reads from ``GET {path}/api/session``: another site can make the
browser send the cookie (SameSite=Strict already stops that in current browsers) but cannot
read the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from hubbub.config_admin import AdminSettings

COOKIE = "hubbub_admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for.

    Attributes:
        who: the name in the audit log: ``admin`` for the password and the token, the user
            the sign-on proxy named otherwise.
        how: ``password``, ``token`` (a session opened with the token, or the token itself in
            ``Authorization: Bearer``) or ``proxy``.
        csrf: the token state-changing requests must carry ("" when none is needed: a bearer
            token is never sent by a browser on its own).
        expires: when the session ends (seconds since the epoch; 0 for no session).
    """

    who: str
    how: str
    csrf: str
    expires: float = 0.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionKeys:
    """Signs and checks session cookies and CSRF tokens for one configuration.

    Args:
        settings: the ``[admin]`` section; without ``secret`` a random one is made, so the
            sessions last as long as this process and are valid on this node only.
    """

    def __init__(self, settings: AdminSettings) -> None:
        secret = settings.secret or secrets.token_urlsafe(32)
        material = "\0".join([secret, settings.password_hash, settings.token_hash])
        self._key = hashlib.sha256(b"hubbub-admin-session\0" + material.encode()).digest()
        self.ttl = settings.session_ttl

    def _sign(self, purpose: str, data: str) -> str:
        mac = hmac.new(self._key, f"{purpose}\0{data}".encode(), hashlib.sha256)
        return _b64(mac.digest())

    def issue(self, who: str, how: str, now: float) -> tuple[str, Principal]:
        """A new session cookie value for ``who`` and the principal it stands for."""
        expires = int(now + self.ttl)
        body = {"who": who, "how": how, "exp": expires, "n": secrets.token_hex(8)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        cookie = f"{payload}.{self._sign('session', payload)}"
        return cookie, Principal(who, how, self._sign("csrf", cookie), float(expires))

    def open(self, cookie: str, now: float) -> Principal | None:
        """The principal of a session cookie; None when it is forged, malformed or expired."""
        payload, dot, signature = cookie.partition(".")
        if not dot or not hmac.compare_digest(signature, self._sign("session", payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            who, how, expires = str(body["who"]), str(body["how"]), float(body["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= now:
            return None
        return Principal(who, how, self._sign("csrf", cookie), expires)

    def proxy_principal(self, user: str) -> Principal:
        """The principal of a request the sign-on proxy vouched for."""
        return Principal(user, "proxy", self._sign("csrf-proxy", user))

    @staticmethod
    def csrf_ok(principal: Principal, given: str) -> bool:
        """Whether a state-changing request carries the principal's CSRF token."""
        if not principal.csrf:
            return True
        return bool(given) and hmac.compare_digest(given, principal.csrf)
