"""The coordinator's durable state.

Two kinds of LMDB environment, both through :class:`peerhost_store.store.LmdbStore`:

* ``DATA/sessions/<name>/store``: one object store per session, so a session's tokens can
  never read another session's objects;
* ``DATA/coordinator``: everything else, as JSON values in the store's ``meta`` table
  (``session/<name>``, ``token/<id>``, ``lease/<name>``, ``log/<name>/<seq>``), heads as refs
  ``head/<name>``, and ``complete/<name>/<hex id>`` marks (see
  :func:`peerhost_store.sync.protocol.check_complete`). A head move, its log entry and its
  completeness marks are one transaction.

Every change is durable (fsynced) before the request that made it is answered. One process
owns a data folder at a time (``DATA/coordinator.lock``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from peerhost_store.bounds import DIR, Summary, TreeRefused, check_tree
from peerhost_store.errors import StoreError
from peerhost_store.ids import ObjectId
from peerhost_store.lock import FileLock, Locked
from peerhost_store.retention import RetentionPolicy
from peerhost_store.store import LmdbStore, RefConflict, Update
from peerhost_store.sync.pairing import Budget, Pair, PairingTooLarge, pair_chunks
from peerhost_store.sync.protocol import ObjectStatus
from peerhost_store.worldfs import UnsafePath

from .auth import (
    ADMIN,
    MEMBER,
    OWNER,
    Identity,
    NewToken,
    digest_token,
    mint_token,
    same_digest,
    token_id_of,
)
from .errors import ApiError
from .leases import LeaseError, SessionLease
from .limits import Limits

Clock = Callable[[], float]
T = TypeVar("T")

#: Pairing lists kept in memory: a push or pull of a large change sends many delta requests
#: for the same two trees, and each would otherwise diff them again. At most this many lists,
#: holding at most twice ``max_pairing_chunks`` pairs together.
PAIRINGS_KEPT = 8


class Coordinator:
    """Sessions, tokens, leases, heads and logs of one data folder."""

    def __init__(self, data_dir: Path, *, clock: Clock, limits: Limits,
                 wall: Clock = time.time) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.wall = wall  # upload times, retention: they must survive restarts
        self.limits = limits
        data_dir.mkdir(parents=True, exist_ok=True)
        self._owner_lock = FileLock(data_dir / "coordinator.lock")
        try:
            self._owner_lock.__enter__()
        except Locked as exc:
            # Two coordinators on one folder would each grant leases: fencing would break.
            raise StoreError(f"another coordinator is serving {data_dir}") from exc
        try:
            self.kv = LmdbStore(data_dir / "coordinator")
        except BaseException:
            self._owner_lock.__exit__(None, None, None)
            raise
        self._lock = threading.RLock()
        self._stores: dict[str, LmdbStore] = {}
        self._leases: dict[str, _LeaseSlot] = {}
        self._leases_lock = threading.Lock()  # guards the dict only; never held across a write
        # Tokens already checked, by digest (never in clear): a hit skips the read and the
        # JSON decoding. A revocation clears it and bumps the generation, so a check that read
        # a record before the revocation committed cannot put it back afterwards.
        self._known: dict[str, Identity] = {}
        self._known_lock = threading.Lock()  # held for dict updates only
        self._revocations = 0
        self._complete: dict[str, set[ObjectId]] = {}
        self._head_locks: dict[str, threading.Lock] = {}
        self._upload_locks: dict[str, threading.Lock] = {}
        # Pairing lists, and how pairings were refused (as content-addressed as a list).
        self._pairings: OrderedDict[tuple[str, ObjectId, ObjectId],
                                    list[Pair] | Callable[[], Exception]] = OrderedDict()
        self._closed = False
        #: The admin token, when this start created it (shown once, never stored in clear).
        self.initial_admin_token = self._ensure_admin()

    def close(self) -> None:
        """Close every environment and give up the data folder (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for store in self._stores.values():
                store.close()
            self.kv.close()
            self._owner_lock.__exit__(None, None, None)

    # -- JSON in LMDB ---------------------------------------------------------------------

    def _get(self, key: str) -> Any:
        raw = self.kv.get_meta(key)
        return None if raw is None else json.loads(raw)

    def _put(self, values: dict[str, Any], refs: list[tuple[str, ObjectId | None, ObjectId | None]]
             | None = None) -> None:
        meta = {k: None if v is None else json.dumps(v).encode() for k, v in values.items()}
        self.kv.apply(Update(meta=meta, refs=refs or []))

    # -- tokens and sessions --------------------------------------------------------------

    def _ensure_admin(self) -> str | None:
        with self._lock:
            if self._get("admin") is not None:
                return None
            new = mint_token()
            self._put({"admin": new.token_id, f"token/{new.token_id}": self._token(new, ADMIN, None, ADMIN)})
            return new.token

    @staticmethod
    def _token(new: NewToken, role: str, session: str | None, member: str) -> dict[str, Any]:
        return {"digest": new.digest, "role": role, "session": session, "member": member}

    def authenticate(self, token: str) -> Identity | None:
        """Who ``token`` is, or None when it is unknown, revoked or malformed."""
        token_id = token_id_of(token)
        if token_id is None:
            return None
        digest = digest_token(token)
        who = self._known.get(digest)
        if who is not None:
            return who
        generation = self._revocations
        record = self._get(f"token/{token_id}")
        if record is None or not same_digest(record["digest"], digest):
            return None
        who = Identity(token_id, record["role"], record["session"], record["member"])
        with self._known_lock:
            if generation == self._revocations:
                self._known[digest] = who
        return who

    def session(self, name: str) -> dict[str, Any]:
        """A session's record.

        Raises:
            ApiError: 404 ``no_session``.
        """
        record = self._get(f"session/{name}")
        if record is None:
            raise ApiError(404, "no_session", f"there is no session {name!r}")
        return record  # type: ignore[no-any-return]

    def session_names(self) -> list[str]:
        return list(self._get("sessions") or [])

    def create_session(self, name: str) -> str:
        """Create a session; return its owner token (shown once)."""
        with self._lock:
            if self._get(f"session/{name}") is not None:
                raise ApiError(409, "session_exists", f"session {name!r} already exists")
            new = mint_token()
            record = {"name": name, "created": int(time.time()), "owner": new.token_id,
                      "members": {}}
            self._put({
                f"session/{name}": record,
                f"token/{new.token_id}": self._token(new, OWNER, name, OWNER),
                "sessions": [*self.session_names(), name],
            })
            return new.token

    def add_member(self, session: str, name: str) -> str:
        """Add a member to a session; return its token (shown once)."""
        with self._lock:
            record = self.session(session)
            if name == OWNER or name in record["members"]:
                raise ApiError(409, "member_exists", f"{name!r} is already a member of {session!r}")
            new = mint_token()
            record["members"][name] = new.token_id
            self._put({f"session/{session}": record,
                       f"token/{new.token_id}": self._token(new, MEMBER, session, name)})
            return new.token

    def remove_member(self, session: str, name: str) -> None:
        """Revoke a member's token; its lease and standby entry go in the same transaction
        (:meth:`SessionLease.drop_member`), so nothing it queued outlives it."""
        with self._lock:
            record = self.session(session)
            token_id = record["members"].pop(name, None)
            if token_id is None:
                raise ApiError(404, "no_member", f"{name!r} is not a member of {session!r}")
            revoked = {f"session/{session}": record, f"token/{token_id}": None}
            with self.lease(session, also=revoked) as (state, now):
                state.drop_member(now, name)
            with self._known_lock:  # after the delete is durable: see authenticate()
                self._revocations += 1
                self._known.clear()

    # -- objects --------------------------------------------------------------------------

    def store(self, session: str) -> LmdbStore:
        """The session's object store (opened on first use)."""
        with self._lock:
            store = self._stores.get(session)
            if store is None:
                store = LmdbStore(self.data_dir / "sessions" / session / "store")
                self._stores[session] = store
            return store

    def pairing(self, session: str, base: ObjectId, target: ObjectId,
                cancelled: Callable[[], bool] = lambda: False) -> list[Pair]:
        """``pair_chunks`` of two trees of the session's store, within this coordinator's
        per-request budget, remembered for the next request (trees are content-addressed, so
        a computed list never goes stale).

        Raises:
            ObjectMissing: a node of either tree is not stored in this session.
            TreeRefused, UnsafePath: the target is not validated and fails
                :func:`peerhost_store.bounds.check_tree`.
            DecodeError: a node is malformed; PairingTooLarge past the budget.
            PairingCancelled: ``cancelled()`` turned true (the client went away).
        """
        key = (session, base, target)
        with self._lock:
            if key in self._pairings:
                self._pairings.move_to_end(key)
                known = self._pairings[key]
                if callable(known):
                    raise known()  # refused before: a repeated request costs nothing again
                return known
        try:
            pairs = self._pair(session, base, target, cancelled)
        except (TreeRefused, UnsafePath, PairingTooLarge) as exc:
            self._remember(key, _refusal(exc))
            raise
        self._remember(key, pairs)
        return pairs

    def _pair(self, session: str, base: ObjectId, target: ObjectId,
              cancelled: Callable[[], bool]) -> list[Pair]:
        store = self.store(session)
        if not self.validated_tree(session, target):
            # A push's tree, not a head yet: the client's bounded check first (each distinct
            # directory node once), so a bomb costs its size, not the whole budget.
            check_tree(store, target, self.limits.tree)
        budget = Budget(self.limits.max_pairing_nodes, self.limits.max_pairing_chunks, cancelled)
        return pair_chunks(store, base, target, budget=budget)  # reads: unlocked

    def _remember(self, key: tuple[str, ObjectId, ObjectId],
                  value: list[Pair] | Callable[[], Exception]) -> None:
        with self._lock:
            self._pairings[key] = value
            while len(self._pairings) > PAIRINGS_KEPT or len(self._pairings) > 1 and sum(
                    len(v) for v in self._pairings.values() if isinstance(v, list)
            ) > 2 * self.limits.max_pairing_chunks:
                self._pairings.popitem(last=False)

    def validated_tree(self, session: str, oid: ObjectId) -> bool:
        """Whether ``oid`` is the root of a tree this session accepted at a head move (the
        tree of a head or of its history), within today's bounds."""
        summary = self.summaries(session, [oid])[0]
        if summary is None or summary.kind != DIR or summary.reserved:
            return False
        try:
            summary.within(self.limits.tree, "/")
        except TreeRefused:
            return False
        return True

    def summaries(self, session: str, oids: list[ObjectId]) -> list[Summary | None]:
        """The summary stored with each id's completeness mark (None: no mark, or a mark
        written before marks carried summaries, whose subgraph must be checked again)."""
        out = []
        for oid in oids:
            raw = self.kv.get_meta(_complete_key(session, oid))
            out.append(Summary.from_bytes(raw) if raw else None)
        return out

    def is_complete(self, session: str, oids: list[ObjectId]) -> list[bool]:
        """Whether each id is marked complete in the session."""
        known = self._complete.setdefault(session, set())
        out = []
        for oid in oids:
            hit = oid in known or self.kv.get_meta(_complete_key(session, oid)) is not None
            if hit:
                known.add(oid)
            out.append(hit)
        return out

    def object_status(self, session: str, oids: list[ObjectId]) -> list[ObjectStatus]:
        """Missing, present or complete, for each id."""
        missing = set(self.store(session).iter_missing(oids))
        present = [oid for oid in oids if oid not in missing]
        complete = {oid for oid, c in zip(present, self.is_complete(session, present)) if c}
        return [ObjectStatus.MISSING if oid in missing else
                ObjectStatus.COMPLETE if oid in complete else ObjectStatus.PRESENT for oid in oids]

    # -- leases ---------------------------------------------------------------------------

    def _lease_slot(self, session: str) -> _LeaseSlot:
        slot = self._leases.get(session)
        if slot is None:
            with self._leases_lock:
                slot = self._leases.get(session)
                if slot is None:
                    raw = self._get(f"lease/{session}")  # a read: memory-mapped, no fsync
                    window = self.limits.standby_window
                    state = (SessionLease(window=window) if raw is None
                             else SessionLease.from_json(raw, self.clock(), window))
                    slot = self._leases[session] = _LeaseSlot(state)
        return slot

    @contextmanager
    def lease(self, session: str, also: dict[str, Any] | None = None
              ) -> Iterator[tuple[SessionLease, float]]:
        """Work on a session's lease state under that session's lock; persist it afterwards.

        The body works on a copy, which replaces the state only once whatever it changed that
        survives a restart is durably written, so nothing is answered that was not persisted;
        if the body or the write fails, the state stays as it was. A call that changes nothing
        persisted (a renewal, mostly) writes nothing. ``also`` (meta values, as for
        :meth:`_put`) is written in the same transaction, always.

        This may wait for the lock, which :meth:`commit_head` holds across an fsync: call it
        from a worker thread, never on the event loop (there, use :meth:`try_lease`).
        """
        slot = self._lease_slot(session)
        with slot.lock:
            work = slot.state.copy()
            yield work, self.clock()
            persisted = work.to_json()
            if persisted != slot.persisted or also:
                self._put({**(also or {}), f"lease/{session}": persisted})
                slot.persisted = persisted
            slot.state = work

    def try_lease(self, session: str, fn: Callable[[SessionLease, float], T]) -> T:
        """``fn(state, now)`` on the session's lease state, as in :meth:`lease`, if that needs
        neither to wait for the lock nor to write anything; fit for the event loop.

        Raises:
            WouldBlock: the lock is taken (maybe across an fsync), or ``fn`` changed persisted
                state; nothing was changed, so run it again with :meth:`lease` in a thread.
            Exception: whatever ``fn`` raises (nothing is changed then either).
        """
        slot = self._lease_slot(session)
        if not slot.lock.acquire(blocking=False):
            raise WouldBlock(session)
        try:
            work = slot.state.copy()
            result = fn(work, self.clock())
            if work.to_json() != slot.persisted:
                raise WouldBlock(session)
            slot.state = work
            return result
        finally:
            slot.lock.release()

    def check_fencing(self, session: str, who: Identity, fencing: int) -> None:
        """Refuse (409 ``fenced``) unless ``fencing`` is ``who``'s current, unexpired lease."""
        with self.lease(session) as (state, now):
            _check_fencing(state, now, who, fencing)

    # -- heads ----------------------------------------------------------------------------

    def head(self, session: str) -> ObjectId | None:
        return self.kv.get_ref(f"head/{session}")

    def head_lock(self, session: str) -> threading.Lock:
        """Serialises head changes of one session (walks may take a while)."""
        with self._lock:
            return self._head_locks.setdefault(session, threading.Lock())

    def upload_lock(self, session: str) -> threading.Lock:
        """Serialises a session's writes of objects with gc's deletion (the upload log)."""
        with self._lock:
            return self._upload_locks.setdefault(session, threading.Lock())

    # -- retention ------------------------------------------------------------------------

    def retention(self, session: str) -> RetentionPolicy:
        """The session's retention policy (keeps everything unless the owner set one)."""
        return RetentionPolicy(**(self._get(f"retention/{session}") or {}))

    def set_retention(self, session: str, policy: RetentionPolicy) -> None:
        self._put({f"retention/{session}": asdict(policy)})

    def shallow(self, session: str) -> set[ObjectId]:
        """Snapshots whose parents gc dropped (where the session's history was cut)."""
        return {ObjectId(bytes.fromhex(h)) for h in self._get(f"shallow/{session}") or []}

    def retained(self, session: str) -> list[ObjectId]:
        """Snapshots the last gc kept that the head does not reach through parents."""
        return [ObjectId(bytes.fromhex(h)) for h in self._get(f"retained/{session}") or []]

    def forget(self, session: str, deleted: list[ObjectId], *, shallow: set[ObjectId],
               retained: set[ObjectId]) -> None:
        """Drop the completeness marks of objects gc is about to delete, and record where
        history is now cut, in one transaction."""
        marks: dict[str, bytes | None] = {_complete_key(session, oid): None for oid in deleted}
        values = {f"shallow/{session}": sorted(o.hex() for o in shallow),
                  f"retained/{session}": sorted(o.hex() for o in retained)}
        self.kv.apply(Update(meta={**{k: json.dumps(v).encode() for k, v in values.items()},
                                   **marks}))
        self._complete.get(session, set()).difference_update(deleted)
        with self._lock:
            for key in [k for k in self._pairings if k[0] == session]:
                del self._pairings[key]

    def commit_head(
        self,
        session: str,
        who: Identity,
        old: ObjectId | None,
        new: ObjectId,
        *,
        fencing: int | None,
        verified: dict[ObjectId, Summary],
        entry: dict[str, Any],
    ) -> None:
        """Move the head from ``old`` to ``new``, append ``entry`` to the log and record
        ``verified`` as complete, each with its summary, in one transaction. The fencing token (when given) is checked
        under the session's lease lock, which is held until the head is written, so no grant
        or release slips in between. Other sessions' leases do not wait for this write.

        Raises:
            ApiError: 409 ``fenced`` or ``head_moved``.
        """
        with self.lease(session) as (state, now):
            if fencing is not None:
                _check_fencing(state, now, who, fencing)
            seq = int(self._get(f"logn/{session}") or 0)
            meta: dict[str, Any] = {f"log/{session}/{seq:012d}": entry, f"logn/{session}": seq + 1}
            marks = {_complete_key(session, oid): s.to_bytes() for oid, s in verified.items()}
            try:
                self.kv.apply(Update(
                    refs=[(f"head/{session}", old, new)],
                    meta={**{k: json.dumps(v).encode() for k, v in meta.items()}, **marks},
                ))
            except RefConflict as exc:
                raise head_moved(exc.actual) from exc
            self._complete.setdefault(session, set()).update(verified)

    def log(self, session: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` head moves, oldest first."""
        count = int(self._get(f"logn/{session}") or 0)
        return [self._get(f"log/{session}/{seq:012d}") for seq in range(max(0, count - limit), count)]

    # -- status ---------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every session: lease, standby queue, head and storage."""
        out = []
        for name in self.session_names():
            with self.lease(name) as (state, now):
                lease = state.status(now)
            head = self.head(name)
            data = self.data_dir / "sessions" / name / "store" / "data.mdb"
            out.append({
                "session": name,
                "members": sorted(self.session(name)["members"]),
                **lease,
                "head": None if head is None else head.hex(),
                "storage_bytes": data.stat().st_size if data.exists() else 0,
                "usage_bytes": self.store(name).used_bytes() if data.exists() else 0,
                "quota_bytes": self.limits.quota_bytes,
            })
        return out


class WouldBlock(Exception):
    """:meth:`Coordinator.try_lease` cannot finish without waiting or writing."""


class _LeaseSlot:
    """One session's lease state, its lock and the JSON of it last persisted."""

    __slots__ = ("lock", "persisted", "state")

    def __init__(self, state: SessionLease) -> None:
        self.lock = threading.Lock()
        self.state = state
        self.persisted = state.to_json()


def _check_fencing(state: SessionLease, now: float, who: Identity, fencing: int) -> None:
    try:
        state.check_fencing(now, fencing=fencing, member=who.member)
    except LeaseError as exc:
        current = state.current(now)
        raise ApiError(409, "fenced", f"fencing token {fencing} is not the current "
                       "lease; the head can no longer be moved with it",
                       {"lease": None if current is None else current.to_json(now)}) from exc


def _refusal(exc: TreeRefused | UnsafePath | PairingTooLarge) -> Callable[[], Exception]:
    """A maker of the same error, holding its fields only: a kept exception would keep its
    traceback, and with it the frames of the refused walk (hundreds of MB of entries)."""
    if isinstance(exc, PairingTooLarge):
        what, limit = exc.what, exc.limit
        return lambda: PairingTooLarge(what, limit)
    if isinstance(exc, UnsafePath):
        path, reason = exc.path, exc.reason
        return lambda: UnsafePath(path, reason)
    fields = (exc.what, exc.path, str(exc), exc.value, exc.limit)
    return lambda: TreeRefused(*fields)


def head_moved(actual: ObjectId | None) -> ApiError:
    """The 409 answer to a compare-and-swap that lost."""
    return ApiError(409, "head_moved", "the head moved; pull, then try again",
                    {"head": None if actual is None else actual.hex()})


def _complete_key(session: str, oid: ObjectId) -> str:
    return f"complete/{session}/{oid.hex()}"
