"""What changed between two world trees, at file and chunk level.

Equal subtrees are skipped by id (see :func:`peerhost_store.tree.diff_trees`); inside a changed
region only the differing pages are read. A modified chunk is decoded (bounded decompression, then
:mod:`peerhost_store.nbt`'s bounded reader) to tell a content change from a re-save that touched
only ``LastUpdate``/``InhabitedTime``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from .ids import ObjectId
from .objects import ChunkEntry, DirEntry, EntryKind
from .region import chunk_coords, region_coords
from .tree import ObjectLoader, diff_regions, diff_trees, load_blob
from .worldfs import region_place

__all__ = [
    "Change",
    "ChunkChange",
    "ChunkKind",
    "FileChange",
    "Status",
    "diff_worlds",
    "region_changes",
    "summarize",
]

Status = Literal["added", "removed", "modified"]
ChunkKind = Literal["content", "resave", "unknown"]


@dataclass(frozen=True, slots=True)
class FileChange:
    """A file, folder or region file that was added, removed or modified."""

    path: str
    status: Status
    kind: str  #: "file", "dir" or "region" (the new kind, or the old one when removed)
    old_size: int | None
    new_size: int | None


@dataclass(frozen=True, slots=True)
class ChunkChange:
    """A chunk that was added, removed or modified, located in the world."""

    path: str  #: the region file
    dimension: str  #: e.g. "minecraft:overworld"
    kind: str  #: "region", "entities" or "poi"
    x: int  #: world chunk coordinates
    z: int
    status: Status
    change: ChunkKind | None = None  #: for a modified chunk: content change or re-save
    detail: str = ""


Change = FileChange | ChunkChange


def _status(old: object, new: object) -> Status:
    return "added" if old is None else "removed" if new is None else "modified"


def _kind(entry: DirEntry) -> str:
    return {EntryKind.FILE: "file", EntryKind.DIR: "dir", EntryKind.REGION: "region"}[entry.kind]


def diff_worlds(
    store: ObjectLoader, old: ObjectId | None, new: ObjectId | None, *, classify: bool = True
) -> Iterator[Change]:
    """Yield the file and chunk changes that turn tree ``old`` into tree ``new``.

    Args:
        classify: decode modified chunks to tell content changes from re-saves.
    """
    for path, a, b in diff_trees(store, old, new):
        shown = b if b is not None else a
        yield FileChange(path, _status(a, b), _kind(shown), _size(a), _size(b))  # type: ignore[arg-type]
        a_region = a.oid if a is not None and a.kind is EntryKind.REGION else None
        b_region = b.oid if b is not None and b.kind is EntryKind.REGION else None
        if a_region is not None or b_region is not None:
            yield from region_changes(store, path, a_region, b_region, classify=classify)


def _size(entry: DirEntry | None) -> int | None:
    return None if entry is None or entry.kind is EntryKind.DIR else entry.size


def region_changes(
    store: ObjectLoader, path: str, old: ObjectId | None, new: ObjectId | None, *,
    classify: bool = True, slots: Container[int] | None = None,
) -> Iterator[ChunkChange]:
    """The chunk changes between two region maps (None: no region) of the region file at
    ``path``, only of ``slots`` when given (nothing when ``path`` is not a region file of a
    region folder). Only the differing pages are read; only changes kept are classified."""
    folder, _, name = path.rpartition("/")
    place = region_place(folder)
    coords = region_coords(name)
    if place is None or coords is None:
        return
    for a, b in diff_regions(store, old, new):
        slot = (a or b).slot  # type: ignore[union-attr]
        if slots is not None and slot not in slots:
            continue
        x, z = chunk_coords(*coords, slot)
        change, detail = None, ""
        if a is not None and b is not None:
            change, detail = _classify(store, a, b) if classify else ("unknown", "not classified")
        yield ChunkChange(path, place.dimension, place.kind, x, z, _status(a, b), change, detail)


def _classify(store: ObjectLoader, a: ChunkEntry, b: ChunkEntry) -> tuple[ChunkKind, str]:
    if a.oid == b.oid:
        fields = (("timestamp", a.timestamp, b.timestamp), ("compression", a.compression, b.compression),
                  ("external flag", a.external, b.external))
        return "resave", "same payload; " + ", ".join(name for name, x, y in fields if x != y) + " changed"
    from .chunk import ChunkDecodeError, classify_change  # the NBT reader loads only when needed

    try:
        old = (a.compression, load_blob(store, a.oid))
        new = (b.compression, load_blob(store, b.oid))
        return classify_change(old, new), ""
    except ChunkDecodeError as exc:
        return "unknown", str(exc)


def summarize(changes: Iterable[Change]) -> dict[str, int]:
    """Totals for ``diff --stat``: files and chunks by status, chunks by change kind."""
    totals: Counter[str] = Counter()
    for c in changes:
        if isinstance(c, FileChange):
            if c.kind != "dir":
                totals[f"files_{c.status}"] += 1
        else:
            totals[f"chunks_{c.status}"] += 1
            if c.change is not None:
                totals[f"chunks_{c.change}"] += 1
    return dict(sorted(totals.items()))
