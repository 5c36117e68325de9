"""A stand-in for the ``cloudflared`` binary, for PeerHost's tests (stdlib only).

It accepts the two command lines PeerHost runs and really forwards TCP, on 127.0.0.1 only:

``cloudflared tunnel --url tcp://localhost:PORT`` (a quick tunnel)
    listens on an ephemeral 127.0.0.1 port, invents a ``<words>.trycloudflare.com``
    hostname, records hostname -> port in the registry folder, prints cloudflared's log
    lines (to stderr, as cloudflared does) including the box::

        2026-11-30T10:00:00Z INF +--------------------------------------------------------------------------------------------+
        2026-11-30T10:00:00Z INF |  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |
        2026-11-30T10:00:00Z INF |  https://word-word-word-word.trycloudflare.com                                             |
        2026-11-30T10:00:00Z INF +--------------------------------------------------------------------------------------------+

    then ``Registered tunnel connection connIndex=0 ...``, and forwards every accepted
    connection to 127.0.0.1:PORT.

``cloudflared access tcp --hostname HOST --url 127.0.0.1:LOCALPORT``
    (aliases: ``--tunnel-host``/``-T`` for ``--hostname``, ``--listener``/``-L`` for ``--url``;
    ``access`` may be spelled ``forward`` and ``tcp`` ``rdp``/``ssh``/``smb``, as in
    cloudflared) listens on 127.0.0.1:LOCALPORT (0: any free port) and forwards every
    connection to the port registered for HOST; logs
    ``INF Start Websocket listener host=127.0.0.1:LOCALPORT``. An unknown HOST is an error on
    stderr and exit status 1.

Other flags (``--no-autoupdate``, ``--loglevel info``, ``--protocol quic``, ...) are accepted
and ignored, before or after the subcommand. ``cloudflared --version`` prints a version line.

The registry folder comes from ``PEERHOST_FAKE_CLOUDFLARE_DIR`` (required): one JSON file per
hostname (``{"hostname", "port", "pid", "origin"}``), written atomically and removed on exit.
With ``PEERHOST_FAKE_ENV_DIR`` set it records its environment there (recorded_env.py).
SIGTERM and SIGINT end either mode cleanly (exit status 0), after the line
``INF Initiating graceful shutdown due to signal terminated ...`` (``interrupt`` for SIGINT).
``PEERHOST_FAKE_CLOUDFLARE_DELAY`` (seconds, default 0) delays the quick tunnel's box, to
test callers that wait for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # mypy reads the fakes as the package the tests import them from
    from fakes.recorded_env import record_environment
else:  # run as a script: this file's folder is on sys.path
    from recorded_env import record_environment

REGISTRY_ENV = "PEERHOST_FAKE_CLOUDFLARE_DIR"
DELAY_ENV = "PEERHOST_FAKE_CLOUDFLARE_DELAY"
VERSION = "2026.1.0"
BANNER = "Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):"
LOCAL_NAMES = {"localhost", "127.0.0.1"}

# Flags of cloudflared that take no value; any other flag takes one (unless written --f=v).
BOOL_FLAGS = {
    "--no-autoupdate",
    "--no-tls-verify",
    "--no-chunked-encoding",
    "--http2-origin",
    "--hello-world",
    "--post-quantum",
    "-pq",
    "--disable-chunked-encoding",
    "--bastion",
    "--socks5",
    "--proxy-dns",
    "--ui",
    "--short-lived-cert",
    "--quiet",
    "-q",
    "--help",
    "-h",
    "--version",
    "-v",
    "-V",
}
SUBCOMMANDS = {"tunnel", "access", "forward", "tcp", "rdp", "ssh", "smb", "run"}
HOSTNAME_FLAGS = {"--hostname", "--tunnel-host", "-T"}
URL_FLAGS = {"--url", "--listener", "-L"}

WORDS = [
    "amber",
    "apple",
    "arrow",
    "atlas",
    "basin",
    "beacon",
    "birch",
    "bold",
    "brave",
    "breeze",
    "brook",
    "cactus",
    "canyon",
    "cedar",
    "cliff",
    "clover",
    "comet",
    "copper",
    "coral",
    "crane",
    "creek",
    "crystal",
    "dawn",
    "delta",
    "desert",
    "dune",
    "eagle",
    "ember",
    "falcon",
    "fern",
    "field",
    "flint",
    "forest",
    "fox",
    "frost",
    "garden",
    "glacier",
    "granite",
    "grove",
    "harbor",
    "hazel",
    "heron",
    "hill",
    "island",
    "ivy",
    "jade",
    "juniper",
    "lake",
    "lantern",
    "lark",
    "maple",
    "marsh",
    "meadow",
    "mesa",
    "mint",
    "moss",
    "mountain",
    "oak",
    "ocean",
    "olive",
    "orchid",
    "otter",
    "pebble",
    "pine",
    "plain",
    "pond",
    "prairie",
    "quartz",
    "rain",
    "raven",
    "reef",
    "ridge",
    "river",
    "robin",
    "sage",
    "sand",
    "shore",
    "sierra",
    "slate",
    "snow",
    "spruce",
    "stone",
    "summit",
    "sun",
    "thistle",
    "tide",
    "timber",
    "trail",
    "valley",
    "willow",
    "wind",
    "wolf",
]


class UsageError(Exception):
    """A command line the fake (and cloudflared) would refuse."""


# -- logging (cloudflared's console format: RFC 3339 UTC time, level, message) ---------------


_log_lock = threading.Lock()


def log(level: str, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with _log_lock:
        sys.stderr.write(f"{stamp} {level} {message}\n")
        sys.stderr.flush()


def ascii_box(lines: list[str], padding: int = 2) -> list[str]:
    width = max(len(line) for line in lines)
    border = "+" + "-" * (width + 2 * padding) + "+"
    pad = " " * padding
    return [border, *("|" + pad + line.ljust(width) + pad + "|" for line in lines), border]


# -- command line -----------------------------------------------------------------------------


@dataclass
class Args:
    positional: list[str] = field(default_factory=list)
    flags: dict[str, str] = field(default_factory=dict)


def parse(argv: list[str]) -> Args:
    args = Args()
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("-") and token != "-":
            if "=" in token:
                name, value = token.split("=", 1)
            elif token in BOOL_FLAGS:
                name, value = token, "true"
            elif (
                i + 1 < len(argv)
                and not argv[i + 1].startswith("-")
                and argv[i + 1] not in SUBCOMMANDS
            ):
                name, value = token, argv[i + 1]
                i += 1
            else:
                name, value = token, "true"
            if name.startswith("-") and not name.startswith("--") and len(name) > 2:
                name = "-" + name  # urfave/cli accepts -flag as --flag
            args.flags[name] = value
        else:
            args.positional.append(token)
        i += 1
    return args


def flag(args: Args, names: set[str], env: str | None = None) -> str | None:
    for name in names:
        if name in args.flags:
            return args.flags[name]
    if env and os.environ.get(env):
        return os.environ[env]
    return None


def local_port(value: str, what: str) -> int:
    """The port of a local address: tcp://localhost:25565, 127.0.0.1:25565, localhost:25565."""
    text = value if "://" in value else "tcp://" + value
    parts = urlsplit(text)
    host = parts.hostname or ""
    if host not in LOCAL_NAMES:
        raise UsageError(f"{what} {value!r}: this fake only serves 127.0.0.1 / localhost")
    try:
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{what} {value!r}: bad port") from exc
    if port is None:
        raise UsageError(f"{what} {value!r}: needs a port")
    return port


def bare_hostname(value: str) -> str:
    text = value if "://" in value else "https://" + value
    host = urlsplit(text).hostname
    if not host:
        raise UsageError(f"bad hostname {value!r}")
    return host.lower()


# -- registry ---------------------------------------------------------------------------------


def registry_dir() -> Path:
    value = os.environ.get(REGISTRY_ENV)
    if not value:
        raise UsageError(f"{REGISTRY_ENV} is not set: the fake cloudflared needs a registry folder")
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def register(directory: Path, hostname: str, port: int, origin: str) -> Path:
    target = directory / hostname
    record = {"hostname": hostname, "port": port, "pid": os.getpid(), "origin": origin}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def unregister(target: Path) -> None:
    try:
        record = json.loads(target.read_text())
        if record.get("pid") == os.getpid():
            target.unlink()
    except (OSError, ValueError):
        pass


def lookup(directory: Path, hostname: str) -> int | None:
    try:
        record = json.loads((directory / hostname).read_text())
        return int(record["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def invent_hostname(directory: Path) -> str:
    for _ in range(100):
        name = "-".join(secrets.choice(WORDS) for _ in range(4)) + ".trycloudflare.com"
        if not (directory / name).exists():
            return name
    raise RuntimeError("could not invent an unused hostname")


# -- forwarding -------------------------------------------------------------------------------


class Forwarder:
    """Accept on a 127.0.0.1 listener; pipe each connection to a 127.0.0.1 port."""

    def __init__(
        self, listener: socket.socket, target_port: Callable[[], int | None], stop: threading.Event
    ) -> None:
        self.listener = listener
        self.target_port = target_port  # called per connection: int or None
        self.stop = stop
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stop.is_set():
                    break
                raise
            thread = threading.Thread(target=self._handle, args=(client,), daemon=True)
            self.threads.append(thread)
            thread.start()
        self.close()

    def _track(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.add(sock)

    def _handle(self, client: socket.socket) -> None:
        self._track(client)
        port = self.target_port()
        if port is None:
            log("ERR", 'failed to connect to origin error="tunnel not found"')
            self._close(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError as exc:
            log("ERR", f'Request failed error="dial tcp 127.0.0.1:{port}: {exc}"')
            self._close(client)
            return
        upstream.settimeout(None)
        self._track(upstream)
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        self._close(client)
        self._close(upstream)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)  # pass the half-close on

    def _close(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self.threads:
            thread.join(timeout=1)


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    sock.listen(64)
    return sock


def install_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        name = "interrupt" if signum == signal.SIGINT else "terminated"
        if not stop.is_set():
            log("INF", f"Initiating graceful shutdown due to signal {name} ...")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- the two modes ----------------------------------------------------------------------------


def run_quick_tunnel(args: Args) -> int:
    url = flag(args, {"--url"}, "TUNNEL_URL")
    if url is None:
        raise UsageError(
            "tunnel: --url tcp://localhost:PORT is required (this fake only does quick tunnels)"
        )
    origin_port = local_port(url, "--url")
    directory = registry_dir()
    stop = threading.Event()
    install_signals(stop)

    log("INF", "Thank you for trying Cloudflare Tunnel (a fake for tests: no uptime guarantee).")
    log("INF", "Requesting new quick Tunnel on trycloudflare.com...")
    listener = listen(0)
    port = listener.getsockname()[1]
    hostname = invent_hostname(directory)
    target = register(directory, hostname, port, url)
    try:
        delay = float(os.environ.get(DELAY_ENV) or 0)
        if delay > 0:
            stop.wait(delay)
        for line in ascii_box([BANNER, "https://" + hostname]):
            log("INF", line)
        log("INF", f"Version {VERSION} (fake cloudflared for PeerHost tests)")
        log(
            "INF", f"Fake edge listening on 127.0.0.1:{port}, forwarding to 127.0.0.1:{origin_port}"
        )
        log("INF", f"Starting tunnel tunnelID={uuid.uuid4()}")
        log(
            "INF",
            f"Registered tunnel connection connIndex=0 connection={uuid.uuid4()} event=0 "
            "ip=127.0.0.1 location=local protocol=quic",
        )
        forwarder = Forwarder(listener, lambda: origin_port, stop)
        serving = threading.Thread(target=forwarder.serve, daemon=True)
        serving.start()
        while not stop.is_set():
            stop.wait(0.2)
        serving.join(timeout=2)
        forwarder.close()
        log("INF", "Unregistered tunnel connection connIndex=0 event=0 ip=127.0.0.1")
    finally:
        unregister(target)
    return 0


def run_access_tcp(args: Args) -> int:
    raw_host = flag(args, HOSTNAME_FLAGS, "TUNNEL_SERVICE_HOSTNAME")
    raw_url = flag(args, URL_FLAGS, "TUNNEL_SERVICE_URL")
    if not raw_host:
        raise UsageError("access tcp: --hostname is required")
    if not raw_url:
        raise UsageError(
            "access tcp: --url 127.0.0.1:PORT is required (stdin/stdout mode is not faked)"
        )
    hostname = bare_hostname(raw_host)
    listen_port = local_port(raw_url, "--url")
    directory = registry_dir()
    if lookup(directory, hostname) is None:
        log(
            "ERR",
            f'failed to connect to origin error="unknown tunnel hostname {hostname}" host={hostname}',
        )
        return 1
    stop = threading.Event()
    install_signals(stop)
    try:
        listener = listen(listen_port)
    except OSError as exc:
        log("ERR", f'Error on Websocket listener error="listen tcp 127.0.0.1:{listen_port}: {exc}"')
        return 1
    log("INF", f"Start Websocket listener host=127.0.0.1:{listener.getsockname()[1]}")
    forwarder = Forwarder(listener, lambda: lookup(directory, hostname), stop)
    serving = threading.Thread(target=forwarder.serve, daemon=True)
    serving.start()
    while not stop.is_set():
        stop.wait(0.2)
    serving.join(timeout=2)
    forwarder.close()
    return 0


def main(argv: list[str]) -> int:
    record_environment("cloudflared")
    try:
        args = parse(argv)
        if not args.positional and ({"--version", "-v", "-V"} & set(args.flags)):
            print(f"cloudflared version {VERSION} (fake for PeerHost tests)")
            return 0
        words = args.positional
        if words[:1] == ["tunnel"] and len(words) <= 2 and words[1:] in ([], ["run"]):
            return run_quick_tunnel(args)
        if words[:1] in (["access"], ["forward"]) and words[1:2] in (
            ["tcp"],
            ["rdp"],
            ["ssh"],
            ["smb"],
        ):
            return run_access_tcp(args)
        raise UsageError(f"unsupported command line: cloudflared {' '.join(argv)}")
    except UsageError as exc:
        log("ERR", str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
