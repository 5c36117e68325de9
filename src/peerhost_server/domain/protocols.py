"""What the domain needs from where the coordinator's state lives: the backend protocols.

A deployment provides :class:`Backends`: the coordination state (:class:`Directory`,
:class:`LeaseStore`, :class:`HeadLog`, :class:`Marks`, :class:`Retention`) and the objects of
each session (:class:`ObjectStores`). The embedded default keeps all of it in LMDB in one data
folder, for one process (:mod:`peerhost_server.backends.lmdb`). A backend shared by several
coordinator processes implements the same protocols with transactions and row locks, and
keeps no state in one process that another could contradict: the domain keeps none either
(its one memo, of tree pairings, is keyed by content ids and so never goes stale), nor does
the dashboard (its web sessions are the :class:`Directory`'s).

Contracts every backend keeps:

* a change is durable before the call that made it returns;
* a :meth:`LeaseStore.work` is one transaction: the session's lease state, a head
  compare-and-swap, its log entry and its completeness marks, and a revocation, all or none;
  works on one session are serialised, works on different sessions are not;
* a failure of the backend itself is a :class:`~peerhost_store.errors.StoreError` (chained to
  its cause); :meth:`Backends.classify` says which of them the client should hear about as a
  domain error (a full disk).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from peerhost_store.bounds import Summary
from peerhost_store.ids import ObjectId
from peerhost_store.retention import RetentionPolicy

from ..auth import Identity, NewToken
from ..leases import SessionLease
from .errors import DomainError

T = TypeVar("T")


class WouldBlock(Exception):
    """A fast-path call (:meth:`LeaseStore.try_work`) cannot finish without waiting for a lock
    or writing; nothing was changed, so run it again the slow way, in a worker thread."""


#: Who may roll a session's head back: ``owner``, its owner alone (the default), or
#: ``lease``, also the member holding the lease (with its current fencing token).
ROLLBACK_BY = ("owner", "lease")


@dataclass(frozen=True)
class SessionSettings:
    """What a session's owner decides for it.

    Attributes:
        rollback: who may roll the head back, one of :data:`ROLLBACK_BY`.
    """

    rollback: str = "owner"


@dataclass(frozen=True)
class SessionInfo:
    """A session's record: its name, when it was created (wall-clock seconds), its
    members' names (the owner is not one of them) and its owner's settings."""

    name: str
    created: int
    members: tuple[str, ...]
    settings: SessionSettings = SessionSettings()


@dataclass(frozen=True)
class WebSession:
    """A browser signed in to the dashboard: its token's id and digest (never the token), the
    CSRF token of its forms, and when it ends (seconds on the backend's clock)."""

    token_id: str
    digest: str
    csrf: str
    expires: float


class Directory(Protocol):
    """Sessions, their members, the hashed tokens of the admin, owners and members, and the
    dashboard's web sessions."""

    def init_admin(self, token: NewToken) -> bool:
        """Store ``token`` as the admin's unless there is one; return whether it was stored."""
        ...

    def identify(self, token_id: str, digest: str) -> Identity | None:
        """Who holds the token with this id and digest (compared in constant time), or None.
        Called for every request: a backend may cache answers, and must forget them when a
        token is revoked."""
        ...

    def session(self, name: str) -> SessionInfo | None: ...

    def session_names(self) -> list[str]:
        """Every session, in the order they were created."""
        ...

    def create_session(self, name: str, owner: NewToken, created: int) -> None:
        """Raises: SessionExists."""
        ...

    def add_member(self, session: str, name: str, token: NewToken) -> None:
        """Raises: NoSession, MemberExists."""
        ...

    def set_settings(self, session: str, settings: SessionSettings) -> None:
        """Raises: NoSession."""
        ...

    def create_web_session(self, key: str, token_id: str, digest: str, csrf: str, *,
                           seconds: float, keep: int) -> None:
        """Store a web session under ``key`` (a hash of the browser's cookie, never the
        cookie), ending ``seconds`` from now on the backend's clock. First delete the expired
        ones, then the oldest until fewer than ``keep`` (at least 1) are left, so that at most
        ``keep`` are kept however many browsers sign in."""
        ...

    def web_session(self, key: str) -> WebSession | None:
        """The web session stored under ``key``, or None: there is none, or it expired (then
        it is deleted)."""
        ...

    def drop_web_session(self, key: str) -> None:
        """Delete the web session under ``key``, if any (signing out)."""
        ...


class LeaseWork(Protocol):
    """One unit of work on one session (see :meth:`LeaseStore.work`).

    Attributes:
        state: a working copy of the session's lease state; change it in place.
        now: the time the lease state is judged at (the backend's clock).
    """

    state: SessionLease
    now: float

    def move_head(self, old: ObjectId | None, new: ObjectId, *, entry: Mapping[str, Any],
                  marks: Mapping[ObjectId, Summary]) -> None:
        """Move the head from ``old`` to ``new`` when the work commits, appending ``entry`` to
        the session's log and marking ``marks`` complete with their summaries. The commit
        raises HeadMoved (nothing written) when the head is not ``old`` by then."""
        ...

    def revoke(self, member: str) -> None:
        """Remove ``member`` and delete its token when the work commits.

        Raises:
            NoSession, NoMember: now, or when the work commits.
        """
        ...


class LeaseStore(Protocol):
    """Each session's lease state and head."""

    def work(self, session: str) -> AbstractContextManager[LeaseWork]:
        """A unit of work on ``session``: the body reads and changes ``state`` and stages a
        head move or a revocation; on leaving, everything is written in one transaction, or
        nothing when nothing that survives a restart changed (a renewal). When the body or
        the commit raises, nothing changes. May wait (for the session's lock, for a write):
        call it from a worker thread."""
        ...

    def try_work(self, session: str, fn: Callable[[SessionLease, float], T]) -> T:
        """``fn(state, now)`` as in :meth:`work`, if that needs neither to wait nor to write:
        fit for the event loop (lease renewals take this path).

        Raises:
            WouldBlock: it would have to wait or write (always, for a backend whose reads
                may block); nothing changed.
            Exception: whatever ``fn`` raises (nothing changed either).
        """
        ...

    def head(self, session: str) -> ObjectId | None: ...

    def head_lock(self, session: str) -> AbstractContextManager[object]:
        """Held while a head change is checked and made, and while gc runs: serialises them
        per session (the head compare-and-swap keeps the head safe without it; the lock keeps
        gc from deleting what a head move is about to reach)."""
        ...


class HeadLog(Protocol):
    """The log of each session's head moves."""

    def entries(self, session: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` entries, oldest first."""
        ...


class Marks(Protocol):
    """Completeness marks: an id whose whole subgraph the session stores and accepted at a
    head move, with its :class:`Summary`."""

    def summaries(self, session: str, oids: list[ObjectId]) -> list[Summary | None]:
        """Each id's summary (None: not marked, or marked before marks carried summaries)."""
        ...

    def complete(self, session: str, oids: list[ObjectId]) -> list[bool]:
        """Whether each id is marked."""
        ...


class Retention(Protocol):
    """Each session's retention policy and where gc cut its history."""

    def policy(self, session: str) -> RetentionPolicy:
        """The policy (keeps everything unless the owner set one)."""
        ...

    def set_policy(self, session: str, policy: RetentionPolicy) -> None: ...

    def shallow(self, session: str) -> set[ObjectId]:
        """Snapshots whose parents gc dropped."""
        ...

    def retained(self, session: str) -> list[ObjectId]:
        """Snapshots the last gc kept that the head does not reach through parents."""
        ...

    def forget(self, session: str, deleted: list[ObjectId], *, shallow: set[ObjectId],
               retained: set[ObjectId]) -> None:
        """Drop the marks of ``deleted`` (about to be deleted) and record ``shallow`` and
        ``retained``, in one transaction."""
        ...


class SessionObjects(Protocol):
    """One session's objects. Reads verify ids (ObjectCorrupt); a session never sees
    another's objects."""

    def __contains__(self, oid: object) -> bool: ...

    def get_raw(self, oid: ObjectId) -> bytes:
        """Raises: ObjectMissing, ObjectCorrupt."""
        ...

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]: ...

    def get_unchecked(self, oids: Sequence[ObjectId]) -> list[bytes]:
        """The stored bytes of each id, not hashed: for a download, whose receiver hashes
        each object against the id it asked for (one hash per boundary). Raises:
        ObjectMissing."""
        ...

    def peek(self, oids: list[ObjectId], n: int) -> list[tuple[int, bytes] | None]:
        """Each object's size and first ``n`` bytes; None when it is not stored."""
        ...

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        """The ids not stored, in order."""
        ...

    def iter_ids(self) -> Iterator[ObjectId]: ...

    def used_bytes(self) -> int:
        """What the session's live objects take (what its quota counts)."""
        ...

    def check_room(self, incoming: int, reserve: int) -> None:
        """Refuse a write of ``incoming`` bytes that would leave less than ``reserve`` bytes
        where objects are written.

        Raises:
            DiskFull: with the room it would need.
        """
        ...

    def write(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]], stamp: int) -> int:
        """Store objects whose ids were computed from their bytes in this process, recording
        them as one upload at wall-clock second ``stamp``; return how many were new."""
        ...

    def sweep(self, keep: Container[ObjectId], horizon: float,
              before: Callable[[list[ObjectId]], None]) -> list[ObjectId]:
        """Delete every object neither in ``keep`` nor named by an upload at or after
        ``horizon``, excluding writes meanwhile; forget uploads older than ``horizon``.
        ``before(garbage)`` runs first (to drop their marks). Return what was deleted."""
        ...


@dataclass(frozen=True)
class Usage:
    """What a session's objects take: ``stored`` on the backend (an LMDB file, free pages
    included), ``used`` by live objects."""

    stored: int
    used: int


class ObjectStores(Protocol):
    """The objects of every session."""

    def open(self, session: str) -> SessionObjects:
        """The session's objects (created on first use)."""
        ...

    def usage(self, session: str) -> Usage:
        """What the session's objects take (zeros, and nothing created, for a session that
        never stored any)."""
        ...


@dataclass(frozen=True)
class Indexed:
    """One indexed object: its size, its first bytes (``head``) and where its bytes are: at
    ``offset`` in the pack ``pack``, or (``pack`` None) under a key of its own, as objects
    were stored before packs."""

    size: int
    head: bytes
    pack: ObjectId | None = None
    offset: int = 0


class ObjectIndex(Protocol):
    """What one session stores where the objects themselves cannot say so cheaply (a bucket,
    where every question is a round trip): each stored id's size, first bytes and place, what
    they all take, and the upload log that gc's grace period reads. Kept in the coordination
    state, next to the marks it must agree with; used by the object stores that need one
    (:mod:`peerhost_server.backends.s3`), not by the domain."""

    def sizes(self, oids: Sequence[ObjectId]) -> list[int | None]:
        """Each id's size (None: not indexed)."""
        ...

    def locate(self, oids: Sequence[ObjectId]) -> list[Indexed | None]:
        """Each id's entry as :meth:`add` was given it (None: not indexed)."""
        ...

    def ids(self) -> Iterator[ObjectId]:
        """Every indexed id."""
        ...

    def packs(self) -> dict[ObjectId, int]:
        """Each pack that holds an indexed object, and what its indexed objects take."""
        ...

    def relocate(self, objects: Mapping[ObjectId, Indexed]) -> None:
        """Point indexed objects at new places (a repack), in one transaction; ids not
        indexed stay so."""
        ...

    def used(self) -> int:
        """What the indexed objects take, in bytes."""
        ...

    def check_room(self, count: int, reserve: int) -> None:
        """Refuse indexing ``count`` more objects that would leave less than ``reserve``
        bytes where the index is written.

        Raises:
            DiskFull.
        """
        ...

    def add(self, objects: Mapping[ObjectId, Indexed], upload: Sequence[ObjectId],
            stamp: int) -> int:
        """Index ``objects`` (those not indexed yet) and log ``upload`` (every id the upload
        named) at wall-clock second ``stamp``, in one transaction; return how many were new."""
        ...

    def recent(self, horizon: float) -> set[ObjectId]:
        """The ids named by uploads at or after ``horizon``."""
        ...

    def remove(self, oids: Sequence[ObjectId], horizon: float) -> None:
        """Unindex ``oids`` and forget the uploads before ``horizon``, in one transaction."""
        ...


class Backends(Protocol):
    """Everything the domain keeps, wherever it lives."""

    @property
    def directory(self) -> Directory: ...

    @property
    def leases(self) -> LeaseStore: ...

    @property
    def log(self) -> HeadLog: ...

    @property
    def marks(self) -> Marks: ...

    @property
    def retention(self) -> Retention: ...

    @property
    def objects(self) -> ObjectStores: ...

    @property
    def loop_safe(self) -> bool:
        """Whether reads never wait for I/O that may block (LMDB: memory-mapped), so that the
        HTTP edge may make them on its event loop."""
        ...

    def classify(self, exc: BaseException) -> DomainError | None:
        """The domain error a failure of this backend means for the client (a full disk),
        or None: an internal error."""
        ...

    def close(self) -> None:
        """Release everything (idempotent)."""
        ...


class IndexingBackends(Backends, Protocol):
    """Backends whose coordination state can also keep an :class:`ObjectIndex` per session,
    for objects kept elsewhere (``phs serve --objects s3://...``)."""

    def object_index(self, session: str) -> ObjectIndex:
        """The session's index (created on first use; closed with the backends)."""
        ...
