from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import encode_blob
from peerhost_store.store import (
    LmdbStore,
    MemoryObjects,
    MemoryStore,
    ObjectStore,
    RefStore,
    Store,
    Update,
)
from peerhost_store.testing import ObjectStoreTests, RefStoreTests, StoreTests


class TestMemoryObjects(ObjectStoreTests):
    @pytest.fixture
    def objects(self) -> Iterator[ObjectStore]:
        yield MemoryObjects()


class TestLmdbObjects(ObjectStoreTests):
    @pytest.fixture
    def objects(self, tmp_path: Path) -> Iterator[ObjectStore]:
        with LmdbStore(tmp_path / "store") as store:
            yield store.objects.backend


class TestMemoryRefs(RefStoreTests):
    @pytest.fixture
    def refs(self) -> Iterator[RefStore]:
        yield MemoryStore().refs


class TestLmdbRefs(RefStoreTests):
    @pytest.fixture
    def refs(self, tmp_path: Path) -> Iterator[RefStore]:
        with LmdbStore(tmp_path / "store") as store:
            yield store.refs


class TestMemoryStore(StoreTests):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        yield MemoryStore()

    def end_pin_owner(self, store: Store, name: str) -> None:
        assert isinstance(store, MemoryStore)
        store.live_pins.discard(name)


class TestLmdbStore(StoreTests):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = LmdbStore(tmp_path / "store")
        yield s
        s.close()

    def end_pin_owner(self, store: Store, name: str) -> None:
        # What the death of the owning process does: its lock on the pin's file goes away.
        assert isinstance(store, LmdbStore)
        store._pin_locks.pop(name).__exit__(None, None, None)


def test_lmdb_survives_reopen(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "s") as s:
        oid, _ = s.objects.put(encode_blob(b"kept"))
        s.apply(Update(refs=[("main", None, oid)]))
    with LmdbStore(tmp_path / "s") as s:
        assert s.refs.get("main") == oid
        assert s.objects.get_raw(oid) == encode_blob(b"kept")


def test_lmdb_grows_its_map(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "s", map_size=1 << 20) as s:
        blobs = [encode_blob(bytes([i]) * 300_000) for i in range(20)]  # ~6 MB into a 1 MiB map
        assert s.apply(Update(objects=blobs)) == 20
        assert s.map_size() > 1 << 20
        assert all(s.objects.get_raw(ObjectId(oid)) for oid in s.objects.iter_ids())
        assert len(list(s.objects.iter_ids())) == 20


def test_lmdb_adopts_a_map_grown_by_another_process(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "s", map_size=1 << 20) as a:
        a.apply(Update(objects=[encode_blob(b"first")]))
        child = (
            "import sys; from peerhost_store.store import LmdbStore, Update;"
            "from peerhost_store.objects import encode_blob;"
            "s = LmdbStore(sys.argv[1], map_size=1 << 20);"
            "s.apply(Update(objects=[encode_blob(bytes(3_000_000))]))"
        )
        subprocess.run([sys.executable, "-c", child, str(tmp_path / "s")], check=True, timeout=60)
        a.apply(Update(objects=[encode_blob(bytes(3_000_001))]))
        assert len(list(a.objects.iter_ids())) == 3


def test_lmdb_version_is_recent() -> None:
    assert lmdb.version() >= (0, 9, 0)


def test_lmdb_readers_in_other_threads_survive_map_growth(tmp_path: Path) -> None:
    # Growing the map invalidates every open transaction of the process; the coordinator
    # reads in several threads while an upload grows it. Before the store's resize gate this
    # failed (closed/deleted object) or hung: every thread here is a daemon, joined with a
    # deadline, so a regression fails instead of hanging the suite.
    import threading

    errors: list[BaseException] = []
    stop = threading.Event()
    s = LmdbStore(tmp_path / "s", map_size=1 << 20)
    first = encode_blob(b"x")
    s.apply(Update(objects=[first]))
    oid = hash_bytes(first)

    def read() -> None:
        try:
            while not stop.wait(0.001):  # a request's worth of other work between reads
                assert s.objects.get_many([oid] * 2000)[-1] == first  # a long read transaction
        except BaseException as exc:  # noqa: BLE001 - reported below, by the main thread
            errors.append(exc)

    def write() -> None:
        try:
            for i in range(24):  # 12 MiB: the map doubles four times
                s.apply(Update(objects=[encode_blob(bytes([i]) * (512 << 10))]))
        except BaseException as exc:  # noqa: BLE001 - reported below, by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=read, daemon=True) for _ in range(4)]
    writer = threading.Thread(target=write, daemon=True)
    for t in [*threads, writer]:
        t.start()
    writer.join(60)
    stop.set()
    for t in threads:
        t.join(10)
    assert not writer.is_alive() and not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors[0]
    assert s.map_size() > 8 << 20
    s.close()
