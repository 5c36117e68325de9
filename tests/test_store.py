from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from peerhost_store.errors import StoreDamaged
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import encode_blob
from peerhost_store.store import (
    PACK_MIN,
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


#: LMDB layouts the contract suites run on: the default (every object packed), only long
#: objects packed, and none (the layout of stores written before packing).
LAYOUTS = [PACK_MIN, 1024, None]


class TestLmdbObjects(ObjectStoreTests):
    @pytest.fixture(params=LAYOUTS, ids=["default", "long-packed", "unpacked"])
    def objects(self, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ObjectStore]:
        with LmdbStore(tmp_path / "store", pack_min=request.param) as store:
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
    @pytest.fixture(params=LAYOUTS, ids=["default", "long-packed", "unpacked"])
    def store(self, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
        s = LmdbStore(tmp_path / "store", pack_min=request.param)
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


def _chunks(count: int, size: int, salt: bytes = b"") -> list[tuple[ObjectId, bytes]]:
    out = []
    for i in range(count):
        data = encode_blob(salt + i.to_bytes(4, "big") * (size // 4))
        out.append((hash_bytes(data), data))
    return out


def _pack_count(store: LmdbStore) -> int:
    with store._env.begin() as txn:
        return int(txn.stat(store._packs)["entries"])


def test_staged_lists_in_any_order_are_indexed(tmp_path: Path) -> None:
    """A staged list is written sorted by id and merged with the others a row at a time;
    one written in another order (by an older phs, before a crash) is sorted first."""
    objects = _chunks(400, 9_000)
    with LmdbStore(tmp_path / "s") as store:
        store.apply(Update(hashed=objects[:200], staged=True))
        store.apply(Update(hashed=objects[200:], staged=True))
        with store._env.begin(write=True) as txn:
            cursor = txn.cursor(db=store._staged)
            key, value = next(iter(cursor))
            rows = [value[i:i + 40] for i in range(0, len(value), 40)]
            assert rows == sorted(rows), "written sorted"
            txn.put(key, b"".join(reversed(rows)), db=store._staged)
        ids = [oid for oid, _ in objects]
        store.apply(Update(refs=[("main", None, ids[0])], require=ids))
        assert store.objects.missing(ids) == []
        assert store.objects.get_many(ids) == [data for _, data in objects]


def test_long_objects_share_packs_and_take_less_room(tmp_path: Path) -> None:
    objects = _chunks(300, 9_000)
    with LmdbStore(tmp_path / "packed") as packed, \
            LmdbStore(tmp_path / "plain", pack_min=None) as plain:
        for store in (packed, plain):
            assert store.objects.backend.put_many(objects) == 300
        assert packed.objects.backend.get_many([oid for oid, _ in objects]) == [
            data for _, data in objects]
        assert _pack_count(packed) == 3  # about 1 MiB each
        # Alone, each 9 KB value takes three 4 KiB overflow pages.
        assert packed.used_bytes() < 0.8 * plain.used_bytes()


def test_a_store_written_before_packing_is_read_healed_and_collected(tmp_path: Path) -> None:
    old = _chunks(20, 5_000, b"old")
    with LmdbStore(tmp_path / "s", pack_min=None) as legacy:
        legacy.objects.backend.put_many(old)
        legacy.apply(Update(refs=[("main", None, old[0][0])]))
    with LmdbStore(tmp_path / "s") as store:
        backend = store.objects.backend
        ids = [oid for oid, _ in old]
        assert backend.get_many(ids) == [data for _, data in old]
        assert backend.missing(ids) == [] and sorted(backend.iter_ids()) == sorted(ids)
        assert _pack_count(store) == 0, "old objects stay where they are"
        new = _chunks(5, 5_000, b"new")
        backend.put_many(new)
        assert _pack_count(store) == 1 and sorted(backend.iter_ids()) == sorted(
            ids + [oid for oid, _ in new])
        # A damaged old object is healed: the good bytes go to a pack.
        oid, good = old[1]
        backend.put_many([(oid, encode_blob(b"damaged"))])
        assert store.objects.backend.get_many([oid]) == [encode_blob(b"damaged")]
        assert store.apply(Update(objects=[good])) == 1
        assert store.objects.get_raw(oid) == good
        store.apply(Update(delete_objects=[*ids[2:], new[0][0]]))
        assert sorted(backend.iter_ids()) == sorted(ids[:2] + [o for o, _ in new[1:]])
        assert store.refs.get("main") == old[0][0]


def test_deleting_from_packs_frees_them_and_rewrites_sparse_ones(tmp_path: Path) -> None:
    objects = _chunks(200, 9_000)  # two packs
    with LmdbStore(tmp_path / "s") as store:
        backend = store.objects.backend
        backend.put_many(objects)
        assert _pack_count(store) == 2
        full = store.used_bytes()
        # Most of both packs goes: what is left moves to one new pack.
        doomed = [oid for i, (oid, _) in enumerate(objects) if i % 10]
        backend.delete_many(doomed)
        kept = [(oid, data) for i, (oid, data) in enumerate(objects) if not i % 10]
        assert _pack_count(store) == 1
        assert backend.get_many([oid for oid, _ in kept]) == [data for _, data in kept]
        assert sorted(backend.iter_ids()) == sorted(oid for oid, _ in kept)
        assert store.used_bytes() < full / 4
        backend.delete_many([oid for oid, _ in kept])
        assert _pack_count(store) == 0 and list(backend.iter_ids()) == []
        with store._env.begin() as txn:
            assert txn.stat(store._packlive)["entries"] == 0


def test_an_object_repeated_in_one_update_is_packed_once(tmp_path: Path) -> None:
    (oid, data), = _chunks(1, 4_000)
    with LmdbStore(tmp_path / "s") as store:
        assert store.apply(Update(objects=[data, data], hashed=[(oid, data)])) == 1
        assert store.objects.get_raw(oid) == data
        store.apply(Update(delete_objects=[oid]))
        assert _pack_count(store) == 0


def test_a_damaged_pack_location_is_store_damage(tmp_path: Path) -> None:
    (oid, data), = _chunks(1, 4_000)
    with LmdbStore(tmp_path / "s") as store:
        store.objects.backend.put_many([(oid, data)])
        with store._env.begin(write=True) as txn:
            raw = txn.get(oid, db=store._packed)
            assert raw is not None
            where = bytearray(raw)
            where[-4:] = (1 << 30).to_bytes(4, "big")  # the length runs past the pack
            txn.put(oid, bytes(where), db=store._packed)
        with pytest.raises(StoreDamaged, match="runs past the end of pack"):
            store.objects.get_raw(oid)
        with store._env.begin(write=True) as txn:
            txn.put(oid, b"short", db=store._packed)
        with pytest.raises(StoreDamaged, match="pack location"):
            store.objects.get_raw(oid)


def test_staged_objects_are_indexed_by_the_next_update_even_after_a_crash(
        tmp_path: Path) -> None:
    first, second = _chunks(150, 9_000, b"1"), _chunks(150, 9_000, b"2")
    repeated = first[:10]  # written by both batches, as identical chunks of two regions are
    with LmdbStore(tmp_path / "s") as store:
        store.apply(Update(hashed=first, staged=True))
        store.apply(Update(hashed=second + repeated, staged=True))
    # The process ended there (a snapshot killed before its final update).
    with LmdbStore(tmp_path / "s") as store:
        ids = [oid for oid, _ in first + second]
        assert store.objects.missing(ids[:1]) == ids[:1], "not indexed yet"
        store.apply(Update(refs=[("main", None, ids[0])], require=ids))
        assert store.objects.missing(ids) == []
        assert store.objects.backend.get_many(ids) == [data for _, data in first + second]
        with store._env.begin() as txn:
            assert txn.stat(store._staged)["entries"] == 0
        store.apply(Update(delete_objects=ids))
        assert _pack_count(store) == 0, "the repeated copies were released"


def test_check_many_hashes_objects_in_place_and_names_the_bad_ones(tmp_path: Path) -> None:
    from peerhost_store.errors import ObjectCorrupt, ObjectMissing

    (good, data), (other, _) = _chunks(2, 9_000)
    wrong = ObjectId(bytes(32))
    with LmdbStore(tmp_path / "s") as store:
        store.objects.backend.put_many([(good, data), (wrong, data)])  # unchecked: a bad id
        store.objects.check_many([good])
        with pytest.raises(ObjectCorrupt) as corrupt:
            store.objects.check_many([good, wrong])
        assert corrupt.value.expected == wrong
        with pytest.raises(ObjectMissing) as missing:
            store.objects.check_many([other])
        assert missing.value.oid == other
