"""Hashes of the admin password and token, as the ``[admin]`` section stores them.

* ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash in unpadded base64url): for a password,
  which a person chose and which may be guessable. scrypt is memory-hard, so a stolen hash is
  expensive to attack on graphics cards, and it is in the standard library (``hashlib``, from
  OpenSSL): no native dependency to build or audit, unlike argon2. Verifying costs about 32 MiB
  and a few tens of milliseconds, so it runs in a thread, behind the sign-in rate limits.
* ``sha256$<hash>``: only for an admin token made by :func:`new_token` (32 random bytes).
  Guessing it is hopeless whatever the hash, and a fast hash lets the console check it on
  every request that presents it.

Comparisons are in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_MEM = 128 * 1024 * 1024
_MAX_N = 2**20


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N, salt: bytes | None = None) -> str:
    """The ``scrypt$...`` hash of ``password`` (a fresh random salt unless one is given)."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=_MAX_MEM, dklen=32
    )
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def new_token() -> tuple[str, str]:
    """A new admin token and its ``sha256$...`` hash: ``(token, hash)``."""
    token = "hbadm_" + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """The ``sha256$...`` hash of a token made by :func:`new_token`."""
    return "sha256$" + _b64(hashlib.sha256(token.encode()).digest())


def is_fast(stored: str) -> bool:
    """Whether checking against ``stored`` is cheap (a token's sha256 hash)."""
    return stored.startswith("sha256$")


def verify(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches the stored hash; False for a hash that is malformed.

    Costs an scrypt computation for ``scrypt$`` hashes: call it off the event loop.
    """
    if not secret or not stored:
        return False
    kind, _, rest = stored.partition("$")
    try:
        if kind == "sha256":
            return hmac.compare_digest(hash_token(secret), stored)
        if kind != "scrypt":
            return False
        n_text, r_text, p_text, salt_text, digest_text = rest.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        if not (2 <= n <= _MAX_N and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        expected = _unb64(digest_text)
        digest = hashlib.scrypt(
            secret.encode(),
            salt=_unb64(salt_text),
            n=n,
            r=r,
            p=p,
            maxmem=_MAX_MEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)
