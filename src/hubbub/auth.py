"""JWT verification for connection and subscription tokens (PyJWT).

Security rules: only algorithms in the configured allow-list, never ``none``; the key is chosen
by the algorithm's family (HS* -> shared secret, RS* -> RSA public key, ES* -> ECDSA public
key) and PyJWT is told to accept exactly that one algorithm, so a token signed with HS256 using
the RSA public key as the secret is refused. ``exp``/``nbf`` are checked against the node's
clock; with ``token.require_exp`` a connection token without ``exp`` is refused. Token text
never appears in errors or logs.

The ``mint_*`` helpers sign development and test tokens; given the configured ``audience`` and
``issuer`` they set ``aud`` and ``iss``, so the server accepts what they make.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import jwt
import msgspec
from jwt.types import Options

from hubbub.clock import Clock
from hubbub.config import ChannelOptions, TokenSettings
from hubbub.extras import require
from hubbub.protocol.messages import EMPTY, raw

log = logging.getLogger("hubbub.auth")

MIN_HMAC_KEY_BYTES = 32
"""The shortest HMAC key that cannot be brute-forced from a token (RFC 7518 section 3.2).
Shorter ones are taken (Centrifugo takes them, and a backend that moves keeps its key) with a
start-up warning, or refused with ``token.require_strong_keys``."""


def weak_hmac_key(settings: TokenSettings) -> bool:
    """Whether ``hmac_secret_key`` is set and shorter than :data:`MIN_HMAC_KEY_BYTES`."""
    return 0 < len(settings.hmac_secret_key.encode()) < MIN_HMAC_KEY_BYTES


def warn_about_weak_keys(settings: TokenSettings, *, development: bool) -> None:
    """Log one WARNING when ``hmac_secret_key`` is shorter than the safe length (called once
    at start-up; development mode, whose key is public anyway, stays quiet)."""
    if weak_hmac_key(settings) and not development:
        log.warning(
            "token.hmac_secret_key is %d bytes, under %d: anyone holding one token can "
            "brute-force the key and sign their own; use a longer random key "
            "(token.require_strong_keys = true refuses short keys)",
            len(settings.hmac_secret_key.encode()),
            MIN_HMAC_KEY_BYTES,
        )


@contextmanager
def _short_keys_allowed() -> Iterator[None]:
    # PyJWT warns on every signature made or checked with a short HMAC key; the server warned
    # once at start-up, so each token need not (and a warning filter set to "error" must not
    # turn a connect into a crash).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        yield


# PyJWT's minimum per HMAC algorithm: the hash's digest size.
_HMAC_DIGEST_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def _with_key(secret: str, algorithm: str) -> AbstractContextManager[None]:
    """Where ``secret`` signs or checks ``algorithm``: quiet about a short HMAC key, a plain
    call otherwise."""
    weak = len(secret.encode()) < _HMAC_DIGEST_BYTES.get(algorithm, 0)
    return _short_keys_allowed() if weak else nullcontext()


class TokenError(Exception):
    """A token was refused."""


class TokenInvalid(TokenError):
    """Malformed, badly signed, of a refused algorithm, or with wrong claims."""


class TokenExpired(TokenError):
    """Valid but expired (``exp`` past) or not yet valid (``nbf`` future)."""


_HEADERS_KEPT = 64  # distinct token headers remembered (issuers use one or a few)

_OVERRIDABLE = ("presence", "join_leave", "force_push_join_leave", "force_recovery",
                "force_positioning")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SubscriptionOverride:
    """Per-subscription channel options granted by a token (``None`` = keep the namespace's)."""

    presence: bool | None = None
    join_leave: bool | None = None
    force_push_join_leave: bool | None = None
    force_recovery: bool | None = None
    force_positioning: bool | None = None

    @classmethod
    def parse(cls, claim: object) -> SubscriptionOverride | None:
        """Read the ``override`` claim shape ``{"presence": {"value": true}, ...}``."""
        if claim is None:
            return None
        if not isinstance(claim, dict):
            raise TokenInvalid("override claim must be an object")
        values: dict[str, bool] = {}
        for name in _OVERRIDABLE:
            entry = claim.get(name)
            if entry is None:
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("value"), bool):
                raise TokenInvalid(f'override.{name} must be {{"value": bool}}')
            values[name] = entry["value"]
        return cls(**values)

    def apply(self, opts: ChannelOptions) -> ChannelOptions:
        """``opts`` with the overridden values replaced."""
        update = {name: getattr(self, name) for name in _OVERRIDABLE}
        update = {k: v for k, v in update.items() if v is not None}
        if update.get("force_recovery") and not opts.use_history:
            update.pop("force_recovery")  # recovery needs a stream: cannot be granted without
        return opts.model_copy(update=update) if update else opts


@dataclass(frozen=True, slots=True)
class ServerSub:
    """A server-side subscription granted by a connection token."""

    info: msgspec.Raw = field(default_factory=lambda: EMPTY)
    data: msgspec.Raw = field(default_factory=lambda: EMPTY)
    override: SubscriptionOverride | None = None


@dataclass(frozen=True, slots=True)
class ConnectionClaims:
    """What a connection token grants."""

    user: str
    expire_at: float | None
    info: msgspec.Raw
    subs: dict[str, ServerSub] = field(default_factory=dict)
    meta: msgspec.Raw = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class SubscriptionClaims:
    """What a subscription token grants."""

    user: str
    channel: str
    client: str
    expire_at: float | None
    info: msgspec.Raw
    data: msgspec.Raw
    override: SubscriptionOverride | None


def _payload(claims: dict[str, Any], name: str) -> msgspec.Raw:
    """The JSON claim ``name``, or its base64 variant ``b64<name>`` (which wins)."""
    b64 = claims.get(f"b64{name}")
    if b64 is not None:
        if not isinstance(b64, str):
            raise TokenInvalid(f"b64{name} must be a base64 string")
        try:
            decoded = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise TokenInvalid(f"b64{name} is not base64") from None
        try:
            msgspec.json.decode(decoded)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            # This server speaks JSON: binary payloads cannot be embedded in JSON frames.
            raise TokenInvalid(f"b64{name} must hold JSON for JSON clients") from None
        return msgspec.Raw(decoded.replace(b"\n", b"")) if decoded else EMPTY
    if name in claims and claims[name] is not None:
        return raw(claims[name])
    return EMPTY


def _expire_at(claims: dict[str, Any]) -> float | None:
    if "expire_at" in claims:
        value = claims["expire_at"]
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TokenInvalid("expire_at must be a number")
        return float(value) if value else None
    exp = claims.get("exp")
    return float(exp) if exp is not None else None


def _str_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name, "")
    if not isinstance(value, str):
        raise TokenInvalid(f"{name} must be a string")
    return value


class TokenVerifier:
    """Verifies tokens against :class:`~hubbub.config.TokenSettings`.

    Args:
        settings: keys, allow-list, audience and issuer.
        clock: the source of "now" for ``exp`` and ``nbf``.

    Raises:
        hubbub.extras.MissingExtra: an RSA or ECDSA key is configured and the crypto extra
            (cryptography) is not installed.
    """

    def __init__(self, settings: TokenSettings, clock: Clock) -> None:
        if settings.rsa_public_key or settings.ecdsa_public_key:
            require("crypto")  # PyJWT verifies RS and ES signatures with cryptography
        self._settings = settings
        self._clock = clock
        self._keys: dict[str, str] = {
            "HS": settings.hmac_secret_key,
            "RS": settings.rsa_public_key,
            "ES": settings.ecdsa_public_key,
        }
        self._headers: dict[str, dict[str, Any]] = {}
        self._prepared: dict[str, Any] = {}

    def _prepared_key(self, alg: str, key: str) -> Any:
        """``key`` as PyJWT checks ``alg`` with, made once per algorithm: given the configured
        string, PyJWT would parse it again for every token (a public key's whole PEM; for a
        secret, the checks that it is not a PEM or SSH key), a good part of a connect's cost.

        Raises:
            jwt.PyJWTError: the key is not usable for ``alg`` (PyJWT's own refusal, such as a
                public key configured as the HMAC secret).
        """
        prepared = self._prepared.get(alg)
        if prepared is None:
            algorithm = jwt.get_algorithm_by_name(alg)
            prepared = algorithm.prepare_key(key)  # PyJWT's checks of the key, once
            if alg.startswith("HS"):
                # A prepared secret goes to PyJWT as a JWK, which it takes as it is.
                secret = base64.urlsafe_b64encode(prepared).rstrip(b"=").decode()
                prepared = jwt.PyJWK({"kty": "oct", "k": secret}, algorithm=alg)
            self._prepared[alg] = prepared
        return prepared

    def _decode(self, token: str) -> dict[str, Any]:
        # Tokens of one issuer share their header segment: parsed once, not per token.
        segment = token.partition(".")[0]
        header = self._headers.get(segment)
        if header is None:
            try:
                header = jwt.get_unverified_header(token)
            except (jwt.PyJWTError, RecursionError, ValueError):
                raise TokenInvalid("malformed token") from None
            if len(self._headers) < _HEADERS_KEPT:
                self._headers[segment] = header
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._settings.algorithms:
            raise TokenInvalid(f"algorithm {alg!r} is not allowed")
        key = self._keys.get(alg[:2], "")
        if not key:
            raise TokenInvalid(f"no key configured for {alg}")
        options: Options = {
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": bool(self._settings.audience),
            "verify_iss": bool(self._settings.issuer),
        }
        try:
            with _with_key(key, alg):
                claims: dict[str, Any] = jwt.decode(
                    token,
                    self._prepared_key(alg, key),
                    algorithms=[alg],
                    options=options,
                    audience=self._settings.audience or None,
                    issuer=self._settings.issuer or None,
                )
        except (jwt.PyJWTError, RecursionError, ValueError) as exc:
            raise TokenInvalid(f"token refused: {type(exc).__name__}") from None
        self._check_time(claims)
        return claims

    def _check_time(self, claims: dict[str, Any]) -> None:
        now = self._clock.time()
        leeway = self._settings.leeway
        for name in ("exp", "nbf"):
            value = claims.get(name)
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool)
            ):
                raise TokenInvalid(f"{name} must be a number")
        exp = claims.get("exp")
        if exp is not None and exp <= now - leeway:
            raise TokenExpired("token expired")
        nbf = claims.get("nbf")
        if nbf is not None and nbf > now + leeway:
            raise TokenExpired("token not valid yet")

    def verify_connection(self, token: str) -> ConnectionClaims:
        """Verify a connection token.

        Raises:
            TokenInvalid: the server closes the connection with 3500 (also for a token
                without ``exp`` when ``token.require_exp`` is set).
            TokenExpired: the server answers 109 so the client fetches a new token.
        """
        claims = self._decode(token)
        if self._settings.require_exp and claims.get("exp") is None:
            # A token that never expires stays usable forever once it leaks.
            raise TokenInvalid("the token has no exp claim (token.require_exp)")
        if "channel" in claims:
            raise TokenInvalid("a connection token must not carry a channel claim")
        subs: dict[str, ServerSub] = {}
        channels = claims.get("channels")
        if channels is not None:
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise TokenInvalid("channels must be a list of strings")
            subs = {channel: ServerSub() for channel in channels}
        sub_claims = claims.get("subs")
        if sub_claims is not None:
            if not isinstance(sub_claims, dict):
                raise TokenInvalid("subs must be an object")
            subs = {}
            for channel, options in sub_claims.items():
                if not isinstance(options, dict):
                    raise TokenInvalid("subs entries must be objects")
                subs[channel] = ServerSub(
                    info=_payload(options, "info"),
                    data=_payload(options, "data"),
                    override=SubscriptionOverride.parse(options.get("override")),
                )
        meta = claims.get("meta")
        return ConnectionClaims(
            user=_str_claim(claims, "sub"),
            expire_at=_expire_at(claims),
            info=_payload(claims, "info"),
            subs=subs,
            meta=raw(meta) if meta is not None else EMPTY,
        )

    def verify_subscription(self, token: str) -> SubscriptionClaims:
        """Verify a subscription token (the ``channel`` claim is required).

        Raises:
            TokenInvalid: the server answers 103.
            TokenExpired: the server answers 109.
        """
        claims = self._decode(token)
        channel = _str_claim(claims, "channel")
        if not channel:
            raise TokenInvalid("a subscription token needs a channel claim")
        return SubscriptionClaims(
            user=_str_claim(claims, "sub"),
            channel=channel,
            client=_str_claim(claims, "client"),
            expire_at=_expire_at(claims),
            info=_payload(claims, "info"),
            data=_payload(claims, "data"),
            override=SubscriptionOverride.parse(claims.get("override")),
        )


def _audience_issuer(audience: str, issuer: str) -> dict[str, object]:
    claims: dict[str, object] = {}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return claims


def mint_connection_token(
    secret: str,
    user: str,
    *,
    ttl: float | None = None,
    now: float | None = None,
    channels: list[str] | None = None,
    info: object = None,
    algorithm: str = "HS256",
    audience: str = "",
    issuer: str = "",
    extra: dict[str, object] | None = None,
) -> str:
    """A connection token for ``user`` signed with ``secret`` (for development and tests).

    ``audience`` and ``issuer``, when given, become the ``aud`` and ``iss`` claims: pass the
    server's ``token.audience`` and ``token.issuer``, which it then requires.
    """
    issued = time.time() if now is None else now
    claims: dict[str, object] = {"sub": user, "iat": int(issued)}
    if ttl is not None:
        claims["exp"] = int(issued + ttl)
    claims.update(_audience_issuer(audience, issuer))
    if channels:
        claims["channels"] = list(channels)
    if info is not None:
        claims["info"] = info
    claims.update(extra or {})
    with _with_key(secret, algorithm):
        return jwt.encode(claims, secret, algorithm=algorithm)


def mint_subscription_token(
    secret: str,
    user: str,
    channel: str,
    *,
    ttl: float | None = None,
    now: float | None = None,
    client: str = "",
    info: object = None,
    audience: str = "",
    issuer: str = "",
    extra: dict[str, object] | None = None,
) -> str:
    """A subscription token granting ``user`` the ``channel`` (for development and tests);
    ``audience`` and ``issuer`` as for :func:`mint_connection_token`."""
    issued = time.time() if now is None else now
    claims: dict[str, object] = {"sub": user, "channel": channel, "iat": int(issued)}
    if ttl is not None:
        claims["exp"] = int(issued + ttl)
    claims.update(_audience_issuer(audience, issuer))
    if client:
        claims["client"] = client
    if info is not None:
        claims["info"] = info
    claims.update(extra or {})
    with _with_key(secret, "HS256"):
        return jwt.encode(claims, secret, algorithm="HS256")
