"""Objects in S3-compatible storage indexed in PostgreSQL (``phs serve --db postgresql://...
--objects s3://...``): the S3 session-object tests of tests/test_s3.py again with the index in
the database (:class:`PgObjectIndex`), and a coordinator serving a push and a download with
its coordination state in PostgreSQL and its objects in moto's S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from jepsen import tiny_snapshot
from pgutil import fresh_schema
from s3util import S3Server, s3_environment
from test_s3 import (  # noqa: F401
    moto,
    pool,
    test_a_download_reads_each_run_of_a_pack_with_one_get,
    test_a_read_racing_a_repack_finds_the_objects_where_they_went,
    test_a_session_indexes_what_its_bucket_holds,
    test_gc_deletes_only_what_is_neither_kept_nor_recent,
    test_gc_racing_another_coordinators_upload_of_the_same_objects_keeps_them,
    test_objects_stored_before_packs_are_still_read,
)
from test_sync_support import FAST, TestClient

from peerhost_server import create_app
from peerhost_server.backends import SplitBackends
from peerhost_server.backends.lmdb import LmdbObjectStores
from peerhost_server.backends.postgres import PgBackends
from peerhost_server.backends.s3 import S3Objects, S3SessionObjects
from peerhost_store.sync.client import CoordinatorClient


@pytest.fixture
def session_objects(moto: S3Server, pool: ThreadPoolExecutor,  # noqa: F811
                    tmp_path: Path) -> Iterator[S3SessionObjects]:
    with fresh_schema() as url:
        backends = PgBackends(url, objects=LmdbObjectStores(tmp_path / "unused"), limits=FAST,
                              pool_max=2)
        try:
            yield S3SessionObjects(S3Objects(moto.client(), moto.new_bucket(), "p/s", pool),
                                   backends.object_index("s"))
        finally:
            backends.close()


def test_a_coordinator_on_postgres_with_objects_in_a_bucket(
        moto: S3Server, tmp_path: Path) -> None:  # noqa: F811
    bucket = moto.new_bucket()
    with fresh_schema() as url:
        with s3_environment(moto):
            app = create_app(tmp_path / "coord", limits=FAST, db=url,
                             objects=f"s3://{bucket}/phs")
        backends = app.state.coordinator.backends
        assert isinstance(backends, SplitBackends) and isinstance(backends.base, PgBackends)
        with TestClient(app) as http:
            admin = CoordinatorClient(http, "", app.state.admin_token)
            owner = CoordinatorClient(http, "s", admin.create_session("s"))
            alice = CoordinatorClient(http, "s", owner.add_member("c0"))
            fencing = alice.acquire("host0", 60).fencing
            objects, snap = tiny_snapshot(0, 1, None, 3)
            assert alice.upload(objects).new == len(objects)
            alice.set_head(None, snap, fencing)
            assert alice.head().head == snap and alice.download([snap]) == [objects[-1]]
            assert owner.retention()["usage"] == sum(map(len, objects))
        keys = moto.client().list_objects_v2(Bucket=bucket)["KeyCount"]
        assert keys == 1, "the objects are in the bucket, in one pack"
        assert not (tmp_path / "coord" / "sessions" / "s" / "store").exists(), \
            "and not on the coordinator's disk"
