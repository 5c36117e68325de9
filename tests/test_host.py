"""``phs host`` and ``phs join --standby`` as subprocesses against a real coordinator process,
with a stand-in server command (tests/fakes/fake_mc_server.py): pushes on request and on stop,
lease loss, host transfer to a standby, refusals that keep local work."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from fakes.fake_rcon import FakeRcon
from playutil import (
    FAKES,
    Peer,
    Session,
    coordinator_session,
    free_port,
    make_peer,
    phs,
    port_answers,
)

from peerhost_cli.main import main as phs_main
from peerhost_store.repo import Repository
from peerhost_store.sync.transfer import pull

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals and subprocess timing")


def session_files(session: Session, tmp: Path, name: str) -> dict[str, str]:
    """The session head's world, pulled into a fresh folder: relative path -> text."""
    world = tmp / name
    world.mkdir()
    with Repository.init(world) as repo:
        pull(repo, session.client("owner"))
    return {p.relative_to(world).as_posix(): p.read_text() for p in world.rglob("*")
            if p.is_file() and ".peerhost" not in p.parts}


def write(peer: Peer, name: str, text: str) -> None:
    data = peer.world / "data"
    data.mkdir(exist_ok=True)
    (data / name).write_text(text)
    time.sleep(0.3)  # past quiet_seconds: the host may snapshot it


def test_host_publishes_pushes_on_request_and_hands_back_on_sigterm(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice")
        owner = session.client()
        with phs("host", str(a.world)) as host:
            host.wait_for(r"the server is ready")
            host.wait_for(r"published 127\.0\.0\.1:\d+ \(direct\)")
            deadline = time.monotonic() + 10
            while (lease := owner.lease_status().lease) is None or lease.address is None:
                assert time.monotonic() < deadline, "the address never reached the lease"
                time.sleep(0.1)
            assert (lease.holder, lease.member, lease.address) == ("A", "alice", f"127.0.0.1:{a.port}")
            assert lease.game == {"tunnel": "direct", "port": a.port}

            write(a, "hello.txt", "placed by a player")
            assert owner.request_sync() == "A"
            host.wait_for(r"pushed [0-9a-f]{12}", timeout=20)
            assert session_files(session, tmp_path, "c1")["data/hello.txt"] == "placed by a player"

            host.terminate()
            assert host.finish() == 0, host.text()
        assert "released the lease" in host.text()
        assert not port_answers(a.port), "the server still runs"
        assert owner.lease_status().lease is None
        files = session_files(session, tmp_path, "c2")
        # level.dat is written by the server as it stops: the final push has it.
        assert files["level.dat"].startswith("saved")
        assert files["data/hello.txt"] == "placed by a player"


def test_lease_fenced_out_stops_the_server_and_keeps_the_world_locally(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice")
        owner = session.client()
        with phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            head_before = owner.head().head
            lease = owner.lease_status().lease
            assert lease is not None
            write(a, "late.txt", "never pushed")
            owner.release(lease.fencing)  # the owner ends the member's lease
            host.wait_for(r"LEASE LOST", timeout=15)
            assert host.finish() == 5, host.text()
        text = host.text()
        assert "kept in local snapshot" in text and "not pushed" in text
        assert not port_answers(a.port), "the server still runs after the lease was lost"
        assert owner.head().head == head_before, "a host without the lease moved the head"
        with Repository.open(a.world) as repo:
            head = repo.head()
            assert head is not None and head != head_before
            assert "lost the lease" in repo.read_snapshot(head).message


def test_a_second_host_is_refused_while_the_first_hosts(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice")
        b = make_peer(tmp_path, session, "B", "bob")
        with phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            with phs("host", str(b.world)) as second:
                assert second.finish() == 5
            assert "A (member alice) hosts session s1 now" in second.text()
            assert not port_answers(b.port)
            host.terminate()
            assert host.finish() == 0, host.text()


def test_standby_takes_over_when_the_host_leaves(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as session, ExitStack() as stack:
        a = make_peer(tmp_path, session, "A", "alice")
        b = make_peer(tmp_path, session, "B", "bob")
        owner = session.client()
        with phs("host", str(a.world)) as host:
            host.wait_for(r"published")  # first: a standby takes a lease nobody holds
            standby = stack.enter_context(phs("join", "--standby", "-C", str(b.world)))
            standby.wait_for(r"standby for the lease, position 1")
            standby.wait_for(rf"A hosts; point Minecraft at 127\.0\.0\.1:{a.port}")
            write(a, "built.txt", "by A")
            host.terminate()
            assert host.finish() == 0, host.text()
            standby.wait_for(r"the lease came to this standby", timeout=20)
            standby.wait_for(rf"published 127\.0\.0\.1:{b.port}", timeout=30)
            lease = owner.lease_status().lease
            assert lease is not None and lease.holder == "B"
            assert (b.world / "data" / "built.txt").read_text() == "by A"
            standby.terminate()
            assert standby.finish() == 0, standby.text()
        assert owner.lease_status().lease is None


def test_host_refuses_a_diverged_world_and_keeps_it(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice")
        b = make_peer(tmp_path, session, "B", "bob")
        owner = session.client()
        for peer, text in ((a, "first"), (b, "second")):
            with phs("host", str(peer.world)) as host:
                host.wait_for(r"published")
                write(peer, "turn.txt", text)
                host.terminate()
                assert host.finish() == 0, host.text()
            if peer is a:
                # A changes its world while B hosts: unsnapshotted, never pushed.
                write(a, "offline.txt", "A alone")
        with phs("host", str(a.world)) as again:
            assert again.finish() == 5, again.text()
        text = again.text()
        assert "have diverged" in text and "Nothing was overwritten or pushed" in text
        assert owner.lease_status().lease is None, "the refused host kept the lease"
        assert (a.world / "data" / "offline.txt").read_text() == "A alone"
        with Repository.open(a.world) as repo:
            kept = repo.head()
            assert kept is not None and "unsnapshotted" in repo.read_snapshot(kept).message

        # A takes the session's world; its own play stays in history; hosting works again.
        assert phs_main(["pull", "--keep", "theirs", "-C", str(a.world)]) == 0
        assert not (a.world / "data" / "offline.txt").exists()
        assert (a.world / "data" / "turn.txt").read_text() == "second"
        with Repository.open(a.world) as repo:
            head = repo.head()
            assert head is not None and kept in repo.read_snapshot(head).parents
        with phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            host.terminate()
            assert host.finish() == 0, host.text()
        assert session_files(session, tmp_path, "after")["data/turn.txt"] == "second"


def test_host_rides_out_a_coordinator_restart_within_the_ttl(tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice", ttl=8)
        owner = session.client()
        with phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            session.coordinator.kill()
            time.sleep(1.0)
            session.coordinator.start()  # same port and data folder
            host.wait_for(r"lease renewal failed", timeout=10)
            write(a, "after.txt", "written during the outage")
            owner.request_sync()
            host.wait_for(r"pushed [0-9a-f]{12}", timeout=20)
            assert "LEASE LOST" not in host.text()
            host.terminate()
            assert host.finish() == 0, host.text()
        assert session_files(session, tmp_path, "c")["data/after.txt"] == "written during the outage"


def read_greeting(port: int, timeout: float = 10.0) -> str:
    """What the server behind 127.0.0.1:``port`` says first (retried while tunnels come up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                data = conn.recv(200).decode()
                if data:
                    return data
        except OSError:
            pass
        assert time.monotonic() < deadline, f"nothing answered through 127.0.0.1:{port}"
        time.sleep(0.2)


def test_rcon_host_behind_cloudflared_with_a_joiner(tmp_path: Path) -> None:
    env = {"PEERHOST_FAKE_CLOUDFLARE_DIR": str(tmp_path / "cloudflare")}
    cloudflared = str(FAKES / "cloudflared")
    with coordinator_session(tmp_path) as session, FakeRcon(password="pw") as rcon:
        a = make_peer(tmp_path, session, "A", "alice", tunnel="cloudflared", cloudflared=cloudflared)
        with (a.folder / "server.properties").open("a") as props:
            props.write(f"enable-rcon=true\nrcon.port={rcon.port}\nrcon.password=pw\n")
        join_port = free_port()
        with phs("host", str(a.world), env=env) as host:
            hostname = host.wait_for(r"published ([a-z0-9-]+\.trycloudflare\.com) \(cloudflared\)").group(1)
            with phs("join", "--url", session.url, "--session", "s1", "--port", str(join_port),
                     "--cloudflared", cloudflared, env={**env, "PHS_TOKEN": session.tokens["bob"]}) as joiner:
                joiner.wait_for(rf"A hosts at {hostname} \(cloudflared\); point Minecraft at "
                                rf"127\.0\.0\.1:{join_port}")
                assert read_greeting(join_port) == "fake minecraft server of A\n"
                write(a, "via-rcon.txt", "saved with save-off")
                session.client().request_sync()
                host.wait_for(r"pushed [0-9a-f]{12}", timeout=20)
                assert rcon.received() == ["save-off", "save-all flush", "save-on"]
                host.terminate()
                assert host.finish() == 0, host.text()
                joiner.wait_for(r"nobody hosts the session right now", timeout=10)
                joiner.terminate()
                assert joiner.finish() == 0, joiner.text()
        assert not list((tmp_path / "cloudflare").glob("*")), "a tunnel was left running"


def test_a_server_that_exits_by_itself_ends_hosting_with_the_final_push(tmp_path: Path) -> None:
    # As when a player types `stop` in the server console.
    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice")
        owner = session.client()
        with phs("host", str(a.world)) as host:
            pid = int(host.wait_for(r"started the server \(pid (\d+)\)").group(1))
            host.wait_for(r"published")
            write(a, "last.txt", "before the server stopped")
            os.kill(pid, signal.SIGTERM)
            host.wait_for(r"the server exited", timeout=20)
            assert host.finish() == 0, host.text()
        assert "released the lease" in host.text()
        assert owner.lease_status().lease is None
        assert session_files(session, tmp_path, "c")["data/last.txt"] == "before the server stopped"


def test_without_rcon_a_sync_that_waits_too_long_saves_through_the_console(tmp_path: Path) -> None:
    # Players keep changing the world: its files are never quiet for quiet_seconds.
    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice", quiet_seconds=3600, max_quiet_wait=1)
        with phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            write(a, "busy.txt", "players keep playing")
            session.client().request_sync()
            host.wait_for(r"sync requested: waiting for quiet files", timeout=20)
            host.wait_for(r"saving through the server console", timeout=20)
            host.wait_for(r"pushed [0-9a-f]{12}", timeout=20)
            assert session_files(session, tmp_path, "c")["data/busy.txt"] == "players keep playing"
            host.terminate()
            assert host.finish() == 0, host.text()
        text = host.text()
        said = [text.index(line) for line in ("Automatic saving is now disabled", "Saved the game",
                                              "Automatic saving is now enabled")]
        assert said == sorted(said), text


def test_without_a_consistent_save_the_host_keeps_waiting_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice", quiet_seconds=3600, max_quiet_wait=1,
                      console_save=False)
        b = make_peer(tmp_path, session, "B", "bob")  # a friend's world: phs status, sync, join
        owner = session.client()
        with phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            head = owner.head().head
            with phs("join", "-C", str(b.world), "--port", str(free_port())) as joiner:
                joiner.wait_for(r"A hosts; point Minecraft at")
                write(a, "busy.txt", "players keep playing")
                capsys.readouterr()
                assert phs_main(["sync", "-C", str(b.world)]) == 0
                host.wait_for(r"sync requested: waiting for quiet files", timeout=20)
                host.wait_for(r"no RCON and no console save", timeout=20)
                joiner.wait_for(r"A: sync requested \d+ s ago, waiting for quiet files", timeout=20)
                capsys.readouterr()
                assert phs_main(["status", "-C", str(b.world)]) == 0
                assert re.search(r"sync requested \d+ s ago, waiting for quiet files",
                                 " ".join(capsys.readouterr().out.split()))
                assert phs_main(["status", "-C", str(b.world), "--json"]) == 0
                wait = json.loads(capsys.readouterr().out)["sync_wait"]
                assert wait["reason"] == "sync requested" and wait["overdue"] is True
                assert phs_main(["sync", "-C", str(b.world)]) == 0
                assert "not taken the snapshot yet: sync requested" in " ".join(
                    capsys.readouterr().out.split())
                assert owner.head().head == head, "snapshotted a world that was being written"
                joiner.terminate()
                assert joiner.finish() == 0, joiner.text()
            host.terminate()
            assert host.finish() == 0, host.text()
        # Stopped, the server saved everything: the final push has the play.
        assert session_files(session, tmp_path, "c")["data/busy.txt"] == "players keep playing"


def test_an_area_rollback_on_the_coordinator_is_taken_by_the_host_before_its_server_saves(
        tmp_path: Path) -> None:
    from test_area import grief, write_chunks

    from peerhost_store.area import Area
    from peerhost_store.tree import iter_region, lookup_map

    with coordinator_session(tmp_path) as session:
        a = make_peer(tmp_path, session, "A", "alice")
        (a.world / "playerdata").mkdir()
        write_chunks(a.world / "region" / "r.0.0.mca", dict.fromkeys(range(64), "old"))
        with Repository.open(a.world) as repo:
            repo.check_world = False
            house = repo.snapshot("built the house").oid
            grief(a.world)
            repo.snapshot("grief")
        owner = session.client()
        area = Area.parse("0,0:31,15")  # chunks 0..1 by 0
        with phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            write(a, "play.txt", "played after the grief")  # play not pushed yet
            owner.rollback(house, area=area)  # the owner needs no lease
            host.wait_for(r"stopping the server to take it", timeout=20)
            host.wait_for(r"took the session's change on top of the play", timeout=30)
            host.wait_for(r"the server is ready", timeout=30)
            host.wait_for(r"published", timeout=30)
            host.terminate()
            assert host.finish() == 0, host.text()
        (tmp_path / "after").mkdir()
        with Repository.init(tmp_path / "after") as repo:
            pull(repo, session.client("owner"))
            assert (tmp_path / "after" / "data" / "play.txt").read_text() == \
                "played after the grief"
            head = repo.head()
            assert head is not None
            root = repo.read_snapshot(head).root
            found = lookup_map(repo.store.objects, root, ["region"])["region"]
            region = lookup_map(repo.store.objects, found.oid, ["r.0.0.mca"])["r.0.0.mca"]
            got = {c.slot: c.oid for c in iter_region(repo.store.objects, region.oid)}
            old_root = repo.read_snapshot(house).root
            old_region = lookup_map(repo.store.objects, lookup_map(
                repo.store.objects, old_root, ["region"])["region"].oid, ["r.0.0.mca"])
            old = {c.slot: c.oid for c in iter_region(repo.store.objects,
                                                      old_region["r.0.0.mca"].oid)}
            assert got[0] == old[0] and got[1] == old[1], "the box is not the old one"
            assert got[2] != old[2], "outside the box the grief stays (it was not asked for)"
