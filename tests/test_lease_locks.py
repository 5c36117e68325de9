"""The LMDB lease store: one lock per session, renewals on the event loop without a write, and
a head commit that holds its own session's lock only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from test_sync_support import make_session, running

from peerhost_server import Limits
from peerhost_server.auth import OWNER, Identity
from peerhost_server.backends.lmdb import LmdbBackends
from peerhost_server.domain.coordinator import Coordinator
from peerhost_server.domain.errors import Forbidden
from peerhost_server.domain.heads import commit_head
from peerhost_server.domain.protocols import WouldBlock
from peerhost_server.leases import Lease, SessionLease
from peerhost_store.ids import ObjectId

OWNER_OF_A = Identity("0" * 16, OWNER, "a", OWNER)


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    backends = LmdbBackends(tmp_path / "c", clock=time.monotonic, limits=Limits())
    try:
        yield Coordinator(backends, clock=time.monotonic, limits=Limits())
    finally:
        backends.close()


def grant(coord: Coordinator, session: str) -> int:
    with coord.backends.leases.work(session) as work:
        lease = work.state.acquire(work.now, holder="h", member=OWNER, ttl=60)
    assert isinstance(lease, Lease)
    return lease.fencing


def count_writes(coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    writes: list[Any] = []
    kv = cast(LmdbBackends, coord.backends).kv
    apply = kv.apply

    def counting(update: Any) -> int:
        writes.append(update)
        return apply(update)

    monkeypatch.setattr(kv, "apply", counting)
    return writes


def test_a_plain_renewal_writes_nothing_and_needs_no_thread(
        coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    fencing = grant(coord, "a")
    writes = count_writes(coord, monkeypatch)

    def renew(state: SessionLease, now: float) -> float:
        lease, _ = state.renew(now, fencing=fencing, member=OWNER)
        return lease.expires_at

    leases = coord.backends.leases
    first = leases.try_work("a", renew)
    assert leases.try_work("a", renew) >= first
    with leases.work("a") as work:  # the thread path too writes nothing for it
        work.state.renew(work.now, fencing=fencing, member=OWNER)
    assert writes == []


def test_a_change_to_persisted_state_is_left_to_the_thread_path(
        coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    fencing = grant(coord, "a")
    writes = count_writes(coord, monkeypatch)

    def ask(state: SessionLease, now: float) -> None:
        assert state.lease is not None
        state.lease.sync_requested = True

    leases = coord.backends.leases
    with pytest.raises(WouldBlock):
        leases.try_work("a", ask)
    with leases.work("a") as work:
        lease = work.state.lease
        assert lease is not None and not lease.sync_requested  # nothing changed
    assert writes == []

    def renew(state: SessionLease, now: float) -> bool:
        return state.renew(now, fencing=fencing, member=OWNER)[1]

    with leases.work("a") as work:
        ask(work.state, work.now)
    assert len(writes) == 1  # durable before the answer
    with pytest.raises(WouldBlock):  # clearing the flag is a write too
        leases.try_work("a", renew)
    with leases.work("a") as work:
        assert renew(work.state, work.now) is True
    assert len(writes) == 2


def test_a_failed_call_changes_nothing(coord: Coordinator) -> None:
    fencing = grant(coord, "a")

    def bad(state: SessionLease, now: float) -> None:
        state.lease = None
        raise Forbidden("refused")

    leases = coord.backends.leases
    with pytest.raises(Forbidden):
        leases.try_work("a", bad)
    with pytest.raises(Forbidden), leases.work("a") as work:
        bad(work.state, work.now)
    with leases.work("a") as work:
        assert work.state.check_fencing(work.now, fencing=fencing, member=OWNER).fencing == fencing


def test_a_head_commit_holds_only_its_own_sessions_lease_lock(
        coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    fa, fb = grant(coord, "a"), grant(coord, "b")
    writing, release = threading.Event(), threading.Event()
    kv = cast(LmdbBackends, coord.backends).kv
    apply = kv.apply

    def slow_apply(update: Any) -> int:  # a head write stuck in its fsync
        if any(name.startswith("head/") for name, _, _ in update.refs):
            writing.set()
            release.wait(10)
        return apply(update)

    monkeypatch.setattr(kv, "apply", slow_apply)
    done: list[BaseException | None] = []

    def commit() -> None:
        try:
            commit_head(coord, "a", OWNER_OF_A, None, ObjectId(b"\x01" * 32), fencing=fa,
                        verified={}, entry={"kind": "push"})
            done.append(None)
        except BaseException as exc:  # noqa: BLE001
            done.append(exc)

    t = threading.Thread(target=commit)
    t.start()
    try:
        assert writing.wait(10)

        def renew(fencing: int) -> Any:
            return lambda state, now: state.renew(now, fencing=fencing, member=OWNER)

        coord.backends.leases.try_work("b", renew(fb))  # another session: not stalled
        with pytest.raises(WouldBlock):  # the same session: never waits on the event loop
            coord.backends.leases.try_work("a", renew(fa))
    finally:
        release.set()
        t.join(10)
    assert done == [None]
    coord.backends.leases.try_work("a", renew(fa))


def test_renewals_sync_requests_and_release_over_http(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        c = make_session(server)
        alice = c["alice"]
        lease = alice.acquire("alice-pc", 30)
        for _ in range(3):
            renewed = alice.renew(lease.fencing)
            assert renewed.lease.fencing == lease.fencing and renewed.sync_requested is False
        c["owner"].request_sync()
        assert alice.renew(lease.fencing).sync_requested is True
        assert alice.renew(lease.fencing).sync_requested is False
        status = alice.lease_status()
        assert status.lease is not None and status.lease.fencing == lease.fencing
        alice.release(lease.fencing)
        assert alice.lease_status().lease is None
