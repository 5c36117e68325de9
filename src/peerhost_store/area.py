"""Parts of a world, and the tree surgery that puts a part of one snapshot into another.

A part is an :class:`Area` (a box of block coordinates in one dimension: every chunk it
overlaps, in the dimension's ``region``, ``entities`` and ``poi`` folders) or a
:class:`Player` (one player's ``playerdata``, ``stats`` and ``advancements`` files).
:func:`graft` builds the tree that holds ``into`` everywhere except the part, which comes from
``source``: only the region files (or files) of the part are looked up, only the pages of their
maps that hold the part's chunks are read and cut again (:func:`peerhost_store.tree.update_map`),
and every other node is reused by id. So an area rollback costs the area, not the world, and
its tree is the one a scan of the restored world gives (invariant 5).

Pure: reads through ``get_raw``, writes through ``add``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .diff import ChunkChange, region_changes
from .errors import PeerhostError
from .ids import ObjectId, hash_bytes
from .objects import ChunkEntry, DirEntry, EntryKind, encode_dir_leaf
from .region import region_coords
from .tree import Add, ObjectLoader, diff_regions, diff_trees, lookup_map, update_map
from .worldfs import REGION_KINDS, region_place

__all__ = [
    "DIMENSIONS",
    "MAX_AREA_REGIONS",
    "MAX_COORDINATE",
    "Area",
    "AreaError",
    "GraftRefused",
    "Player",
    "Selection",
    "area_changes",
    "carry",
    "dimension_folders",
    "graft",
    "graft_changes",
    "graft_chunks",
    "graft_files",
    "lookup_paths",
    "parse_dimension",
    "player_from_usercache",
    "tree_changes",
]

_EMPTY_DIR = hash_bytes(encode_dir_leaf([]))

#: The short names the CLI accepts for the vanilla dimensions.
DIMENSIONS = {"overworld": "minecraft:overworld", "nether": "minecraft:the_nether",
              "end": "minecraft:the_end"}
#: An area may overlap at most this many region files per folder (a 16,384-block square):
#: a box is a repair of a place, and its cost is bounded by it (a coordinator's work per
#: request too). A larger one is a whole-world rollback.
MAX_AREA_REGIONS = 1024
#: Minecraft's world border: no block lies further out.
MAX_COORDINATE = 30_000_000

_LEGACY_FOLDERS = {"minecraft:overworld": "", "minecraft:the_nether": "DIM-1",
                   "minecraft:the_end": "DIM1"}
_NAMESPACED = re.compile(r"^[a-z0-9_.-]{1,64}:[a-z0-9_./-]{1,128}$")
_LEGACY_DIM = re.compile(r"^DIM-?\d{1,9}$")
_BOX = re.compile(r"^\s*(-?\d{1,9})\s*,\s*(-?\d{1,9})\s*:\s*(-?\d{1,9})\s*,\s*(-?\d{1,9})\s*$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}$")
_PLAYER_FILES = ("playerdata/{}.dat", "playerdata/{}.dat_old", "stats/{}.json",
                 "advancements/{}.json")


class AreaError(PeerhostError, ValueError):
    """An area, dimension or player that cannot be read: names what was given and why."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"{text!r}: {reason}")


class GraftRefused(PeerhostError):
    """A part of a world that cannot be put into another tree: a region file of the part is
    damaged (kept whole, so it cannot take chunks one by one), or a file stands where the part
    needs a folder."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def parse_dimension(text: str) -> str:
    """``overworld``, ``nether``, ``end``, a namespaced id (``minecraft:the_end``,
    ``mymod:mining``) or a legacy ``DIMn`` folder: the dimension id diff and the map use."""
    value = text.strip()
    if value.lower() in DIMENSIONS:
        return DIMENSIONS[value.lower()]
    if _NAMESPACED.match(value) or _LEGACY_DIM.match(value):
        return value
    raise AreaError(text, "not a dimension: give overworld, nether, end, NAMESPACE:NAME or "
                          "a DIMn folder")


def dimension_folders(dimension: str) -> list[str]:
    """The folders (``/``-separated, ``""`` for the world root) whose ``region``, ``entities``
    and ``poi`` folders hold ``dimension``: its legacy folder and ``dimensions/NS/NAME``."""
    if _LEGACY_DIM.match(dimension):
        return [dimension]
    namespace, _, name = dimension.partition(":")
    out = [f"dimensions/{namespace}/{name}"]
    if dimension in _LEGACY_FOLDERS:
        out.insert(0, _LEGACY_FOLDERS[dimension])
    return out


@dataclass(frozen=True)
class Area:
    """A box of block coordinates (corners included, ``x1 <= x2``, ``z1 <= z2``) in one
    dimension; it covers every chunk it overlaps."""

    dimension: str
    x1: int
    z1: int
    x2: int
    z2: int

    def __post_init__(self) -> None:
        if not (self.x1 <= self.x2 and self.z1 <= self.z2):
            raise AreaError(self.describe(), "the first corner must be the smaller one")
        if max(map(abs, (self.x1, self.z1, self.x2, self.z2))) > MAX_COORDINATE:
            raise AreaError(self.describe(), f"beyond the world border (±{MAX_COORDINATE:,})")
        rx1, rz1, rx2, rz2 = (v >> 9 for v in (self.x1, self.z1, self.x2, self.z2))
        if (rx2 - rx1 + 1) * (rz2 - rz1 + 1) > MAX_AREA_REGIONS:
            raise AreaError(self.describe(), f"overlaps more than {MAX_AREA_REGIONS} region "
                                             "files: roll back the whole world instead")

    @classmethod
    def parse(cls, box: str, dimension: str = "overworld") -> Area:
        """An area from ``X1,Z1:X2,Z2`` (block coordinates, corners in any order)."""
        match = _BOX.match(box)
        if match is None:
            raise AreaError(box, "not a box: give X1,Z1:X2,Z2 in block coordinates "
                                 "(e.g. -40,100:25,180)")
        x1, z1, x2, z2 = map(int, match.groups())
        return cls(parse_dimension(dimension), min(x1, x2), min(z1, z2), max(x1, x2),
                   max(z1, z2))

    @classmethod
    def from_json(cls, value: Any) -> Area:
        """An area from ``{"dimension", "x1", "z1", "x2", "z2"}`` (what :meth:`to_json` gives)."""
        if not isinstance(value, dict) or set(value) != {"dimension", "x1", "z1", "x2", "z2"}:
            raise AreaError(json.dumps(value)[:200], "an area is {dimension, x1, z1, x2, z2}")
        coords = [value[k] for k in ("x1", "z1", "x2", "z2")]
        if not isinstance(value["dimension"], str) or any(type(v) is not int for v in coords):
            raise AreaError(json.dumps(value)[:200], "the corners are integers, the "
                                                     "dimension a text")
        return cls(parse_dimension(value["dimension"]), *coords)

    def to_json(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "x1": self.x1, "z1": self.z1, "x2": self.x2,
                "z2": self.z2}

    def describe(self) -> str:
        """``area minecraft:overworld -40,100:25,180``."""
        return f"area {self.dimension} {self.x1},{self.z1}:{self.x2},{self.z2}"

    @property
    def chunk_box(self) -> tuple[int, int, int, int]:
        """The chunks it overlaps: ``(cx1, cz1, cx2, cz2)``, corners included."""
        return self.x1 >> 4, self.z1 >> 4, self.x2 >> 4, self.z2 >> 4

    def contains_chunk(self, cx: int, cz: int) -> bool:
        cx1, cz1, cx2, cz2 = self.chunk_box
        return cx1 <= cx <= cx2 and cz1 <= cz <= cz2

    def region_files(self) -> dict[str, frozenset[int]]:
        """Every region file that may hold the area's chunks (in each folder of its
        dimension, for region, entities and poi), with the slots the area covers there."""
        cx1, cz1, cx2, cz2 = self.chunk_box
        per_region: dict[tuple[int, int], frozenset[int]] = {}
        for rx in range(cx1 >> 5, (cx2 >> 5) + 1):
            for rz in range(cz1 >> 5, (cz2 >> 5) + 1):
                xs = range(max(cx1, rx * 32), min(cx2, rx * 32 + 31) + 1)
                zs = range(max(cz1, rz * 32), min(cz2, rz * 32 + 31) + 1)
                per_region[rx, rz] = frozenset((x - rx * 32) + 32 * (z - rz * 32)
                                               for x in xs for z in zs)
        out: dict[str, frozenset[int]] = {}
        for base in dimension_folders(self.dimension):
            for kind in sorted(REGION_KINDS):
                folder = f"{base}/{kind}" if base else kind
                place = region_place(folder)
                assert place is not None and place.dimension == self.dimension, folder
                for (rx, rz), slots in per_region.items():
                    out[f"{folder}/r.{rx}.{rz}.mca"] = slots
        return out

    def graft(self, store: ObjectLoader, add: Add, into: ObjectId, source: ObjectId) -> ObjectId:
        """Tree ``into`` with the area's chunks as tree ``source`` has them (a chunk ``source``
        lacks is removed).

        Raises:
            GraftRefused: a region file of the area is damaged in either tree.
        """
        files = self.region_files()
        found = lookup_paths(store, source, files)
        regions: dict[str, dict[int, ChunkEntry | None]] = {}
        for path, slots in files.items():
            have = _region_chunks(store, path, found.get(path), slots, "the snapshot restored from")
            regions[path] = {slot: have.get(slot) for slot in slots}
        return graft_chunks(store, add, into, regions)

    def changes(self, store: ObjectLoader, old: ObjectId | None, new: ObjectId, *,
                classify: bool = True) -> list[ChunkChange]:
        """The chunk changes from tree ``old`` to tree ``new`` inside the area."""
        return area_changes(store, old, new, self, classify=classify)


@dataclass(frozen=True)
class Player:
    """One player's files, by UUID: ``playerdata/<uuid>.dat`` (and ``.dat_old``),
    ``stats/<uuid>.json`` and ``advancements/<uuid>.json``. (A single-player world keeps its
    player in ``level.dat`` too; that file is not part of it.)"""

    uuid: str

    @classmethod
    def parse(cls, text: str) -> Player:
        """A player from a UUID, with or without dashes."""
        value = text.strip()
        if not _UUID.match(value):
            raise AreaError(text, "not a player UUID")
        digits = value.replace("-", "").lower()
        return cls(f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}")

    def paths(self) -> list[str]:
        return [pattern.format(self.uuid) for pattern in _PLAYER_FILES]

    def describe(self) -> str:
        return f"player {self.uuid}"

    def graft(self, store: ObjectLoader, add: Add, into: ObjectId, source: ObjectId) -> ObjectId:
        """Tree ``into`` with the player's files as ``source`` has them (a file ``source``
        lacks is removed)."""
        found = lookup_paths(store, source, self.paths())
        return graft_files(store, add, into, {path: found.get(path) for path in self.paths()})


#: What a restore or rollback may be limited to.
Selection = Area | Player


def player_from_usercache(name: str, usercache: bytes) -> Player | None:
    """The player called ``name`` (case-insensitive) in a server's ``usercache.json``."""
    try:
        rows = json.loads(usercache)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rows, list):
        return None
    for row in rows:
        if isinstance(row, dict) and str(row.get("name", "")).lower() == name.lower():
            try:
                return Player.parse(str(row.get("uuid", "")))
            except AreaError:
                return None
    return None


# -- surgery -----------------------------------------------------------------------------------


def _split(paths: Iterable[str]) -> dict[tuple[str, ...], str]:
    return {tuple(path.split("/")): path for path in paths}


def lookup_paths(store: ObjectLoader, root: ObjectId, paths: Iterable[str]) -> dict[str, DirEntry]:
    """The entries of those ``/``-separated ``paths`` that tree ``root`` holds, reading only
    the folders on their way (each once) and the pages of them the names fall in."""
    out: dict[str, DirEntry] = {}
    _lookup(store, root, _split(paths), out)
    return out


def _lookup(store: ObjectLoader, oid: ObjectId, wanted: dict[tuple[str, ...], str],
            out: dict[str, DirEntry]) -> None:
    here = lookup_map(store, oid, {parts[0] for parts in wanted})
    below: dict[str, dict[tuple[str, ...], str]] = {}
    for parts, path in wanted.items():
        entry = here.get(parts[0])
        if len(parts) == 1:
            if isinstance(entry, DirEntry):
                out[path] = entry
        elif isinstance(entry, DirEntry) and entry.kind is EntryKind.DIR:
            below.setdefault(parts[0], {})[parts[1:]] = path
    for name, rest in below.items():
        entry = here[name]
        assert isinstance(entry, DirEntry)
        _lookup(store, entry.oid, rest, out)


def graft_files(store: ObjectLoader, add: Add, root: ObjectId,
                files: Mapping[str, DirEntry | None]) -> ObjectId:
    """Tree ``root`` with each ``/``-separated path of ``files`` set to its entry (renamed to
    the path's last name) or removed (None). Missing folders on the way are created; every
    folder off the paths is reused.

    Raises:
        GraftRefused: a file stands where a path needs a folder.
    """
    changes = {parts: (None if e is None else e._replace(name=parts[-1]))
               for parts, e in ((tuple(p.split("/")), e) for p, e in files.items())}
    new = _graft_dir(store, add, root, changes, "")
    assert new is not None
    return new


def _graft_dir(store: ObjectLoader, add: Add, oid: ObjectId | None,
               changes: Mapping[tuple[str, ...], DirEntry | None], prefix: str) -> ObjectId | None:
    here = lookup_map(store, oid, {parts[0] for parts in changes})
    updates: dict[str | int, DirEntry | ChunkEntry | None] = {}
    nested: dict[str, dict[tuple[str, ...], DirEntry | None]] = {}
    for parts, entry in changes.items():
        if len(parts) == 1:
            if here.get(parts[0]) != entry:
                updates[parts[0]] = entry
        else:
            nested.setdefault(parts[0], {})[parts[1:]] = entry
    for name, sub in nested.items():
        if name in updates or any(parts == (name,) for parts in changes):
            continue  # the folder itself is replaced or removed: its insides go with it
        current = here.get(name)
        if current is not None and not (isinstance(current, DirEntry)
                                        and current.kind is EntryKind.DIR):
            raise GraftRefused(prefix + name, "is a file where a folder is needed")
        child = current.oid if current is not None else None
        if child is None and all(entry is None for entry in sub.values()):
            continue  # removing files of a folder that is not there
        new = _graft_dir(store, add, child, sub, f"{prefix}{name}/")
        if new != child:
            assert new is not None
            updates[name] = DirEntry(name, EntryKind.DIR, new)
    if not updates:
        return oid
    return update_map(store, add, oid, updates, region=False)


def graft_chunks(store: ObjectLoader, add: Add, root: ObjectId,
                 regions: Mapping[str, Mapping[int, ChunkEntry | None]]) -> ObjectId:
    """Tree ``root`` with, in each region file of ``regions`` (a ``/``-separated path), each
    slot set to its chunk or emptied (None). A region file that is missing is created when it
    gains a chunk.

    Raises:
        GraftRefused: a region file to change is damaged (kept whole) or not a region.
    """
    return graft_changes(store, add, root, {}, regions)


def graft_changes(store: ObjectLoader, add: Add, root: ObjectId,
                  files: Mapping[str, DirEntry | None],
                  regions: Mapping[str, Mapping[int, ChunkEntry | None]]) -> ObjectId:
    """Tree ``root`` with :func:`graft_files`'s ``files`` and :func:`graft_chunks`'s
    ``regions`` (paths apart from each other) both applied, each folder on their way cut
    again once.

    Raises:
        GraftRefused: as :func:`graft_files` and :func:`graft_chunks` raise it.
    """
    found = lookup_paths(store, root, regions)
    grafted = dict(files)
    for path, slots in regions.items():
        entry = found.get(path)
        current = _region_chunks(store, path, entry, slots, "the world")
        changes: dict[str | int, DirEntry | ChunkEntry | None] = {
            slot: chunk for slot, chunk in slots.items() if current.get(slot) != chunk}
        if not changes:
            continue
        base = entry.oid if entry is not None and entry.kind is EntryKind.REGION else None
        count = (entry.size if base is not None and entry is not None else 0) + sum(
            (chunk is not None) - (slot in current) for slot, chunk in changes.items())
        grafted[path] = DirEntry(path.rpartition("/")[2], EntryKind.REGION,
                                 update_map(store, add, base, changes, region=True), count)
    return graft_files(store, add, root, grafted) if grafted else root


def _region_chunks(store: ObjectLoader, path: str, entry: DirEntry | None, slots: Iterable[int],
                   where: str) -> dict[int, ChunkEntry]:
    """The chunks of ``slots`` in a region file's entry (none for a missing or empty file)."""
    if entry is None or (entry.kind is EntryKind.FILE and entry.size == 0):
        return {}
    if entry.kind is not EntryKind.REGION or entry.raw is not None:
        raise GraftRefused(path, f"is damaged in {where} (kept as a whole file), so its chunks "
                                 "cannot be taken one by one: restore the whole world, or run "
                                 "phs repair")
    found = lookup_map(store, entry.oid, slots)
    return {slot: chunk for slot, chunk in found.items()
            if isinstance(slot, int) and isinstance(chunk, ChunkEntry)}


def graft(store: ObjectLoader, add: Add, into: ObjectId, source: ObjectId,
          part: Selection) -> ObjectId:
    """Tree ``into`` with ``part`` as tree ``source`` has it (see the module)."""
    return part.graft(store, add, into, source)


def carry(store: ObjectLoader, add: Add, into: ObjectId, base: ObjectId, theirs: ObjectId
          ) -> ObjectId:
    """Tree ``into`` with every change from tree ``base`` to tree ``theirs`` made on top of it:
    chunk by chunk in region files both sides parse, file by file (or folder) elsewhere; where
    ``into`` changed the same chunk or file, ``theirs`` wins. It reads what changed from
    ``base`` to ``theirs`` (skipping shared subtrees), so it costs that change.

    Raises:
        GraftRefused: a file of ``into`` stands where ``theirs`` needs a folder.
    """
    return graft_changes(store, add, into, *tree_changes(store, base, theirs))


def tree_changes(store: ObjectLoader, base: ObjectId | None, theirs: ObjectId, *,
                 new_regions: bool = False
                 ) -> tuple[dict[str, DirEntry | None], dict[str, dict[int, ChunkEntry | None]]]:
    """What changed from tree ``base`` (None: empty) to tree ``theirs``, as the ``files``
    and ``regions`` of :func:`graft_changes`, which makes ``theirs`` of ``base`` again: the
    chunks that changed in region files both sides parse (with ``new_regions``, also every
    chunk of a new region file, and what a new folder holds one entry at a time: folders on
    the way are made by the graft), every other changed entry whole (a folder added, removed
    or replaced whole, with its insides). It costs the change.
    """
    files: dict[str, DirEntry | None] = {}
    regions: dict[str, dict[int, ChunkEntry | None]] = {}
    folders: list[str] = []  # added, removed or replaced whole: their insides come with them
    for path, old, new in diff_trees(store, base, theirs):
        if (old is not None and new is not None and old.kind is new.kind is EntryKind.REGION
                and old.raw is None and new.raw is None):
            regions[path] = {(a or b).slot: b  # type: ignore[union-attr]
                             for a, b in diff_regions(store, old.oid, new.oid)}
            continue
        if (new_regions and old is None and new is not None and new.kind is EntryKind.REGION
                and new.raw is None and new.size > 0):
            regions[path] = {b.slot: b for _, b in diff_regions(store, None, new.oid)
                             if b is not None}
            continue
        if (new_regions and old is None and new is not None and new.kind is EntryKind.DIR
                and new.oid != _EMPTY_DIR):
            continue  # its insides follow, and make it
        files[path] = new
        if any(e is not None and e.kind is EntryKind.DIR for e in (old, new)):
            folders.append(path + "/")
    files = {path: entry for path, entry in files.items()
             if not any(path.startswith(folder) for folder in folders)}
    regions = {path: slots for path, slots in regions.items()
               if not any(path.startswith(folder) for folder in folders)}
    return files, regions


def area_changes(store: ObjectLoader, old: ObjectId | None, new: ObjectId, area: Area, *,
                 classify: bool = True) -> list[ChunkChange]:
    """The chunk changes inside ``area`` from tree ``old`` (None: an empty world) to tree
    ``new``, reading only the area's region files (and only the pages of them that differ)."""
    files = area.region_files()
    a = lookup_paths(store, old, files) if old is not None else {}
    b = lookup_paths(store, new, files)
    out: list[ChunkChange] = []
    for path, slots in files.items():
        if a.get(path) == b.get(path):
            continue
        maps = [e.oid if e is not None and e.kind is EntryKind.REGION else None
                for e in (a.get(path), b.get(path))]
        if region_coords(path.rpartition("/")[2]) is not None:
            out.extend(region_changes(store, path, maps[0], maps[1], classify=classify,
                                      slots=slots))
    return out
