"""phs serve, session, remote, clone, push, pull, lock, status, sync, rollback --remote and the
demo, against a real uvicorn coordinator on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from worldfs_helpers import make_world

from peerhost_cli.cmd_serve import default_data_dir, parse_bind
from peerhost_cli.main import main
from peerhost_server.background import BackgroundCoordinator
from peerhost_store.repo import Repository


class Phs:
    """Runs ``phs`` in this process; returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        """Human output comes back with its line wrapping undone."""
        code = main(list(args))
        captured = self.capsys.readouterr()
        if "--json" not in args:
            return code, " ".join(captured.out.split()), captured.err
        return code, captured.out, captured.err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def phs(capsys: pytest.CaptureFixture[str]) -> Phs:
    return Phs(capsys)


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[BackgroundCoordinator]:
    with BackgroundCoordinator(tmp_path / "coordinator") as coord:
        yield coord


@pytest.fixture
def session(coordinator: BackgroundCoordinator, phs: Phs) -> dict[str, str]:
    """Session s1 with owner and members bob and carol: their tokens, and the URL."""
    url, admin = coordinator.url, coordinator.admin_token or ""
    owner = phs.json("session", "create", "s1", "--url", url, "--token", admin)["token"]
    tokens = {"url": url, "owner": owner}
    for member in ("bob", "carol"):
        tokens[member] = phs.json("session", "invite", "s1", member, "--url", url,
                                  "--token", owner)["token"]
    return tokens


def world_with_history(path: Path, phs: Phs, files: dict[str, bytes] | None = None) -> str:
    make_world(path)
    for name, data in (files or {"data/notes.txt": b"spawn at 0 64 0"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    w = str(path)
    assert phs("init", "-C", w)[0] == 0
    return str(phs.json("snapshot", "-C", w, "-m", "first")["id"])


def add_origin(phs: Phs, world: Path, tokens: dict[str, str], who: str) -> None:
    code, out, err = phs("remote", "add", "origin", tokens["url"], "--session", "s1",
                         "--token", tokens[who], "-C", str(world))
    assert code == 0, err
    assert tokens[who] not in out + err


def pushed_and_cloned(phs: Phs, session: dict[str, str], tmp: Path, pusher: str,
                      cloner: str) -> tuple[Path, Path]:
    """World ``tmp/a`` pushed to s1 with ``pusher``'s token, cloned into ``tmp/b`` with
    ``cloner``'s."""
    a, b = tmp / "a", tmp / "b"
    world_with_history(a, phs)
    add_origin(phs, a, session, pusher)
    phs.json("push", "-C", str(a))
    phs.json("clone", session["url"], "--session", "s1", "--token", session[cloner], str(b))
    return a, b


def root(world: Path) -> bytes:
    with Repository.open(world) as repo:
        head = repo.head()
        assert head is not None
        return repo.read_snapshot(head).root


def credential_files() -> list[Path]:
    """The tokens phs keeps in its config folder (a fresh one per test: see conftest.py)."""
    return sorted((Path(os.environ["PHS_CONFIG_DIR"]) / "credentials").glob("*.json"))


def one_line_error(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# -- serve ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_first_line(data: Path, port: int) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerhost_cli.main", "serve", "--data", str(data),
         "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "serve did not start"
                time.sleep(0.05)
        return first
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_prints_the_admin_token_only_at_first_start(tmp_path: Path, phs: Phs) -> None:
    port = _free_port()
    first = _serve_first_line(tmp_path / "data", port)
    assert first.startswith("admin token (shown once")
    token = first.rsplit(" ", 1)[1].strip()
    assert token.startswith("phs.")
    second = _serve_first_line(tmp_path / "data", port)
    assert "token" not in second and second.startswith("coordinator for")
    with BackgroundCoordinator(tmp_path / "data") as coord:  # the stored token still works
        assert coord.admin_token is None
        assert phs("session", "list", "--url", coord.url, "--token", token)[0] == 0


def test_default_data_dir_and_bind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if sys.platform not in ("win32", "darwin"):
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
        assert default_data_dir() == tmp_path / "peerhost" / "coordinator"
        monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
        assert default_data_dir() == Path.home() / ".local/share/peerhost/coordinator"
    assert parse_bind("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_bind("[::1]:8000") == ("::1", 8000)
    assert parse_bind("8001") == ("127.0.0.1", 8001)


# -- sessions and remotes -------------------------------------------------------------------


def test_session_create_list_invite_revoke(
    coordinator: BackgroundCoordinator, phs: Phs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PHS_URL", coordinator.url)
    monkeypatch.setenv("PHS_TOKEN", coordinator.admin_token or "")
    code, out, _ = phs("session", "create", "s1")
    assert code == 0 and "owner token (shown once): phs." in out
    owner = out.split("(shown once): ", 1)[1].split()[0]
    assert [s["name"] for s in phs.json("session", "list")] == ["s1"]
    monkeypatch.setenv("PHS_TOKEN", owner)
    bob = phs.json("session", "invite", "s1", "bob")["token"]
    assert phs.json("session", "revoke", "s1", "bob") == {"session": "s1", "revoked": "bob"}
    code, _, err = phs("session", "revoke", "s1", "bob")
    assert code == 3
    one_line_error(err, "phs session revoke: error:", "no_member")
    code, _, err = phs("session", "list")  # the owner is not the admin
    assert code == 7
    monkeypatch.setenv("PHS_TOKEN", bob)  # revoked: clone is refused and leaves nothing
    code, _, err = phs("clone", coordinator.url, "--session", "s1", str(tmp_path / "b"))
    assert code == 7 and not (tmp_path / "b").exists()
    monkeypatch.delenv("PHS_TOKEN")
    code, _, err = phs("session", "list")
    assert code == 2
    one_line_error(err, "PHS_TOKEN")


def test_remote_add_keeps_the_token_private(
    session: dict[str, str], phs: Phs, tmp_path: Path
) -> None:
    world = tmp_path / "a"
    world_with_history(world, phs)
    add_origin(phs, world, session, "owner")
    code, out, _ = phs("remote", "list", "-C", str(world))
    assert code == 0 and "origin" in out and session["url"] in out and session["owner"] not in out
    listed = phs.json("remote", "list", "-C", str(world))
    assert listed == [{"name": "origin", "url": session["url"], "session": "s1"}]
    # The world keeps where and which session, never the token: worlds get zipped and shared.
    world_files = b"".join(p.read_bytes() for p in (world / ".peerhost").rglob("*") if p.is_file())
    assert session["owner"].encode() not in world_files
    entry = json.loads((world / ".peerhost" / "remotes.json").read_text())["remotes"]["origin"]
    assert (entry["url"], entry["session"]) == (session["url"], "s1") and "token" not in entry
    [credential] = credential_files()
    assert session["owner"] in credential.read_text()
    if sys.platform != "win32":
        assert stat.S_IMODE(credential.stat().st_mode) == 0o600
        assert stat.S_IMODE(credential.parent.stat().st_mode) == 0o700
    code, _, err = phs("remote", "add", "origin", session["url"], "--session", "s1",
                       "--token", "x", "-C", str(world))
    assert code == 1
    one_line_error(err, "exists")
    code, _, err = phs("push", "nope", "-C", str(world))
    assert code == 3


# -- push, pull, clone ----------------------------------------------------------------------


def test_clone_push_pull_round_trip(session: dict[str, str], phs: Phs, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    world_with_history(a, phs)
    add_origin(phs, a, session, "owner")
    pushed = phs.json("push", "-C", str(a))
    assert pushed["lease"]["temporary"] and not pushed["up_to_date"]
    assert pushed["objects_sent"] > 0 and pushed["wire"]["bytes_sent"] > pushed["object_bytes"]
    assert phs.json("lock", "status", "-C", str(a))["held"] is False  # released again
    cloned = phs.json("clone", session["url"], "--session", "s1", "--token", session["bob"],
                      str(b))
    assert cloned["outcome"] == "fast-forward" and cloned["objects_received"] > 0
    assert root(a) == root(b) and (b / "data/notes.txt").read_bytes() == b"spawn at 0 64 0"

    (b / "data/notes.txt").write_bytes(b"built a house")
    phs.json("snapshot", "-C", str(b), "-m", "house")
    assert phs.json("push", "-C", str(b))["objects_sent"] >= 2
    pulled = phs.json("pull", "-C", str(a))
    assert pulled["outcome"] == "fast-forward" and pulled["restored"]["written"] == 1
    assert pulled["wire"]["requests"] > 0 and pulled["wire"]["bytes_received"] > 0
    assert root(a) == root(b)
    # Nothing to send: one request, and no lease taken (the last fencing token stays).
    fencing = phs.json("lock", "status", "-C", str(a))["fencing"]
    pushed = phs.json("push", "-C", str(a))
    assert pushed["up_to_date"] is True and pushed["lease"] is None
    assert pushed["wire"]["requests"] == 1
    assert phs.json("lock", "status", "-C", str(a))["fencing"] == fencing
    code, out, _ = phs("pull", "-C", str(a))
    assert code == 0 and "up to date" in out and "on the wire" in out


def test_push_while_another_member_hosts_fails_with_exit_5(
    session: dict[str, str], phs: Phs, tmp_path: Path
) -> None:
    a, b = pushed_and_cloned(phs, session, tmp_path, "owner", "bob")
    lease = phs.json("lock", "acquire", "-C", str(b), "--ttl", "60", "--holder", "bob-pc")
    (a / "data/notes.txt").write_bytes(b"a moved on")
    phs.json("snapshot", "-C", str(a))
    code, _, err = phs("push", "-C", str(a))
    assert code == 5
    one_line_error(err, "phs push: error:", "held by bob-pc", "lease_held")
    code, _, err = phs("push", "-C", str(a), "--fencing", str(lease["lease"]["fencing"]))
    assert code == 5  # knowing the number is not enough: it is bob's lease
    one_line_error(err, "lease_lost")
    (b / "data/notes.txt").write_bytes(b"bob hosts")
    phs.json("snapshot", "-C", str(b))
    assert phs.json("push", "-C", str(b))["lease"] == {
        "fencing": lease["lease"]["fencing"], "holder": "bob-pc", "temporary": False,
        "sync_requested": False}
    assert phs.json("lock", "status", "-C", str(b))["mine"] is True  # still held after push
    # The owner ends bob's lease (a host that vanished): bob's next push forgets it, then works.
    phs.json("lock", "release", "-C", str(a), "--fencing", str(lease["lease"]["fencing"]))
    code, _, err = phs("push", "-C", str(b))
    assert code == 5
    one_line_error(err, "lease_lost")
    assert not json.loads((b / ".peerhost" / "lease.json").read_text())["leases"]
    assert phs.json("push", "-C", str(b))["up_to_date"] is True


# -- lock, sync, status, rollback -----------------------------------------------------------


def test_lock_cycle_and_sync_request(session: dict[str, str], phs: Phs, tmp_path: Path) -> None:
    a, b = pushed_and_cloned(phs, session, tmp_path, "owner", "carol")
    code, _, err = phs("sync", "-C", str(a))
    assert code == 1 and "no_lease" in err
    got = phs.json("lock", "acquire", "-C", str(b), "--ttl", "30", "--address", "b.lan:25565")
    fencing = got["lease"]["fencing"]
    assert got["lease"]["address"] == "b.lan:25565" and got["lease"]["member"] == "carol"
    seen = phs.json("lock", "status", "-C", str(a))
    assert seen["held"] and not seen["mine"] and seen["lease"]["holder"] == got["lease"]["holder"]
    assert phs.json("lock", "renew", "-C", str(b))["sync_requested"] is False
    assert phs.json("sync", "-C", str(a))["holder"] == got["lease"]["holder"]
    renewed = phs.json("lock", "renew", "-C", str(b))
    assert renewed["sync_requested"] is True and renewed["lease"]["fencing"] == fencing
    assert phs.json("lock", "renew", "-C", str(b))["sync_requested"] is False  # reported once
    status = phs.json("status", "-C", str(a))
    assert status["lease"]["address"] == "b.lan:25565" and 0 < status["lease"]["expires_in"] <= 30
    assert status["standby"] == [] and status["lease_is_mine"] is False
    assert phs.json("lock", "release", "-C", str(b))["released"] is True
    assert phs.json("lock", "status", "-C", str(b))["held"] is False
    code, _, err = phs("lock", "release", "-C", str(b))
    assert code == 3
    code, _, err = phs("lock", "release", "-C", str(b), "--fencing", str(fencing))
    assert code == 5
    one_line_error(err, "phs lock release: error:", "lease_lost")


def test_status_shows_ahead_behind_and_diverged(
    session: dict[str, str], phs: Phs, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    world_with_history(a, phs)
    add_origin(phs, a, session, "owner")
    assert phs.json("status", "-C", str(a))["relation"] == "ahead"  # the session is empty
    phs.json("push", "-C", str(a))
    phs.json("clone", session["url"], "--session", "s1", "--token", session["bob"], str(b))
    assert phs.json("status", "-C", str(b))["relation"] == "up-to-date"
    for i in range(3):
        (a / "data/notes.txt").write_bytes(b"a %d" % i)
        phs.json("snapshot", "-C", str(a))
    assert phs.json("status", "-C", str(a))["relation"] == "ahead"
    phs.json("push", "-C", str(a))
    code, out, _ = phs("status", "-C", str(b))  # B lacks the new snapshots: asks for them
    assert code == 0 and "behind (phs pull" in out and "nobody holds the lease" in out
    (b / "data/notes.txt").write_bytes(b"b went its own way")
    phs.json("snapshot", "-C", str(b))
    assert phs.json("status", "-C", str(b))["relation"] == "diverged"
    code, _, err = phs("push", "-C", str(b))
    assert code == 5
    one_line_error(err, "diverged")


def test_rollback_remote_then_both_pull(session: dict[str, str], phs: Phs, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    first = world_with_history(a, phs)
    first_root = root(a)
    add_origin(phs, a, session, "owner")
    phs.json("clone", session["url"], "--session", "s1", "--token", session["bob"], str(b))
    phs.json("push", "-C", str(a))
    phs.json("pull", "-C", str(b))
    (b / "data/notes.txt").write_bytes(b"griefed")
    phs.json("snapshot", "-C", str(b))
    phs.json("push", "-C", str(b))
    phs.json("pull", "-C", str(a))
    griefed = root(a)
    assert griefed != first_root
    done = phs.json("rollback", first[:10], "--remote", "-C", str(a))  # the owner, no lease
    assert done["target"] == first and done["lease"]["fencing"] is None
    assert done["pull"]["outcome"] == "fast-forward" and root(a) == first_root
    assert done["session_head"] == phs.json("status", "-C", str(a))["head"]
    assert (a / "data/notes.txt").read_bytes() == b"spawn at 0 64 0"
    assert phs.json("pull", "-C", str(b))["outcome"] == "fast-forward" and root(b) == first_root
    # A member may not, by default, even holding the lease (docs/operations.md §2).
    code, _, err = phs("rollback", "head~1", "--remote", "origin", "-C", str(b))
    assert code == 7
    one_line_error(err, "only the owner of session s1 may roll it back")
    # Where the owner lets the lease holder roll back: only with the lease.
    settings = phs.json("session", "settings", "s1", "--rollback", "lease",
                        "--url", session["url"], "--token", session["owner"])
    assert settings == {"session": "s1", "rollback": "lease"}
    code, _, err = phs("rollback", "head~1", "--remote", "origin", "-C", str(b))
    assert code == 7
    one_line_error(err, "needs the owner's token or the lease")
    assert phs("lock", "acquire", "-C", str(b))[0] == 0
    again = phs.json("rollback", "head~1", "--remote", "origin", "-C", str(b))
    assert again["lease"]["fencing"] is not None and root(b) == griefed
    assert phs("lock", "release", "-C", str(b))[0] == 0
    assert phs.json("log", "-C", str(b))[0]["host"] == "coordinator"
    assert phs.json("verify", "-C", str(b))["ok"] is True


def test_unreachable_coordinator_exits_8(phs: Phs, tmp_path: Path) -> None:
    a = tmp_path / "a"
    world_with_history(a, phs)
    port = _free_port()  # nobody listens there
    assert phs("remote", "add", "origin", f"http://127.0.0.1:{port}", "--session", "s1",
               "--token", "phs.0000000000000000.x", "--no-check", "-C", str(a))[0] == 0
    code, _, err = phs("pull", "-C", str(a))
    assert code == 8
    one_line_error(err, "phs pull: error:", "cannot reach the coordinator")


def test_lock_acquire_refuses_to_fence_out_the_same_holder_elsewhere(
    session: dict[str, str], phs: Phs, tmp_path: Path
) -> None:
    # A `phs host` (here: world b's lease) runs under the default holder name user@host; a
    # `phs lock acquire` of the same user in another world would re-grant it and fence it out.
    a, b = pushed_and_cloned(phs, session, tmp_path, "bob", "bob")
    held = phs.json("lock", "acquire", "-C", str(b), "--ttl", "60")["lease"]
    code, _, err = phs("lock", "acquire", "-C", str(a))
    assert code == 5
    one_line_error(err, "phs lock acquire: error:", held["holder"], "member bob", " s left",
                   "--force")
    code, _, err = phs("lock", "acquire", "--standby", "-C", str(a))
    assert code == 5
    one_line_error(err, held["holder"], "--force")
    assert phs.json("lock", "renew", "-C", str(b))["lease"]["fencing"] == held["fencing"]
    # The world that holds it may take it again (a lost token); --force takes it anyway.
    again = phs.json("lock", "acquire", "-C", str(b), "--ttl", "60")["lease"]
    forced = phs.json("lock", "acquire", "-C", str(a), "--ttl", "60", "--force")["lease"]
    assert forced["holder"] == held["holder"] and forced["fencing"] > again["fencing"]
    code, _, err = phs("lock", "renew", "-C", str(b))
    assert code == 5 and "lease_lost" in err
    # Another holder name is refused by the coordinator itself, --force or not.
    code, _, err = phs("lock", "acquire", "-C", str(b), "--holder", "other", "--force")
    assert code == 5 and "lease_held" in err


# -- credentials ----------------------------------------------------------------------------


def test_the_suite_never_touches_the_real_config_folder() -> None:
    import platformdirs

    from peerhost_store.sync.credentials import config_dir

    configured = os.environ.get("PHS_CONFIG_DIR")
    assert configured and Path(configured).is_dir()
    real = platformdirs.user_config_path("peerhost", appauthor=False).resolve()
    assert not Path(configured).resolve().is_relative_to(real)
    assert config_dir() == Path(configured)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['PHS_CONFIG_DIR'])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == configured


def test_a_token_in_an_old_remotes_json_moves_to_the_config_folder(
    session: dict[str, str], phs: Phs, tmp_path: Path
) -> None:
    a = tmp_path / "a"
    world_with_history(a, phs)
    remotes = a / ".peerhost" / "remotes.json"
    remotes.write_text(json.dumps({"version": 1, "remotes": {"origin": {
        "url": session["url"], "session": "s1", "token": session["owner"]}}}))
    assert phs.json("remote", "list", "-C", str(a)) == [
        {"name": "origin", "url": session["url"], "session": "s1"}]
    assert session["owner"] not in remotes.read_text()
    assert "token" not in json.loads(remotes.read_text())["remotes"]["origin"]
    [credential] = credential_files()
    assert session["owner"] in credential.read_text()
    assert phs.json("push", "-C", str(a))["objects_sent"] > 0  # the moved token works


def test_a_world_copied_without_its_token_says_how_to_give_it_one(
    session: dict[str, str], phs: Phs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, copy = tmp_path / "a", tmp_path / "copy"
    world_with_history(a, phs)
    add_origin(phs, a, session, "owner")
    phs.json("push", "-C", str(a))
    shutil.copytree(a, copy)  # zipped and unpacked on a friend's machine: another config folder
    monkeypatch.setenv("PHS_CONFIG_DIR", str(tmp_path / "friend-config"))
    for command in (("pull",), ("status",), ("host",), ("lock", "acquire")):
        code, _, err = phs(*command, "-C", str(copy))
        assert code == 2, (command, err)
        one_line_error(err, "remote 'origin'", "s1", "phs remote set-token origin", "PHS_TOKEN")
    monkeypatch.setenv("PHS_TOKEN", session["bob"])
    code, out, err = phs("remote", "set-token", "origin", "-C", str(copy))
    assert code == 0 and session["bob"] not in out + err
    monkeypatch.delenv("PHS_TOKEN")
    assert phs.json("pull", "-C", str(copy))["outcome"] == "up-to-date"
    assert phs.json("lock", "acquire", "-C", str(copy))["lease"]["member"] == "bob"
    phs.json("lock", "release", "-C", str(copy))
    # set-url re-points the remote and its token goes along (a coordinator that moved).
    dead = f"http://127.0.0.1:{_free_port()}"
    moved = phs.json("remote", "set-url", "origin", dead, "--no-check", "-C", str(copy))
    assert moved["url"] == dead
    assert phs("pull", "-C", str(copy))[0] == 8
    phs.json("remote", "set-url", "origin", session["url"], "-C", str(copy))
    assert phs.json("status", "-C", str(copy))["relation"] == "up-to-date"
    # A remotes.json edited to send the token elsewhere does not get it.
    remotes = copy / ".peerhost" / "remotes.json"
    data = json.loads(remotes.read_text())
    data["remotes"]["origin"]["url"] = dead
    remotes.write_text(json.dumps(data))
    code, _, err = phs("pull", "-C", str(copy))
    assert code == 2
    one_line_error(err, "phs remote set-token origin")
    code, _, err = phs("remote", "set-token", "nope", "--token", "x", "-C", str(copy))
    assert code == 3


def test_remote_remove_forgets_the_token(session: dict[str, str], phs: Phs, tmp_path: Path) -> None:
    a = tmp_path / "a"
    world_with_history(a, phs)
    add_origin(phs, a, session, "owner")
    assert len(credential_files()) == 1
    phs.json("remote", "remove", "origin", "-C", str(a))
    assert credential_files() == []


# -- demo -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_json_both_peers_end_equal(phs: Phs) -> None:
    result = phs.json("demo", "--regions", "1")
    assert result["ok"] is True
    peers = result["peers"]
    assert peers["roots_equal"] is True and peers["a"]["root"] == peers["b"]["root"]
    names = [row["step"] for row in result["steps"]]
    for step in ("coordinator", "A push", "B clone", "B push", "remote rollback", "B pull"):
        assert step in names
    assert all("on the wire" in row["result"] for row in result["steps"]
               if row["step"] in ("A push", "B clone", "B push", "A pull", "B pull"))
