"""Who may use the console: the request's principal, and the sign-in rate limits.

A request is signed in by, in this order:

1. ``Authorization: Bearer <admin token>`` matching ``admin.token_hash`` (scripts; no CSRF
   token needed, as no browser sends that header on its own);
2. the ``proxy_user_header`` the operator's single sign-on proxy sets, believed only when the
   TCP peer is one of ``limits.trusted_proxies`` (from anyone else the header is ignored and
   the attempt logged): the proxy authenticates, hubbub trusts its word;
3. the session cookie of a sign-in with the password or the token.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict

from starlette.requests import Request

from hubbub.admin import passwords
from hubbub.admin.sessions import COOKIE, Principal, SessionKeys
from hubbub.clock import Clock
from hubbub.config import Settings
from hubbub.limits import TokenBucket, client_address

log = logging.getLogger("hubbub.admin")

MAX_TRACKED_ADDRESSES = 10_000


def peer(request: Request) -> str:
    """The TCP peer of the request (hubbub serves with uvicorn's header rewriting off)."""
    return request.client.host if request.client else ""


class Access:
    """The console's view of who a request is.

    Args:
        settings: the server's settings (``admin`` and ``limits.trusted_proxies``).
        clock: the node's clock.
    """

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.admin = settings.admin
        self.keys = SessionKeys(settings.admin)
        self.clock = clock
        self._trusted = [
            ipaddress.ip_network(t, strict=False) for t in settings.limits.trusted_proxies
        ]
        self._trusted_list = list(settings.limits.trusted_proxies)
        self._header = settings.admin.proxy_user_header.lower()
        self.limiter = SignInLimiter(settings, clock)

    def address(self, request: Request) -> str:
        """The client's address for limits and the audit log (X-Forwarded-For believed from
        ``limits.trusted_proxies`` only)."""
        forwarded = request.headers.get("x-forwarded-for", "")
        return client_address(peer(request), forwarded, self._trusted_list)

    def from_trusted_proxy(self, request: Request) -> bool:
        try:
            ip = ipaddress.ip_address(peer(request))
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def principal(self, request: Request) -> Principal | None:
        """Who the request acts for, or None when it is not signed in."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            stored = self.admin.token_hash
            # Only a fast (sha256) token hash is checked per request; an scrypt one signs in.
            if stored and passwords.is_fast(stored) and passwords.verify(value.strip(), stored):
                return Principal("admin", "token", "")
            return None
        if self._header:
            named = request.headers.get(self._header, "").strip()
            if named:
                if self.from_trusted_proxy(request):
                    return self.keys.proxy_principal(named[:128])
                log.warning(
                    "admin: %s header from %s, which is not in limits.trusted_proxies: ignored",
                    self.admin.proxy_user_header,
                    peer(request),
                )
        cookie = request.cookies.get(COOKIE, "")
        if cookie:
            return self.keys.open(cookie, self.clock.time())
        return None


class SignInLimiter:
    """Sign-in attempts: a bucket per client address and one for everyone together.

    The per-address buckets are kept for the most recent :data:`MAX_TRACKED_ADDRESSES`
    addresses (an attacker with more addresses still meets the overall bucket).
    """

    def __init__(self, settings: Settings, clock: Clock) -> None:
        admin = settings.admin
        self._clock = clock
        self._rate, self._burst = admin.sign_in_rate, admin.sign_in_burst
        self._total = TokenBucket(admin.sign_in_total_rate, admin.sign_in_total_burst, clock)
        self._per_address: OrderedDict[str, TokenBucket] = OrderedDict()
        self._logged: set[str] = set()

    def allow(self, address: str) -> str:
        """ "" when an attempt from ``address`` may go ahead, else what refused it
        (``address`` or ``overall``); a refusal is logged once per address until it may try
        again."""
        bucket = self._per_address.pop(address, None)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, self._clock)
        self._per_address[address] = bucket
        while len(self._per_address) > MAX_TRACKED_ADDRESSES:
            self._per_address.popitem(last=False)
        refused = "" if bucket.take() else "address"
        if not refused and not self._total.take():
            refused = "overall"
        if not refused:
            self._logged.discard(address)
            return ""
        if address not in self._logged:
            if len(self._logged) < MAX_TRACKED_ADDRESSES:
                self._logged.add(address)
            log.warning("admin: sign-in attempts from %s refused (%s rate limit)", address, refused)
        return refused
