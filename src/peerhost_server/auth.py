"""Tokens and who a request is.

A token is ``phs.<id>.<secret>``. The coordinator stores only ``sha256(token)`` under the id
and compares digests with :func:`hmac.compare_digest`, so neither the stored data nor the
time a comparison takes reveals a token. Three roles: the admin (creates sessions), a
session's owner (adds and revokes members, rolls back) and its members.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

ADMIN = "admin"
OWNER = "owner"
MEMBER = "member"

#: Session and member names: also folder names, so no separators, dots first or odd bytes.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    Attributes:
        token_id: the public half of the token (rate limits are kept per token).
        role: ``admin``, ``owner`` or ``member``.
        session: the session the token belongs to (None for the admin).
        member: the member name (``owner`` for the owner, ``admin`` for the admin).
    """

    token_id: str
    role: str
    session: str | None
    member: str

    @property
    def label(self) -> str:
        """How the access log names the caller."""
        return self.member if self.session is None else f"{self.session}/{self.member}"


@dataclass(frozen=True)
class NewToken:
    """A freshly minted token: ``token`` is shown once, the rest is stored."""

    token: str
    token_id: str
    digest: str


def mint_token() -> NewToken:
    """Create a random token (256 bits of secret)."""
    token_id = secrets.token_hex(8)
    token = f"phs.{token_id}.{secrets.token_urlsafe(32)}"
    return NewToken(token, token_id, digest_token(token))


def digest_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_of(token: str) -> str | None:
    """The id part of a well-formed token, else None."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "phs" or not re.fullmatch(r"[0-9a-f]{16}", parts[1]):
        return None
    return parts[1]


def same_digest(stored: str, presented: str) -> bool:
    """Constant-time comparison of two token digests."""
    return hmac.compare_digest(stored.encode(), presented.encode())


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def valid_name(name: object) -> bool:
    """Whether ``name`` may name a session or a member."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None
