"""The Minecraft server process: started, its console passed through, watched until ready,
stopped gracefully (``stop`` on its console), killed only when it will not stop."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from peerhost_store.errors import PeerhostError

#: Vanilla, Paper, Fabric and Forge all print ``Done (1.234s)! For help, type "help"``.
READY = re.compile(r"\bDone \(\d+[.,]?\d*s\)!")


def helper_environment() -> dict[str, str]:
    """This process's environment less phs's own variables (``PHS_TOKEN`` above all): the
    server runs mods and plugins, and neither it nor cloudflared has any use for a token."""
    return {name: value for name, value in os.environ.items()
            if not name.upper().startswith("PHS_")}


def spawn(command: Sequence[str], *, stdin: int, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start a helper process (the server, cloudflared) in its own process group, its stderr
    merged into a line-buffered text stdout, with :func:`helper_environment`. The own group
    keeps a Ctrl-C in this terminal from reaching it: phs decides how and when it stops."""
    kwargs: dict[str, object] = {"env": helper_environment()}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        list(command), cwd=cwd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)


def port_answers(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class GameServerError(PeerhostError):
    """The server command could not start, or exited or hung before it was ready."""


class GameServer:
    """One run of the user's server command.

    Args:
        command: the command and its arguments.
        cwd: the folder it runs in (the server folder).
        port: the game port; a connection accepted there also counts as ready.
        on_line: called with each console line (without its newline), from a reader thread.
    """

    def __init__(self, command: Sequence[str], cwd: Path, port: int,
                 on_line: Callable[[str], None]) -> None:
        if not command:
            raise GameServerError("no server command: give --server or set 'server' in "
                                  "peerhost.toml")
        self.command = list(command)
        self.cwd = cwd
        self.port = port
        self.on_line = on_line
        self.ready = threading.Event()
        self.tail: deque[str] = deque(maxlen=20)
        self._proc: subprocess.Popen[str] | None = None
        self._stdin_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        #: (pattern, event) pairs of :meth:`ask` calls waiting for an answer line.
        self._waiters: list[tuple[re.Pattern[str], threading.Event]] = []
        self._waiters_lock = threading.Lock()

    def start(self) -> None:
        """Start the command. Its own process group keeps a Ctrl-C in this terminal from
        reaching it: phs stops it with ``stop`` so the world is saved first."""
        try:
            self._proc = spawn(self.command, stdin=subprocess.PIPE, cwd=self.cwd)
        except OSError as exc:
            raise GameServerError(f"cannot start the server command {self.command[0]!r} in "
                                  f"{self.cwd}: {exc}") from None
        self._reader = threading.Thread(target=self._read, name="game-console", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.rstrip("\r\n")
            self.tail.append(line)
            if READY.search(line):
                self.ready.set()
            with self._waiters_lock:
                for pattern, seen in self._waiters:
                    if pattern.search(line):
                        seen.set()
            self.on_line(line)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def returncode(self) -> int | None:
        """The exit code once it exited, else None."""
        return None if self._proc is None else self._proc.poll()

    def wait_ready(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Block until the server printed its ``Done (`` line or its port answers.

        Raises:
            GameServerError: it exited, or was not ready within ``timeout`` s.
            InterruptedError: ``stop`` was set while waiting.
        """
        deadline = time.monotonic() + timeout
        checked_port = 0.0
        while not self.ready.is_set():
            code = self.returncode()
            if code is not None:
                raise GameServerError(f"the server exited with code {code} before it was "
                                      f"ready; its last lines:\n" + "\n".join(self.tail))
            if stop is not None and stop.is_set():
                raise InterruptedError("stopped while the server was starting")
            now = time.monotonic()
            if now >= deadline:
                raise GameServerError(f"the server was not ready after {timeout:g} s (no "
                                      f"'Done (' line, port {self.port} not answering)")
            if now - checked_port >= 2.0:
                checked_port = now
                if port_answers(self.port):
                    self.ready.set()
                    break
            self.ready.wait(0.2)

    def send(self, command: str) -> bool:
        """Type a console command; False when the console is gone."""
        if self._proc is None or self._proc.stdin is None:
            return False
        with self._stdin_lock:
            try:
                self._proc.stdin.write(command + "\n")
                self._proc.stdin.flush()
                return True
            except (OSError, ValueError):  # closed pipe: the server is exiting
                return False

    def ask(self, command: str, answer: re.Pattern[str], timeout: float) -> bool:
        """Type ``command``; True once a console line printed after it matches ``answer``,
        False when none did within ``timeout`` s or the console is gone."""
        waiter = (answer, threading.Event())
        with self._waiters_lock:
            self._waiters.append(waiter)
        try:
            return self.send(command) and waiter[1].wait(timeout)
        finally:
            with self._waiters_lock:
                self._waiters.remove(waiter)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for it to exit; its exit code, or None."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float) -> int:
        """``stop`` on the console (the server saves and exits); after ``timeout`` s,
        terminate, then kill. Returns the exit code."""
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            self.send("stop")
            if self.wait(timeout) is None:
                self.on_line(f"[phs] the server did not stop within {timeout:g} s; terminating it")
                self._proc.terminate()
                if self.wait(10) is None:
                    self._proc.kill()
        code = self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        with self._stdin_lock:
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        return code

    def kill(self) -> None:
        """Kill it now (the lease is lost: nothing it writes may be pushed anyway)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def forward_console(server: GameServer, stop: threading.Event) -> threading.Thread | None:
    """Pass lines typed in this terminal to the server's console (only when stdin is a
    terminal: under a service manager or a test, stdin is not the player's)."""
    if not sys.stdin or not sys.stdin.isatty():
        return None

    def run() -> None:
        for line in sys.stdin:
            if stop.is_set() or not server.send(line.rstrip("\r\n")):
                return

    thread = threading.Thread(target=run, name="console-in", daemon=True)
    thread.start()
    return thread

