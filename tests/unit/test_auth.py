"""JWT verification: algorithms, keys, claims and time, with a fake clock."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hubbub.auth import (
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    mint_connection_token,
    mint_subscription_token,
)
from hubbub.clock import FakeClock
from hubbub.config import ChannelOptions, TokenSettings
from hubbub.protocol.messages import EMPTY

SECRET = "s" * 64


def pem_pair(private: Any) -> tuple[bytes, str]:
    priv = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv, pub.decode()


RSA_PRIVATE, RSA_PUBLIC = pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PRIVATE, EC_PUBLIC = pem_pair(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def verifier(clock: FakeClock, **settings: Any) -> TokenVerifier:
    base: dict[str, Any] = {"hmac_secret_key": SECRET}
    base.update(settings)
    return TokenVerifier(TokenSettings(**base), clock)


def encode(claims: dict[str, Any], key: Any = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms(clock: FakeClock, alg: str) -> None:
    claims = verifier(clock).verify_connection(encode({"sub": "alice"}, alg=alg))
    assert claims.user == "alice" and claims.expire_at is None and claims.info is EMPTY


def test_rsa_and_ecdsa(clock: FakeClock) -> None:
    v = verifier(clock, rsa_public_key=RSA_PUBLIC, ecdsa_public_key=EC_PUBLIC)
    assert v.verify_connection(encode({"sub": "r"}, RSA_PRIVATE, "RS256")).user == "r"
    assert v.verify_connection(encode({"sub": "e"}, EC_PRIVATE, "ES256")).user == "e"


def test_alg_none_is_refused(clock: FakeClock) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(b'{"sub":"mallory"}').rstrip(b"=").decode()
    with pytest.raises(TokenInvalid):
        verifier(clock).verify_connection(f"{header}.{body}.")


def test_hs_rs_confusion_is_refused(clock: FakeClock) -> None:
    # Signing HS256 with the RSA public key as the secret must not pass as an RSA token.
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(b'{"sub":"mallory"}').rstrip(b"=")
    import hashlib
    import hmac

    signature = hmac.new(RSA_PUBLIC.encode(), header + b"." + body, hashlib.sha256).digest()
    forged = b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")])
    v = verifier(clock, hmac_secret_key="", rsa_public_key=RSA_PUBLIC)
    with pytest.raises(TokenInvalid, match="no key configured for HS256"):
        v.verify_connection(forged.decode())


def test_a_public_key_configured_as_the_hmac_secret_is_refused_every_time(
    clock: FakeClock,
) -> None:
    # The key is prepared once per algorithm; PyJWT's refusal of a PEM as an HMAC secret
    # must hold for the first token and every one after it.
    import hashlib
    import hmac

    v = verifier(clock, hmac_secret_key=RSA_PUBLIC)
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(b'{"sub":"mallory"}').rstrip(b"=")
    signature = hmac.new(RSA_PUBLIC.encode(), header + b"." + body, hashlib.sha256).digest()
    token = b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()
    for _ in range(2):
        with pytest.raises(TokenInvalid, match="InvalidKeyError"):
            v.verify_connection(token)


def test_prepared_keys_check_every_token_alike(clock: FakeClock) -> None:
    v = verifier(clock)
    assert v.verify_connection(encode({"sub": "a"})).user == "a"
    assert v.verify_connection(encode({"sub": "b"})).user == "b"
    with pytest.raises(TokenInvalid):
        v.verify_connection(encode({"sub": "c"}, "another-secret-" * 4))


def test_algorithm_allow_list(clock: FakeClock) -> None:
    v = verifier(clock, algorithms=["HS512"])
    with pytest.raises(TokenInvalid, match="not allowed"):
        v.verify_connection(encode({"sub": "a"}, alg="HS256"))


def test_key_family_not_configured(clock: FakeClock) -> None:
    with pytest.raises(TokenInvalid, match="no key configured"):
        verifier(clock).verify_connection(encode({"sub": "a"}, RSA_PRIVATE, "RS256"))


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", encode({"sub": "a"}, "x" * 40)])
def test_bad_tokens(clock: FakeClock, token: str) -> None:
    with pytest.raises(TokenInvalid):
        verifier(clock).verify_connection(token)


def test_errors_never_contain_the_token(clock: FakeClock) -> None:
    token = encode({"sub": "a"}, "x" * 40)
    with pytest.raises(TokenInvalid) as exc_info:
        verifier(clock).verify_connection(token)
    assert token not in str(exc_info.value)


def test_exp_nbf_and_leeway(clock: FakeClock) -> None:
    now = clock.time()
    v = verifier(clock)
    with pytest.raises(TokenExpired):
        v.verify_connection(encode({"sub": "a", "exp": now - 1}))
    with pytest.raises(TokenExpired):
        v.verify_connection(encode({"sub": "a", "nbf": now + 30}))
    lenient = verifier(clock, leeway=5)
    assert lenient.verify_connection(encode({"sub": "a", "exp": now - 3})).user == "a"
    claims = v.verify_connection(encode({"sub": "a", "exp": now + 100}))
    assert claims.expire_at == now + 100
    clock.advance(101)
    with pytest.raises(TokenExpired):
        v.verify_connection(encode({"sub": "a", "exp": now + 100}))


def test_audience_and_issuer_only_when_configured(clock: FakeClock) -> None:
    token = encode({"sub": "a", "aud": "x", "iss": "y"})
    assert verifier(clock).verify_connection(token).user == "a"
    strict = verifier(clock, audience="app", issuer="auth")
    with pytest.raises(TokenInvalid):
        strict.verify_connection(token)
    with pytest.raises(TokenInvalid):
        strict.verify_connection(encode({"sub": "a"}))
    good = encode({"sub": "a", "aud": "app", "iss": "auth"})
    assert strict.verify_connection(good).user == "a"


def test_connection_claims(clock: FakeClock) -> None:
    v = verifier(clock)
    now = clock.time()
    with pytest.raises(TokenInvalid, match="channel"):
        v.verify_connection(encode({"sub": "a", "channel": "x"}))
    assert (
        v.verify_connection(encode({"sub": "a", "exp": now + 50, "expire_at": 0})).expire_at is None
    )
    assert v.verify_connection(encode({"sub": "a", "expire_at": now + 9})).expire_at == now + 9
    claims = v.verify_connection(encode({"sub": "a", "info": {"name": "A"}}))
    assert json.loads(bytes(claims.info)) == {"name": "A"}
    b64 = base64.b64encode(b'{"b": 1}').decode()
    claims = v.verify_connection(encode({"sub": "a", "info": {"x": 1}, "b64info": b64}))
    assert json.loads(bytes(claims.info)) == {"b": 1}
    claims = v.verify_connection(encode({"sub": "a", "channels": ["x", "y"]}))
    assert set(claims.subs) == {"x", "y"}
    claims = v.verify_connection(
        encode(
            {
                "sub": "a",
                "channels": ["ignored"],
                "subs": {"z": {"info": {"i": 1}, "override": {"presence": {"value": True}}}},
            }
        )
    )
    assert set(claims.subs) == {"z"}
    assert msgspec.json.decode(claims.subs["z"].info) == {"i": 1}
    override = claims.subs["z"].override
    assert override is not None and override.presence is True and override.join_leave is None
    applied = override.apply(ChannelOptions())
    assert applied.presence and not applied.join_leave
    assert v.verify_connection(encode({})).user == ""
    with pytest.raises(TokenInvalid):
        v.verify_connection(encode({"sub": 42}))
    with pytest.raises(TokenInvalid):
        v.verify_connection(encode({"sub": "a", "subs": {"z": {"override": {"presence": 1}}}}))


def test_subscription_claims(clock: FakeClock) -> None:
    v = verifier(clock)
    with pytest.raises(TokenInvalid, match="channel"):
        v.verify_subscription(encode({"sub": "a"}))
    claims = v.verify_subscription(
        encode({"sub": "a", "channel": "$x", "client": "c1", "info": [1], "data": {"d": 2}})
    )
    assert (claims.user, claims.channel, claims.client) == ("a", "$x", "c1")
    assert bytes(claims.info) == b"[1]" and msgspec.json.decode(claims.data) == {"d": 2}


def test_minted_tokens_verify(clock: FakeClock) -> None:
    v = verifier(clock)
    now = clock.time()
    token = mint_connection_token(SECRET, "bob", ttl=60, now=now, channels=["c"], info={"n": 1})
    claims = v.verify_connection(token)
    assert claims.user == "bob" and claims.expire_at == now + 60 and set(claims.subs) == {"c"}
    sub = v.verify_subscription(mint_subscription_token(SECRET, "bob", "$c", now=now, client="x"))
    assert sub.channel == "$c" and sub.client == "x"


def test_require_exp_refuses_connection_tokens_that_never_expire(clock: FakeClock) -> None:
    now = clock.time()
    forever = encode({"sub": "a"})
    assert verifier(clock).verify_connection(forever).user == "a"  # off by default
    strict = verifier(clock, require_exp=True)
    with pytest.raises(TokenInvalid, match="require_exp"):  # the server closes with 3500
        strict.verify_connection(forever)
    with pytest.raises(TokenInvalid):
        strict.verify_connection(encode({"sub": "a", "exp": None}))
    # expire_at (the connection's lifetime) does not stand in for the token's own exp.
    with pytest.raises(TokenInvalid):
        strict.verify_connection(encode({"sub": "a", "expire_at": now + 60}))
    assert strict.verify_connection(encode({"sub": "a", "exp": now + 60})).user == "a"
    # The option is about connection tokens only.
    sub = strict.verify_subscription(encode({"sub": "a", "channel": "$c"}))
    assert sub.channel == "$c"


def test_minted_tokens_carry_the_configured_audience_and_issuer(clock: FakeClock) -> None:
    strict = verifier(clock, audience="app", issuer="auth")
    plain = mint_connection_token(SECRET, "bob")
    with pytest.raises(TokenInvalid):
        strict.verify_connection(plain)
    token = mint_connection_token(SECRET, "bob", audience="app", issuer="auth")
    assert strict.verify_connection(token).user == "bob"
    sub = mint_subscription_token(SECRET, "bob", "$c", audience="app", issuer="auth")
    assert strict.verify_subscription(sub).channel == "$c"
