"""phs host checks before it hosts (issue 13): server.properties read as Java reads it,
settings validated before the lease, world versions and mod lists compared across hosts,
notifications that never block hosting."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgpack
import playutil
import pytest
from playutil import Peer, Session, coordinator_session, make_peer, toml_value
from test_cli_remote import Phs, coordinator, phs, session  # noqa: F401
from test_cli_safety import diverged
from worldutil import copy_world, replace_world

from peerhost_cli.main import main as phs_main
from peerhost_cli.play.config import (
    ConfigError,
    HostConfig,
    load_host_config,
    load_properties,
    parse_properties,
)
from peerhost_cli.play.guards import (
    ServerVersion,
    VersionRefused,
    check_version,
    mods_warning,
    server_version,
)
from peerhost_cli.play.notify import MAX_PENDING, Notifier
from peerhost_store import nbt
from peerhost_store.errors import DecodeError
from peerhost_store.ids import ObjectId
from peerhost_store.objects import Snapshot, decode, encode_snapshot
from peerhost_store.repo import Repository
from peerhost_store.sync.client import CoordinatorClient
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
    with pytest.raises(ConfigError, match=r"server\.properties: not a valid properties file"):
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
    old = Snapshot(ObjectId(bytes(32)), (), 1, "a", "h", "m", {"chunks": 1})
    encoded = encode_snapshot(old)
    assert msgpack.unpackb(encoded) == [5, bytes(32), [], 1, "a", "h", "m", {"chunks": 1}]
    assert decode(encoded) == old


@pytest.mark.parametrize(("game", "needle"), [
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


@pytest.mark.parametrize(("server", "upgrade", "verdict"), [
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


def real_peer(tmp: Path, played: Session, real_world: Any, **config: object) -> Peer:
    """Peer A (alice), its world a copy of a real 1.18.2 world, ``config`` in peerhost.toml."""
    peer = make_peer(tmp, played, "A", "alice")
    replace_world(peer.world, real_world("aviadbag-1.18.2-initial"))
    set_config(peer, **config)
    return peer


@pytest.mark.skipif(sys.platform == "win32", reason="subprocess timing")
@pytest.mark.parametrize(("change", "flags", "needle"), [
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
    with coordinator_session(tmp_path) as played:
        peer = real_peer(tmp_path, played, real_world, **change)
        owner = played.client()
        before = owner.lease_status().fencing
        proc = host_run(peer, *flags)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert owner.lease_status().fencing == before, "a lease was granted before the check"
        assert owner.head().head is None, "something was pushed"


@pytest.mark.skipif(sys.platform == "win32", reason="subprocess timing")
def test_host_refuses_a_busy_game_port_before_the_lease(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as played:
        peer = make_peer(tmp_path, played, "A", "alice")
        with socket.create_server(("127.0.0.1", peer.port)):
            proc = host_run(peer)
        assert proc.returncode == 1 and f"port {peer.port} on this machine is in use" in \
            proc.stderr, proc.stderr
        assert played.client().lease_status().fencing == 0


@pytest.mark.skipif(sys.platform == "win32", reason="subprocess timing")
def test_an_announced_upgrade_hosts_and_the_lease_says_the_version(
        tmp_path: Path, real_world: Any) -> None:
    with coordinator_session(tmp_path) as played:
        peer = real_peer(tmp_path, played, real_world, game_version="1.19.4")
        with playutil.phs("host", str(peer.world), "--upgrade") as host:
            host.wait_for(r"upgrading the world from Minecraft 1\.18\.2 \(data version 2975\) "
                          r"to 1\.19\.4, as asked")
            host.wait_for(r"published")
            deadline = time.monotonic() + 10
            while (lease := played.client().lease_status().lease) is None or not lease.game:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert lease.game["version"] == "1.19.4" and lease.game["tunnel"] == "direct"
            host.terminate()
            assert host.finish() == 0, host.text()


@pytest.mark.skipif(sys.platform == "win32", reason="subprocess timing")
def test_the_pulled_world_is_checked_again_before_the_server_starts(
        tmp_path: Path, real_world: Any) -> None:
    with coordinator_session(tmp_path) as played:
        a = real_peer(tmp_path, played, real_world)
        assert phs_main(["push", "-C", str(a.world)]) == 0  # the session's world is 1.18.2
        b = make_peer(tmp_path, played, "B", "bob")  # an empty world: nothing to check yet
        set_config(b, game_version="1.17.1")
        proc = host_run(b)
        assert proc.returncode == 1 and "an older server cannot load a newer world" in \
            proc.stderr, proc.stdout + proc.stderr
        assert "started the server" not in proc.stdout
        assert played.client().lease_status().lease is None, "the lease was not given back"


@pytest.mark.skipif(sys.platform == "win32", reason="signals and subprocess timing")
def test_a_host_with_other_mods_than_the_last_one_is_warned(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as played:
        a = make_peer(tmp_path, played, "A", "alice")
        b = make_peer(tmp_path, played, "B", "bob")
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


# -- notifications ----------------------------------------------------------------------------


@contextmanager
def webhook_server(*, answer: bool = True) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook on 127.0.0.1 recording each POST (headers and JSON body); with ``answer``
    False it accepts connections and never answers."""
    got: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.append({"path": self.path, "headers": dict(self.headers),
                        "body": json.loads(body)})
            if not answer:
                time.sleep(30)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/webhooks/1/secret", got
    finally:
        server.shutdown()
        server.server_close()


def test_the_notifier_never_blocks_and_drops_past_its_bound() -> None:
    release = threading.Event()
    posted: list[str] = []

    def slow_post(url: str, body: dict[str, str]) -> int:
        release.wait(10)
        posted.append(body["content"])
        return 204

    notifier = Notifier("https://chat.example/hook", post=slow_post)
    started = time.monotonic()
    for i in range(MAX_PENDING * 3):
        notifier.send(f"message {i}")
    assert time.monotonic() - started < 1, "send() waited for the webhook"
    assert notifier.dropped >= MAX_PENDING
    release.set()
    notifier.close()
    assert posted and len(posted) <= MAX_PENDING + 1 and posted[0] == "message 0"
    failures: list[str] = []

    def broken(url: str, body: dict[str, str]) -> int:
        raise OSError("no route")

    notifier = Notifier("https://user:pw@chat.example/hook/secret", post=broken,
                        log=failures.append)
    notifier.send("a")
    notifier.send("b")
    notifier.close()
    assert len(failures) == 1 and "chat.example" in failures[0]
    assert "secret" not in failures[0] and "pw" not in failures[0]


@pytest.mark.skipif(sys.platform == "win32", reason="signals and subprocess timing")
def test_a_webhook_hears_who_hosts_where_and_when_hosting_moves_and_never_a_token(
        tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as played, webhook_server() as (url, got):
        a = make_peer(tmp_path, played, "A", "alice", webhook=url)
        b = make_peer(tmp_path, played, "B", "bob", webhook=url)
        with playutil.phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            with playutil.phs("join", "--standby", "-C", str(b.world)) as standby:
                standby.wait_for(r"standby for the lease, position 1")
                host.terminate()
                assert host.finish() == 0, host.text()
                standby.wait_for(r"published", timeout=30)
                standby.terminate()
                assert standby.finish() == 0, standby.text()
        texts = [g["body"]["content"] for g in got]
        assert any(re.fullmatch(rf"A now hosts s1 at 127\.0\.0\.1:{a.port}; friends run phs "
                                r"join", t) for t in texts), texts
        assert any(t.startswith("A stopped hosting s1; its world is pushed") for t in texts)
        assert any(t.startswith(f"hosting moved: B now hosts s1 at 127.0.0.1:{b.port}")
                   for t in texts), (texts, standby.text())
        for g in got:
            assert set(g["body"]) == {"content"} and "authorization" not in \
                {k.lower() for k in g["headers"]}
            assert not any(token in json.dumps(g) for token in played.tokens.values())
        assert url not in host.text() + standby.text(), "the webhook URL is a secret"


@pytest.mark.skipif(sys.platform == "win32", reason="signals and subprocess timing")
def test_a_webhook_that_never_answers_does_not_hold_hosting_up(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as played, webhook_server(answer=False) as (url, got):
        a = make_peer(tmp_path, played, "A", "alice", webhook=url)
        with playutil.phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            started = time.monotonic()
            host.terminate()
            assert host.finish(timeout=60) == 0, host.text()
        assert time.monotonic() - started < 40
        assert got, "the notification was sent"
        assert played.client().lease_status().lease is None


def test_a_webhook_must_be_an_http_url(tmp_path: Path) -> None:
    (tmp_path / "peerhost.toml").write_text('[host]\nwebhook = "file:///etc/passwd"\n')
    with pytest.raises(ConfigError, match="webhook must be an https:// URL"):
        load_host_config(tmp_path / "peerhost.toml")


@pytest.mark.skipif(sys.platform == "win32", reason="signals and subprocess timing")
def test_a_webhook_hears_of_diverged_histories_and_a_lost_lease(
        session: dict[str, str], phs: Phs, tmp_path: Path) -> None:  # noqa: F811
    a, _ = diverged(session, phs, tmp_path)
    port = playutil.free_port()
    with webhook_server() as (url, got):
        (tmp_path / "peerhost.toml").write_text("[host]\n" + "".join(
            f"{k} = {toml_value(v)}\n" for k, v in {
                "server": [sys.executable, str(playutil.FAKE_SERVER), "--world", "a", "--port",
                           str(port)],
                "tunnel": "none", "ttl": 3, "holder": "A", "webhook": url}.items()))
        (tmp_path / "server.properties").write_text(f"server-port={port}\n")
        with playutil.phs("host", str(a)) as refused:
            assert refused.finish() == 5, refused.text()
        assert phs.json("pull", "--keep", "ours", "-C", str(a))["outcome"] == "reconciled"
        with playutil.phs("host", str(a)) as host, \
                httpx.Client(base_url=session["url"], timeout=10) as http:
            host.wait_for(r"the server is ready")
            owner = CoordinatorClient(http, "s1", session["owner"])
            lease = owner.lease_status().lease
            assert lease is not None
            owner.release(lease.fencing)  # the owner ends the host's lease
            host.wait_for(r"LEASE LOST", timeout=20)
            assert host.finish() == 5
        texts = [g["body"]["content"] for g in got]
        assert any(t.startswith("histories diverged: A cannot host s1") for t in texts), texts
        assert any(t.startswith("sync failed: A lost the lease of s1") for t in texts), texts
