"""Fault injection helpers: a pre-imported process that forks one child per operation (so a
kill -9 lands in the operation, not in interpreter start-up), world-file comparisons and the
JSON summary for docs/reliability.md.

Run as a script, this module is that process (the "zygote"). It reads one JSON request per
line on stdin and answers one JSON line on stdout:

- ``{"cmd": "run", "op": "phs" | "serve", "args": {...}, "out": PATH}`` forks a child that runs
  the operation with stdout and stderr going to ``PATH``; answers ``{"pid": N}``;
- ``{"cmd": "signal", "pid": N, "sig": S}`` signals a child it has not reaped yet (so the pid
  cannot belong to anyone else);
- ``{"cmd": "wait", "pid": N, "timeout": T}`` answers ``{"status": code | -signal | null}``;
- ``{"cmd": "ping"}`` answers once the imports are done;
- ``{"cmd": "quit"}`` kills every child left and exits (as does end of input).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

#: Exit code of a child that raised an uncaught exception: a crash, never acceptable.
CRASH = 99
REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "reliability"
TEMP_PREFIX = ".phs-tmp-"


# -- the zygote (this file run as a script) ---------------------------------------------------


def _small_batches(batch_bytes: int) -> None:
    """Make snapshot, push and pull commit in small durable batches, so a kill lands between
    (and inside) many transactions instead of around one."""
    from peerhost_store.sync import transfer
    from peerhost_store.writer import ObjectWriter

    ObjectWriter.__init__.__defaults__ = (batch_bytes,)
    assert transfer.push.__kwdefaults__ is not None and transfer.pull.__kwdefaults__ is not None
    transfer.push.__kwdefaults__["batch_bytes"] = batch_bytes
    transfer.pull.__kwdefaults__["batch_bytes"] = batch_bytes


def _die_after_writes(count: int) -> None:
    """kill -9 this process once ``count`` files were written by restore (a deterministic
    kill in the middle of restoring the world)."""
    from peerhost_store import restore

    real: Callable[..., os.stat_result] = getattr(restore, "atomic_write")  # noqa: B009
    lock = threading.Lock()
    done = [0]

    def write(path: Path, data: bytes, *, durable: bool = True) -> os.stat_result:
        result = real(path, data, durable=durable)
        with lock:
            done[0] += 1
            if done[0] >= count:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(restore, "atomic_write", write)  # noqa: B010


def _fill_disk_at_first_write(folder: Path, leave: int) -> None:
    """Fill the file system holding ``folder`` (all but ``leave`` bytes) just before restore
    writes its first file: a disk that fills up after a pull fetched and moved the head."""
    from peerhost_store import restore

    real: Callable[..., os.stat_result] = getattr(restore, "atomic_write")  # noqa: B009
    lock = threading.Lock()

    def write(path: Path, data: bytes, *, durable: bool = True) -> os.stat_result:
        with lock:
            filler = folder / "filler.bin"
            if not filler.exists():
                with open(filler, "wb") as f:
                    f.write(b"\0" * max(0, shutil.disk_usage(folder).free - leave))
        return real(path, data, durable=durable)

    setattr(restore, "atomic_write", write)  # noqa: B010


#: Where a compaction fault may strike (see :func:`_compaction_fault`): after the copy was
#: written and fsynced, after it replaced ``data.mdb``, before LMDB's lock file is renewed.
COMPACTION_STEPS = {"copied": "_write_compacted", "replaced": "_sync_folder",
                    "renewing": "_reinit_lock_file"}


def _compaction_fault(step: str, mark: str, pause: float, kill: bool) -> None:
    """At ``step`` of a store compaction: create the file ``mark`` (the test's cue), sleep
    ``pause`` seconds (the gate and LMDB's lock still held), then kill -9 this process if
    ``kill``, else go on."""
    from peerhost_store.store import _lmdb

    name = COMPACTION_STEPS[step]
    real: Callable[..., None] = getattr(_lmdb, name)

    def strike() -> None:
        Path(mark).touch()
        time.sleep(pause)
        if kill:
            os.kill(os.getpid(), signal.SIGKILL)

    def hooked(*a: Any) -> None:
        if step == "copied":
            real(*a)
            strike()
        else:
            strike()
            real(*a)

    setattr(_lmdb, name, hooked)


def _op_phs(args: dict[str, Any]) -> int:
    os.environ.update(args.get("env", {}))
    if args.get("batch_bytes"):
        _small_batches(int(args["batch_bytes"]))
    if args.get("die_after_writes"):
        _die_after_writes(int(args["die_after_writes"]))
    if args.get("fill_disk_at_first_write"):
        _fill_disk_at_first_write(Path(args["fill_disk_at_first_write"]), 64 << 10)
    if args.get("compaction_fault"):
        _compaction_fault(**args["compaction_fault"])
    from peerhost_cli.main import main

    return main(args["argv"])


def _op_serve(args: dict[str, Any]) -> int:
    if args.get("wall") is not None:
        # A frozen wall clock: fencing tokens then grow only by the persisted counter
        # (max(previous + 1, wall ms)), so a lost write would hand out a token twice.
        import types

        from peerhost_server import leases

        wall = float(args["wall"])
        setattr(leases, "time", types.SimpleNamespace(time=lambda: wall))  # noqa: B010
    from peerhost_server.app import serve

    serve(Path(args["data"]), "127.0.0.1", int(args["port"]))
    return 0


OPS = {"phs": _op_phs, "serve": _op_serve}


def _child(op: str, args: dict[str, Any], out: str) -> None:
    code = CRASH
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        code = OPS[op](args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - any escape is a crash, reported by its exit code
        traceback.print_exc()
        code = CRASH
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # exiting anyway
                stream.flush()
        os._exit(code)


def _status(raw: int) -> int:
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)


def _zygote_main() -> None:
    # Pay for imports once; children start in a millisecond.
    import lmdb  # noqa: F401
    import uvicorn  # noqa: F401

    import peerhost_cli.main  # noqa: F401
    import peerhost_server.app  # noqa: F401

    children: set[int] = set()

    def reply(value: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    def wait(pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                return _status(raw)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.002)

    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "run":
            pid = os.fork()
            if pid == 0:
                _child(req["op"], req["args"], req["out"])
            children.add(pid)
            reply({"pid": pid})
        elif req["cmd"] == "signal":
            ok = req["pid"] in children
            if ok:
                os.kill(req["pid"], req["sig"])
            reply({"ok": ok})
        elif req["cmd"] == "wait":
            if req["pid"] not in children:
                reply({"status": None, "error": "not a child"})
            else:
                reply({"status": wait(req["pid"], float(req["timeout"]))})
        elif req["cmd"] == "ping":
            reply({"ok": True})
        elif req["cmd"] == "quit":
            break
    for pid in list(children):
        os.kill(pid, signal.SIGKILL)
        wait(pid, 30)


# -- the test side ----------------------------------------------------------------------------


@dataclass
class Child:
    pid: int
    out: Path
    started: float
    status: int | None = None
    ended: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def output(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def json(self) -> Any:
        """The command's ``--json`` answer, or None when it printed none (killed first)."""
        text = self.output()
        starts = [i for i in range(len(text)) if text[i] in "{[" and (i == 0 or text[i - 1] == "\n")]
        for start in starts:  # the document starts at a line start; stderr may precede it
            try:
                return json.JSONDecoder().raw_decode(text, start)[0]
            except ValueError:
                continue
        return None


class Zygote:
    """The client side of the forking process; every call has a timeout."""

    def __init__(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        self._lock = threading.Lock()  # a killer thread may call while the test waits
        self._call({"cmd": "ping"}, 120)  # imports done: children start at once from now on

    def _call(self, req: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout or self.timeout)
            if not ready:
                raise AssertionError(f"the zygote did not answer {req['cmd']} in time")
            line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("the zygote exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, op: str, args: dict[str, Any], out: Path) -> Child:
        out.unlink(missing_ok=True)  # a child killed before it opens ``out`` printed nothing
        pid = self._call({"cmd": "run", "op": op, "args": args, "out": str(out)}, 120)["pid"]
        return Child(int(pid), out, time.monotonic())

    def phs(self, argv: list[str], out: Path, *, batch_bytes: int | None = None,
            env: dict[str, str] | None = None, die_after_writes: int | None = None,
            fill_disk_at_first_write: Path | None = None,
            compaction_fault: dict[str, Any] | None = None) -> Child:
        return self.run("phs", {"argv": argv, "batch_bytes": batch_bytes, "env": env or {},
                                "die_after_writes": die_after_writes,
                                "fill_disk_at_first_write": fill_disk_at_first_write and
                                str(fill_disk_at_first_write),
                                "compaction_fault": compaction_fault}, out)

    def kill(self, child: Child, sig: int = signal.SIGKILL) -> bool:
        """Signal ``child``; False when it already exited (and was reaped)."""
        if child.status is not None:
            return False
        return bool(self._call({"cmd": "signal", "pid": child.pid, "sig": sig})["ok"])

    def wait(self, child: Child, timeout: float = 120.0) -> int:
        if child.status is None:
            status = self._call({"cmd": "wait", "pid": child.pid, "timeout": timeout},
                                timeout + 30)["status"]
            if status is None:
                self.kill(child)
                self._call({"cmd": "wait", "pid": child.pid, "timeout": 30}, 60)
                raise AssertionError(f"pid {child.pid} did not finish in {timeout} s:\n"
                                     f"{child.output()[-2000:]}")
            child.status, child.ended = int(status), time.monotonic()
        return child.status

    def poll(self, child: Child) -> int | None:
        if child.status is None:
            status = self._call({"cmd": "wait", "pid": child.pid, "timeout": 0})["status"]
            if status is not None:
                child.status, child.ended = int(status), time.monotonic()
        return child.status

    def kill_after(self, child: Child, delay: float) -> bool:
        """Sleep ``delay`` from the child's start, then kill -9 it; True when it was still
        running (the kill landed mid-way)."""
        time.sleep(max(0.0, child.started + delay - time.monotonic()))
        running = self.poll(child) is None
        if running:
            self.kill(child)
        status = self.wait(child, 60)
        return running and status == -signal.SIGKILL

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=30)


class Coordinator:
    """A coordinator forked by the zygote on a fixed port and data folder."""

    def __init__(self, zygote: Zygote, data: Path, port: int, *, wall: float | None = None) -> None:
        self.zygote = zygote
        self.data = data
        self.port = port
        self.wall = wall
        self.url = f"http://127.0.0.1:{port}"
        self.child: Child | None = None
        self.admin_token: str | None = None
        self.starts = 0

    def start(self) -> None:
        out = self.data.parent / f"{self.data.name}-{self.starts}.log"
        self.starts += 1
        self.child = self.zygote.run(
            "serve", {"data": str(self.data), "port": self.port, "wall": self.wall}, out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.zygote.poll(self.child) is not None:
                raise AssertionError(f"the coordinator exited:\n{self.child.output()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.01)
        else:
            raise AssertionError("the coordinator did not come up in 60 s")
        for line in self.child.output().splitlines():
            if line.startswith("admin token"):
                self.admin_token = line.rsplit(" ", 1)[1].strip()

    def kill(self) -> bool:
        """kill -9; True when it was running."""
        assert self.child is not None
        landed = self.zygote.kill(self.child)
        self.zygote.wait(self.child, 60)
        return landed

    def stop(self) -> None:
        if self.child is not None and self.child.status is None:
            self.zygote.kill(self.child, signal.SIGTERM)
            with contextlib.suppress(AssertionError):  # wait() killed it with SIGKILL
                self.zygote.wait(self.child, 30)


# -- checks and figures -----------------------------------------------------------------------


def world_files(folder: Path) -> dict[str, bytes]:
    """``relative path -> bytes`` of every file the product tracks (not its store, not
    ``session.lock``, not its temporary files)."""
    files: dict[str, bytes] = {}
    for root, dirs, names in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        top = rel_root == Path(".")
        if top:
            dirs[:] = [d for d in dirs if d != ".peerhost"]
        for name in names:
            if not name.startswith(TEMP_PREFIX) and not (top and name == "session.lock"):
                files[(rel_root / name).as_posix()] = (Path(root) / name).read_bytes()
    return files


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(f"{TEMP_PREFIX}*") if ".peerhost" not in p.parts]


def mixed_problems(now: dict[str, bytes], old: dict[str, bytes], new: dict[str, bytes]) -> list[str]:
    """Files of ``now`` that are neither wholly their ``old`` nor wholly their ``new`` version
    (a missing file counts as a version where one side lacks it)."""
    problems = []
    for path in sorted(old.keys() | new.keys() | now.keys()):
        have, a, b = now.get(path), old.get(path), new.get(path)
        if have != a and have != b:
            what = "missing" if have is None else "neither old nor new"
            problems.append(f"{path}: {what}")
    return problems


class Timing:
    """Kill delays drawn across the operation's duration, re-measured on every uninterrupted
    run (a growing store slows some operations down)."""

    def __init__(self, rng: random.Random, first: float) -> None:
        self.rng = rng
        self.runs = [first]

    def add(self, seconds: float) -> None:
        self.runs.append(seconds)

    def delay(self) -> float:
        # A little past the median, so some kills land after the acknowledgement too.
        return self.rng.uniform(0, 1.15 * statistics.median(self.runs[-9:]))


@dataclass
class Figures:
    """What one fault-injection test did, for docs/reliability.md."""

    name: str
    rounds: int = 0
    kills_mid_way: int = 0
    finished_before_kill: int = 0
    operations_checked: int = 0
    lost: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def write(self) -> dict[str, Any]:
        data = {
            "name": self.name, "rounds": self.rounds, "faults_injected": self.kills_mid_way,
            "finished_before_kill": self.finished_before_kill,
            "operations_checked": self.operations_checked, "lost": self.lost,
            "seconds": round(time.monotonic() - self.started, 2), **self.extra,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{self.name}.json").write_text(json.dumps(data, indent=2) + "\n")
        return data


if __name__ == "__main__":
    _zygote_main()
