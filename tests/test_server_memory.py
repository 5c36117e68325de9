"""The coordinator over a throwaway backend of dicts: proof that the domain needs nothing but
the protocols of ``peerhost_server.domain.protocols``.

``MemoryBackends`` is one object implementing every protocol, shaped unlike the LMDB backend:
one lock for the whole "database" held by each commit, a lock per session for lease works, no
fast path (``try_work`` always says WouldBlock and reads are not loop-safe, so every route
takes the worker-thread path, as a backend on a network database would). Its durable part
(``_World``) is kept per data folder, so a restart of the coordinator finds it again.

The server tests imported below run here a second time against it (sessions, tokens, roles,
leases, standby, fencing, heads, rollback, status, push, pull, deltas, quotas, gc, retention,
revocation, web sessions).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

# The tests that run again against the memory backend (pytest collects them here too).
from test_hostile_member import (  # noqa: F401
    test_a_dag_bomb_never_becomes_the_head,
    test_delta_requests_pair_only_trees_the_session_accepted,
    test_gc_deletes_unreferenced_uploads_once_the_grace_period_passed,
    test_retention_drops_old_snapshots_and_marks_where_history_was_cut,
    test_revoking_a_member_ends_its_lease_and_drops_its_standby,
    test_revoking_the_member_a_window_is_reserved_for_passes_it_on,
    test_the_check_costs_what_changed,
    test_the_owner_clears_the_queue_and_force_releases,
    test_uploads_past_the_session_quota_are_refused_with_507,
)
from test_server import (  # noqa: F401
    test_an_expired_holder_cannot_move_the_head,
    test_another_sessions_token_cannot_probe_objects,
    test_auth_matrix,
    test_download_answers_are_capped,
    test_head_compare_and_swap_rules,
    test_lease_survives_a_restart_for_ttl_after_it,
    test_member_cannot_act_as_owner,
    test_objects_are_rehashed_and_malformed_ones_refused,
    test_only_the_owner_rolls_back_unless_the_session_lets_the_lease_holder,
    test_racing_threads_get_one_lease_per_round_across_a_restart,
    test_rollback_adds_a_snapshot_and_deletes_nothing,
    test_standby_gets_a_reserved_window,
    test_status_and_metrics,
    test_sync_request_reaches_the_holder_once,
    test_web_sessions_expire_are_bounded_and_are_dropped,
    two_sessions,
)
from test_sync import (  # noqa: F401
    test_an_interrupted_push_resumes_without_resending,
    test_incomplete_upload_cannot_become_head,
    test_push_then_pull_gives_the_same_tree,
    test_pushed_store_verifies_clean,
)
from test_sync_delta import (  # noqa: F401
    test_a_mismatching_delta_stores_nothing_and_bases_come_from_the_session_only,
    test_push_and_pull_follow_a_history_with_deltas,
)

import peerhost_server.app
from peerhost_server.auth import ADMIN, MEMBER, OWNER, Identity, NewToken, same_digest
from peerhost_server.domain.errors import (
    DomainError,
    HeadMoved,
    MemberExists,
    NoMember,
    NoSession,
    SessionExists,
)
from peerhost_server.domain.protocols import (
    Backends,
    SessionInfo,
    SessionSettings,
    Usage,
    WebSession,
    WouldBlock,
)
from peerhost_server.leases import SessionLease
from peerhost_server.limits import Limits
from peerhost_store.bounds import Summary
from peerhost_store.ids import ObjectId
from peerhost_store.retention import RetentionPolicy
from peerhost_store.store import MemoryObjects, Verified

T = TypeVar("T")


class _World:
    """What survives a restart: the "database" of one data folder."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # every commit holds it: all or nothing
        self.admin: str | None = None
        self.tokens: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}  # in creation order
        self.leases: dict[str, dict[str, Any]] = {}
        self.heads: dict[str, ObjectId] = {}
        self.logs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.marks: dict[str, dict[ObjectId, bytes]] = defaultdict(dict)
        self.policies: dict[str, RetentionPolicy] = {}
        self.shallow: dict[str, set[ObjectId]] = defaultdict(set)
        self.retained: dict[str, list[ObjectId]] = defaultdict(list)
        self.objects: dict[str, SessionDict] = {}
        self.web: dict[str, WebSession] = {}  # in creation order


_WORLDS: dict[Path, _World] = {}


class SessionDict:
    """One session's objects: the library's dict backend, read through its checking wrapper;
    uploads are ``(stamp, ids)`` in time order."""

    def __init__(self, world: _World) -> None:
        self._world = world
        self._backend = MemoryObjects()
        self._data = self._backend.data
        self._objects = Verified(self._backend, "memory")
        self._uploads: list[tuple[int, list[ObjectId]]] = []

    def __contains__(self, oid: object) -> bool:
        return oid in self._data

    def get_raw(self, oid: ObjectId) -> bytes:
        return self._objects.get_raw(oid)

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        return self._objects.get_many(oids)

    def get_unchecked(self, oids: Sequence[ObjectId]) -> list[bytes]:
        return self._backend.get_many(oids)

    def peek(self, oids: list[ObjectId], n: int) -> list[tuple[int, bytes] | None]:
        return [(len(d), d[:n]) if (d := self._data.get(oid)) is not None else None
                for oid in oids]

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        return self._objects.missing(oids)

    def iter_ids(self) -> Iterator[ObjectId]:
        return self._objects.iter_ids()

    def used_bytes(self) -> int:
        return sum(map(len, self._data.values()))

    def check_room(self, incoming: int, reserve: int) -> None:
        pass  # no disk

    def write(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]], stamp: int) -> int:
        with self._world.lock:
            new = [(oid, bytes(data)) for oid, data in objects if oid not in self._data]
            self._data.update(new)
            self._uploads.append((stamp, [oid for oid, _ in objects]))
            return len({oid for oid, _ in new})

    def sweep(self, keep: Container[ObjectId], horizon: float,
              before: Callable[[list[ObjectId]], None]) -> list[ObjectId]:
        with self._world.lock:
            self._uploads = [(s, ids) for s, ids in self._uploads if s >= horizon]
            protected = {oid for _, ids in self._uploads for oid in ids}
            garbage = [oid for oid in self._data if oid not in keep and oid not in protected]
            before(garbage)
            for oid in garbage:
                del self._data[oid]
            return garbage


class _Work:
    def __init__(self, world: _World, session: str, state: SessionLease, now: float) -> None:
        self._world, self._session = world, session
        self.state, self.now = state, now
        self.head: tuple[ObjectId | None, ObjectId, dict[str, Any], dict[ObjectId, Summary]] \
            | None = None
        self.revoked: str | None = None

    def move_head(self, old: ObjectId | None, new: ObjectId, *, entry: Mapping[str, Any],
                  marks: Mapping[ObjectId, Summary]) -> None:
        self.head = (old, new, dict(entry), dict(marks))

    def revoke(self, member: str) -> None:
        self.token_of(member)
        self.revoked = member

    def token_of(self, member: str) -> str:
        record = self._world.sessions.get(self._session)
        if record is None:
            raise NoSession(self._session)
        if member not in record["members"]:
            raise NoMember(self._session, member)
        return str(record["members"][member])


class MemoryBackends:
    """Every protocol of ``peerhost_server.domain.protocols`` in one object of dicts."""

    loop_safe = False

    def __init__(self, data_dir: Path, *, clock: Callable[[], float], limits: Limits) -> None:
        self.world = _WORLDS.setdefault(data_dir.resolve(), _World())
        self._clock, self._window = clock, limits.standby_window
        self._states: dict[str, SessionLease] = {}  # this process's view, seeded on first use
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._head_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self.directory = self.leases = self.log = self.marks = self.retention = self
        self.objects = self

    def classify(self, exc: BaseException) -> DomainError | None:
        return None

    def close(self) -> None:
        pass

    # -- Directory --------------------------------------------------------------------------

    def init_admin(self, token: NewToken) -> bool:
        with self.world.lock:
            if self.world.admin is not None:
                return False
            self.world.admin = token.token_id
            self._put_token(token, ADMIN, None, ADMIN)
            return True

    def _put_token(self, token: NewToken, role: str, session: str | None, member: str) -> None:
        self.world.tokens[token.token_id] = {"digest": token.digest, "role": role,
                                             "session": session, "member": member}

    def identify(self, token_id: str, digest: str) -> Identity | None:
        record = self.world.tokens.get(token_id)
        if record is None or not same_digest(record["digest"], digest):
            return None
        return Identity(token_id, record["role"], record["session"], record["member"])

    def session(self, name: str) -> SessionInfo | None:
        record = self.world.sessions.get(name)
        return None if record is None else SessionInfo(
            name, record["created"], tuple(record["members"]),
            record.get("settings", SessionSettings()))

    def session_names(self) -> list[str]:
        return list(self.world.sessions)

    def create_session(self, name: str, owner: NewToken, created: int) -> None:
        with self.world.lock:
            if name in self.world.sessions:
                raise SessionExists(name)
            self.world.sessions[name] = {"created": created, "members": {}}
            self._put_token(owner, OWNER, name, OWNER)

    def add_member(self, session: str, name: str, token: NewToken) -> None:
        with self.world.lock:
            record = self.world.sessions.get(session)
            if record is None:
                raise NoSession(session)
            if name in record["members"]:
                raise MemberExists(session, name)
            record["members"][name] = token.token_id
            self._put_token(token, MEMBER, session, name)

    def set_settings(self, session: str, settings: SessionSettings) -> None:
        with self.world.lock:
            record = self.world.sessions.get(session)
            if record is None:
                raise NoSession(session)
            record["settings"] = settings

    def create_web_session(self, key: str, token_id: str, digest: str, csrf: str, *,
                           seconds: float, keep: int) -> None:
        with self.world.lock:
            now, web = self._clock(), self.world.web
            for old in [k for k, w in web.items() if w.expires <= now]:
                del web[old]
            for old in list(web)[:max(len(web) - keep + 1, 0)]:
                del web[old]
            web[key] = WebSession(token_id, digest, csrf, now + seconds)

    def web_session(self, key: str) -> WebSession | None:
        with self.world.lock:
            found = self.world.web.get(key)
            if found is not None and found.expires <= self._clock():
                del self.world.web[key]
                return None
            return found

    def drop_web_session(self, key: str) -> None:
        with self.world.lock:
            self.world.web.pop(key, None)

    # -- LeaseStore, HeadLog ----------------------------------------------------------------

    def _state(self, session: str) -> SessionLease:
        state = self._states.get(session)
        if state is None:
            raw = self.world.leases.get(session)
            state = (SessionLease(window=self._window) if raw is None
                     else SessionLease.from_json(raw, self._clock(), self._window))
        return state

    @contextmanager
    def work(self, session: str) -> Iterator[_Work]:
        with self._locks[session]:
            work = _Work(self.world, session, self._state(session).copy(), self._clock())
            yield work
            with self.world.lock:
                self._commit(session, work)
            self._states[session] = work.state

    def _commit(self, session: str, work: _Work) -> None:
        world = self.world
        token = None if work.revoked is None else work.token_of(work.revoked)  # may raise
        if work.head is not None:
            old, new, entry, marks = work.head
            if world.heads.get(session) != old:
                raise HeadMoved(world.heads.get(session))
            world.heads[session] = new
            world.logs[session].append(entry)
            world.marks[session].update({oid: s.to_bytes() for oid, s in marks.items()})
        if work.revoked is not None:
            del world.sessions[session]["members"][work.revoked]
            del world.tokens[str(token)]
        world.leases[session] = work.state.to_json()

    def try_work(self, session: str, fn: Callable[[SessionLease, float], T]) -> T:
        raise WouldBlock(session)

    def head(self, session: str) -> ObjectId | None:
        return self.world.heads.get(session)

    def head_lock(self, session: str) -> threading.Lock:
        return self._head_locks[session]

    def entries(self, session: str, limit: int) -> list[dict[str, Any]]:
        return list(self.world.logs[session][-limit:])

    # -- Marks, Retention ---------------------------------------------------------------------

    def summaries(self, session: str, oids: list[ObjectId]) -> list[Summary | None]:
        marks = self.world.marks[session]
        return [Summary.from_bytes(raw) if (raw := marks.get(oid)) else None for oid in oids]

    def complete(self, session: str, oids: list[ObjectId]) -> list[bool]:
        return [oid in self.world.marks[session] for oid in oids]

    def policy(self, session: str) -> RetentionPolicy:
        return self.world.policies.get(session, RetentionPolicy())

    def set_policy(self, session: str, policy: RetentionPolicy) -> None:
        self.world.policies[session] = policy

    def shallow(self, session: str) -> set[ObjectId]:
        return set(self.world.shallow[session])

    def retained(self, session: str) -> list[ObjectId]:
        return list(self.world.retained[session])

    def forget(self, session: str, deleted: list[ObjectId], *, shallow: set[ObjectId],
               retained: set[ObjectId]) -> None:
        with self.world.lock:
            for oid in deleted:
                self.world.marks[session].pop(oid, None)
            self.world.shallow[session] = set(shallow)
            self.world.retained[session] = sorted(retained)

    # -- ObjectStores -------------------------------------------------------------------------

    def open(self, session: str) -> SessionDict:
        with self.world.lock:
            return self.world.objects.setdefault(session, SessionDict(self.world))

    def usage(self, session: str) -> Usage:
        store = self.world.objects.get(session)
        used = 0 if store is None else store.used_bytes()
        return Usage(used, used)


def _open_memory(data_dir: Path, *, clock: Callable[[], float], limits: Limits,
                 url: str = "lmdb:", objects: str | None = None) -> Backends:
    assert objects is None, "the memory backend keeps its objects itself"
    return MemoryBackends(data_dir, clock=clock, limits=limits)


@pytest.fixture(autouse=True)
def memory_backends(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every coordinator this module's tests create keeps its state in a MemoryBackends."""
    monkeypatch.setattr(peerhost_server.app, "open_backends", _open_memory)
    yield
    assert _WORLDS, "the test ran no coordinator on the memory backend"
    _WORLDS.clear()


def test_the_memory_backend_is_what_the_coordinator_runs_on(tmp_path: Path) -> None:
    app = peerhost_server.app.create_app(tmp_path / "c")
    try:
        assert isinstance(app.state.coordinator.backends, MemoryBackends)
        assert not (tmp_path / "c").exists()  # nothing on disk: no LMDB behind the protocols
    finally:
        app.state.coordinator.close()
