"""Long commands show a progress bar in bytes (or files and objects) with a rate and the time
left, on a terminal only (issue 13); the demo shows each step as it runs."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli_remote import Phs, add_origin, coordinator, phs, session  # noqa: F401
from worldutil import copy_world

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pseudo-terminal")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def in_terminal(*args: str, timeout: float = 120) -> tuple[int, str]:
    """Run phs with its output on a pseudo-terminal; its exit code and what it drew."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "peerhost_cli.main", *args],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160",
                                 "LINES": "40"})
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the other side closed (Linux raises EIO)
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
        assert time.monotonic() < deadline, "phs did not finish"
    os.close(master)
    return proc.wait(10), ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def world_of(tmp: Path, real_world: Any, name: str = "w") -> Path:
    world = copy_world(real_world("aviadbag-1.18.2-initial"), tmp / name)
    old = time.time() - 3600
    for path in world.rglob("*"):
        os.utime(path, (old, old))
    return world


RATE = r"\d+(\.\d+)? [kMG]?B/s"
LEFT = r"(\d+:\d\d:\d\d|-:--:--)"


def test_snapshot_verify_checkout_restore_show_bytes_or_files_a_rate_and_time_left(
        tmp_path: Path, real_world: Any) -> None:
    world = world_of(tmp_path, real_world)
    w = str(world)
    assert subprocess.run([sys.executable, "-m", "peerhost_cli.main", "init", "-C", w],
                          capture_output=True, check=False).returncode == 0
    code, drawn = in_terminal("snapshot", "-C", w)
    assert code == 0, drawn
    assert re.search(rf"snapshot .*\d+(\.\d+)?/\d+(\.\d+)? MiB {RATE} {LEFT}", drawn), drawn
    code, drawn = in_terminal("verify", "-C", w)
    assert code == 0 and re.search(rf"verify .*MiB {RATE} {LEFT}", drawn), drawn
    code, drawn = in_terminal("checkout", "head", str(tmp_path / "copy"), "-C", w)
    assert code == 0 and re.search(rf"checkout .*\d+/\d+ files {LEFT}", drawn), drawn
    (world / "level.dat").write_bytes(b"changed")
    code, drawn = in_terminal("restore", "head", "-C", w)
    assert code == 0 and re.search(rf"restore .*\d+/\d+ files {LEFT}", drawn), drawn


def test_push_pull_and_clone_show_objects_bytes_on_the_wire_a_rate_and_time_left(
        tmp_path: Path, real_world: Any, session: dict[str, str], phs: Phs) -> None:  # noqa: F811
    world = world_of(tmp_path, real_world)
    phs("init", "-C", str(world))
    add_origin(phs, world, session, "owner")
    wire = r"\d+/\d+ objects \d+(\.\d+)? [KMG]?i?B at \d+(\.\d+)? [KMG]?i?B/s"
    code, drawn = in_terminal("push", "-C", str(world))
    assert code == 0 and re.search(rf"push .*{wire} {LEFT}", drawn), drawn
    os.environ["PHS_TOKEN"] = session["bob"]
    try:
        code, drawn = in_terminal("clone", session["url"], "--session", "s1",
                                  str(tmp_path / "b"))
    finally:
        del os.environ["PHS_TOKEN"]
    assert code == 0 and re.search(rf"clone .*{wire} {LEFT}", drawn), drawn
    (world / "level.dat").write_bytes(b"played")
    phs.json("push", "-C", str(world))
    code, drawn = in_terminal("pull", "-C", str(tmp_path / "b"))
    assert code == 0 and re.search(rf"pull .*{wire} {LEFT}", drawn), drawn


def test_json_and_pipes_get_no_bar(tmp_path: Path, real_world: Any) -> None:
    world = world_of(tmp_path, real_world)
    run = [sys.executable, "-m", "peerhost_cli.main"]
    subprocess.run([*run, "init", "-C", str(world)], capture_output=True, check=True)
    piped = subprocess.run([*run, "snapshot", "-C", str(world)], capture_output=True,
                           text=True, check=True)
    assert piped.stderr == "" and piped.stdout.startswith("snapshot ")
    code, drawn = in_terminal("verify", "-C", str(world), "--json")
    assert code == 0 and "B/s" not in drawn and '"ok": true' in drawn


def test_the_demo_prints_each_step_as_it_runs(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "peerhost_cli.main", "demo", "--regions", "1",
                             "--local-only"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    still_running = proc.poll() is None
    rest = proc.stdout.read()
    assert proc.wait(120) == 0
    assert first.startswith("synthesize ") and still_running, "steps came only at the end"
    assert re.search(r"^snapshot +[0-9a-f]{12}: read .* \(\d+\.\d\d s\)$", rest, re.MULTILINE), rest
    assert rest.splitlines()[-2].startswith("all ok: ")
