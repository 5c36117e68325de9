"""The coordinator's lease state: one lock per session, renewals on the event loop without a
write, and a head commit that holds its own session's lock only."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_sync_support import make_session, running

from peerhost_server import Limits
from peerhost_server.auth import OWNER, Identity
from peerhost_server.errors import ApiError
from peerhost_server.leases import Lease, SessionLease
from peerhost_server.state import Coordinator, WouldBlock

OWNER_OF_A = Identity("0" * 16, OWNER, "a", OWNER)


@pytest.fixture
def coord(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = Coordinator(tmp_path / "c", clock=time.monotonic, limits=Limits())
    try:
        yield c
    finally:
        c.close()


def grant(coord: Coordinator, session: str) -> int:
    with coord.lease(session) as (state, now):
        lease = state.acquire(now, holder="h", member=OWNER, ttl=60)
    assert isinstance(lease, Lease)
    return lease.fencing


def count_writes(coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    writes: list[Any] = []
    apply = coord.kv.apply

    def counting(update: Any) -> int:
        writes.append(update)
        return apply(update)

    monkeypatch.setattr(coord.kv, "apply", counting)
    return writes


def test_a_plain_renewal_writes_nothing_and_needs_no_thread(
        coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    fencing = grant(coord, "a")
    writes = count_writes(coord, monkeypatch)

    def renew(state: SessionLease, now: float) -> float:
        lease, _ = state.renew(now, fencing=fencing, member=OWNER)
        return lease.expires_at

    first = coord.try_lease("a", renew)
    assert coord.try_lease("a", renew) >= first
    with coord.lease("a") as (state, now):  # the thread path too writes nothing for it
        state.renew(now, fencing=fencing, member=OWNER)
    assert writes == []


def test_a_change_to_persisted_state_is_left_to_the_thread_path(
        coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    fencing = grant(coord, "a")
    writes = count_writes(coord, monkeypatch)

    def ask(state: SessionLease, now: float) -> None:
        assert state.lease is not None
        state.lease.sync_requested = True

    with pytest.raises(WouldBlock):
        coord.try_lease("a", ask)
    with coord.lease("a") as (state, _):
        assert state.lease is not None and not state.lease.sync_requested  # nothing changed
    assert writes == []

    def renew(state: SessionLease, now: float) -> bool:
        return state.renew(now, fencing=fencing, member=OWNER)[1]

    with coord.lease("a") as (state, now):
        ask(state, now)
    assert len(writes) == 1  # durable before the answer
    with pytest.raises(WouldBlock):  # clearing the flag is a write too
        coord.try_lease("a", renew)
    with coord.lease("a") as (state, now):
        assert renew(state, now) is True
    assert len(writes) == 2


def test_a_failed_call_changes_nothing(coord: Coordinator) -> None:
    fencing = grant(coord, "a")

    def bad(state: SessionLease, now: float) -> None:
        state.lease = None
        raise ApiError(409, "x", "refused")

    with pytest.raises(ApiError):
        coord.try_lease("a", bad)
    with pytest.raises(ApiError), coord.lease("a") as (state, now):
        bad(state, now)
    with coord.lease("a") as (state, now):
        assert state.check_fencing(now, fencing=fencing, member=OWNER).fencing == fencing


def test_a_head_commit_holds_only_its_own_sessions_lease_lock(
        coord: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    fa, fb = grant(coord, "a"), grant(coord, "b")
    writing, release = threading.Event(), threading.Event()
    apply = coord.kv.apply

    def slow_apply(update: Any) -> int:  # a head write stuck in its fsync
        if any(name.startswith("head/") for name, _, _ in update.refs):
            writing.set()
            release.wait(10)
        return apply(update)

    monkeypatch.setattr(coord.kv, "apply", slow_apply)
    done: list[BaseException | None] = []

    def commit() -> None:
        try:
            coord.commit_head("a", OWNER_OF_A, None, b"\x01" * 32, fencing=fa,  # type: ignore[arg-type]
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

        coord.try_lease("b", renew(fb))  # another session: not stalled
        with pytest.raises(WouldBlock):  # the same session: never waits on the event loop
            coord.try_lease("a", renew(fa))
    finally:
        release.set()
        t.join(10)
    assert done == [None]
    coord.try_lease("a", renew(fa))


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
