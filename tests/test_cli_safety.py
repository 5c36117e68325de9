"""Never let a player believe their world is safe when it is not (issue 13): a world
Minecraft has open is neither snapshotted nor restored, ``phs init`` wants a world, the
rollback undo hint names the previous head, and push and status see the live world."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import playutil
import pytest
from playutil import FAKES, coordinator_session, make_peer
from test_cli_remote import Phs, add_origin, coordinator, session, world_with_history  # noqa: F401
from worldfs_helpers import make_world

from peerhost_store.repo import Repository
from peerhost_store.worldlock import WorldInUse, world_in_use

HOLD_LOCK = f"""
import sys, time
sys.path.insert(0, {str(FAKES)!r})
from fake_mc_server import lock_session
from pathlib import Path
handle = lock_session(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


@contextmanager
def minecraft_running(world: Path) -> Iterator[None]:
    """Another process holds world/session.lock as a running Minecraft does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(world)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def phs(capsys: pytest.CaptureFixture[str]) -> Phs:
    return Phs(capsys)


def one_line(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_world_in_use_sees_a_held_session_lock(tmp_path: Path) -> None:
    world = make_world(tmp_path / "w")
    assert not world_in_use(world) and not world_in_use(tmp_path / "nowhere")
    with minecraft_running(world):
        assert world_in_use(world)
    assert not world_in_use(world)


@pytest.mark.parametrize("command", [["snapshot"], ["restore", "head"], ["rollback", "head~1"]])
def test_a_world_open_in_minecraft_is_refused_unless_forced(
        tmp_path: Path, phs: Phs, command: list[str]) -> None:
    world = make_world(tmp_path / "w")
    w = str(world)
    assert phs("init", "-C", w)[0] == 0
    assert phs("snapshot", "-C", w)[0] == 0
    (world / "data").mkdir()
    (world / "data" / "x.txt").write_text("two")
    assert phs("snapshot", "-C", w)[0] == 0
    (world / "data" / "x.txt").write_text("unsaved play")
    with Repository.open(world) as repo:
        head = repo.head()
    with minecraft_running(world):
        code, _, err = phs(*command, "-C", w)
        assert code == 5
        one_line(err, "open in Minecraft", "session.lock", "phs host", "--force")
        with Repository.open(world) as repo:
            assert repo.head() == head, "the refusal moved the head"
        assert (world / "data" / "x.txt").read_text() == "unsaved play"
        assert phs(*command, "-C", w, "--force")[0] == 0


def test_the_library_refuses_too_and_can_be_told_not_to(tmp_path: Path) -> None:
    world = make_world(tmp_path / "w")
    with Repository.init(world) as repo, minecraft_running(world):
        with pytest.raises(WorldInUse):
            repo.snapshot()
        repo.check_world = False
        assert repo.snapshot().created


@pytest.mark.skipif(sys.platform == "win32", reason="signals and subprocess timing")
def test_phs_host_snapshots_its_own_running_server_but_phs_snapshot_is_refused(
        tmp_path: Path) -> None:
    with coordinator_session(tmp_path) as played:
        a = make_peer(tmp_path, played, "A", "alice")
        with playutil.phs("host", str(a.world)) as host:
            host.wait_for(r"published")
            assert world_in_use(a.world), "the fake server holds session.lock like Minecraft"
            (a.world / "data").mkdir(exist_ok=True)
            (a.world / "data" / "note.txt").write_text("placed")
            time.sleep(0.3)
            refused = subprocess.run(
                [sys.executable, "-m", "peerhost_cli.main", "snapshot", "-C", str(a.world)],
                capture_output=True, text=True, timeout=60, check=False)
            assert refused.returncode == 5 and "open in Minecraft" in refused.stderr
            assert played.client().request_sync() == "A"
            host.wait_for(r"pushed [0-9a-f]{12}", timeout=20)  # its own snapshot went through
            host.terminate()
            assert host.finish() == 0, host.text()


def test_init_wants_a_world_and_names_the_one_inside(tmp_path: Path, phs: Phs,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    server = tmp_path / "my-server"
    make_world(server / "world")
    (server / "server.properties").write_text("server-port=25565\n")
    monkeypatch.chdir(server)
    code, _, err = phs("init")
    assert code == 3
    one_line(err, "phs init: error: no level.dat here; did you mean -C world?")
    code, _, err = phs("init", "-C", str(server))
    assert code == 3
    one_line(err, "no level.dat", f"did you mean -C {server / 'world'}?")
    assert not (server / ".peerhost").exists()
    code, _, err = phs("init", "-C", str(tmp_path / "my-server" / "world" / "region"))
    assert code == 3 and "not a Minecraft world folder" in err and "--force" in err
    assert phs("init", "-C", str(server / "world"))[0] == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert phs("init", "--force", "-C", str(empty))[0] == 0


def test_rollback_names_the_previous_head_to_undo_and_refuses_a_no_op(
        tmp_path: Path, phs: Phs) -> None:
    world = make_world(tmp_path / "w")
    w = str(world)
    phs("init", "-C", w)
    first = phs.json("snapshot", "-C", w, "-m", "first")["id"]
    (world / "notes.txt").write_text("second")
    second = phs.json("snapshot", "-C", w, "-m", "second")["id"]
    code, out, err = phs("rollback", first[:8], "-C", w)
    assert code == 0, err
    assert f"undo with: phs rollback {second[:12]}" in out
    code, out, err = phs("rollback", second[:8], "-C", w)  # the undo, named as the hint said
    assert code == 0 and (world / "notes.txt").read_text() == "second"
    head = phs.json("log", "-C", w)[0]["id"]
    code, _, err = phs("rollback", "head", "-C", w)
    assert code == 1
    one_line(err, f"head {head[:12]} already holds the world of {head[:12]}: nothing to roll back")
    code, _, err = phs("rollback", second[:8], "-C", w)  # another snapshot of the same tree
    assert code == 1 and "nothing to roll back" in err
    assert phs.json("log", "-C", w)[0]["id"] == head, "a refused rollback added a snapshot"


def test_a_session_rollback_names_the_previous_session_head_and_refuses_a_no_op(
        session: dict[str, str], phs: Phs, tmp_path: Path) -> None:  # noqa: F811
    a = tmp_path / "a"
    first = world_with_history(a, phs)
    add_origin(phs, a, session, "owner")
    (a / "data" / "notes.txt").write_text("griefed")
    second = phs.json("snapshot", "-C", str(a))["id"]
    phs.json("push", "-C", str(a))
    code, out, err = phs("rollback", first[:8], "--remote", "-C", str(a))
    assert code == 0, err
    assert f"undo with: phs rollback {second[:12]} --remote" in out
    head = phs.json("status", "-C", str(a))["head"]
    code, _, err = phs("rollback", head[:8], "--remote", "-C", str(a))
    assert code == 1 and "nothing to roll back" in err
    assert phs.json("status", "-C", str(a))["head"] == head


def diverged(session: dict[str, str], phs: Phs, tmp: Path) -> tuple[Path, Path]:  # noqa: F811
    """Worlds a (owner) and b (bob, a clone): both played on after a's first push, b pushed."""
    a, b = tmp / "a", tmp / "b"
    world_with_history(a, phs)
    add_origin(phs, a, session, "owner")
    phs.json("push", "-C", str(a))
    phs.json("clone", session["url"], "--session", "s1", "--token", session["bob"], str(b))
    for world in (a, b):
        (world / "data" / "notes.txt").write_text(f"{world.name} played")
        phs.json("snapshot", "-C", str(world), "-m", f"{world.name} played")
    phs.json("push", "-C", str(b))
    return a, b


def test_push_pull_and_status_give_the_same_next_step_after_a_divergence(
        session: dict[str, str], phs: Phs, tmp_path: Path) -> None:  # noqa: F811
    a, _ = diverged(session, phs, tmp_path)
    step = "pick a world with phs pull --keep theirs (the session's) or --keep ours (this one)"
    code, _, err = phs("push", "-C", str(a))
    assert code == 5
    one_line(err, "have diverged", step)
    code, _, err = phs("pull", "-C", str(a))
    assert code == 5
    one_line(err, "have diverged", step)
    assert "phs pull --keep theirs|ours" in phs("status", "-C", str(a))[1]
    assert phs.json("pull", "--keep", "theirs", "-C", str(a))["outcome"] == "reconciled"
    assert phs.json("push", "-C", str(a))["up_to_date"] is False


def test_a_push_from_behind_says_there_is_nothing_to_push(
        session: dict[str, str], phs: Phs, tmp_path: Path) -> None:  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    world_with_history(a, phs)
    add_origin(phs, a, session, "owner")
    phs.json("push", "-C", str(a))
    phs.json("clone", session["url"], "--session", "s1", "--token", session["bob"], str(b))
    (b / "data" / "notes.txt").write_text("b played")
    phs.json("snapshot", "-C", str(b))
    phs.json("push", "-C", str(b))
    code, _, err = phs("push", "-C", str(a))
    assert code == 5
    one_line(err, "already descends from local head", "nothing to push", "phs pull brings")


def test_status_and_push_see_the_live_world(
        session: dict[str, str], phs: Phs, tmp_path: Path) -> None:  # noqa: F811
    a = tmp_path / "a"
    world_with_history(a, phs)
    add_origin(phs, a, session, "owner")
    phs.json("push", "-C", str(a))
    status = phs.json("status", "-C", str(a))
    assert status["relation"] == "up-to-date" and status["unsnapshotted_changes"] is False
    assert "no changes since the local head" in phs("status", "-C", str(a))[1]
    (a / "data" / "notes.txt").write_text("played since the last snapshot")
    status = phs.json("status", "-C", str(a))
    assert status["relation"] == "up-to-date" and status["unsnapshotted_changes"] is True
    assert "has changes no snapshot holds yet (phs push snapshots them first" in \
        phs("status", "-C", str(a))[1]
    pushed = phs.json("push", "-C", str(a))
    assert pushed["up_to_date"] is False and pushed["safety_snapshot"] == pushed["head"]
    assert phs.json("status", "-C", str(a))["unsnapshotted_changes"] is False
    b = tmp_path / "b"
    phs.json("clone", session["url"], "--session", "s1", "--token", session["bob"], str(b))
    assert (b / "data" / "notes.txt").read_text() == "played since the last snapshot"
    code, out, _ = phs("push", "-C", str(a))
    assert code == 0 and "nothing to send" in out and "saved first" not in out
