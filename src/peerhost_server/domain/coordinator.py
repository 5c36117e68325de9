"""The domain's context: the backends, the clocks, the limits, and the pairing memo."""

from __future__ import annotations

import time
from collections.abc import Callable

from peerhost_store.bounds import Summary
from peerhost_store.ids import ObjectId

from ..auth import Identity, digest_token, mint_token, token_id_of
from ..limits import Limits
from .errors import NoSession
from .pairings import PairingMemo
from .protocols import Backends, SessionInfo, SessionObjects

Clock = Callable[[], float]


class Coordinator:
    """What every domain operation (``peerhost_server.domain.*``) works with.

    Attributes:
        backends: where the state lives.
        clock: monotonic seconds (rate limits; leases are judged on the backend's own clock).
        wall: wall-clock seconds (upload times, gc's grace period: they survive restarts).
        limits: what requests, leases, trees and sessions may use.
        pairings: pairing lists already computed (see :class:`PairingMemo`).
        initial_admin_token: the admin token when this start created it (shown once, never
            stored in clear), else None.
    """

    def __init__(self, backends: Backends, *, clock: Clock, limits: Limits,
                 wall: Clock = time.time) -> None:
        self.backends = backends
        self.clock = clock
        self.wall = wall
        self.limits = limits
        self.pairings = PairingMemo(limits.max_pairing_chunks)
        new = mint_token()
        self.initial_admin_token = new.token if backends.directory.init_admin(new) else None

    def close(self) -> None:
        """Close the backends (idempotent)."""
        self.backends.close()

    def authenticate(self, token: str) -> Identity | None:
        """Who ``token`` is, or None when it is unknown, revoked or malformed."""
        token_id = token_id_of(token)
        if token_id is None:
            return None
        return self.identify(token_id, digest_token(token))

    def identify(self, token_id: str, digest: str) -> Identity | None:
        """Who holds the token with this id and digest (the dashboard's web sessions keep
        these, not the token), or None once it is revoked."""
        return self.backends.directory.identify(token_id, digest)

    def session(self, name: str) -> SessionInfo:
        """A session's record.

        Raises:
            NoSession.
        """
        info = self.backends.directory.session(name)
        if info is None:
            raise NoSession(name)
        return info

    def store(self, session: str) -> SessionObjects:
        """The session's objects."""
        return self.backends.objects.open(session)

    def summaries(self, session: str, oids: list[ObjectId]) -> list[Summary | None]:
        """The summary each id's completeness mark holds (None: not marked)."""
        return self.backends.marks.summaries(session, oids)
