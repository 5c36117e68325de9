"""What an area rollback costs against the world, on the real histories (``../shared/worlds``).

For each history, every version is snapshotted in turn; then a box around a chunk whose blocks
changed between the first and the last version is rolled back to the first version, three
ways, on copies of the same store:

* ``surgery``: :meth:`peerhost_store.area.Area.graft` (what ``phs rollback --area`` and the
  coordinator do): nodes read (through a counting loader), new nodes written, time to build
  the tree; then the whole ``Repository.rollback(..., only=area)``: time and files written;
* ``rebuild``: the same tree built the naive way, reading every node of the head's tree and
  building every map again (``build_dir``/``build_region``): nodes read and encoded, time;
  its root must equal the surgery's;
* ``whole``: ``Repository.rollback`` of the whole world to the first version: time, files
  written (no new tree nodes: the old tree exists).

Boxes: 3x3 chunks and 32x32 chunks (one region's worth). Run:
``.venv/bin/python benchmarks/area_rollback.py`` (writes benchmarks/results/area_rollback.json).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from worldutil import HISTORIES, copy_world, replace_world

from peerhost_store.area import Area
from peerhost_store.diff import ChunkChange
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import DirEntry, EntryKind
from peerhost_store.region import chunk_coords, region_coords
from peerhost_store.repo import Repository
from peerhost_store.store import Update
from peerhost_store.tree import build_dir, build_region, iter_dir, iter_region
from peerhost_store.worldfs import region_place
from peerhost_store.writer import ObjectWriter

WORLDS = Path(__file__).resolve().parents[2] / "shared" / "worlds"
RESULTS = Path(__file__).resolve().parent / "results" / "area_rollback.json"


class Counting:
    def __init__(self, store: Any) -> None:
        self.store, self.reads = store, 0

    def get_raw(self, oid: ObjectId) -> bytes:
        self.reads += 1
        data: bytes = self.store.get_raw(oid)
        return data


def rebuild(loader: Counting, add: Any, root: ObjectId | None, old_root: ObjectId | None,
            area: Area, prefix: str = "") -> ObjectId | None:
    """The area rollback's tree the naive way: every node of both trees read, every map of
    the head built again (None: a folder neither tree has anything of the area in)."""
    mine = {e.name: e for e in iter_dir(loader, root)} if root else {}
    old = {e.name: e for e in iter_dir(loader, old_root)} if old_root else {}
    entries = []
    for name in sorted(mine.keys() | old.keys()):
        entry, theirs = mine.get(name), old.get(name)
        path = prefix + name
        dirs = [e.oid if e is not None and e.kind is EntryKind.DIR else None
                for e in (entry, theirs)]
        if dirs[0] is not None or (entry is None and dirs[1] is not None):
            sub = rebuild(loader, add, dirs[0], dirs[1], area, path + "/")
            if sub is not None and (entry is not None or sub != build_dir(add, [])):
                entries.append(DirEntry(name, EntryKind.DIR, sub))
            continue
        place, coords = region_place(prefix.rstrip("/")), region_coords(name)
        in_area = place is not None and coords is not None and place.dimension == area.dimension
        regions = [list(iter_region(loader, e.oid)) if e is not None and e.kind is
                   EntryKind.REGION else [] for e in (entry, theirs)]
        if in_area and (entry is None or entry.kind is EntryKind.REGION):
            assert coords is not None
            keep = [c for c in regions[0] if not area.contains_chunk(*chunk_coords(*coords,
                                                                                   c.slot))]
            take = [c for c in regions[1] if area.contains_chunk(*chunk_coords(*coords, c.slot))]
            chunks = sorted(keep + take, key=lambda c: c.slot)
            if entry is not None or take:
                entries.append(DirEntry(name, EntryKind.REGION, build_region(add, chunks),
                                        len(chunks)))
        elif entry is not None:
            entries.append(entry)
    if root is None and not entries:
        return None
    return build_dir(add, entries)


def measure(name: str, box_chunks: int) -> dict[str, Any]:
    source = WORLDS / name
    with tempfile.TemporaryDirectory() as tmp:
        world = copy_world(source / HISTORIES[name][0], Path(tmp) / "world")
        repo = Repository.init(world)
        repo.check_world = False
        first = repo.snapshot("v0").oid
        for version in HISTORIES[name][1:]:
            replace_world(world, source / version)
            repo.snapshot(version)
        head = repo.head()
        assert head is not None
        pick = next(c for c in repo.diff(first, head) if isinstance(c, ChunkChange)
                    and c.kind == "region")
        half = box_chunks // 2
        area = Area(pick.dimension, (pick.x - half) * 16, (pick.z - half) * 16,
                    (pick.x - half + box_chunks) * 16 - 1, (pick.z - half + box_chunks) * 16 - 1)
        head_root, old_root = repo.read_snapshot(head).root, repo.read_snapshot(first).root
        row: dict[str, Any] = {"world": name, "box_chunks": f"{box_chunks}x{box_chunks}",
                               "box": area.describe()}

        loader, writer = Counting(repo.store.objects), ObjectWriter(repo.store)
        started = time.perf_counter()
        grafted = area.graft(loader, writer.add, head_root, old_root)
        row["surgery_s"] = time.perf_counter() - started
        fresh = writer.take()
        row["surgery_nodes_read"], row["surgery_nodes_written"] = loader.reads, len(fresh)
        row["surgery_bytes_written"] = sum(len(data) for _, data in fresh)
        repo.store.apply(Update(hashed=fresh))

        loader, encoded = Counting(repo.store.objects), [0]

        def add(data: bytes) -> ObjectId:
            encoded[0] += 1
            oid, _ = repo.store.objects.put(data)
            return oid

        started = time.perf_counter()
        rebuilt = rebuild(loader, add, head_root, old_root, area)
        row["rebuild_s"] = time.perf_counter() - started
        row["rebuild_nodes_read"], row["rebuild_nodes_encoded"] = loader.reads, encoded[0]
        if rebuilt != grafted:
            from peerhost_store.tree import diff_trees
            store = repo.store.objects
            for path, a, b in diff_trees(store, rebuilt, grafted):
                print("DIFF", name, path, a, b)
            raise AssertionError("surgery and a full rebuild disagree")
        repo.close()
        for kind in ("area", "whole"):
            copy = Path(tmp) / kind
            shutil.copytree(world, copy)
            with Repository.open(copy) as again:
                again.check_world = False
                started = time.perf_counter()
                result = again.rollback(first, only=area if kind == "area" else None)
                row[f"{kind}_rollback_s"] = time.perf_counter() - started
                row[f"{kind}_files_written"] = result.restored.written
                row[f"{kind}_bytes_written"] = result.restored.bytes_written
    return row


def synthetic(side: int) -> dict[str, Any]:
    """A world of ``side`` x ``side`` full region files (1,024 chunks each, no files), two
    versions differing in every chunk: surgery against a full rebuild on a large world."""
    from peerhost_store.objects import ChunkEntry
    from peerhost_store.store import MemoryStore

    store = MemoryStore()

    def put(data: bytes) -> ObjectId:
        return store.objects.put(data)[0]

    def world(tag: bytes) -> ObjectId:
        regions = []
        for rx in range(side):
            for rz in range(side):
                chunks = [ChunkEntry(slot, hash_bytes(tag + bytes([rx, rz]) + slot.to_bytes(2, "big")),
                                     2, 1, False) for slot in range(1024)]
                regions.append(DirEntry(f"r.{rx}.{rz}.mca", EntryKind.REGION,
                                        build_region(put, chunks), 1024))
        regions.sort(key=lambda e: e.name)
        folder = build_dir(put, regions)
        return build_dir(put, [DirEntry("region", EntryKind.DIR, folder)])

    old, new = world(b"old"), world(b"new")
    area = Area("minecraft:overworld", 100, 100, 147, 147)  # 3x3 chunks in r.0.0
    row: dict[str, Any] = {"world": f"synthetic {side * side} regions",
                           "box_chunks": "3x3", "box": area.describe()}
    loader, writer = Counting(store.objects), ObjectWriter(store)
    started = time.perf_counter()
    grafted = area.graft(loader, writer.add, new, old)
    row["surgery_s"] = time.perf_counter() - started
    fresh = writer.take()
    row["surgery_nodes_read"], row["surgery_nodes_written"] = loader.reads, len(fresh)
    store.apply(Update(hashed=fresh))
    loader, encoded = Counting(store.objects), [0]

    def add(data: bytes) -> ObjectId:
        encoded[0] += 1
        return put(data)

    started = time.perf_counter()
    rebuilt = rebuild(loader, add, new, old, area)
    row["rebuild_s"] = time.perf_counter() - started
    row["rebuild_nodes_read"], row["rebuild_nodes_encoded"] = loader.reads, encoded[0]
    assert rebuilt == grafted, "surgery and a full rebuild disagree"
    for key in ("area_rollback_s", "area_files_written", "whole_rollback_s",
                "whole_files_written"):
        row[key] = "-"
    return row


def main() -> int:
    rows = [measure(name, n) for name in sorted(HISTORIES) for n in (3, 32)]
    rows.append(synthetic(10))
    columns = ["world", "box_chunks", "surgery_nodes_read", "surgery_nodes_written",
               "surgery_s", "rebuild_nodes_read", "rebuild_nodes_encoded", "rebuild_s",
               "area_rollback_s", "area_files_written", "whole_rollback_s",
               "whole_files_written"]
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])
                         for c in columns))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
