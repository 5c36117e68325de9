"""World folder rules and safe file writes: which files a world tree covers, which are
region-format files, and how restore writes without ever leaving the target folder."""

from __future__ import annotations

import os
import re
import stat
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import PeerhostError

__all__ = [
    "EXCLUDED_AT_ROOT",
    "REGION_KINDS",
    "STORE_DIR",
    "TEMP_PREFIX",
    "RegionPlace",
    "UnsafePath",
    "atomic_write",
    "check_case_collisions",
    "check_name",
    "check_rel_path",
    "fold_name",
    "is_link",
    "region_place",
    "remove_path",
    "resolve_inside",
]

STORE_DIR = ".peerhost"
EXCLUDED_AT_ROOT = frozenset({"session.lock", STORE_DIR})
REGION_KINDS = frozenset({"region", "entities", "poi"})
TEMP_PREFIX = ".phs-tmp-"

_LEGACY_DIMENSIONS = {"": "minecraft:overworld", "DIM-1": "minecraft:the_nether", "DIM1": "minecraft:the_end"}
_DIM_FOLDER = re.compile(r"^DIM-?\d+$")
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)
_FORBIDDEN_CHARS = frozenset('/\\:\x00') | frozenset(chr(c) for c in range(32))


class UnsafePath(PeerhostError, ValueError):
    """A path from a tree that could write outside the world folder, or through a link."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"refusing unsafe path {path!r}: {reason}")


@dataclass(frozen=True, slots=True)
class RegionPlace:
    """Where a region-format file sits: its dimension id and kind (region, entities, poi)."""

    dimension: str
    kind: str


def region_place(rel_path: str) -> RegionPlace | None:
    """Classify a ``/``-separated world path as a region-format folder's file location.

    ``rel_path`` is the folder holding the file. The overworld uses ``region/`` (or
    ``dimensions/minecraft/overworld/region/`` since 26.1), the nether ``DIM-1/region/``, the end
    ``DIM1/region/``, modded dimensions ``DIMn/`` or ``dimensions/<namespace>/<path>/``.
    """
    parts = rel_path.split("/") if rel_path else []
    if not parts or parts[-1] not in REGION_KINDS:
        return None
    kind, parent = parts[-1], parts[:-1]
    if len(parent) >= 3 and parent[0] == "dimensions":
        return RegionPlace(f"{parent[1]}:{'/'.join(parent[2:])}", kind)
    if not parent:
        return RegionPlace(_LEGACY_DIMENSIONS[""], kind)
    if len(parent) == 1 and _DIM_FOLDER.match(parent[0]):
        return RegionPlace(_LEGACY_DIMENSIONS.get(parent[0], parent[0]), kind)
    return None


def check_name(name: str, path: str, *, portable: bool = False) -> None:
    """Raise UnsafePath unless ``name`` is one harmless path component.

    Names Windows reserves are refused on Windows, and everywhere with ``portable`` (the
    coordinator: a tree it accepts must restore on every member's system).
    """
    if name in ("", ".", ".."):
        raise UnsafePath(path, f"component {name!r} is not a file name")
    bad = _FORBIDDEN_CHARS.intersection(name)
    if bad:
        raise UnsafePath(path, f"component {name!r} contains {sorted(bad)!r}")
    if (portable or os.name == "nt") and (_WINDOWS_RESERVED.match(name) or name[-1] in ". "):
        raise UnsafePath(path, f"component {name!r} is reserved on Windows")


def check_rel_path(rel_path: str) -> list[str]:
    """Split a ``/``-separated relative path into checked components."""
    if rel_path.startswith("/") or re.match(r"^[A-Za-z]:", rel_path):
        raise UnsafePath(rel_path, "absolute paths are not allowed")
    parts = rel_path.split("/")
    for name in parts:
        check_name(name, rel_path)
    if not parts[0] or parts[0] in EXCLUDED_AT_ROOT:
        raise UnsafePath(rel_path, f"{parts[0]!r} is not part of a world tree")
    return parts


def fold_name(path: str) -> str:
    """A name or path as case-insensitive file systems compare it: Unicode caseless matching
    (NFD, casefold, NFD), a superset of what NTFS and APFS equate. Folding keeps ``/``, so
    two paths fold alike exactly when, at their first differing component, the two names do."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", path).casefold())


def check_case_collisions(paths: Iterable[str]) -> None:
    """Raise UnsafePath when two of ``paths`` (one tree's ``/``-separated paths) differ only
    in letter case or Unicode normalization: on Windows and macOS both would be written to
    one file, and one of them lost. Refused on every platform, so a tree restores the same
    everywhere."""
    seen: dict[str, str] = {}
    for path in paths:
        other = seen.setdefault(fold_name(path), path)
        if other != path:
            raise UnsafePath(path, f"it is the same file as {other!r} on a case-insensitive "
                             "file system (Windows, macOS)")


def _is_link(st: os.stat_result) -> bool:
    if stat.S_ISLNK(st.st_mode):
        return True
    # Windows junctions and other reparse points are links too.
    attrs = getattr(st, "st_file_attributes", 0)
    return bool(attrs & getattr(stat, "FILE_ATTRIBUTE_REPARSE_POINT", 0x400))


def resolve_inside(root: Path, rel_path: str) -> Path:
    """Return ``root / rel_path`` after checking every component, and that no existing parent
    folder on the way is a link or a file (so a write cannot be redirected elsewhere)."""
    parts = check_rel_path(rel_path)
    current = root
    for name in parts[:-1]:
        current = current / name
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            continue
        if _is_link(st) or not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(rel_path, f"{current} is a link or not a folder")
    return current / parts[-1]


def is_link(path: Path) -> bool:
    """Whether ``path`` exists as a symbolic link, junction or other reparse point."""
    try:
        return _is_link(os.lstat(path))
    except FileNotFoundError:
        return False


#: The buffer a file given in parts is written through.
_WRITE_BUFFER = 1 << 20


def atomic_write(path: Path, data: bytes | Sequence[bytes | memoryview], *,
                 durable: bool = True) -> os.stat_result:
    """Write ``data`` (bytes, or the parts that make up the file, in order) to a temporary
    file beside ``path`` and rename it into place.

    A reader (or a crash) sees the old file or the new one, never a mix. Returns the new
    file's stat. A link at ``path`` is replaced, never followed. Parts go through one
    buffer of :data:`_WRITE_BUFFER` bytes: a few large writes, and no copy of the whole file.
    """
    tmp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    try:
        with open(tmp, "xb", buffering=_WRITE_BUFFER) as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                for part in data:
                    handle.write(part)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # write() and fsync() errors (a full disk) name no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return os.stat(path)


def remove_path(path: Path) -> None:
    """Remove a file, link or empty folder if present (a link is removed, not followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) and not _is_link(st):
        os.rmdir(path)
    else:
        os.unlink(path)
