"""The S3 object backend against a real S3-protocol server (moto's, on 127.0.0.1): the object
store contract suite, a session's index, usage and gc, a coordinator serving push, pull and
gc with its objects in a bucket, and the faults: the bucket unreachable mid-push, the
coordinator killed between the object upload and the head move."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from s3util import S3Server, free_port, s3_environment, s3_server
from test_sync_support import FAST, Server, TestClient, make_session, root_of
from worldfs_helpers import make_world

from peerhost_server import create_app
from peerhost_server.backends import s3
from peerhost_server.backends.lmdb import LmdbObjectIndex
from peerhost_server.backends.s3 import (
    READ_GAP,
    S3Objects,
    S3ObjectStores,
    S3SessionObjects,
    S3Unavailable,
    encode_pack,
    pack_contents,
)
from peerhost_server.domain.protocols import Indexed, ObjectIndex, ObjectStores, SessionObjects
from peerhost_store.errors import ObjectCorrupt, ObjectMissing, StoreError
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import encode_blob
from peerhost_store.repo import Repository
from peerhost_store.store import ObjectStore
from peerhost_store.sync.client import CoordinatorClient, CoordinatorError
from peerhost_store.sync.protocol import MSGPACK, encode_objects
from peerhost_store.sync.transfer import pull, push
from peerhost_store.testing import ObjectStoreTests

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


def _as_protocols(stores: S3ObjectStores, objects: S3SessionObjects, index: LmdbObjectIndex
                  ) -> tuple[ObjectStores, SessionObjects, ObjectIndex]:
    """Never called: mypy checks here that the S3 classes and the LMDB index implement the
    coordinator's protocols (SplitBackends takes its objects untyped)."""
    return stores, objects, index


def _blob(text: bytes) -> tuple[ObjectId, bytes]:
    data = encode_blob(text)
    return hash_bytes(data), data


class TestS3Objects(ObjectStoreTests):
    @pytest.fixture
    def objects(self, moto: S3Server, pool: ThreadPoolExecutor) -> Iterator[ObjectStore]:
        yield S3Objects(moto.client(), moto.new_bucket(), "contract", pool)


@pytest.fixture
def session_objects(moto: S3Server, pool: ThreadPoolExecutor,
                    tmp_path: Path) -> Iterator[S3SessionObjects]:
    index = LmdbObjectIndex(tmp_path / "index")
    yield S3SessionObjects(S3Objects(moto.client(), moto.new_bucket(), "p/s", pool), index)
    index.close()


def _packs(bucket: S3Objects) -> list[ObjectId]:
    return [pack for pack, _, _ in bucket.pack_listing()]


def test_a_session_indexes_what_its_bucket_holds(session_objects: S3SessionObjects) -> None:
    store = session_objects
    (a, da), (b, db) = _blob(b"a" * 100), _blob(b"b")
    assert store.write([(a, da), (b, memoryview(db)), (a, da)], 1000) == 2
    assert store.write([(a, da)], 1001) == 0, "already stored"
    assert store.used_bytes() == len(da) + len(db)
    assert store.missing([b, hash_bytes(b"absent"), a]) == [hash_bytes(b"absent")]
    assert a in store and hash_bytes(b"absent") not in store
    assert store.get_many([b, a]) == [db, da]
    assert store.peek([a, hash_bytes(b"absent")], 4) == [(len(da), da[:4]), None]
    assert store.peek([a, b], 60) == [(len(da), da[:60]), (len(db), db)], "past the index"
    assert sorted(store.iter_ids()) == sorted([a, b])
    bucket = store.bucket
    [pack] = _packs(bucket)
    key = f"p/s/packs/{pack.hex()}"
    body = bucket.client.get_object(Bucket=bucket.bucket, Key=key)["Body"].read()
    assert hash_bytes(body) == pack, "one content-addressed pack: PREFIX/SESSION/packs/<hex id>"
    assert pack_contents(body) == [(a, 0, len(da)), (b, len(da), len(db))], \
        "its trailer says what it holds, without the index"
    assert list(bucket.iter_ids()) == [], "no object has a key of its own"
    # The bucket's bytes are checked on every read.
    evil = bytearray(body)
    evil[10] ^= 0xFF
    bucket.client.put_object(Bucket=bucket.bucket, Key=key, Body=bytes(evil))
    with pytest.raises(ObjectCorrupt) as info:
        store.get_raw(a)
    assert info.value.expected == a and bucket.where in str(info.value)
    assert store.get_raw(b) == db, "only the damaged object is refused"
    bucket.client.put_object(Bucket=bucket.bucket, Key=key, Body=body[:20])
    with pytest.raises(ObjectCorrupt):
        store.get_raw(b)  # the pack is shorter than the index says
    bucket.delete_packs([pack])
    with pytest.raises(ObjectMissing) as missing:
        store.get_many([a])
    assert missing.value.oid == a


def test_objects_stored_before_packs_are_still_read(session_objects: S3SessionObjects) -> None:
    store, bucket = session_objects, session_objects.bucket
    (a, da), (b, db) = _blob(b"loose" * 10), _blob(b"packed")
    bucket.put_many([(a, da)])  # as an earlier version wrote it: a key of its own
    store.index.add({a: Indexed(len(da), da[:16])}, [a], 1000)
    store.write([(b, db)], 1000)
    assert store.get_many([a, b]) == [da, db]
    assert store.peek([a, b], 30) == [(len(da), da[:30]), (len(db), db[:30])]


def test_a_download_reads_each_run_of_a_pack_with_one_get(
        session_objects: S3SessionObjects, monkeypatch: pytest.MonkeyPatch) -> None:
    store, bucket = session_objects, session_objects.bucket
    near = [_blob(bytes([i]) * 1000) for i in range(20)]
    far = _blob(b"x" * (READ_GAP + 10))
    last = _blob(b"last")
    assert store.write([*near, far, last], 1000) == 22
    gets: list[tuple[int, int]] = []
    real = bucket.get_range

    def counted(pack: ObjectId, start: int, end: int) -> bytes | None:
        gets.append((start, end))
        return real(pack, start, end)

    monkeypatch.setattr(bucket, "get_range", counted)
    wanted = [oid for oid, _ in near[::2]] + [last[0]]
    assert store.get_many(wanted) == [data for _, data in near[::2]] + [last[1]]
    assert len(gets) == 2, "the near objects in one GET, the one past the gap in another"


def test_gc_deletes_only_what_is_neither_kept_nor_recent(
        session_objects: S3SessionObjects) -> None:
    store, bucket = session_objects, session_objects.bucket
    (a, da), (b, db) = _blob(b"mostly live" * 100), _blob(b"garbage")
    (c, dc), (g, dg) = _blob(b"live"), _blob(b"mostly garbage" * 100)
    (h, dh) = _blob(b"only garbage")
    (d, dd), (e, de) = _blob(b"orphan key"), _blob(b"orphan pack")
    now = time.time()
    store.write([(a, da), (b, db)], int(now))
    store.write([(c, dc), (g, dg)], int(now))
    store.write([(h, dh)], int(now))
    # Orphans: put in the bucket by uploads that died before indexing them.
    bucket.put_many([(d, dd)])
    orphan, _ = encode_pack([(e, de)])
    bucket.put_pack(hash_bytes(orphan), orphan)
    assert len(_packs(bucket)) == 4
    keep = {a, c}
    dropped: list[list[ObjectId]] = []
    # Everything is within the grace period: the upload log and the keys' times protect it.
    assert store.sweep(keep, now - 3600, dropped.append) == []
    assert len(_packs(bucket)) == 4 and list(bucket.iter_ids()) == [d]
    # Past it, what is not kept goes: indexed garbage and the orphans alike.
    assert sorted(store.sweep(keep, now + 3600, dropped.append)) == sorted([b, g, h, d])
    assert sorted(dropped[-1]) == sorted([b, g, h]), "marks are dropped first (d had none)"
    assert list(bucket.iter_ids()) == []
    contents = sorted([oid for oid, _, _ in pack_contents(bucket.get_range(pack, 0, 1 << 30)
                                                         or b"")]
                      for pack in _packs(bucket))
    assert contents == sorted([[a, b], [c]]), \
        "a pack mostly live is kept whole, one mostly garbage is rewritten, the rest go"
    assert store.missing([a, b, c, g, h]) == [b, g, h]
    assert store.used_bytes() == len(da) + len(dc)
    assert store.get_many([a, c]) == [da, dc] and store.peek([c], 100) == [(len(dc), dc)]
    assert store.write([(b, db)], int(now)) == 1, "written again once it is needed again"
    assert store.get_many([b]) == [db]


def test_a_repack_of_many_packs_holds_a_pack_of_objects_at_a_time(
        session_objects: S3SessionObjects, monkeypatch: pytest.MonkeyPatch) -> None:
    store, bucket = session_objects, session_objects.bucket
    now = time.time()
    live, dead = [], []
    for i in range(6):  # six packs, each a live object beside more garbage
        kept, garbage = _blob(bytes([i]) * 300), _blob(bytes([i]) * 1000)
        store.write([kept, garbage], int(now))
        live.append(kept)
        dead.append(garbage)
    monkeypatch.setattr(s3, "PACK_MAX", 700)
    puts: list[int] = []
    real = bucket.put_pack

    def counted(pack: ObjectId, body: bytes) -> None:
        puts.append(len(body))
        real(pack, body)

    monkeypatch.setattr(bucket, "put_pack", counted)
    assert sorted(store.sweep({oid for oid, _ in live}, now + 3600, lambda _: None)) \
        == sorted(oid for oid, _ in dead)
    # Three packs' live objects (over 700 bytes) are rewritten, twice: two packs each time.
    assert len(puts) == 4 and max(puts) < 800, puts
    assert len(_packs(bucket)) == 4
    assert store.get_many([oid for oid, _ in live]) == [data for _, data in live]


def test_gc_racing_another_coordinators_upload_of_the_same_objects_keeps_them(
        session_objects: S3SessionObjects, pool: ThreadPoolExecutor,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gc, index = session_objects, session_objects.index
    bucket = gc.bucket
    other = S3SessionObjects(S3Objects(bucket.client, bucket.bucket, "p/s", pool), index)
    x, dx = _blob(b"x" * 100)
    now = time.time()
    gc.write([(x, dx)], int(now) - 7200)  # an old upload no snapshot kept
    real = bucket.pack_listing

    def listing() -> Iterator[tuple[ObjectId, int, float]]:
        listed = list(real())
        # Another coordinator uploads the same objects again while this gc runs: a pack of
        # the same objects in the same order, which must not be the pack gc is deleting.
        assert other.write([(x, dx)], int(time.time())) == 1
        return iter(listed)

    monkeypatch.setattr(bucket, "pack_listing", listing)
    assert gc.sweep(set(), now, lambda _: None) == [x]
    assert x in other and other.get_many([x]) == [dx]


def test_a_read_racing_a_repack_finds_the_objects_where_they_went(
        session_objects: S3SessionObjects, monkeypatch: pytest.MonkeyPatch) -> None:
    store = session_objects
    (a, da), (g, dg) = _blob(b"live"), _blob(b"garbage" * 100)
    now = time.time()
    store.write([(a, da), (g, dg)], int(now))
    located = store.index.locate([a])
    store.sweep({a}, now + 3600, lambda _: None)
    assert store.index.locate([a]) != located, "a was repacked, its old pack deleted"
    # A read that located a before the repack reads the old pack after it: absent.
    real = store.index.locate
    monkeypatch.setattr(store.index, "locate", lambda oids: (
        monkeypatch.setattr(store.index, "locate", real) or located))
    assert store.get_many([a]) == [da]


def test_a_pack_is_what_its_trailer_says_or_a_clear_error() -> None:
    objects = [_blob(b"one"), _blob(b""), _blob(b"three" * 50)]
    body, offsets = encode_pack(objects)
    assert [(oid, at, len(data)) for (oid, data), at in zip(objects, offsets, strict=True)] \
        == pack_contents(body)
    assert pack_contents(encode_pack([])[0]) == []
    for bad in (b"", b"\x00\x00", body[:-1], body[1:], b"junk" + body):
        with pytest.raises(ValueError, match="p1: not a pack"):
            pack_contents(bad, "p1")


def test_an_unreachable_bucket_is_unavailable_and_indexes_nothing(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    with s3_server() as down:
        bucket = down.new_bucket()
        client = down.client()
    index = LmdbObjectIndex(tmp_path / "index")
    store = S3SessionObjects(S3Objects(client, bucket, "s", pool), index)
    a, da = _blob(b"a")
    with pytest.raises(S3Unavailable) as info:
        store.write([(a, da)], 1000)
    assert f"s3://{bucket}/s" in str(info.value) and "PUT" in str(info.value)
    assert store.missing([a]) == [a] and store.used_bytes() == 0
    index.close()


# -- a coordinator with its objects in a bucket -----------------------------------------------


def _running(data: Path, url: str, admin_token: str | None = None, **limits: Any) -> Server:
    app = create_app(data, limits=dataclasses.replace(FAST, **limits), objects=url)
    token = app.state.admin_token or admin_token
    assert token is not None
    http = TestClient(app)
    http.__enter__()
    return Server(http, CoordinatorClient(http, "", token), data, token)


def _stop(server: Server) -> None:
    server.http.__exit__(None, None, None)


def _world(path: Path, data_dir: Path) -> Repository:
    path.mkdir(parents=True)
    repo = Repository.init(path)
    make_world(repo.world)
    shutil.copy(data_dir / "mixed.mca", repo.world / "region" / "r.0.0.mca")
    return repo


def _empty(path: Path) -> Repository:
    path.mkdir(parents=True)
    return Repository.init(path)


def test_a_coordinator_serves_push_pull_and_gc_from_a_bucket(
        moto: S3Server, tmp_path: Path, data_dir: Path) -> None:
    bucket = moto.new_bucket()
    with s3_environment(moto):
        server = _running(tmp_path / "coord", f"s3://{bucket}/phs", gc_grace=0.0, gc_interval=0)
    try:
        c = make_session(server)
        assert server.admin.status()["sessions"][0]["usage_bytes"] == 0
        assert not (tmp_path / "coord" / "sessions" / "s1").exists(), "usage creates nothing"
        fencing = c["alice"].acquire("alice-pc", 60).fencing
        a = _world(tmp_path / "a", data_dir)
        v1 = a.snapshot("v1").oid
        first = push(a, c["alice"], fencing=fencing)
        assert first.objects_sent > 0
        (a.world / "level.dat").write_bytes(b"changed")
        shutil.copy(data_dir / "gzip.mca", a.world / "region" / "r.0.0.mca")
        v2 = a.snapshot("v2").oid
        assert push(a, c["alice"], fencing=fencing).objects_sent > 0

        b = _empty(tmp_path / "b")
        assert pull(b, c["bob"]).outcome == "fast-forward" and b.head() == v2
        assert root_of(b) == root_of(a) and b.verify().ok

        def stored() -> int:
            listed = moto.client().list_objects_v2(Bucket=bucket)
            return sum(item["Size"] for item in listed.get("Contents", []))

        keys = stored()
        assert keys > 0, "the objects are in the bucket"
        assert not (tmp_path / "coord" / "sessions" / "s1" / "store").exists(), \
            "and not on the coordinator's disk"
        usage = c["owner"].retention()["usage"]
        assert usage > 0
        status = {s["session"]: s for s in server.admin.status()["sessions"]}
        assert status["s1"]["usage_bytes"] == status["s1"]["storage_bytes"] == usage

        c["owner"].set_retention(keep_last=1)
        time.sleep(1.1)  # the keys' times are whole seconds: let them fall behind the horizon
        report = c["owner"].gc()
        assert report["deleted_objects"] > 0 and report["dropped_snapshots"] == 1
        assert report["usage"] < usage
        assert stored() < keys, "the bucket holds less: what only v1 reached is gone"
        fresh = _empty(tmp_path / "fresh")
        assert pull(fresh, c["bob"]).outcome == "fast-forward" and fresh.head() == v2
        assert fresh.verify().ok and root_of(fresh) == root_of(a)
        assert c["owner"].log()[0]["new"] == v1.hex()
        for repo in (a, b, fresh):
            repo.close()
    finally:
        _stop(server)


def test_an_unreachable_bucket_at_start_is_one_clear_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    saved = os.environ.copy()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        with pytest.raises(StoreError, match=r"cannot use bucket 'nowhere' \(endpoint "):
            create_app(tmp_path / "coord", objects="s3://nowhere/p")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # The coordination state was closed again: another start can take the folder.
    create_app(tmp_path / "coord").state.coordinator.close()


def test_the_bucket_unreachable_mid_push_is_503_and_loses_nothing(
        tmp_path: Path, data_dir: Path) -> None:
    with s3_server() as s3:
        bucket = s3.new_bucket()
        with s3_environment(s3):
            server = _running(tmp_path / "coord", f"s3://{bucket}/phs")
        try:
            c = make_session(server)
            fencing = c["alice"].acquire("alice-pc", 60).fencing
            a = _world(tmp_path / "a", data_dir)
            v1 = a.snapshot("v1").oid
            push(a, c["alice"], fencing=fencing)
            (a.world / "level.dat").write_bytes(b"changed")
            shutil.copy(data_dir / "gzip.mca", a.world / "region" / "r.0.0.mca")
            v2 = a.snapshot("v2").oid

            # The bucket goes away as the push puts its first pack.
            puts: list[int] = []
            stores = server.coordinator.backends.objects
            assert isinstance(stores, S3ObjectStores)
            client = stores.client

            def count(**kwargs: Any) -> None:
                puts.append(1)
                if len(puts) == 1:
                    s3.stop()

            client.meta.events.register("before-call.s3.PutObject", count)
            with pytest.raises(CoordinatorError) as info:
                push(a, c["alice"], fencing=fencing)
            assert info.value.status == 503 and info.value.code == "unavailable"
            assert info.value.details["retry_after"] > 0
            assert len(puts) >= 1
            assert c["bob"].head().head == v1, "the acknowledged head is untouched"
            client.meta.events.unregister("before-call.s3.PutObject", count)

            s3.start()  # back, with everything it held
            assert push(a, c["alice"], fencing=fencing).objects_sent > 0
            b = _empty(tmp_path / "b")
            assert pull(b, c["bob"]).outcome == "fast-forward" and b.head() == v2
            assert b.verify().ok and root_of(b) == root_of(a)
            a.close()
            b.close()
        finally:
            _stop(server)


def test_unavailable_answers_carry_retry_after(tmp_path: Path) -> None:
    with s3_server() as s3:
        bucket = s3.new_bucket()
        with s3_environment(s3):
            server = _running(tmp_path / "coord", f"s3://{bucket}/phs")
        try:
            token = server.admin.create_session("s1")
            data = encode_blob(b"one object")
            s3.stop()
            answer = server.http.post("/v1/sessions/s1/objects", content=encode_objects([data]),
                                      headers={"Authorization": f"Bearer {token}",
                                               "Content-Type": MSGPACK})
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["Retry-After"]) > 0
            assert answer.json()["error"]["code"] == "unavailable"
            assert bucket in answer.json()["error"]["message"]
            owner = server.client("s1", token)
            assert owner.missing([hash_bytes(data)]) == [hash_bytes(data)], "nothing indexed"
        finally:
            _stop(server)


# -- a real coordinator process, killed between the upload and the head move -----------------


class _Process:
    """``phs serve --objects`` in a process of its own on ``port``."""

    def __init__(self, data: Path, port: int, url: str, env: dict[str, str]) -> None:
        self.data, self.port, self.url, self.env = data, port, url, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_token: str | None = None
        self.log = data.parent / "serve.log"

    def start(self) -> None:
        argv = [sys.executable, "-m", "peerhost_cli", "serve", "--data", str(self.data),
                "--bind", f"127.0.0.1:{self.port}", "--objects", self.url]
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT / "src")}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/v1/health", timeout=2).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("the coordinator did not come up in 60 s")
        for line in self.log.read_text().splitlines():
            if line.startswith("admin token"):
                self.admin_token = line.rsplit(" ", 1)[1].strip()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


class _KilledAtHeadMove(CoordinatorClient):
    """A client whose coordinator is kill -9ed just before it is asked to move the head."""

    def __init__(self, http: httpx.Client, session: str, token: str, process: _Process) -> None:
        super().__init__(http, session, token)
        self.process = process

    def set_head(self, old: ObjectId | None, new: ObjectId, fencing: int) -> int:
        self.process.kill()
        return super().set_head(old, new, fencing)


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9")
def test_a_coordinator_killed_between_upload_and_head_move_keeps_its_head(
        moto: S3Server, tmp_path: Path, data_dir: Path) -> None:
    bucket = moto.new_bucket()
    process = _Process(tmp_path / "coord", free_port(), f"s3://{bucket}/phs", moto.env)
    process.start()
    try:
        base = f"http://127.0.0.1:{process.port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            assert process.admin_token is not None
            admin = CoordinatorClient(http, "", process.admin_token)
            owner_token = admin.create_session("s1")
            owner = CoordinatorClient(http, "s1", owner_token)
            alice_token = owner.add_member("alice")
            doomed = _KilledAtHeadMove(http, "s1", alice_token, process)
            a = _world(tmp_path / "a", data_dir)
            v1 = a.snapshot("v1").oid
            with pytest.raises(CoordinatorError):
                push(a, doomed, fencing=doomed.acquire("alice-pc", 60).fencing)
            uploaded = moto.client().list_objects_v2(Bucket=bucket)["KeyCount"]
            assert uploaded > 0, "the objects were uploaded before the kill"

        process.start()  # the same data folder and bucket
        with httpx.Client(base_url=base, timeout=30) as http:
            alice = CoordinatorClient(http, "s1", alice_token)
            assert alice.head().head is None, "the head did not move"
            lease = alice.acquire("alice-pc", 60)
            retry = push(a, alice, fencing=lease.fencing)
            assert alice.head().head == v1
            assert retry.objects_sent < uploaded, "what the killed push uploaded is kept"
            b = _empty(tmp_path / "b")
            assert pull(b, CoordinatorClient(http, "s1", owner_token)).outcome == "fast-forward"
            assert b.head() == v1 and root_of(b) == root_of(a) and b.verify().ok
            a.close()
            b.close()
    finally:
        process.stop()
