"""The embedded backends: everything in LMDB in one data folder, served by one process.

Two kinds of environment, both through :class:`peerhost_store.store.LmdbStore`:

* ``DATA/sessions/<name>/store``: one object store per session, so a session's tokens can
  never read another session's objects; its meta holds the upload log (``upload/<seq>``), which
  gc's grace period reads;
* ``DATA/sessions/<name>/index``: with objects kept elsewhere (a bucket), the session's
  object index (:class:`LmdbObjectIndex`) instead of its store;
* ``DATA/coordinator``: everything else, as JSON values in the store's ``meta`` table
  (``session/<name>``, ``sessions``, ``admin``, ``token/<id>``, ``lease/<name>``,
  ``log/<name>/<seq>``, ``logn/<name>``, ``retention/<name>``, ``shallow/<name>``,
  ``retained/<name>``), heads as refs ``head/<name>``, and ``complete/<name>/<hex id>`` marks
  holding each node's summary. A lease work (a head move, its log entry and its marks, or a
  revocation) is one transaction.

Every change is fsynced before the call that made it returns. One process owns a data folder
(``DATA/coordinator.lock``), which is what makes the state this module keeps in memory
correct: each session's lease state and its lock, head and upload locks, the cache of tokens
already checked and of completeness marks already read, the dashboard's web sessions (a
restart signs browsers out). A backend shared by several processes keeps none of these.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar, cast

import msgpack

from peerhost_store.bounds import Summary
from peerhost_store.errors import StoreError
from peerhost_store.ids import ObjectId
from peerhost_store.lock import FileLock, Locked
from peerhost_store.retention import RetentionPolicy
from peerhost_store.store import LmdbStore, RefConflict, Update

from ..auth import ADMIN, MEMBER, OWNER, Identity, NewToken, same_digest
from ..domain.errors import (
    DiskFull,
    DomainError,
    HeadMoved,
    MemberExists,
    NoMember,
    NoSession,
    SessionExists,
)
from ..domain.protocols import (
    Indexed,
    LeaseWork,
    SessionInfo,
    SessionSettings,
    Usage,
    WebSession,
    WouldBlock,
)
from ..leases import SessionLease
from ..limits import Limits

__all__ = ["LmdbBackends", "LmdbObjectIndex", "open_lmdb"]

T = TypeVar("T")
Clock = Callable[[], float]


class _Db:
    """JSON values in the coordinator environment's meta table."""

    def __init__(self, kv: LmdbStore) -> None:
        self.kv = kv

    def get(self, key: str) -> Any:
        raw = self.kv.meta.get(key)
        return None if raw is None else json.loads(raw)

    def put(self, values: Mapping[str, Any], *, raw: Mapping[str, bytes | None] | None = None,
            refs: list[tuple[str, ObjectId | None, ObjectId | None]] | None = None) -> None:
        """Write JSON ``values`` (None deletes), ``raw`` bytes and ref swaps at once."""
        meta = {k: None if v is None else json.dumps(v).encode() for k, v in values.items()}
        self.kv.apply(Update(meta={**meta, **(raw or {})}, refs=refs or []))


class LmdbBackends:
    """The coordinator's state in ``data_dir`` (created if needed), owned by this process.

    Raises:
        StoreError: another coordinator serves ``data_dir``, or it cannot be opened.
    """

    loop_safe = True  # reads are memory-mapped and never wait for a writer

    def __init__(self, data_dir: Path, *, clock: Clock, limits: Limits) -> None:
        self.data_dir = data_dir
        self._reserve = limits.min_free_bytes
        data_dir.mkdir(parents=True, exist_ok=True)
        self._owner_lock = FileLock(data_dir / "coordinator.lock")
        try:
            self._owner_lock.__enter__()
        except Locked as exc:
            # Two coordinators on one folder would each grant leases: fencing would break.
            raise StoreError(f"another coordinator is serving {data_dir}") from exc
        try:
            #: The coordinator environment (tests reach under the protocols through it).
            self.kv = LmdbStore(data_dir / "coordinator")
        except BaseException:
            self._owner_lock.__exit__(None, None, None)
            raise
        db = _Db(self.kv)
        self.directory = LmdbDirectory(db, clock)
        self.marks = LmdbMarks(db)
        self.leases = LmdbLeases(db, clock, limits.standby_window, self.directory, self.marks)
        self.log = LmdbLog(db)
        self.retention = LmdbRetention(db, self.marks)
        self.objects = LmdbObjectStores(data_dir / "sessions")
        self._indexes: dict[str, LmdbObjectIndex] = {}
        self._closed = False
        self._close_lock = threading.Lock()

    def classify(self, exc: BaseException) -> DomainError | None:
        """A write that failed on a (nearly) full disk is :class:`DiskFull`: the client learns
        that nothing was written and that it may retry later."""
        if not isinstance(exc, StoreError):
            return None
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            free = 0
        if "is full" in str(exc) or free < self._reserve:
            return DiskFull(free)
        return None

    def object_index(self, session: str) -> LmdbObjectIndex:
        """The index of ``session``'s objects kept elsewhere, ``DATA/sessions/<name>/index``."""
        with self._close_lock:
            index = self._indexes.get(session)
            if index is None:
                index = self._indexes[session] = LmdbObjectIndex(
                    self.data_dir / "sessions" / session / "index")
            return index

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self.objects.close()
            for index in self._indexes.values():
                index.close()
            self.kv.close()
            self._owner_lock.__exit__(None, None, None)


def open_lmdb(data_dir: Path, *, clock: Clock, limits: Limits, url: str = "lmdb:"
              ) -> LmdbBackends:
    """The opener :func:`peerhost_server.backends.open_backends` calls for ``lmdb:``."""
    return LmdbBackends(data_dir, clock=clock, limits=limits)


# -- sessions, members, tokens ----------------------------------------------------------------


def _token(new: NewToken, role: str, session: str | None, member: str) -> dict[str, Any]:
    return {"digest": new.digest, "role": role, "session": session, "member": member}


class LmdbDirectory:
    """Session records ``session/<name>`` (``{name, created, owner, members: {name: token
    id}, settings}``), the list ``sessions``, the admin's token id ``admin`` and ``token/<id>`` records
    (``{digest, role, session, member}``). Web sessions are kept in memory, in creation order,
    their expiry judged on ``clock``: one process serves the data folder."""

    def __init__(self, db: _Db, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._web: OrderedDict[str, WebSession] = OrderedDict()
        self._web_lock = threading.Lock()
        self.lock = threading.Lock()  # read-modify-write of session records
        # Tokens already checked, by digest (never in clear): a hit skips the read and the
        # JSON decoding. A revocation clears it and bumps the generation, so a check that read
        # a record before the revocation committed cannot put it back afterwards.
        self._known: dict[str, Identity] = {}
        self._known_lock = threading.Lock()  # held for dict updates only
        self._revocations = 0

    def init_admin(self, token: NewToken) -> bool:
        with self.lock:
            if self._db.get("admin") is not None:
                return False
            self._db.put({"admin": token.token_id,
                          f"token/{token.token_id}": _token(token, ADMIN, None, ADMIN)})
            return True

    def identify(self, token_id: str, digest: str) -> Identity | None:
        who = self._known.get(digest)
        if who is not None:
            return who
        generation = self._revocations
        record = self._db.get(f"token/{token_id}")
        if record is None or not same_digest(record["digest"], digest):
            return None
        who = Identity(token_id, record["role"], record["session"], record["member"])
        with self._known_lock:
            if generation == self._revocations:
                self._known[digest] = who
        return who

    def session(self, name: str) -> SessionInfo | None:
        record = self._db.get(f"session/{name}")
        if record is None:
            return None
        return SessionInfo(record["name"], record["created"], tuple(record["members"]),
                           SessionSettings(**record.get("settings", {})))

    def session_names(self) -> list[str]:
        return list(self._db.get("sessions") or [])

    def create_session(self, name: str, owner: NewToken, created: int) -> None:
        with self.lock:
            if self._db.get(f"session/{name}") is not None:
                raise SessionExists(name)
            record = {"name": name, "created": created, "owner": owner.token_id, "members": {}}
            self._db.put({
                f"session/{name}": record,
                f"token/{owner.token_id}": _token(owner, OWNER, name, OWNER),
                "sessions": [*self.session_names(), name],
            })

    def add_member(self, session: str, name: str, token: NewToken) -> None:
        with self.lock:
            record = self._record(session)
            if name in record["members"]:
                raise MemberExists(session, name)
            record["members"][name] = token.token_id
            self._db.put({f"session/{session}": record,
                          f"token/{token.token_id}": _token(token, MEMBER, session, name)})

    def set_settings(self, session: str, settings: SessionSettings) -> None:
        with self.lock:
            record = self._record(session)
            record["settings"] = asdict(settings)
            self._db.put({f"session/{session}": record})

    def create_web_session(self, key: str, token_id: str, digest: str, csrf: str, *,
                           seconds: float, keep: int) -> None:
        with self._web_lock:
            now = self._clock()
            for old in [k for k, web in self._web.items() if web.expires <= now]:
                del self._web[old]
            while self._web and len(self._web) >= keep:
                self._web.popitem(last=False)
            self._web[key] = WebSession(token_id, digest, csrf, now + seconds)

    def web_session(self, key: str) -> WebSession | None:
        with self._web_lock:
            web = self._web.get(key)
            if web is not None and web.expires <= self._clock():
                del self._web[key]
                return None
            return web

    def drop_web_session(self, key: str) -> None:
        with self._web_lock:
            self._web.pop(key, None)

    def _record(self, session: str) -> dict[str, Any]:
        record = self._db.get(f"session/{session}")
        if record is None:
            raise NoSession(session)
        return cast(dict[str, Any], record)

    def revocation(self, session: str, member: str) -> dict[str, Any]:
        """The values that revoke ``member`` (hold :attr:`lock` until they are written).

        Raises:
            NoSession, NoMember.
        """
        record = self._record(session)
        token_id = record["members"].pop(member, None)
        if token_id is None:
            raise NoMember(session, member)
        return {f"session/{session}": record, f"token/{token_id}": None}

    def forget_tokens(self) -> None:
        """Drop every cached identity: call once a revocation is durable (see identify)."""
        with self._known_lock:
            self._revocations += 1
            self._known.clear()


# -- leases and heads -------------------------------------------------------------------------


class _LeaseSlot:
    """One session's lease state, its lock and the JSON of it last persisted."""

    __slots__ = ("lock", "persisted", "state")

    def __init__(self, state: SessionLease) -> None:
        self.lock = threading.Lock()
        self.state = state
        self.persisted = state.to_json()


class _Work:
    """A :class:`~peerhost_server.domain.protocols.LeaseWork` on one session."""

    __slots__ = ("_directory", "head", "now", "revoked", "session", "state")

    def __init__(self, session: str, state: SessionLease, now: float,
                 directory: LmdbDirectory) -> None:
        self.session, self.state, self.now = session, state, now
        self._directory = directory
        self.head: tuple[ObjectId | None, ObjectId, dict[str, Any], dict[ObjectId, Summary]] \
            | None = None
        self.revoked: str | None = None

    def move_head(self, old: ObjectId | None, new: ObjectId, *, entry: Mapping[str, Any],
                  marks: Mapping[ObjectId, Summary]) -> None:
        self.head = (old, new, dict(entry), dict(marks))

    def revoke(self, member: str) -> None:
        with self._directory.lock:
            self._directory.revocation(self.session, member)  # refused now, not at the commit
        self.revoked = member


class LmdbLeases:
    """Lease state ``lease/<name>`` (:meth:`SessionLease.to_json`), heads ``head/<name>`` and
    the log. Each session's state is kept in memory with a lock of its own, so one session's
    fsync never stalls another's lease, and a renewal that changes nothing persisted (its
    expiry is not persisted) costs no write."""

    def __init__(self, db: _Db, clock: Clock, window: float, directory: LmdbDirectory,
                 marks: LmdbMarks) -> None:
        self._db, self._clock, self._window = db, clock, window
        self._directory, self._marks = directory, marks
        self._slots: dict[str, _LeaseSlot] = {}
        self._slots_lock = threading.Lock()  # guards the dict only; never held across a write
        self._head_locks: dict[str, threading.Lock] = {}

    def _slot(self, session: str) -> _LeaseSlot:
        slot = self._slots.get(session)
        if slot is None:
            with self._slots_lock:
                slot = self._slots.get(session)
                if slot is None:
                    raw = self._db.get(f"lease/{session}")  # a read: memory-mapped, no fsync
                    state = (SessionLease(window=self._window) if raw is None
                             else SessionLease.from_json(raw, self._clock(), self._window))
                    slot = self._slots[session] = _LeaseSlot(state)
        return slot

    @contextmanager
    def work(self, session: str) -> Iterator[LeaseWork]:
        # The body works on a copy, which replaces the state only once whatever it changed
        # that survives a restart is durably written.
        slot = self._slot(session)
        with slot.lock:
            work = _Work(session, slot.state.copy(), self._clock(), self._directory)
            yield work
            persisted = work.state.to_json()
            self._commit(work, None if persisted == slot.persisted else persisted)
            slot.persisted = persisted
            slot.state = work.state

    def _commit(self, work: _Work, lease: dict[str, Any] | None) -> None:
        session = work.session
        values: dict[str, Any] = {} if lease is None else {f"lease/{session}": lease}
        marks: dict[str, bytes | None] = {}
        refs: list[tuple[str, ObjectId | None, ObjectId | None]] = []
        if work.head is not None:
            old, new, entry, verified = work.head
            seq = int(self._db.get(f"logn/{session}") or 0)
            values.update({f"log/{session}/{seq:012d}": entry, f"logn/{session}": seq + 1})
            marks = {_complete_key(session, oid): s.to_bytes() for oid, s in verified.items()}
            refs = [(f"head/{session}", old, new)]
        with ExitStack() as held:
            if work.revoked is not None:
                held.enter_context(self._directory.lock)  # no add_member between read and write
                values.update(self._directory.revocation(session, work.revoked))
            if not values and not marks and not refs:
                return
            try:
                self._db.put(values, raw=marks, refs=refs)
            except RefConflict as exc:
                raise HeadMoved(exc.actual) from exc
        if work.head is not None:
            self._marks.remember(session, work.head[3])
        if work.revoked is not None:
            self._directory.forget_tokens()  # after the delete is durable

    def try_work(self, session: str, fn: Callable[[SessionLease, float], T]) -> T:
        slot = self._slot(session)
        if not slot.lock.acquire(blocking=False):
            raise WouldBlock(session)  # held, maybe across an fsync
        try:
            work = slot.state.copy()
            result = fn(work, self._clock())
            if work.to_json() != slot.persisted:
                raise WouldBlock(session)
            slot.state = work
            return result
        finally:
            slot.lock.release()

    def head(self, session: str) -> ObjectId | None:
        return self._db.kv.refs.get(f"head/{session}")

    def head_lock(self, session: str) -> threading.Lock:
        with self._slots_lock:
            return self._head_locks.setdefault(session, threading.Lock())


class LmdbLog:
    """Head moves ``log/<name>/<seq>`` (JSON), counted by ``logn/<name>``."""

    def __init__(self, db: _Db) -> None:
        self._db = db

    def entries(self, session: str, limit: int) -> list[dict[str, Any]]:
        count = int(self._db.get(f"logn/{session}") or 0)
        return [self._db.get(f"log/{session}/{seq:012d}")
                for seq in range(max(0, count - limit), count)]


def _complete_key(session: str, oid: ObjectId) -> str:
    return f"complete/{session}/{oid.hex()}"


class LmdbMarks:
    """Completeness marks ``complete/<name>/<hex id>`` holding the node's summary (empty for
    marks written before marks carried summaries); ids seen marked are remembered."""

    def __init__(self, db: _Db) -> None:
        self._db = db
        self._complete: dict[str, set[ObjectId]] = {}

    def summaries(self, session: str, oids: list[ObjectId]) -> list[Summary | None]:
        out = []
        for oid in oids:
            raw = self._db.kv.meta.get(_complete_key(session, oid))
            out.append(Summary.from_bytes(raw) if raw else None)
        return out

    def complete(self, session: str, oids: list[ObjectId]) -> list[bool]:
        known = self._complete.setdefault(session, set())
        out = []
        for oid in oids:
            hit = oid in known or self._db.kv.meta.get(_complete_key(session, oid)) is not None
            if hit:
                known.add(oid)
            out.append(hit)
        return out

    def remember(self, session: str, oids: Iterable[ObjectId]) -> None:
        self._complete.setdefault(session, set()).update(oids)

    def forget(self, session: str, oids: Iterable[ObjectId]) -> None:
        self._complete.get(session, set()).difference_update(oids)


class LmdbRetention:
    """``retention/<name>`` (the policy's fields), ``shallow/<name>`` and ``retained/<name>``
    (lists of hex ids)."""

    def __init__(self, db: _Db, marks: LmdbMarks) -> None:
        self._db, self._marks = db, marks

    def policy(self, session: str) -> RetentionPolicy:
        return RetentionPolicy(**(self._db.get(f"retention/{session}") or {}))

    def set_policy(self, session: str, policy: RetentionPolicy) -> None:
        self._db.put({f"retention/{session}": asdict(policy)})

    def shallow(self, session: str) -> set[ObjectId]:
        return {ObjectId(bytes.fromhex(h)) for h in self._db.get(f"shallow/{session}") or []}

    def retained(self, session: str) -> list[ObjectId]:
        return [ObjectId(bytes.fromhex(h)) for h in self._db.get(f"retained/{session}") or []]

    def forget(self, session: str, deleted: list[ObjectId], *, shallow: set[ObjectId],
               retained: set[ObjectId]) -> None:
        self._db.put({f"shallow/{session}": sorted(o.hex() for o in shallow),
                      f"retained/{session}": sorted(o.hex() for o in retained)},
                     raw={_complete_key(session, oid): None for oid in deleted})
        self._marks.forget(session, deleted)


# -- objects ----------------------------------------------------------------------------------

NEXT, FIRST = "upload-next", "upload-first"


def _int(raw: bytes | None) -> int:
    return int(raw.decode()) if raw else 0


def _recent_uploads(store: LmdbStore, horizon: float
                    ) -> tuple[set[ObjectId], dict[str, bytes | None]]:
    """Ids named by the uploads ``store``'s meta logs at or after ``horizon``, and the meta
    changes that drop the log entries before it (the log is in time order)."""
    first, end = _int(store.meta.get(FIRST)), _int(store.meta.get(NEXT))
    protected: set[ObjectId] = set()
    expired: dict[str, bytes | None] = {}
    for seq in range(first, end):
        raw = store.meta.get(f"upload/{seq:012d}")
        if raw is None:
            continue
        stamp, ids = msgpack.unpackb(raw)
        if stamp < horizon and not protected:
            expired[f"upload/{seq:012d}"] = None
            expired[FIRST] = str(seq + 1).encode()
        else:
            protected.update(ObjectId(bytes(oid)) for oid in ids)
    return protected, expired


class LmdbSessionObjects:
    """One session's :class:`LmdbStore`. Each write also records, in the same transaction, its
    time and the ids it stored (``upload/<seq>``, from ``upload-first`` to ``upload-next``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store = LmdbStore(path)
        self._upload_lock = threading.Lock()  # writes against gc's deletion

    def __contains__(self, oid: object) -> bool:
        return oid in self._store.objects

    def get_raw(self, oid: ObjectId) -> bytes:
        return self._store.objects.get_raw(oid)

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        return self._store.objects.get_many(oids)

    def get_unchecked(self, oids: Sequence[ObjectId]) -> list[bytes]:
        return self._store.objects.backend.get_many(oids)

    def peek(self, oids: list[ObjectId], n: int) -> list[tuple[int, bytes] | None]:
        return self._store.peek(oids, n)

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        return self._store.objects.missing(oids)

    def iter_ids(self) -> Iterator[ObjectId]:
        return self._store.objects.iter_ids()

    def used_bytes(self) -> int:
        return self._store.used_bytes()

    def stored_bytes(self) -> int:
        data = self.path / "data.mdb"
        return data.stat().st_size if data.exists() else 0

    def check_room(self, incoming: int, reserve: int) -> None:
        free = shutil.disk_usage(self.path).free
        # LMDB writes each page anew (copy on write): room for the data twice, and the reserve.
        if free - 2 * incoming < reserve:
            raise DiskFull(free, 2 * incoming + reserve)

    def write(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]], stamp: int) -> int:
        with self._upload_lock:
            seq = _int(self._store.meta.get(NEXT))
            log = msgpack.packb([stamp, [oid for oid, _ in objects]])
            # Views of a request body are fine here: LMDB copies what it stores.
            return self._store.apply(Update(
                hashed=list(objects),
                meta={f"upload/{seq:012d}": log, NEXT: str(seq + 1).encode()}))

    def sweep(self, keep: Container[ObjectId], horizon: float,
              before: Callable[[list[ObjectId]], None]) -> list[ObjectId]:
        with self._upload_lock:
            protected, expired = _recent_uploads(self._store, horizon)
            garbage = [oid for oid in self._store.objects.iter_ids()
                       if oid not in keep and oid not in protected]
            before(garbage)
            self._store.apply(Update(delete_objects=garbage, meta=expired))
            return garbage

    def close(self) -> None:
        self._store.close()


#: Room each indexed object may take in the index (key, value, its upload log entry).
INDEX_BYTES_PER_OBJECT = 256
USED = "used"


class LmdbObjectIndex:
    """A :class:`~peerhost_server.domain.protocols.ObjectIndex` in an LMDB store's meta:
    ``id/<hex> -> size (8 bytes, big-endian) + first bytes``, for a packed object
    ``at/<hex> -> pack id + offset (8 bytes, big-endian)``, their total ``used``, and the
    upload log as :class:`LmdbSessionObjects` keeps it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # read-modify-write of the total and the log
        # Created by the first write: a session that never stored objects has no index.
        self._opened: LmdbStore | None = (
            LmdbStore(path) if (path / "data.mdb").exists() else None)

    @property
    def _store(self) -> LmdbStore:
        if self._opened is None:
            with self._lock:
                if self._opened is None:
                    self._opened = LmdbStore(self.path)
        return self._opened

    def locate(self, oids: Sequence[ObjectId]) -> list[Indexed | None]:
        if self._opened is None:
            return [None] * len(oids)
        # One read transaction for all of them: an entry and its place are seen together.
        values = self._opened.meta.get_many(
            [f"{kind}/{oid.hex()}" for oid in oids for kind in ("id", "at")])
        out: list[Indexed | None] = []
        for raw, at in zip(values[::2], values[1::2], strict=True):
            out.append(None if raw is None else Indexed(
                int.from_bytes(raw[:8], "big"), raw[8:],
                None if at is None else ObjectId(at[:32]),
                0 if at is None else int.from_bytes(at[32:], "big")))
        return out

    def sizes(self, oids: Sequence[ObjectId]) -> list[int | None]:
        return [None if e is None else e.size for e in self.locate(oids)]

    def ids(self) -> Iterator[ObjectId]:
        if self._opened is None:
            return iter(())
        return (ObjectId(bytes.fromhex(key[3:])) for key, _ in self._opened.meta.scan("id/"))

    def packs(self) -> dict[ObjectId, int]:
        if self._opened is None:
            return {}
        meta = self._opened.meta
        sizes = {key[3:]: int.from_bytes(value[:8], "big") for key, value in meta.scan("id/")}
        out: dict[ObjectId, int] = {}
        for key, value in meta.scan("at/"):
            pack = ObjectId(value[:32])
            out[pack] = out.get(pack, 0) + sizes.get(key[3:], 0)
        return out

    def relocate(self, objects: Mapping[ObjectId, Indexed]) -> None:
        with self._lock:
            known = self.sizes(list(objects))
            self._store.apply(Update(meta={
                f"at/{oid.hex()}": entry.pack + entry.offset.to_bytes(8, "big")
                for (oid, entry), size in zip(objects.items(), known, strict=True)
                if size is not None and entry.pack is not None}))

    def used(self) -> int:
        return 0 if self._opened is None else _int(self._opened.meta.get(USED))

    def check_room(self, count: int, reserve: int) -> None:
        folder = self.path
        while not folder.exists():  # not created yet: the disk it will be on
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        needed = reserve + 2 * count * INDEX_BYTES_PER_OBJECT  # LMDB: copy on write
        if free < needed:
            raise DiskFull(free, needed)

    def add(self, objects: Mapping[ObjectId, Indexed], upload: Sequence[ObjectId],
            stamp: int) -> int:
        store = self._store
        with self._lock:
            fresh = {oid: entry for (oid, entry), known in
                     zip(objects.items(), self.sizes(list(objects)), strict=True)
                     if known is None}
            seq = _int(store.meta.get(NEXT))
            meta: dict[str, bytes | None] = {}
            for oid, entry in fresh.items():
                meta[f"id/{oid.hex()}"] = entry.size.to_bytes(8, "big") + entry.head
                if entry.pack is not None:
                    meta[f"at/{oid.hex()}"] = entry.pack + entry.offset.to_bytes(8, "big")
            meta.update({USED: str(self.used() + sum(e.size for e in fresh.values())).encode(),
                         f"upload/{seq:012d}": msgpack.packb([stamp, list(upload)]),
                         NEXT: str(seq + 1).encode()})
            store.apply(Update(meta=meta))
            return len(fresh)

    def recent(self, horizon: float) -> set[ObjectId]:
        return set() if self._opened is None else _recent_uploads(self._opened, horizon)[0]

    def remove(self, oids: Sequence[ObjectId], horizon: float) -> None:
        store = self._opened
        if store is None:
            return  # nothing indexed, no log
        with self._lock:
            unique = list(dict.fromkeys(oids))
            sizes = [s for s in self.sizes(unique) if s is not None]
            meta: dict[str, bytes | None] = {f"{kind}/{oid.hex()}": None
                                             for oid in unique for kind in ("id", "at")}
            meta[USED] = str(max(0, self.used() - sum(sizes))).encode()
            meta.update(_recent_uploads(store, horizon)[1])
            store.apply(Update(meta=meta))

    def close(self) -> None:
        with self._lock:
            if self._opened is not None:
                self._opened.close()


class LmdbObjectStores:
    """``ROOT/<session>/store``, each opened on first use and kept open."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._stores: dict[str, LmdbSessionObjects] = {}
        self._lock = threading.Lock()

    def open(self, session: str) -> LmdbSessionObjects:
        store = self._stores.get(session)
        if store is None:
            with self._lock:
                store = self._stores.get(session)
                if store is None:
                    store = LmdbSessionObjects(self._root / session / "store")
                    self._stores[session] = store
        return store

    def usage(self, session: str) -> Usage:
        if not (self._root / session / "store" / "data.mdb").exists():
            return Usage(0, 0)  # nothing stored yet: create nothing
        store = self.open(session)
        return Usage(store.stored_bytes(), store.used_bytes())

    def close(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
