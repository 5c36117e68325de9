"""What a player sees in a real terminal (issue 13): ``phs host`` (console, status panel, Ctrl-C
hand-back), ``phs join`` following a hand-over to a standby, and a long ``phs push`` with its
progress bar, read off tmux panes. tmux is required under CI=true (dev.py installs it), skipped
elsewhere without it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from playutil import FAKES, coordinator_session, free_port, make_peer
from worldutil import copy_world

from peerhost_cli.main import main as phs_main

if shutil.which("tmux") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("tmux is missing (python3 dev.py test installs it)", pytrace=False)
    pytest.skip("tmux is not installed", allow_module_level=True)
if sys.platform == "win32":
    pytest.skip("tmux is POSIX", allow_module_level=True)


class Tmux:
    """A private tmux server (its own socket) whose windows run phs commands."""

    def __init__(self, width: int = 180, height: int = 45) -> None:
        self.socket = f"phs-test-{uuid.uuid4().hex[:8]}"
        self.width, self.height = width, height
        self.started = False

    def _tmux(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-L", self.socket, "-f", os.devnull, *args],
                              capture_output=True, text=True, timeout=20, check=True)
        return proc.stdout

    def run(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """Open window ``name`` running ``phs ARGS``; the window stays when phs exits."""
        command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "peerhost_cli.main",
                                                    *args])
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        shell = f"env {exports} {command}; echo \"[phs exited $?]\"; sleep 600"
        if not self.started:
            self._tmux("new-session", "-d", "-s", "t", "-n", name, "-x", str(self.width),
                       "-y", str(self.height), shell)
            self.started = True
        else:
            self._tmux("new-window", "-t", "t", "-n", name, shell)

    def screen(self, name: str) -> str:
        """What the window shows now, scrollback included."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", f"t:{name}")

    def wait_for(self, name: str, pattern: str, timeout: float = 30) -> re.Match[str]:
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen(name)
            match = regex.search(text)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: nothing matched {pattern!r} in {timeout} s:\n{text}")
            time.sleep(0.1)

    def keys(self, name: str, *keys: str) -> None:
        self._tmux("send-keys", "-t", f"t:{name}", *keys)

    def kill(self) -> None:
        if self.started:
            subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                           timeout=20, check=False)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    session = Tmux()
    try:
        yield session
    finally:
        session.kill()


def test_host_panel_join_and_a_hand_over_as_a_player_sees_them(tmp_path: Path, tmux: Tmux) -> None:
    env = {"PEERHOST_FAKE_CLOUDFLARE_DIR": str(tmp_path / "cloudflare"),
           "PHS_CONFIG_DIR": os.environ["PHS_CONFIG_DIR"]}
    cloudflared = str(FAKES / "cloudflared")
    with coordinator_session(tmp_path, members=("alice", "bob", "carol")) as session:
        a = make_peer(tmp_path, session, "A", "alice", tunnel="cloudflared",
                      cloudflared=cloudflared)
        b = make_peer(tmp_path, session, "B", "bob", tunnel="cloudflared",
                      cloudflared=cloudflared)
        join_port = free_port()
        tmux.run("host", ["host", str(a.world)], env)
        # The console passes through, the panel sits under it, live.
        tmux.wait_for("host", r'Done \(0\.042s\)! For help, type "help"')
        host_at = tmux.wait_for("host", r"published ([a-z0-9-]+\.trycloudflare\.com) "
                                        r"\(cloudflared\); friends run: phs join").group(1)
        panel = tmux.wait_for("host", rf"^ *address +{re.escape(host_at)} via cloudflared")
        screen = tmux.screen("host")
        for row in (r"session +s1 \(hosting\)", r"host +A, lease \d+", r"lease +\d+ s left",
                    r"saving +quiet files", r"snapshot +[0-9a-f]{12} \(\d+ s ago\)",
                    r"push +\d+ pushes, last"):
            assert re.search(rf"^ *{row}", screen, re.MULTILINE), (row, screen)
        assert panel.start() > screen.index("published"), "the panel is not under the lines"

        tmux.run("join", ["join", "--url", session.url, "--session", "s1", "--port",
                          str(join_port), "--cloudflared", cloudflared],
                 {**env, "PHS_TOKEN": session.tokens["carol"]})
        tmux.wait_for("join", rf"A hosts at {re.escape(host_at)} \(cloudflared\); point "
                              rf"Minecraft at 127\.0\.0\.1:{join_port}")
        tmux.run("standby", ["join", "--standby", "-C", str(b.world), "--port",
                             str(free_port()), "--cloudflared", cloudflared], env)
        tmux.wait_for("standby", r"standby for the lease, position 1: this machine hosts when "
                                 r"the host leaves")

        tmux.keys("host", "C-c")  # the player stops hosting
        tmux.wait_for("host", r"stopped: stopping the server, then the final snapshot and push")
        tmux.wait_for("host", r"released the lease")
        tmux.wait_for("host", r"\[phs exited 0\]")
        b_at = tmux.wait_for("standby", r"the lease came to this standby: hosting now[\s\S]*"
                                        r"published ([a-z0-9-]+\.trycloudflare\.com)",
                             timeout=40).group(1)
        tmux.wait_for("standby", rf"^ *address +{re.escape(b_at)} via cloudflared")
        tmux.wait_for("join", rf"B hosts at {re.escape(b_at)} \(cloudflared\); point "
                              rf"Minecraft at 127\.0\.0\.1:{join_port}", timeout=30)
        tmux.keys("standby", "C-c")
        tmux.wait_for("standby", r"\[phs exited 0\]", timeout=40)
        tmux.wait_for("join", r"nobody hosts the session right now", timeout=20)
        tmux.keys("join", "C-c")
        tmux.wait_for("join", r"\[phs exited 0\]")


@contextmanager
def slow_link(target: int, bytes_per_second: int) -> Iterator[int]:
    """A TCP proxy on 127.0.0.1 to ``target`` whose uploads go at ``bytes_per_second``: a
    home connection's uplink. Yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        try:
            while not stop.is_set():
                data = src.recv(16384)
                if not data:
                    break
                dst.sendall(data)
                if limit:
                    time.sleep(len(data) / limit)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", target))
            threading.Thread(target=pipe, args=(client, upstream, bytes_per_second),
                             daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client, None), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_long_push_shows_its_progress_bar(tmp_path: Path, tmux: Tmux, real_world: Any) -> None:
    world = copy_world(real_world("aviadbag-1.18.2-initial"), tmp_path / "w")
    with coordinator_session(tmp_path) as session, \
            slow_link(session.coordinator.port, 1 << 20) as port:
        assert phs_main(["init", "-C", str(world)]) == 0
        assert phs_main(["remote", "add", "origin", f"http://127.0.0.1:{port}", "--session", "s1",
                         "--token", session.tokens["alice"], "-C", str(world)]) == 0
        assert phs_main(["snapshot", "-C", str(world)]) == 0
        tmux.run("push", ["push", "-C", str(world)],
                 {"PHS_CONFIG_DIR": os.environ["PHS_CONFIG_DIR"]})
        # The count moves while one large upload request is on the wire, not only between
        # requests: a frame with part of the objects sent, and some bytes moved.
        pattern = (r"^push +\S*━\S* +(\d+)/(\d+) objects (\S+ \S+) at (\S+ \S+)/s "
                   r"(\d+:\d\d:\d\d|-:--:--)$")
        deadline = time.monotonic() + 30
        while True:
            bar = tmux.wait_for("push", pattern, timeout=30)
            done, total = int(bar.group(1)), int(bar.group(2))
            if 0 < done < total:
                break
            assert time.monotonic() < deadline, f"the bar never moved mid-push: {bar.group(0)}"
            time.sleep(0.05)
        assert total > 100 and not bar.group(3).startswith("0 ")
        tmux.wait_for("push", r"pushed [0-9a-f]{12} to origin \(session s1\): \d+ objects", 90)
        tmux.wait_for("push", r"\[phs exited 0\]")
        screen = tmux.screen("push")
        assert "━" not in screen, "the bar was left on the screen"
