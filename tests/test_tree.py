from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import ChunkEntry, DirEntry, EntryKind, decode, encode_blob
from peerhost_store.store import MemoryStore
from peerhost_store.tree import build_dir, build_region, diff_maps, iter_map

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
