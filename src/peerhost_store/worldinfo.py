"""What game a world was saved by: its version (``level.dat``), its data packs, and the mods
of the server folder it is hosted from.

Each snapshot records this (:attr:`~peerhost_store.objects.Snapshot.game`), and ``phs host``
puts it on the lease, so that a host can tell, before starting a server on a pulled world, that
the server would downgrade it (refused) or upgrade it (it rewrites every chunk it loads; only
on purpose), or that its mods differ from those of the last host (a warning: blocks and items
of a missing mod are lost when the world is saved without it).

``level.dat`` (gzip NBT) holds ``Data.DataVersion`` (since 1.9: a number that grows with every
release and snapshot), ``Data.Version.Name`` (``1.21.4``), ``Data.DataPacks.Enabled``
(``vanilla``, ``file/x.zip``, ``fabric``, ``mod:create``) and, in a Forge world, the mods it was
saved with (``FML.ModList``, or ``fml.LoadingModList`` since 1.13). Reading is best effort: a
missing or damaged ``level.dat`` gives an empty :class:`WorldInfo`, never an error, since the
snapshot itself must not depend on it. Pure except for the two readers at the end.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import nbt

__all__ = [
    "GAME_KEYS",
    "MAX_LEVEL_DAT",
    "MAX_NAME",
    "MAX_NAMES",
    "PRE_1_9",
    "WorldInfo",
    "describe",
    "game_fields",
    "mods_in",
    "parse_level_dat",
    "read_world_info",
]

#: The keys a snapshot's ``game`` may hold (see docs/architecture.md, section 2).
GAME_KEYS = ("data_version", "datapacks", "mods", "version", "world_mods")
#: The data version given to a world whose level.dat predates DataVersion (1.8 and older).
PRE_1_9 = 0
#: level.dat is a few KiB; anything past this is not a level.dat to trust.
MAX_LEVEL_DAT = 16 << 20
#: Mod and data pack lists longer than this are cut (a snapshot stays small).
MAX_NAMES = 1024
MAX_NAME = 200


@dataclass(frozen=True)
class WorldInfo:
    """The game of a world as its ``level.dat`` says.

    Attributes:
        version: the release that last saved it (``1.21.4``); None when unknown.
        data_version: its ``DataVersion`` (:data:`PRE_1_9` for a world older than 1.9);
            None when there is no readable level.dat.
        datapacks: the enabled data packs, in level.dat's order.
        world_mods: a Forge world's mods, as ``modid version``.
    """

    version: str | None = None
    data_version: int | None = None
    datapacks: tuple[str, ...] = ()
    world_mods: tuple[str, ...] = ()


def parse_level_dat(raw: bytes) -> WorldInfo:
    """The :class:`WorldInfo` of ``level.dat`` bytes (gzip NBT, or plain NBT)."""
    try:
        data = _inflate(raw) if raw[:2] == b"\x1f\x8b" else raw
        root = nbt.load(data, max_bytes=MAX_LEVEL_DAT).root
        level = nbt.as_compound(root["Data"])
    except (KeyError, ValueError, zlib.error):
        return WorldInfo()
    return WorldInfo(_version_name(level), _data_version(level), _names(_datapacks(level)),
                     _names(_forge_mods(root)))


def game_fields(info: WorldInfo, mods: tuple[str, ...] | None) -> dict[str, int | str | tuple[str, ...]]:
    """The ``game`` map a snapshot records: what is known of ``info``, and the server
    folder's ``mods`` when it is known (None: not hosted from a known server folder)."""
    game: dict[str, int | str | tuple[str, ...]] = {}
    if info.version is not None:
        game["version"] = info.version
    if info.data_version is not None:
        game["data_version"] = info.data_version
    if info.datapacks:
        game["datapacks"] = info.datapacks
    if info.world_mods:
        game["world_mods"] = info.world_mods
    if mods:
        game["mods"] = mods
    return dict(sorted(game.items()))


def _inflate(raw: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = inflater.decompress(raw, MAX_LEVEL_DAT)
    if inflater.unconsumed_tail:
        raise ValueError("level.dat inflates past its cap")
    return data


def _version_name(level: nbt.Compound) -> str | None:
    version = level.get("Version")
    if isinstance(version, dict) and isinstance(version.get("Name"), str):
        return str(version["Name"])[:MAX_NAME] or None
    return None if "DataVersion" in level else "1.8 or older"


def _data_version(level: nbt.Compound) -> int:
    value = level.get("DataVersion")
    return nbt.as_int(value) if value is not None else PRE_1_9


def _datapacks(level: nbt.Compound) -> list[str]:
    packs = level.get("DataPacks")
    enabled = packs.get("Enabled") if isinstance(packs, dict) else None
    return [p for p in enabled if isinstance(p, str)] if isinstance(enabled, list) else []


def _forge_mods(root: nbt.Compound) -> list[str]:
    for outer, inner in (("FML", "ModList"), ("fml", "LoadingModList")):
        holder = root.get(outer)
        mods = holder.get(inner) if isinstance(holder, dict) else None
        if isinstance(mods, list):
            return [f"{m.get('ModId')} {m.get('ModVersion')}" for m in mods
                    if isinstance(m, dict) and isinstance(m.get("ModId"), str)]
    return []


def _names(names: list[str]) -> tuple[str, ...]:
    return tuple(n[:MAX_NAME] for n in names[:MAX_NAMES] if n)


# -- readers ----------------------------------------------------------------------------------


def read_world_info(world: Path) -> WorldInfo:
    """The :class:`WorldInfo` of ``world/level.dat``; empty when it is missing or unreadable."""
    try:
        with (world / "level.dat").open("rb") as f:
            raw = f.read(MAX_LEVEL_DAT + 1)
    except OSError:
        return WorldInfo()
    return WorldInfo() if len(raw) > MAX_LEVEL_DAT else parse_level_dat(raw)


def mods_in(server_dir: Path) -> tuple[str, ...]:
    """The mod and plugin jars of a server folder (``mods/`` for Fabric, Forge, NeoForge and
    Quilt, ``plugins/`` for Paper and Spigot), as sorted ``mods/NAME.jar`` names."""
    names = []
    for folder in ("mods", "plugins"):
        try:
            entries = list((server_dir / folder).iterdir())
        except OSError:
            continue
        names += [f"{folder}/{p.name}"[:MAX_NAME] for p in entries
                  if p.suffix.lower() == ".jar" and p.is_file()]
    return tuple(sorted(names)[:MAX_NAMES])


def describe(game: Mapping[str, object]) -> str:
    """``1.21.4 (data version 4189)``, for messages."""
    version, data = game.get("version"), game.get("data_version")
    if version is None and data is None:
        return "an unknown version"
    if data is None or data == PRE_1_9:
        return str(version)
    return f"{version or 'version'} (data version {data})"
