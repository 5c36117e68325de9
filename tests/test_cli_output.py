"""How phs speaks (issue 13, "Speak like the tools players already know"): options only where
they do something, one JSON naming scheme, one-line errors that say what to check."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_cli_remote import Phs, coordinator, phs, session  # noqa: F401
from test_cli_safety import diverged
from worldfs_helpers import make_world
from worldutil import copy_world, replace_world

from peerhost_cli.main import main
from peerhost_server.background import BackgroundCoordinator
from peerhost_store.repo import Repository
from peerhost_store.sync.client import CoordinatorUnavailable, Lease
from peerhost_store.sync.keeper import LeaseKeeper
from peerhost_store.sync.remotes import connect


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "peerhost_cli.main", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("args", [
    ["host", "--json"], ["join", "--json"], ["serve", "--json"], ["serve", "-C", "w"],
    ["session", "list", "-C", "w"], ["clone", "http://x", "--session", "s", "f", "-C", "w"],
    ["demo", "-C", "w"],
])
def test_options_that_would_do_nothing_are_usage_errors(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert "unrecognized arguments" in proc.stderr


def test_every_command_takes_debug() -> None:
    proc = run("serve", "--debug", "--bind", "nonsense")
    assert proc.returncode == 2 and "expected HOST:PORT" in proc.stderr


def test_tokens_are_called_token_in_json(coordinator: BackgroundCoordinator,  # noqa: F811
                                         phs: Phs) -> None:  # noqa: F811
    created = phs.json("session", "create", "s1", "--url", coordinator.url,
                       "--token", coordinator.admin_token or "")
    invited = phs.json("session", "invite", "s1", "bob", "--url", coordinator.url,
                       "--token", created["token"])
    assert set(created) == {"session", "url", "token"} and len(created["token"]) > 20
    assert "token" in invited


@contextmanager
def silent_coordinator() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers; its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def test_an_unreachable_coordinator_is_one_line_with_the_url_and_what_to_check(
        tmp_path: Path, phs: Phs) -> None:  # noqa: F811
    world = make_world(tmp_path / "w")
    url = f"http://127.0.0.1:{closed_port()}"
    assert phs("init", "-C", str(world))[0] == 0
    assert phs("remote", "add", "origin", url, "--session", "s1", "--token", "t",
               "--no-check", "-C", str(world))[0] == 0
    for command in (["status"], ["pull"], ["lock", "status"]):
        code, _, err = phs(*command, "-C", str(world))
        assert code == 8, err
        assert err.count("\n") == 1 and "Traceback" not in err and "Error(" not in err, err
        assert (f"cannot reach the coordinator at {url}: connection refused; check that it is "
                "running") in err


def test_a_coordinator_that_never_answers_is_given_up_on_within_the_call_timeout() -> None:
    with silent_coordinator() as url, connect(url, "s1", "token") as client:
        started = time.monotonic()
        with pytest.raises(CoordinatorUnavailable) as caught:
            client.renew(7, seconds=0.5)
        assert time.monotonic() - started < 10
        assert "accepted the connection but sent no answer within 0.5 s" in str(caught.value)
        assert caught.value.url == url


def test_a_lease_keeper_facing_a_silent_coordinator_knows_by_the_lease_deadline() -> None:
    with silent_coordinator() as url:
        lease = Lease("A", "alice", 7, 2.0, 2.0)
        keeper = LeaseKeeper(lambda: connect(url, "s1", "token"), lease, time.monotonic())
        keeper.start()
        try:
            deadline = time.monotonic() + 15  # the old read timeout alone was 120 s
            while keeper.lost is None:
                assert time.monotonic() < deadline, "the keeper hung on a renewal"
                time.sleep(0.05)
            assert "could not be reached" in keeper.lost
        finally:
            keeper.stop()


def test_remote_add_set_token_and_set_url_check_with_the_coordinator(
        coordinator: BackgroundCoordinator, phs: Phs, tmp_path: Path) -> None:  # noqa: F811
    url = coordinator.url
    owner = phs.json("session", "create", "s1", "--url", url,
                     "--token", coordinator.admin_token or "")["token"]
    phs.json("session", "create", "s2", "--url", url, "--token", coordinator.admin_token or "")
    world = make_world(tmp_path / "w")
    w = str(world)
    phs("init", "-C", w)
    down = f"http://127.0.0.1:{closed_port()}"
    for args, code, needle in [
        ([url, "--session", "s1", "--token", "phs_wrong"], 7,
         f"{url} refused this token for session s1"),
        ([url, "--session", "s2", "--token", owner], 7, "another session"),
        ([down, "--session", "s1", "--token", owner], 8, "--no-check to save it"),
    ]:
        got, _, err = phs("remote", "add", "origin", *args, "-C", w)
        assert got == code, err
        assert err.count("\n") == 1 and needle in err, err
    assert phs.json("remote", "list", "-C", w) == []
    added = phs.json("remote", "add", "origin", url, "--session", "s1", "--token", owner, "-C", w)
    assert added["checked"] is True
    got, _, err = phs("remote", "set-token", "origin", "--token", "phs_wrong", "-C", w)
    assert got == 7 and "refused this token" in err
    got, _, err = phs("remote", "set-url", "origin", down, "-C", w)
    assert got == 8 and "cannot reach the coordinator" in err
    assert phs.json("remote", "list", "-C", w)[0]["url"] == url
    assert phs.json("status", "-C", w)["session"] == "s1"  # the stored token still works
    assert phs.json("remote", "set-url", "origin", down, "--no-check", "-C", w)["url"] == down


def test_serve_on_a_busy_port_is_one_line_exit_1_and_makes_no_admin_token(
        tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "peerhost_cli.main", "serve", "--data", str(tmp_path / "d"),
             "--bind", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60,
            check=False)
    assert proc.returncode == 1
    assert proc.stdout == "", "printed (an admin token?) before the bind failed"
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"phs serve: error: cannot listen on 127.0.0.1:{port}: address already in use" \
        in proc.stderr and "--bind" in proc.stderr
    assert not (tmp_path / "d").exists(), "state (and an admin token nobody saw) was created"


def history(tmp: Path, phs: Phs) -> tuple[Path, list[str]]:  # noqa: F811
    """A world with snapshots first, second, third: their ids, oldest first."""
    world = make_world(tmp / "w")
    phs("init", "-C", str(world))
    ids = []
    for text in ("first", "second", "third"):
        (world / "notes.txt").write_text(text)
        ids.append(phs.json("snapshot", "-C", str(world), "-m", text)["id"])
    return world, ids


def test_snapshot_names_follow_git(tmp_path: Path, phs: Phs) -> None:  # noqa: F811
    world, (first, second, third) = history(tmp_path, phs)
    w = str(world)

    cases = [("head", third), ("head~", second), ("head^", second), ("head~1", second),
             ("head^^", first), ("head~2", first), ("head~1^", first),
             (f"{third[:6]}~", second), ("HEAD^0", third), ("head^1~1", first)]
    for i, (spec, want) in enumerate(cases):
        got = phs.json("checkout", spec, str(tmp_path / f"co{i}"), "-C", w)
        assert got["snapshot"] == want, spec
    for spec, needle in [("head~3", "history is not that long"),
                         ("head^2", "has 1 parent, not a ^2"), ("head~x", "expected ~N or ^N")]:
        code, _, err = phs("diff", spec, "-C", w)
        assert code == 3 and needle in err, err


def test_log_marks_head_and_says_what_a_rollback_restored(
        tmp_path: Path, phs: Phs) -> None:  # noqa: F811
    world, (first, _, third) = history(tmp_path, phs)
    w = str(world)
    phs.json("rollback", first[:8], "-C", w)
    code, out, _ = phs("log", "-C", w)
    assert code == 0
    assert "(head)" in out and out.index("(head)") < out.index(third[:12])
    assert f'rollback to {first[:12]}: the world of' in out and '("first")' in out
    log = phs.json("log", "-C", w)
    assert log[0]["refs"] == ["head"] and log[0]["rollback_target"] == first
    assert [e["rollback_target"] for e in log[1:]] == [None, None, None]


def test_log_graph_shows_the_parents_of_a_merge(
        session: dict[str, str], phs: Phs, tmp_path: Path) -> None:  # noqa: F811
    a, _ = diverged(session, phs, tmp_path)
    merged = phs.json("pull", "--keep", "theirs", "-C", str(a))
    code = main(["log", "--graph", "-C", str(a)])
    assert code == 0
    text = phs.capsys.readouterr().out
    rows = [line.rstrip() for line in text.splitlines()]
    assert rows[1].startswith("*") and merged["head"][:12] in rows[1] and "(head" in rows[1]
    assert "session s1" in text and "[merge of" in text
    assert rows[2].startswith("|\\")
    assert any(r.startswith("| *") for r in rows) and any(r.startswith("|/") for r in rows)


def test_the_graph_is_drawn_children_first_even_when_times_disagree() -> None:
    from peerhost_cli.loggraph import graph, topological

    # "first" claims to be newer than "b" (a friend's clock was ahead): children still come first.
    rows = [("M", ("a", "b")), ("a", ("first",)), ("first", ()), ("b", ("first",))]
    ordered = topological(rows)
    assert [k for k, _ in ordered] == ["M", "a", "b", "first"]
    assert graph(ordered) == [("*", "M"), ("|\\", None), ("* |", "a"), ("| *", "b"),
                              ("|/", None), ("*", "first")]


def test_diff_sizes_use_one_unit_per_column_and_the_summary_reads_as_a_sentence() -> None:
    from peerhost_cli.cmd_diff import column_sizes, summary_text

    assert column_sizes([3 << 20, 512 << 10, None, 10]) == ["3.0 MiB", "0.5 MiB", "", "<0.1 MiB"]
    assert column_sizes([100, 7]) == ["100 B", "7 B"]
    totals = {"files_added": 1, "files_modified": 2, "chunks_added": 3, "chunks_modified": 1230,
              "chunks_content": 30, "chunks_resave": 1200}
    assert summary_text(totals) == (
        "3 files changed (1 added, 2 modified); 1,233 chunks changed (3 added, 1,230 modified): "
        "of the modified, 30 with new content, 1,200 only re-saved by the game")
    assert summary_text({}) == "no changes"
    assert summary_text({"files_removed": 1}) == "1 file changed (1 removed)"


def world_with_a_chunk_change(tmp: Path, real_world: Any) -> Path:
    world = copy_world(real_world("aviadbag-1.19-history") / "3195128", tmp / "w")
    assert main(["init", "-C", str(world)]) == 0 and main(["snapshot", "-C", str(world)]) == 0
    replace_world(world, real_world("aviadbag-1.19-history") / "500ee47")
    return world


def test_diff_piped_lists_every_chunk_with_its_blocks_uncut(
        tmp_path: Path, real_world: Any, capsys: pytest.CaptureFixture[str]) -> None:
    world = world_with_a_chunk_change(tmp_path, real_world)
    capsys.readouterr()
    proc = subprocess.run([sys.executable, "-m", "peerhost_cli.main", "diff", "-C", str(world)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "60"})
    assert proc.returncode == 0, proc.stderr
    changes = json.loads(subprocess.run(
        [sys.executable, "-m", "peerhost_cli.main", "diff", "-C", str(world), "--json"],
        capture_output=True, text=True, timeout=120, check=True).stdout)["changes"]
    chunks = [c for c in changes if c["type"] == "chunk"]
    assert len(chunks) > 50
    for c in chunks:  # every chunk has its own line, with its blocks, not folded at 60 columns
        x, z = c["x"], c["z"]
        line = f" {x},{z} "
        assert any(line in row and f"{x * 16}..{x * 16 + 15}, {z * 16}..{z * 16 + 15}" in row
                   for row in proc.stdout.splitlines()), (x, z)
    assert "..." not in proc.stdout and "…" not in proc.stdout
    last = proc.stdout.splitlines()[-1]
    assert last.startswith("11 files changed (11 modified); ") and "with new content" in last
    assert "KiB" in proc.stdout and " -> " in proc.stdout  # file sizes; region chunk counts


def test_diff_on_a_terminal_groups_chunks_and_says_how_to_see_them_all(
        tmp_path: Path, real_world: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from peerhost_cli.cmd_diff import SHOWN_CHUNKS, _print_changes

    world = world_with_a_chunk_change(tmp_path, real_world)
    with Repository.open(world) as repo:
        changes = list(repo.diff(repo.resolve("head"), None))
    capsys.readouterr()
    _print_changes(changes, every_chunk=False)
    text = capsys.readouterr().out
    assert "more (phs diff | less lists all)" in text
    where = re.findall(r"-?\d+,-?\d+ \((-?\d+)\.\.(-?\d+), (-?\d+)\.\.(-?\d+)\)", text)
    assert len(where) >= SHOWN_CHUNKS
    assert all(int(x1) - int(x0) == 15 and int(z1) - int(z0) == 15 for x0, x1, z0, z1 in where)


def test_a_closed_pipe_ends_phs_quietly(tmp_path: Path, real_world: Any) -> None:
    world = world_with_a_chunk_change(tmp_path, real_world)
    proc = subprocess.run(f"{sys.executable} -m peerhost_cli.main diff -C {world} | head -1",
                          shell=True, capture_output=True, text=True, timeout=120, check=False)
    assert proc.stderr == "" and proc.stdout.count("\n") == 1
