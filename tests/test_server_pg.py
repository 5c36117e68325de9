"""The coordinator on PostgreSQL (``--db postgresql://...``): the domain's server tests again,
each coordinator of a test on a schema of its own, its objects in the data folder as in the
embedded deployment.

Leases are judged on the database's clock (``clock_timestamp()``) unless a test drives a fake
clock of its own, which the backend then uses, so that the test's "ten seconds later" means
what it says. One test is left out: ``test_lease_survives_a_restart_for_ttl_after_it`` checks
the embedded backend's rule (expiry times are not persisted, a restart grants every lease its
ttl anew); here a lease keeps its real expiry across restarts, which
``test_a_lease_keeps_its_expiry_across_a_restart`` checks. And one is left out for time:
``test_push_and_pull_follow_a_history_with_deltas`` (real worlds' histories, 2-3 minutes here),
whose backend calls the other push, pull and delta tests make too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pgutil import fresh_schema, require_postgres

# The tests that run again against PostgreSQL (pytest collects them here too).
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
)
from test_sync_support import Clock, make_session, running

import peerhost_server.app
from peerhost_server.auth import digest_token
from peerhost_server.backends.lmdb import LmdbObjectStores
from peerhost_server.backends.postgres import PgBackends
from peerhost_server.domain.protocols import Backends
from peerhost_server.limits import Limits
from peerhost_store.sync.client import LeaseLost


@pytest.fixture(autouse=True)
def postgres_backends(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[PgBackends]]:
    """Every coordinator this module's tests create keeps its state in one fresh schema."""
    require_postgres()
    opened: list[PgBackends] = []
    with fresh_schema() as url:
        def open_pg(data_dir: Path, *, clock: Callable[[], float], limits: Limits,
                    url_: str = "lmdb:", **_: object) -> Backends:
            backends = PgBackends(url, objects=LmdbObjectStores(data_dir / "sessions"),
                                  limits=limits, now=None if clock is time.monotonic else clock,
                                  pool_max=4)
            opened.append(backends)
            return backends

        monkeypatch.setattr(peerhost_server.app, "open_backends", open_pg)
        yield opened
        for backends in opened:
            backends.close()  # idempotent: before the schema is dropped
    assert opened, "the test ran no coordinator on PostgreSQL"


def test_the_coordinator_runs_on_postgres(tmp_path: Path,
                                          postgres_backends: list[PgBackends]) -> None:
    app = peerhost_server.app.create_app(tmp_path / "c")
    try:
        assert isinstance(app.state.coordinator.backends, PgBackends)
    finally:
        app.state.coordinator.close()


def test_a_lease_keeps_its_expiry_across_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    with running(tmp_path / "c", clock=clock) as server:
        alice = make_session(server)["alice"]
        lease = alice.acquire("alice-pc", 10)
        admin, token = server.admin_token, alice._token
    clock.advance(9)
    with running(tmp_path / "c", clock=clock, admin_token=admin) as server:
        status = server.client("s1", token).lease_status()
        assert status.lease is not None and status.lease.fencing == lease.fencing
        clock.advance(1.5)  # 10.5 s after the grant: expired, restart or not
        with pytest.raises(LeaseLost):
            server.client("s1", token).renew(lease.fencing)


def test_the_database_clock_judges_leases_by_default(
        tmp_path: Path, postgres_backends: list[PgBackends]) -> None:
    with running(tmp_path / "c") as server:
        alice = make_session(server)["alice"]
        lease = alice.acquire("alice-pc", 30)
        [backends] = postgres_backends
        with backends.leases.work("s1") as work:
            db_now = work.now
        assert work.state.lease is not None and work.state.lease.fencing == lease.fencing
        # Seconds since the epoch on the database's clock, not this process's monotonic one.
        assert abs(db_now - time.time()) < 60
        assert 29 < work.state.lease.expires_at - db_now <= 30


def test_a_dashboard_sign_in_holds_on_every_coordinator(
        tmp_path: Path, postgres_backends: list[PgBackends]) -> None:
    """Two coordinators on one database, as behind a load balancer: a browser signed in
    through one is signed in through the other, and signing out through either ends it on
    both. The database keeps a hash of the cookie, never the cookie."""
    from test_auth_matrix import Browser

    with running(tmp_path / "a") as a, \
            running(tmp_path / "b", admin_token=a.admin_token) as b:
        token = make_session(a)["alice"]._token
        seen: list[Any] = []
        on_a, on_b = Browser(a.http.app, seen), Browser(b.http.app, seen)
        assert on_a.sign_in(token).status_code == 303
        cookie = on_a.http.cookies["phs_session"]
        on_b.http.cookies.set("phs_session", cookie)
        page = on_b.get("/s/s1")
        assert page.status_code == 200 and "signed in as" in page.text
        assert on_a.csrf and on_a.csrf in page.text  # one web session, one form token
        directory = postgres_backends[0].directory
        assert directory.web_session(digest_token(cookie)) is not None
        assert directory.web_session(cookie) is None
        assert on_b.post("/signout", {"csrf": on_a.csrf}).status_code == 303
        r = on_a.get("/s/s1")
        assert (r.status_code, r.headers.get("location")) == (303, "/")
        assert directory.web_session(digest_token(cookie)) is None
