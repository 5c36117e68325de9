"""phs host checks before it hosts (issue 13): server.properties read as Java reads it,
settings validated before the lease, world versions and mod lists compared across hosts,
notifications that never block hosting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from worldutil import copy_world

from peerhost_cli.play.config import ConfigError, load_properties, parse_properties
from peerhost_store import nbt
from peerhost_store.errors import DecodeError
from peerhost_store.objects import Snapshot, decode, encode_snapshot
from peerhost_store.repo import Repository
from peerhost_store.worldinfo import PRE_1_9, WorldInfo, parse_level_dat, read_world_info


def test_server_properties_are_read_as_java_reads_them(tmp_path: Path) -> None:
    text = ("#Minecraft server properties\n"
            "rcon.password=p\\:ss\\=w\\\\rd\\u00e9\n"
            "motd=A \\u00A7aworld\n"
            "level-name = my\\ world\n"
            "server-port: 25570\n"
            "enable-rcon=true\\\n"
            "    \n")
    values = parse_properties(text)
    assert values["rcon.password"] == "p:ss=w\\rdé"
    assert values["motd"] == "A §aworld" and values["level-name"] == "my world"
    path = tmp_path / "server.properties"
    path.write_text(text, encoding="utf-8")
    props = load_properties(path)
    assert (props.port, props.rcon_enabled, props.rcon_password) == (25570, True, "p:ss=w\\rdé")
    path.write_bytes("rcon.password=caf\xe9\n".encode("iso-8859-1"))  # Java's own encoding
    assert load_properties(path).rcon_password == "café"
    path.write_text("motd=\\u12\n")
    with pytest.raises(ConfigError, match="server.properties: not a valid properties file"):
        load_properties(path)


# -- what game saved a world ------------------------------------------------------------------


def test_level_dat_says_version_data_packs_and_forge_mods(real_world: Any) -> None:
    info = read_world_info(real_world("voidchains-26.2"))
    assert (info.version, info.data_version) == ("26.2", 4903)
    assert info.datapacks == ("vanilla", "file/map", "file/ajjgui-main")
    forge = read_world_info(real_world("134arg-1.12.2-forge-history") / "17277f72")
    assert (forge.version, forge.data_version) == ("1.12.2", 1343)
    assert "forge 14.23.5.2854" in forge.world_mods
    assert read_world_info(Path("/nonexistent")) == WorldInfo()
    assert parse_level_dat(b"\x1f\x8bnot gzip") == WorldInfo()
    assert parse_level_dat(nbt.dump({"Data": {"LevelName": "old"}})) == \
        WorldInfo("1.8 or older", PRE_1_9)


def test_each_snapshot_records_the_game_and_old_snapshots_still_decode(
        tmp_path: Path, real_world: Any) -> None:
    server = tmp_path / "server"
    world = copy_world(real_world("aviadbag-1.18.2-initial"), server / "world")
    (server / "server.properties").write_text("server-port=25565\n")
    (server / "mods").mkdir()
    for jar in ("fabric-api-0.92.jar", "lithium-0.11.jar", "notes.txt"):
        (server / "mods" / jar).write_text("x")
    with Repository.init(world) as repo:
        snap = repo.snapshot().snapshot
        assert snap.game == {"data_version": 2975, "datapacks": ("vanilla",),
                             "mods": ("mods/fabric-api-0.92.jar", "mods/lithium-0.11.jar"),
                             "version": "1.18.2"}
        assert decode(encode_snapshot(snap)) == snap
    old = Snapshot(bytes(32), (), 1, "a", "h", "m", {"chunks": 1})  # type: ignore[arg-type]
    encoded = encode_snapshot(old)
    assert msgpack.unpackb(encoded) == [5, bytes(32), [], 1, "a", "h", "m", {"chunks": 1}]
    assert decode(encoded) == old


@pytest.mark.parametrize("game, needle", [
    ({"version": "1", "data_version": 2}, "not sorted"),
    ({}, "map of 1 to"),
    ({"version": 1.5}, "integer, a text or a list"),
    ({"mods": ["a", 3]}, "integer, a text or a list"),
    ({"mods": ["x" * 300]}, "integer, a text or a list"),
    ({"x" * 65: 1}, "names of 1 to 64"),
    ({f"k{i:02}": 1 for i in range(33)}, "map of 1 to 32"),
])
def test_a_snapshot_game_of_the_wrong_shape_is_refused(game: dict[str, Any], needle: str) -> None:
    raw = msgpack.packb([5, bytes(32), [], 1, "a", "h", "m", {}, game])
    with pytest.raises(DecodeError, match=needle):
        decode(raw)
