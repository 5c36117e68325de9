"""Helpers for the play-loop tests: a coordinator subprocess with a session, peers whose world
folders have a ``peerhost.toml``, and ``phs host`` / ``phs join`` subprocesses whose output the
test can wait on. Everything listens on 127.0.0.1 only; every wait is bounded."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from test_server_uvicorn import Coordinator
from test_server_uvicorn import free_port as free_port  # the tests' too

from peerhost_cli.main import main as phs_main
from peerhost_cli.play.game import port_answers as port_answers  # the tests' too
from peerhost_store.sync.client import CoordinatorClient

FAKES = Path(__file__).parent / "fakes"
FAKE_SERVER = FAKES / "fake_mc_server.py"


@dataclass
class Session:
    """A session on a running coordinator: its URL and a client per role."""

    url: str
    name: str
    tokens: dict[str, str]
    http: httpx.Client
    coordinator: Coordinator

    def client(self, who: str = "owner") -> CoordinatorClient:
        return CoordinatorClient(self.http, self.name, self.tokens[who])


@contextmanager
def coordinator_session(tmp: Path, members: tuple[str, ...] = ("alice", "bob")) -> Iterator[Session]:
    """A coordinator subprocess on a free loopback port with session ``s1``."""
    coord = Coordinator(tmp / "coordinator", free_port())
    coord.start()
    try:
        url = f"http://127.0.0.1:{coord.port}"
        with httpx.Client(base_url=url, timeout=30) as http:
            assert coord.admin_token is not None
            admin = CoordinatorClient(http, "", coord.admin_token)
            owner_token = admin.create_session("s1")
            owner = CoordinatorClient(http, "s1", owner_token)
            tokens = {"owner": owner_token, **{m: owner.add_member(m) for m in members}}
            yield Session(url, "s1", tokens, http, coord)
    finally:
        coord.stop()


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


@dataclass
class Peer:
    """A player's server folder: ``DIR/world`` (a repository with remote ``origin``) and
    ``DIR/peerhost.toml`` running the fake server on ``port``."""

    name: str
    folder: Path
    port: int
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def world(self) -> Path:
        return self.folder / "world"


def make_peer(tmp: Path, session: Session, name: str, member: str, **settings: object) -> Peer:
    folder = tmp / name
    world = folder / "world"
    world.mkdir(parents=True)
    port = free_port()
    config = {
        "server": [sys.executable, str(FAKE_SERVER), "--world", "world", "--port", str(port)],
        "tunnel": "direct", "address": f"127.0.0.1:{port}", "holder": name, "ttl": 3,
        "snapshot_minutes": 60, "quiet_seconds": 0.2, "ready_timeout": 30, "stop_timeout": 15,
        **settings,
    }
    (folder / "server.properties").write_text(f"#Minecraft server properties\nserver-port={port}\n")
    (folder / "peerhost.toml").write_text(
        "[host]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in config.items()))
    assert phs_main(["init", "--force", "-C", str(world)]) == 0  # empty: the session fills it
    assert phs_main(["remote", "add", "origin", session.url, "--session", session.name,
                     "--token", session.tokens[member], "-C", str(world)]) == 0
    return Peer(name, folder, port, config)


class Proc:
    """A ``phs`` subprocess whose output lines the test can wait for."""

    def __init__(self, args: list[str], cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.args = args
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "peerhost_cli.main", *args], cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env={**os.environ, "COLUMNS": "200", **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first line (from the last one matched on) that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n"
                                     + self.text())
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"phs exited ({self.proc.wait()}) before a line matched "
                                     f"{pattern!r}:\n" + self.text())
            self.lines.append(line)
            match = regex.search(line)
            if match:
                return match

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for exit; drain the output; the exit code (a process that does not exit
        in time is killed and fails the test with its output)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.finish(10)
            raise AssertionError(f"phs {' '.join(self.args)} did not exit within {timeout} s:\n"
                                 + self.text()) from None
        while True:
            try:
                line = self._queue.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return code

    def text(self) -> str:
        return "\n".join(self.lines)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def phs(*args: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """A phs subprocess, killed at the end of the block if still running."""
    proc = Proc(list(args), env=env)
    try:
        yield proc
    finally:
        proc.kill()
