"""Helpers for tests on whole worlds: copying real worlds and an independent comparison."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from peerhost_store.region import RegionError, parse_region, region_coords
from peerhost_store.worldfs import STORE_DIR, region_place

HISTORIES = {
    "aviadbag-1.19-history": ["3195128", "500ee47", "a082380", "6c4a5ff", "e23e7fa"],
    "134arg-1.12.2-forge-history": ["17277f72", "2351f9ae", "26e5f2bf", "3440b04a", "4071a9de"],
    "voidchains-history": ["ab651eff", "cbcb5fbd", "26a512d4", "69c60795", "2e263d2c", "c219c990"],
}
MULTI = {"prismarine-fixtures", "mcaselector-upgrade-chain", "querz-nbt-samples", *HISTORIES}


def world_names(worlds: Path) -> list[str]:
    """Every world under the shared folder, versions of multi-world folders included."""
    if not worlds.is_dir():
        return []
    names = []
    for top in sorted(p for p in worlds.iterdir() if p.is_dir()):
        if top.name in MULTI:
            names += [f"{top.name}/{sub.name}" for sub in sorted(top.iterdir()) if sub.is_dir()]
        else:
            names.append(top.name)
    return names


def copy_world(src: Path, dst: Path) -> Path:
    """Copy a (read-only) world into a writable folder."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = Path(root) / name
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dst


def replace_world(world: Path, src: Path) -> None:
    """Make ``world`` hold ``src``'s files, keeping its store."""
    for child in world.iterdir():
        if child.name == STORE_DIR:
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    copy_world(src, world)


def is_region_file(rel: str) -> bool:
    folder, _, name = rel.rpartition("/")
    return region_place(folder) is not None and region_coords(name) is not None


def world_content(folder: Path) -> dict[str, object]:
    """``path -> bytes`` for plain files and ``path -> {slot: (compression, payload, timestamp)}``
    for region files that parse, computed without PeerHost's tree code."""
    content: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel.split("/")[0] in (STORE_DIR, "session.lock") or not path.is_file():
            continue
        data = path.read_bytes()
        if is_region_file(rel) and data:
            try:
                parsed = parse_region(data, lambda slot: None)
            except RegionError:
                content[rel] = data
                continue
            if parsed.clean:
                content[rel] = {c.slot: (c.compression, c.payload, c.timestamp) for c in parsed.chunks}
                continue
        content[rel] = data
    return content
