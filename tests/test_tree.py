from __future__ import annotations

from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import ChunkEntry, DirEntry, EntryKind, decode, encode_blob
from peerhost_store.store import MemoryStore
from peerhost_store.tree import (
    build_dir,
    build_region,
    diff_maps,
    iter_map,
    leaf_refs,
    lookup_map,
    update_map,
)

ids = st.binary(min_size=1, max_size=4).map(hash_bytes)
chunk_maps = st.dictionaries(
    st.integers(0, 1023),
    st.tuples(ids, st.sampled_from([1, 2, 3, 4, 127]), st.integers(0, 2**32 - 1), st.booleans()),
    max_size=300,
)


Chunks = dict[int, tuple[ObjectId, int, int, bool]]


def _chunks(d: Chunks) -> list[ChunkEntry]:
    return [ChunkEntry(slot, *d[slot]) for slot in sorted(d)]


def _region(store: MemoryStore, d: Chunks) -> ObjectId:
    return build_region(lambda data: store.objects.put(data)[0], _chunks(d))


def _chunk(entry: DirEntry | ChunkEntry | None) -> ChunkEntry | None:
    assert entry is None or isinstance(entry, ChunkEntry)
    return entry


def _dir_entry(entry: DirEntry | ChunkEntry | None) -> DirEntry:
    assert isinstance(entry, DirEntry)
    return entry


@settings(max_examples=60, deadline=None)
@given(chunk_maps)
def test_region_map_round_trip_and_id_stability(d: Chunks) -> None:
    store = MemoryStore()
    root = _region(store, d)
    assert list(iter_map(store.objects, root)) == _chunks(d)
    assert _region(MemoryStore(), d) == root  # the shape depends only on the entries
    assert list(diff_maps(store.objects, root, root)) == []


@settings(max_examples=60, deadline=None)
@given(chunk_maps, chunk_maps)
def test_region_diff_matches_dict_comparison(a: Chunks, b: Chunks) -> None:
    store = MemoryStore()
    ra, rb = _region(store, a), _region(store, b)
    got = []
    for x, y in diff_maps(store.objects, ra, rb):
        old, new = _chunk(x), _chunk(y)
        either = old or new
        assert either is not None
        got.append((either.slot, old, new))
    expected = []
    for slot in sorted(a.keys() | b.keys()):
        old = ChunkEntry(slot, *a[slot]) if slot in a else None
        new = ChunkEntry(slot, *b[slot]) if slot in b else None
        if old != new:
            expected.append((slot, old, new))
    assert got == expected
    # Applying the diff to a gives b.
    applied = dict(a)
    for slot, _, new in got:
        if new is None:
            del applied[slot]
        else:
            applied[slot] = (new.oid, new.compression, new.timestamp, new.external)
    assert _region(store, applied) == rb


def test_one_changed_chunk_stores_under_4_kib_of_nodes() -> None:
    store = MemoryStore()
    full = {slot: (hash_bytes(bytes([slot % 256, slot // 256])), 2, 1_700_000_000, False) for slot in range(1024)}
    _region(store, full)
    before = set(store.backend.data)
    changed = dict(full)
    changed[517] = (hash_bytes(b"new"), 2, 1_700_000_100, False)
    _region(store, changed)
    new_bytes = sum(len(store.backend.data[oid]) for oid in set(store.backend.data) - before)
    assert new_bytes < 2500, new_bytes


def test_large_directory_is_paged_and_diffs_by_name() -> None:
    store = MemoryStore()
    def add(data: bytes) -> ObjectId:
        return store.objects.put(data)[0]

    blob = add(encode_blob(b"x"))
    names = [f"r.{x}.{z}.mca" for x in range(-10, 10) for z in range(-10, 10)]
    entries = [DirEntry(n, EntryKind.FILE, blob, 1) for n in sorted(names)]
    root = build_dir(add, entries)
    assert decode(store.objects.get_raw(root)).__class__.__name__ == "Index"
    other = add(encode_blob(b"y"))
    changed = [e._replace(oid=other) if e.name == "r.3.-4.mca" else e for e in entries]
    root2 = build_dir(add, changed)
    diff = list(diff_maps(store.objects, root, root2))
    pairs = [(_dir_entry(a).name, _dir_entry(b).name) for a, b in diff]
    assert pairs == [("r.3.-4.mca", "r.3.-4.mca")]


# -- surgery: update_map gives what a full build gives, reading only what the change touches ----


dir_names = st.text("abcdefghij", min_size=1, max_size=3)
dir_maps = st.dictionaries(dir_names, ids, max_size=120)


def _dir(d: dict[str, ObjectId]) -> list[DirEntry]:
    return [DirEntry(name, EntryKind.FILE, d[name], 1) for name in sorted(d)]


K = TypeVar("K")
V = TypeVar("V")


def _applied(d: dict[K, V], change: dict[K, V | None]) -> dict[K, V]:
    """``d`` with ``change`` applied (None removes a key)."""
    out = {k: v for k, v in d.items() if k not in change}
    out.update((k, v) for k, v in change.items() if v is not None)
    return out


class _Counting:
    """A loader that counts the nodes it reads."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.oids: list[ObjectId] = []  #: the ids read, in order

    @property
    def reads(self) -> int:
        return len(self.oids)

    def get_raw(self, oid: ObjectId) -> bytes:
        self.oids.append(oid)
        return self.store.objects.get_raw(oid)


@settings(max_examples=150, deadline=None)
@given(chunk_maps, st.dictionaries(st.integers(0, 1023), st.none() | st.tuples(
    ids, st.sampled_from([1, 2]), st.integers(0, 9), st.booleans()), max_size=40))
def test_update_region_equals_a_full_build(
        d: dict[int, tuple[ObjectId, int, int, bool]],
        change: dict[int, tuple[ObjectId, int, int, bool] | None]) -> None:
    store = MemoryStore()
    def add(data: bytes) -> ObjectId:
        return store.objects.put(data)[0]

    expected = _applied(d, change)
    changes: dict[str | int, DirEntry | ChunkEntry | None] = {
        slot: None if v is None else ChunkEntry(slot, *v) for slot, v in change.items()}
    got = update_map(store.objects, add, _region(store, d) if d else None, changes, region=True)
    assert got == _region(store, expected)
    assert lookup_map(store.objects, got, list(change)) == {
        s: ChunkEntry(s, *expected[s]) for s in change if s in expected}


@settings(max_examples=150, deadline=None)
@given(dir_maps, st.dictionaries(dir_names, st.none() | ids, max_size=30))
def test_update_dir_equals_a_full_build(d: dict[str, ObjectId],
                                        change: dict[str, ObjectId | None]) -> None:
    store = MemoryStore()
    def add(data: bytes) -> ObjectId:
        return store.objects.put(data)[0]

    expected = _applied(d, change)
    changes: dict[str | int, DirEntry | ChunkEntry | None] = {
        name: None if v is None else DirEntry(name, EntryKind.FILE, v, 1)
        for name, v in change.items()}
    got = update_map(store.objects, add, build_dir(add, _dir(d)), changes, region=False)
    assert got == build_dir(add, _dir(expected))


def test_update_map_reads_the_changed_leaves_not_the_map() -> None:
    store = MemoryStore()
    def add(data: bytes) -> ObjectId:
        return store.objects.put(data)[0]

    names = {f"r.{i}.0.mca": hash_bytes(str(i).encode()) for i in range(2000)}
    root = build_dir(add, _dir(names))
    counting = _Counting(store)
    new = update_map(counting, add, root, {"r.7.0.mca": DirEntry("r.7.0.mca", EntryKind.FILE,
                                                                  hash_bytes(b"x"), 1)},
                     region=False)
    names["r.7.0.mca"] = hash_bytes(b"x")
    assert new == build_dir(add, _dir(names))
    leaves = len(leaf_refs(store.objects, root))
    assert leaves > 200
    # The index nodes (about one per 8 leaves) and one or two leaves, not 2,000 entries' pages.
    assert counting.reads < leaves // 3


def test_update_dir_where_pages_are_cut_by_length() -> None:
    # Names that are never hash cuts: every page is cut at MAX_PAGE, by position, so removing
    # or adding one name moves every later cut until the map ends.
    from peerhost_store.tree import MAX_PAGE, _is_cut

    store = MemoryStore()
    def add(data: bytes) -> ObjectId:
        return store.objects.put(data)[0]

    names = [n for n in (f"n{i:04d}" for i in range(2000)) if not _is_cut(0, n)][:5 * MAX_PAGE]
    base = {name: hash_bytes(name.encode()) for name in names}
    root = build_dir(add, _dir(base))
    for i, name in enumerate(names[::7]):
        change: dict[str | int, DirEntry | ChunkEntry | None] = {name: None}
        extra = name + "x"
        if i % 2:
            change[extra] = DirEntry(extra, EntryKind.FILE, hash_bytes(b"new"), 1)
        expected = {k: v for k, v in base.items() if k != name}
        if i % 2:
            expected[extra] = hash_bytes(b"new")
        assert update_map(store.objects, add, root, change, region=False) == \
            build_dir(add, _dir(expected)), name


def test_a_node_cache_reads_each_node_once_and_caches_no_failure() -> None:
    from peerhost_store.errors import DecodeError
    from peerhost_store.tree import NodeCache

    store = MemoryStore()
    def add(data: bytes) -> ObjectId:
        return store.objects.put(data)[0]

    a = {f"r.{i}.0.mca": hash_bytes(str(i).encode()) for i in range(500)}
    b = {**a, "r.7.0.mca": hash_bytes(b"x"), "r.300.0.mca": hash_bytes(b"y")}
    old, new = build_dir(add, _dir(a)), build_dir(add, _dir(b))
    plain = _Counting(store)
    expected = list(diff_maps(plain, old, new))
    counting = _Counting(store)
    cache = NodeCache(counting)
    for _ in range(3):  # the same diff, three times over: each node is read the first time
        assert list(diff_maps(cache, old, new)) == expected
    assert 0 < counting.reads == len(set(counting.oids)) < plain.reads
    blob = add(encode_blob(b"not a node"))
    for _ in range(2):  # a failure is not kept: asked again, it fails again
        with pytest.raises(DecodeError, match=blob.hex()):
            lookup_map(cache, blob, "r.0.0.mca")
