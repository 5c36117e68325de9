"""Trees a hostile member builds (this module holds no tests): DAG bombs, and a world tree with
one entry changed. Shared by tests/test_hostile_member.py and benchmarks/bench_hostile.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import (
    ChunkEntry,
    DirEntry,
    EntryKind,
    Snapshot,
    encode_blob,
    encode_snapshot,
)
from peerhost_store.region import ZLIB
from peerhost_store.tree import build_dir, build_region

Add = Callable[[bytes], ObjectId]


def dag_bomb(add: Add, *, levels: int, fanout: int, file_bytes: int) -> ObjectId:
    """A directory tree of ``fanout ** levels`` paths, each a file of ``file_bytes``, stored
    as ``levels`` small directory maps whose ``fanout`` entries all point at the one below."""
    data = bytes(file_bytes)
    inner = build_dir(add, [DirEntry("f", EntryKind.FILE, add(encode_blob(data)), len(data))])
    for _ in range(levels):
        inner = build_dir(add, [DirEntry(f"d{i:04d}", EntryKind.DIR, inner, 0)
                                for i in range(fanout)])
    return inner


def region_bomb(add: Add, *, regions: int, declared: int | None = None, seed: int = 0
                ) -> ObjectId:
    """A ``region/`` folder of ``regions`` region files all sharing one full region map
    (1,024 chunks of one 4 KiB payload): ``regions`` x 4 MiB to write. With ``declared``,
    the entries lie about their chunk count (what a check of directory nodes alone sees);
    ``seed`` makes another tree of the same shape."""
    blob = add(encode_blob(seed.to_bytes(4, "big") + bytes(3996)))
    chunks = [ChunkEntry(slot, blob, ZLIB, 0) for slot in range(1024)]
    region = build_region(add, chunks)
    count = len(chunks) if declared is None else declared
    files = [DirEntry(f"r.{i}.0.mca", EntryKind.REGION, region, count)
             for i in range(regions)]
    folder = build_dir(add, sorted(files))
    return build_dir(add, [DirEntry("region", EntryKind.DIR, folder, 0)])


def snapshot_of(add: Add, root: ObjectId, parent: ObjectId | None, message: str = "evil"
                ) -> ObjectId:
    """Store a snapshot of tree ``root`` on top of ``parent``."""
    snap = Snapshot(root, (parent,) if parent else (), 1_700_000_000, "mallory", "evil",
                    message, {})
    return add(encode_snapshot(snap))


class Collect:
    """An ``add`` that keeps what it is given, in order (to upload it afterwards)."""

    def __init__(self) -> None:
        self.objects: dict[ObjectId, bytes] = {}

    def __call__(self, data: bytes) -> ObjectId:
        oid = hash_bytes(data)
        self.objects[oid] = data
        return oid

    @property
    def stored_bytes(self) -> int:
        return sum(len(data) for data in self.objects.values())


class Sized:
    """A store as the coordinator's check reads it (``peek``), over a MemoryStore."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get_many(self, oids: list[ObjectId]) -> list[bytes]:
        return list(self.store.objects.get_many(oids))

    def peek(self, oids: list[ObjectId], n: int) -> list[tuple[int, bytes] | None]:
        objects = self.store.backend.data
        return [(len(objects[o]), objects[o][:n]) if o in objects else None for o in oids]
