"""Settings of the admin console: the ``[admin]`` section.

Kept apart from :mod:`hubbub.config`, which holds it as a section of ``Settings``; every
option is documented in ``docs/configuration.md`` and the console in ``docs/admin.md``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_PATH = re.compile(r"^/[-a-zA-Z0-9_./]*[-a-zA-Z0-9_]$")


class AdminSettings(BaseModel):
    """The admin console at ``path``: off unless ``enabled`` and a way to sign in is set.

    Ways to sign in, any of which may be configured: a password (``password_hash``), an admin
    token (``token_hash``; also accepted as ``Authorization: Bearer`` by the console's API),
    and the operator's single sign-on proxy (``proxy_user_header``, believed only from
    ``limits.trusted_proxies``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    path: str = "/admin"
    password_hash: str = ""
    token_hash: str = ""
    secret: str = ""
    session_ttl: float = Field(default=8 * 3600.0, gt=0, le=30 * 24 * 3600.0)
    sign_in_rate: float = Field(default=1 / 60, ge=0)
    sign_in_burst: int = Field(default=5, ge=1)
    sign_in_total_rate: float = Field(default=1.0, ge=0)
    sign_in_total_burst: int = Field(default=20, ge=1)
    proxy_user_header: str = ""
    live_interval: float = Field(default=2.0, gt=0, le=60)

    @model_validator(mode="after")
    def _check(self) -> AdminSettings:
        if not _PATH.match(self.path) or "//" in self.path or ".." in self.path:
            raise ValueError(f"path {self.path!r}: a path such as /admin (no trailing /)")
        if self.proxy_user_header and not _HEADER.match(self.proxy_user_header):
            raise ValueError(f"proxy_user_header {self.proxy_user_header!r} is not a header name")
        if self.password_hash and not self.password_hash.startswith("scrypt$"):
            # A fast hash of a password someone chose is a dictionary attack away from it.
            raise ValueError("password_hash: make one with `hubbub admin-hash` (scrypt$...)")
        if self.token_hash and not self.token_hash.startswith(("scrypt$", "sha256$")):
            raise ValueError("token_hash: make one with `hubbub admin-hash --new-token`")
        if self.enabled and not (self.password_hash or self.token_hash or self.proxy_user_header):
            raise ValueError(
                "enabled: set password_hash, token_hash or proxy_user_header (how to sign in)"
            )
        if self.secret and len(self.secret) < 32:
            raise ValueError("secret: at least 32 characters (it signs the sessions)")
        return self
