"""phs starts fast (issue 13: ``phs --help`` and ``phs status`` under 0.3 s as whole
processes): the command modules import the library, rich and httpx's CLI only when a command
needs them. Checked by what a run imports, never by timing (speed goes to benchmarks/: see
benchmarks/bench_cli_start.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_cli_remote import (  # noqa: F401
    Phs,
    add_origin,
    coordinator,
    phs,
    session,
    world_with_history,
)

#: Run phs's main in a fresh interpreter, then print the modules it imported as JSON.
PROBE = """
import json, sys
from peerhost_cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
sys.stderr.write("MODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def imported_by(*args: str, cwd: Path | None = None) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, check=False)
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def heavy(modules: set[str], *names: str) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names or m in names)


def test_help_imports_neither_the_library_nor_rich_nor_httpx() -> None:
    modules = imported_by("--help")
    assert heavy(modules, "rich", "httpx", "lmdb", "click", "pygments", "msgpack") == []
    assert "peerhost_store.repo" not in modules and "peerhost_cli.play.host" not in modules


def test_status_imports_neither_rich_nor_httpx_cli_nor_the_transfer_code(
        session: dict[str, str], phs: Phs, tmp_path: Path) -> None:  # noqa: F811
    world = tmp_path / "w"
    world_with_history(world, phs)
    add_origin(phs, world, session, "bob")
    modules = imported_by("status", "-C", str(world))
    assert "peerhost_store.sync.client" in modules  # it did talk to the coordinator
    assert heavy(modules, "rich", "click", "pygments", "httpx._main") == []
    assert "peerhost_store.sync.transfer" not in modules
    assert "peerhost_store.sync.delta" not in modules


def test_a_push_with_nothing_to_send_imports_no_transfer_code(
        session: dict[str, str], phs: Phs, tmp_path: Path) -> None:  # noqa: F811
    world = tmp_path / "w"
    world_with_history(world, phs)
    add_origin(phs, world, session, "bob")
    assert phs("push", "-C", str(world))[0] == 0
    modules = imported_by("push", "-C", str(world))
    assert "peerhost_store.sync.client" in modules  # it asked the coordinator
    assert "peerhost_store.sync.transfer" not in modules
    assert "peerhost_store.sync.delta" not in modules


def test_the_command_table_names_what_each_module_registers() -> None:
    """phs builds only the parsers of the module that owns the command it runs."""
    import argparse
    import importlib

    from peerhost_cli.common import Parents
    from peerhost_cli.main import COMMAND_MODULES

    for name, owned in COMMAND_MODULES.items():
        commands = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"peerhost_cli.{name}").register(commands, Parents.make())
        assert tuple(commands.choices) == owned, name


def test_a_command_imports_only_its_own_command_module(tmp_path: Path) -> None:
    modules = imported_by("log", "-C", str(tmp_path))
    assert "peerhost_cli.cmd_history" in modules
    assert "peerhost_cli.cmd_demo" not in modules and "peerhost_cli.cmd_serve" not in modules


#: The ``phs`` entry point in a fresh interpreter, with an atexit handler and, given a third
#: argument, a non-daemon thread that outlives main.
ENTRY = """
import atexit, sys, threading, time
from peerhost_cli.main import run
atexit.register(lambda: print("atexit handlers ran", flush=True))
if len(sys.argv) > 3:
    threading.Thread(target=lambda: (time.sleep(0.3), print("the thread finished"))).start()
sys.argv = ["phs", sys.argv[1], "-C", sys.argv[2], "--json", *(["--force"] if sys.argv[1] == "init" else [])]
run()
"""


def test_the_entry_point_flushes_runs_atexit_and_keeps_the_exit_code(tmp_path: Path) -> None:
    """run() skips the interpreter's teardown, not what an exit owes: the output (a pipe,
    so block-buffered), the atexit handlers, the exit code, a thread still running."""
    world = tmp_path / "w"
    world.mkdir()
    done = subprocess.run([sys.executable, "-c", ENTRY, "init", str(world)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report, rest = done.stdout.rsplit("}\n", 1)
    assert json.loads(report + "}")["store"]  # all of it reached the pipe
    assert rest == "atexit handlers ran\n"
    failed = subprocess.run([sys.executable, "-c", ENTRY, "log", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 3 and "no PeerHost store" in failed.stderr
    assert failed.stdout == "atexit handlers ran\n"
    waited = subprocess.run([sys.executable, "-c", ENTRY, "log", str(world), "thread"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert waited.returncode == 0, waited.stderr
    assert "the thread finished" in waited.stdout and "atexit handlers ran" in waited.stdout
