"""The PostgreSQL deployment under faults: the database down (503 ``unavailable`` with
Retry-After, nothing acknowledged lost), a coordinator killed between the upload of a
snapshot's objects and its head move (another coordinator moves it), and the schema
migrations ``phs serve --migrate`` applies."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from jepsen import tiny_snapshot
from pgutil import fresh_schema, server_address, via
from starlette.testclient import TestClient
from tcpproxy import Proxy
from test_lease_jepsen_pg import PgCoordinator
from test_server_uvicorn import free_port
from test_sync_support import FAST

from peerhost_server import create_app
from peerhost_server.backends.lmdb import LmdbObjectStores
from peerhost_server.backends.postgres import (
    LATEST,
    MIGRATIONS,
    PgBackends,
    SchemaOutdated,
    migrate,
    schema_version,
)
from peerhost_store.sync.client import CoordinatorClient, CoordinatorError


@pytest.fixture
def proxied() -> Iterator[tuple[str, Proxy]]:
    """A fresh schema's URL through a proxy the test can cut, and the proxy."""
    with fresh_schema() as url:
        proxy = Proxy(server_address())
        try:
            yield via(url, proxy.port), proxy
        finally:
            proxy.close()


def test_the_database_down_is_503_with_retry_after_and_loses_nothing_acknowledged(
        tmp_path: Path, proxied: tuple[str, Proxy]) -> None:
    url, proxy = proxied
    backends = PgBackends(url, objects=LmdbObjectStores(tmp_path / "sessions"), limits=FAST,
                          pool_max=2, pool_wait=1.0)
    app = create_app(tmp_path, limits=FAST, backends=backends)
    with TestClient(app) as http:
        admin = CoordinatorClient(http, "", app.state.admin_token)
        owner = CoordinatorClient(http, "s", admin.create_session("s"))
        alice = CoordinatorClient(http, "s", owner.add_member("c0"))
        fencing = alice.acquire("host0", 60).fencing
        objects, first = tiny_snapshot(0, 1, None, 1)
        alice.upload(objects)
        alice.set_head(None, first, fencing)  # acknowledged
        objects, second = tiny_snapshot(0, 2, first, 2)
        alice.upload(objects)

        proxy.down()
        auth = {"Authorization": f"Bearer {alice._token}"}
        for method, path, body in [
            ("GET", "/v1/sessions/s/head", None),
            ("POST", "/v1/sessions/s/lease/renew", {"fencing": fencing}),
            ("POST", "/v1/sessions/s/head", {"old": first.hex(), "new": second.hex(),
                                            "fencing": fencing}),
        ]:
            answer = http.request(method, path, json=body, headers=auth)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["Retry-After"] == "2"
            error = answer.json()["error"]
            assert error["code"] == "unavailable" and error["retry_after"] == 2
            assert "database" in error["message"] and "password" not in error["message"]

        proxy.up()
        back = time.monotonic()
        head, statuses = _retrying(alice, back)
        assert set(statuses) <= {503}, statuses  # unavailable while reconnecting, nothing else
        assert head == first  # the acknowledged head, and only it
        assert [e["new"] for e in owner.log(10)] == [first.hex()]
        alice.renew(fencing)  # the pool reconnected by itself
        alice.set_head(first, second, fencing)
        assert alice.head().head == second


def _retrying(client: CoordinatorClient, since: float) -> tuple[object, list[int]]:
    """The head, asked until answered (a client retrying after Retry-After), within 10 s;
    and the statuses of the failed tries."""
    statuses: list[int] = []
    for _ in range(100):
        try:
            return client.head().head, statuses
        except CoordinatorError as exc:
            statuses.append(exc.status)
        assert time.monotonic() - since < 10, statuses
        time.sleep(0.1)
    raise AssertionError(statuses)


def test_a_coordinator_killed_between_upload_and_head_move(
        tmp_path: Path, proxied: tuple[str, Proxy]) -> None:
    url, _ = proxied
    a, b = (PgCoordinator(tmp_path / "objects", free_port(), url) for _ in range(2))
    try:
        a.start()
        b.start()
        assert a.admin_token is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{a.port}", timeout=10) as to_a, \
                httpx.Client(base_url=f"http://127.0.0.1:{b.port}", timeout=10) as to_b:
            admin = CoordinatorClient(to_a, "", a.admin_token)
            owner = CoordinatorClient(to_a, "s", admin.create_session("s"))
            token = owner.add_member("c0")
            on_a, on_b = CoordinatorClient(to_a, "s", token), CoordinatorClient(to_b, "s", token)
            fencing = on_a.acquire("host0", 30).fencing
            objects, snap = tiny_snapshot(0, 1, None, 7)
            assert on_a.upload(objects).new == len(objects)
            a.kill()  # after the upload was answered, before the head move
            assert on_b.head().head is None  # nothing moved by itself
            assert on_b.missing([snap]) == []  # the upload is durable, and B sees it
            on_b.renew(fencing)  # the lease lives in the database, not in A
            on_b.set_head(None, snap, fencing)
            a.start()
            assert on_a.head().head == snap
            assert len(on_a.download([snap])) == 1
    finally:
        a.stop()
        b.stop()


def test_migrations_are_versioned_and_applied_once(tmp_path: Path) -> None:
    assert [v for v, _, _ in MIGRATIONS] == list(range(1, LATEST + 1))
    with fresh_schema(migrate=False) as url:
        assert schema_version(url) == 0
        with pytest.raises(SchemaOutdated, match="--migrate"):
            PgBackends(url, objects=LmdbObjectStores(tmp_path / "s"), limits=FAST)
        # The CLI refuses to serve an unmigrated database, naming the flag that fixes it.
        port = free_port()
        refused = subprocess.run(
            [sys.executable, "-m", "peerhost_cli.main", "serve", "--data", str(tmp_path / "d"),
             "--bind", f"127.0.0.1:{port}", "--db", url],
            capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode != 0 and "--migrate" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert migrate(url) == [name for _, name, _ in MIGRATIONS]
        assert migrate(url) == []  # applied once
        assert schema_version(url) == LATEST
        PgBackends(url, objects=LmdbObjectStores(tmp_path / "s"), limits=FAST).close()
