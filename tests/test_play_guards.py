"""phs host checks before it hosts (issue 13): server.properties read as Java reads it,
settings validated before the lease, world versions and mod lists compared across hosts,
notifications that never block hosting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import msgpack
import playutil
import pytest
from playutil import Peer, Session, coordinator_session, make_peer, toml_value
from worldutil import copy_world, replace_world

from peerhost_cli.main import main as phs_main
from peerhost_cli.play.config import ConfigError, HostConfig, load_properties, parse_properties
from peerhost_cli.play.guards import (
    ServerVersion,
    VersionRefused,
    check_version,
    mods_warning,
    server_version,
)
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


# -- the server's version against the world's -------------------------------------------------

W_1_18 = {"version": "1.18.2", "data_version": 2975}


@pytest.mark.parametrize("server, upgrade, verdict", [
    (ServerVersion("1.18.2", 2975, "jar"), False, None),
    (ServerVersion("1.17.1", 2730, "jar"), True, "older server cannot load a newer world"),
    (ServerVersion("1.20.1", 3465, "jar"), False, "would upgrade the world"),
    (ServerVersion("1.20.1", 3465, "jar"), True, "upgrading the world from Minecraft 1.18.2"),
    (ServerVersion("1.17", None, "toml"), False, "older server"),  # names only
    (ServerVersion("26.1", None, "toml"), False, "would upgrade"),  # the new numbering
    (ServerVersion(None, 2975, "toml"), False, None),
    (ServerVersion("24w14a", None, "toml"), False, "cannot tell which is newer"),
    (None, False, None),  # unknown: the server's own line is compared once it runs
])
def test_a_downgrade_is_refused_and_an_upgrade_only_on_purpose(
        server: ServerVersion | None, upgrade: bool, verdict: str | None) -> None:
    if verdict is None or verdict.startswith("upgrading"):
        note = check_version(W_1_18, server, upgrade=upgrade)
        assert note is None if verdict is None else verdict in (note or "")
    else:
        with pytest.raises(VersionRefused, match=verdict):
            check_version(W_1_18, server, upgrade=upgrade)


def test_a_world_older_than_1_9_counts_as_older_than_any_current_server() -> None:
    old = {"version": "1.8 or older", "data_version": PRE_1_9}
    with pytest.raises(VersionRefused, match="would upgrade"):
        check_version(old, ServerVersion("1.21.4", 4189, "jar"), upgrade=False)
    assert check_version({}, ServerVersion("1.21.4", 4189, "jar"), upgrade=False) is None


def test_the_server_version_comes_from_peerhost_toml_or_the_jar(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "server.jar", "w") as zf:
        zf.writestr("version.json", json.dumps({"id": "1.21.4", "name": "1.21.4",
                                                "world_version": 4189, "java_version": 21}))
    command = ("java", "-Xmx2G", "-jar", "server.jar", "nogui")
    got = server_version(HostConfig(server=command), tmp_path)
    assert got == ServerVersion("1.21.4", 4189, "server.jar's version.json")
    assert server_version(HostConfig(server=command, game_version="4189"), tmp_path) == \
        ServerVersion(None, 4189, "game_version in peerhost.toml")
    assert server_version(HostConfig(server=("java", "-jar", "fabric.jar")), tmp_path) is None


def test_mods_that_differ_from_the_last_hosts_are_named() -> None:
    before = {"mods": ("mods/create-0.5.jar", "mods/fabric-api-0.92.jar")}
    assert mods_warning(before, ("mods/create-0.5.jar", "mods/fabric-api-0.92.jar"), "bob") is None
    text = mods_warning(before, ("mods/fabric-api-0.93.jar",), "bob@pc") or ""
    assert "differ from those bob@pc last hosted the world with" in text
    assert "not here: mods/create-0.5.jar, mods/fabric-api-0.92.jar" in text
    assert "only here: mods/fabric-api-0.93.jar" in text
    assert mods_warning({}, ("mods/x.jar",), "bob") is None


# -- phs host, end to end ---------------------------------------------------------------------


def host_run(peer: Peer, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "peerhost_cli.main", "host", str(peer.world),
                           *extra], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "COLUMNS": "300"})


def set_config(peer: Peer, **changes: object) -> None:
    settings = {**peer.settings, **changes}
    (peer.folder / "peerhost.toml").write_text(
        "[host]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items()))


def real_peer(tmp: Path, session: Session, real_world: Any, **config: object) -> Peer:
    """Peer A (alice), its world a copy of a real 1.18.2 world, ``config`` in peerhost.toml."""
    peer = make_peer(tmp, session, "A", "alice")
    replace_world(peer.world, real_world("aviadbag-1.18.2-initial"))
    set_config(peer, **config)
    return peer


@pytest.mark.skipif(sys.platform == "win32", reason="subprocess timing")
@pytest.mark.parametrize("change, flags, needle", [
    ({"tunnel": "cloudflared", "cloudflared": "/nonexistent/cloudflared"}, (),
     "tunnel = cloudflared, but '/nonexistent/cloudflared' is not found"),
    ({"server": ["/nonexistent/java", "-jar", "server.jar"]}, (),
     "the server command '/nonexistent/java' is not found"),
    ({"server": [sys.executable, "-jar", "missing.jar"]}, (), "missing.jar, which does not exist"),
    ({"tunnel": "carrier-pigeon"}, (), "unknown tunnel 'carrier-pigeon'"),
    ({"tunnel": "direct", "address": ""}, (), "the direct tunnel needs --address"),
    ({"game_version": "1.17.1"}, (), "an older server cannot load a newer world"),
    ({"game_version": "1.19.4"}, (), "phs host --upgrade"),
])
def test_host_refuses_before_it_takes_the_lease(
        tmp_path: Path, real_world: Any, change: dict[str, object], flags: tuple[str, ...],
        needle: str) -> None:
    with coordinator_session(tmp_path) as session:
        peer = real_peer(tmp_path, session, real_world, **change)
        owner = session.client()
        before = owner.lease_status().fencing
        proc = host_run(peer, *flags)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert owner.lease_status().fencing == before, "a lease was granted before the check"
        assert owner.head().head is None, "something was pushed"


@pytest.mark.skipif(sys.platform == "win32", reason="subprocess timing")
def test_host_refuses_a_busy_game_port_before_the_lease(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as session:
        peer = make_peer(tmp_path, session, "A", "alice")
        with socket.create_server(("127.0.0.1", peer.port)):
            proc = host_run(peer)
        assert proc.returncode == 1 and f"port {peer.port} on this machine is in use" in \
            proc.stderr, proc.stderr
        assert session.client().lease_status().fencing == 0


@pytest.mark.skipif(sys.platform == "win32", reason="subprocess timing")
def test_an_announced_upgrade_hosts_and_the_lease_says_the_version(
        tmp_path: Path, real_world: Any) -> None:
    with coordinator_session(tmp_path) as session:
        peer = real_peer(tmp_path, session, real_world, game_version="1.19.4")
        with playutil.phs("host", str(peer.world), "--upgrade") as host:
            host.wait_for(r"upgrading the world from Minecraft 1\.18\.2 \(data version 2975\) "
                          r"to 1\.19\.4, as asked")
            host.wait_for(r"published")
            deadline = time.monotonic() + 10
            while (lease := session.client().lease_status().lease) is None or not lease.game:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert lease.game["version"] == "1.19.4" and lease.game["tunnel"] == "direct"
            host.terminate()
            assert host.finish() == 0, host.text()


@pytest.mark.skipif(sys.platform == "win32", reason="subprocess timing")
def test_the_pulled_world_is_checked_again_before_the_server_starts(
        tmp_path: Path, real_world: Any) -> None:
    with coordinator_session(tmp_path) as session:
        a = real_peer(tmp_path, session, real_world)
        assert phs_main(["push", "-C", str(a.world)]) == 0  # the session's world is 1.18.2
        b = make_peer(tmp_path, session, "B", "bob")  # an empty world: nothing to check yet
        set_config(b, game_version="1.17.1")
        proc = host_run(b)
        assert proc.returncode == 1 and "an older server cannot load a newer world" in \
            proc.stderr, proc.stdout + proc.stderr
        assert "started the server" not in proc.stdout
        assert session.client().lease_status().lease is None, "the lease was not given back"


@pytest.mark.skipif(sys.platform == "win32", reason="signals and subprocess timing")
def test_a_host_with_other_mods_than_the_last_one_is_warned(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice")
        b = make_peer(tmp_path, session, "B", "bob")
        for peer, jar in ((a, "create-0.5.jar"), (b, "other-1.0.jar")):
            (peer.folder / "mods").mkdir()
            (peer.folder / "mods" / jar).write_bytes(b"PK")
        with playutil.phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            assert "mods differ" not in host.text()
            host.terminate()
            assert host.finish() == 0, host.text()
        with playutil.phs("host", str(b.world)) as host:
            line = host.wait_for(r"warning: this server's mods differ from those (\S+) last "
                                 r"hosted the world with \(not here: mods/create-0\.5\.jar; only "
                                 r"here: mods/other-1\.0\.jar\)")
            assert line.group(1).endswith("@" + socket.gethostname())
            host.terminate()
            assert host.finish() == 0, host.text()


def test_a_joiner_is_told_which_minecraft_version_to_join_with(
        capsys: pytest.CaptureFixture[str]) -> None:
    from peerhost_cli.play.join import Follower
    from peerhost_cli.play.view import View
    from peerhost_store.sync.client import Lease

    follower = Follower(View(), 25565, "cloudflared")
    follower.follow(Lease("alice@pc", "alice", 7, 60, 60, "10.0.0.5:25565",
                          {"tunnel": "direct", "version": "1.21.4"}))
    follower.follow(Lease("bob@pc", "bob", 8, 60, 60, "10.0.0.6:25565",
                          {"tunnel": "direct", "version": "\x1b[31mevil" * 10}))
    text = capsys.readouterr().out
    assert "alice@pc hosts Minecraft 1.21.4; point Minecraft at 10.0.0.5:25565" in text
    assert "bob@pc hosts; point Minecraft at 10.0.0.6:25565" in text and "evil" not in text
