"""The fake cloudflared (tests/fakes/cloudflared) really forwards TCP: tunnel -> access -> echo."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKES = Path(__file__).resolve().parent / "fakes"
CLOUDFLARED = FAKES / "cloudflared"
DEADLINE = 10.0
URL_RE = re.compile(r"https://([a-z0-9-]+\.trycloudflare\.com)")
LISTENER_RE = re.compile(r"Start Websocket listener host=127\.0\.0\.1:(\d+)")


class Proc:
    """A fake cloudflared process whose stderr lines are collected by a thread."""

    def __init__(self, args: list[str], registry: Path, *, use_path: bool = False) -> None:
        env = dict(os.environ, PEERHOST_FAKE_CLOUDFLARE_DIR=str(registry))
        if use_path:
            env["PATH"] = f"{FAKES}{os.pathsep}{env.get('PATH', '')}"
            command = ["cloudflared", *args]
        else:
            command = [sys.executable, str(CLOUDFLARED), *args]
        self.popen = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.stdout_text = ""
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = DEADLINE) -> re.Match[str]:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern.pattern!r} in {self.lines}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"exited ({self.popen.poll()}) before {pattern.pattern!r}: {self.lines}"
                )
            self.lines.append(line)
            match = pattern.search(line)
            if match:
                return match

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=DEADLINE)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=DEADLINE)
        self._reader.join(timeout=DEADLINE)
        if self.popen.stdout is not None and not self.popen.stdout.closed:
            self.stdout_text = self.popen.stdout.read()  # the process has exited: bounded
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        while True:  # keep the rest of the log for assertions
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)


class EchoServer:
    """Echoes every byte back on 127.0.0.1; a half-close is answered by a close."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(DEADLINE)
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=DEADLINE)
        self.sock.close()
        for thread in self._threads:
            thread.join(timeout=DEADLINE)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "cloudflare"
    path.mkdir()
    return path


def roundtrip(port: int, payload: bytes) -> bytes:
    """Send payload, half-close, read everything back."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.settimeout(DEADLINE)

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        received = bytearray()
        while data := sock.recv(65536):
            received += data
        sender.join(timeout=DEADLINE)
    return bytes(received)


def test_bytes_flow_both_ways_through_tunnel_and_access(echo: EchoServer, registry: Path) -> None:
    tunnel = Proc(["tunnel", "--no-autoupdate", "--url", f"tcp://localhost:{echo.port}"], registry)
    access: Proc | None = None
    try:
        hostname = tunnel.wait_for(URL_RE).group(1)
        tunnel.wait_for(re.compile(r"Registered tunnel connection connIndex=0"))
        record = json.loads((registry / hostname).read_text())
        assert record["hostname"] == hostname and record["pid"] == tunnel.popen.pid

        access = Proc(["access", "tcp", "--hostname", hostname, "--url", "127.0.0.1:0"], registry)
        local = int(access.wait_for(LISTENER_RE).group(1))

        assert roundtrip(local, b"hello through the tunnel") == b"hello through the tunnel"
        big = os.urandom(2 * 1024 * 1024)
        assert roundtrip(local, big) == big
        # several connections at once
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda i=i: results.append(roundtrip(local, b"x%d" % i * 1000)))
            for i in range(5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=DEADLINE)
        assert sorted(results) == sorted(b"x%d" % i * 1000 for i in range(5))
        assert echo.accepted == 7
    finally:
        codes = [access.stop() if access else 0, tunnel.stop()]
    assert codes == [0, 0]
    assert not any(registry.iterdir()), "the tunnel removes its registry file on exit"
    assert any(
        "Initiating graceful shutdown due to signal terminated" in line for line in tunnel.lines
    )
    # the box, as cloudflared prints it
    box = [
        line.split(" INF ", 1)[1] for line in tunnel.lines if " INF +" in line or " INF |" in line
    ]
    assert box[1].startswith(
        "|  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):"
    )
    assert (
        box[0] == box[3]
        and set(box[0][1:-1]) == {"-"}
        and len(box[0]) == len(box[1]) == len(box[2])
    )


def test_aliases_sigint_and_stdout_is_quiet(echo: EchoServer, registry: Path) -> None:
    tunnel = Proc(
        ["tunnel", "--url", f"localhost:{echo.port}", "--loglevel", "info"], registry, use_path=True
    )
    access: Proc | None = None
    try:
        hostname = tunnel.wait_for(URL_RE).group(1)
        with socket.socket() as probe:  # a free port for the listener, as PeerHost would pick
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        access = Proc(
            [
                "access",
                "tcp",
                f"--tunnel-host=https://{hostname}",
                "--listener",
                f"127.0.0.1:{port}",
            ],
            registry,
            use_path=True,
        )
        assert int(access.wait_for(LISTENER_RE).group(1)) == port
        assert roundtrip(port, b"ping") == b"ping"
    finally:
        codes = [access.stop(signal.SIGINT) if access else 0, tunnel.stop(signal.SIGINT)]
    assert codes == [0, 0]
    assert (
        tunnel.stdout_text == "" and access is not None and access.stdout_text == ""
    )  # logs go to stderr
    assert any("signal interrupt" in line for line in tunnel.lines)


def test_access_to_unknown_hostname_fails(registry: Path) -> None:
    access = Proc(
        ["access", "tcp", "--hostname", "no-such-tunnel.trycloudflare.com", "--url", "127.0.0.1:0"],
        registry,
    )
    try:
        code = access.popen.wait(timeout=DEADLINE)
    finally:
        access.kill()
    assert code == 1
    assert any(
        "no-such-tunnel.trycloudflare.com" in line and " ERR " in line for line in access.lines
    )


def test_refuses_non_local_addresses_and_bad_command_lines(registry: Path) -> None:
    for args in (
        ["tunnel", "--url", "tcp://192.0.2.1:25565"],
        ["access", "tcp", "--hostname", "a.trycloudflare.com", "--url", "0.0.0.0:25565"],
        ["tunnel", "login"],
        ["access", "tcp", "--hostname", "a.trycloudflare.com"],
    ):
        proc = Proc(args, registry)
        try:
            code = proc.popen.wait(timeout=DEADLINE)
        finally:
            proc.kill()
        assert code == 2, (args, proc.lines)


def test_origin_down_closes_the_connection(registry: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]  # nothing listens there once closed
    tunnel = Proc(["tunnel", "--url", f"tcp://localhost:{dead_port}"], registry)
    access: Proc | None = None
    try:
        hostname = tunnel.wait_for(URL_RE).group(1)
        access = Proc(["access", "tcp", "--hostname", hostname, "--url", "127.0.0.1:0"], registry)
        local = int(access.wait_for(LISTENER_RE).group(1))
        assert roundtrip(local, b"anyone?") == b""
    finally:
        codes = [access.stop() if access else 0, tunnel.stop()]
    assert codes == [0, 0]
