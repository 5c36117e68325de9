"""Sessions and members: create, add, revoke, list; and the admin's status of every session."""

from __future__ import annotations

import time
from typing import Any

from ..auth import OWNER, mint_token, valid_name
from .coordinator import Coordinator
from .errors import BadName, MemberExists, NoSession
from .protocols import SessionInfo, SessionSettings


def require_name(value: object, what: str) -> str:
    """``value`` if it may name a session or member (``what``).

    Raises:
        BadName.
    """
    if not valid_name(value):
        raise BadName(what)
    assert isinstance(value, str)
    return value


def create_session(coord: Coordinator, name: str) -> str:
    """Create a session; return its owner token (shown once).

    Raises:
        BadName, SessionExists.
    """
    new = mint_token()
    coord.backends.directory.create_session(require_name(name, "session"), new, int(time.time()))
    return new.token


def add_member(coord: Coordinator, session: str, name: str) -> str:
    """Add a member to a session; return its token (shown once).

    Raises:
        BadName, NoSession, MemberExists.
    """
    if require_name(name, "member") == OWNER:
        raise MemberExists(session, name)
    new = mint_token()
    coord.backends.directory.add_member(session, name, new)
    return new.token


def remove_member(coord: Coordinator, session: str, name: str) -> None:
    """Revoke a member's token; its lease and standby entry go in the same transaction
    (:meth:`~peerhost_server.leases.SessionLease.drop_member`), so nothing it queued outlives it.

    Raises:
        NoSession, NoMember.
    """
    with coord.backends.leases.work(session) as work:
        work.revoke(name)
        work.state.drop_member(work.now, name)


def settings(coord: Coordinator, session: str) -> SessionSettings:
    """The owner's settings of a session.

    Raises:
        NoSession.
    """
    info = coord.backends.directory.session(session)
    if info is None:
        raise NoSession(session)
    return info.settings


def set_settings(coord: Coordinator, session: str, new: SessionSettings) -> SessionSettings:
    """Replace a session's settings (the route checks the values); return them.

    Raises:
        NoSession.
    """
    coord.backends.directory.set_settings(session, new)
    return new


def list_sessions(coord: Coordinator) -> list[SessionInfo]:
    """Every session, in the order they were created."""
    directory = coord.backends.directory
    return [info for info in map(directory.session, directory.session_names()) if info]


def status(coord: Coordinator) -> list[dict[str, Any]]:
    """Every session: members, lease, standby queue, head and storage."""
    out = []
    backends = coord.backends
    for info in list_sessions(coord):
        with backends.leases.work(info.name) as work:
            lease = work.state.status(work.now)
        head = backends.leases.head(info.name)
        usage = backends.objects.usage(info.name)
        out.append({
            "session": info.name,
            "members": sorted(info.members),
            **lease,
            "head": None if head is None else head.hex(),
            "storage_bytes": usage.stored,
            "usage_bytes": usage.used,
            "quota_bytes": coord.limits.quota_bytes,
        })
    return out
