"""How friends reach the host's game port: tunnel providers, and cloudflared's access side.

A provider turns the local game port into an address published on the lease:

* ``cloudflared``: a quick tunnel, ``cloudflared tunnel --url tcp://localhost:PORT``; its
  public hostname (``https://<words>.trycloudflare.com``) is read from its log. Each joiner
  runs ``cloudflared access tcp --hostname HOST --url 127.0.0.1:LOCALPORT`` (:class:`Access`)
  and points Minecraft at ``127.0.0.1:LOCALPORT``. The hostname changes on every start.
* ``direct``: an address the user gives (LAN, or a VPN such as Tailscale).
* ``none``: nothing is published (friends know where to connect).

More providers: :func:`register_provider`.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from peerhost_store.errors import PeerhostError

from .game import spawn

#: The quick tunnel's public name, as cloudflared logs it.
QUICK_TUNNEL = re.compile(r"https://([a-z0-9-]+\.trycloudflare\.com)\b")
#: ``cloudflared access tcp`` listens once it logs this.
ACCESS_LISTENING = re.compile(r"Start Websocket listener")
START_TIMEOUT = 60.0


class TunnelError(PeerhostError):
    """A tunnel would not start or died; the message says which and why."""


@dataclass(frozen=True)
class Published:
    """What goes on the lease: the address and how to reach it (``via``: the provider)."""

    address: str | None
    via: str


class Tunnel(Protocol):
    def start(self) -> Published:
        """Start forwarding; what to publish."""

    def alive(self) -> bool:
        """False once the tunnel died (the host then restarts it)."""

    def stop(self) -> None:
        """Stop forwarding (idempotent)."""


@dataclass(frozen=True)
class TunnelSettings:
    """What a provider may need: the game port, a given address, the cloudflared executable."""

    port: int
    address: str | None = None
    cloudflared: str = "cloudflared"
    log: Callable[[str], None] = lambda _: None


class _Process:
    """A helper process whose log lines (stderr and stdout) are read by a thread."""

    def __init__(self, command: list[str], log: Callable[[str], None], what: str) -> None:
        self.command = command
        self.log = log
        self.what = what
        self.tail: deque[str] = deque(maxlen=20)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._seen = threading.Condition()

    def start(self) -> None:
        try:
            self.proc = spawn(self.command, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise TunnelError(f"cannot run {self.command[0]!r} ({self.what}): {exc}; install "
                              "cloudflared or pick another tunnel (--tunnel direct|none)") from None
        threading.Thread(target=self._read, name=self.what, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\r\n")
            self.tail.append(line)
            self.log(line)
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first log line matching ``pattern``.

        Raises:
            TunnelError: it exited first, or ``timeout`` passed.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        with self._seen:
            while True:
                for line in self.lines[seen:]:
                    match = pattern.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                if not self.alive():
                    raise TunnelError(f"{self.what} exited with code {self.returncode()}: "
                                      + " | ".join(self.tail))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TunnelError(f"{self.what} did not report its address within "
                                      f"{timeout:g} s: " + " | ".join(self.tail))
                self._seen.wait(min(left, 0.5))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class CloudflaredTunnel:
    """A cloudflared quick tunnel to the game port."""

    def __init__(self, settings: TunnelSettings) -> None:
        self._proc = _Process(
            [settings.cloudflared, "tunnel", "--no-autoupdate", "--url",
             f"tcp://localhost:{settings.port}"], settings.log, "cloudflared tunnel")

    def start(self) -> Published:
        self._proc.start()
        try:
            match = self._proc.wait_for(QUICK_TUNNEL, START_TIMEOUT)
        except TunnelError:
            self._proc.stop()
            raise
        return Published(match.group(1), "cloudflared")

    def alive(self) -> bool:
        return self._proc.alive()

    def stop(self) -> None:
        self._proc.stop()


class DirectTunnel:
    """No forwarding: publish the address the user gave (LAN or VPN)."""

    def __init__(self, settings: TunnelSettings) -> None:
        if not settings.address:
            raise TunnelError("the direct tunnel needs --address HOST:PORT (what friends "
                              "connect to: a LAN or VPN address)")
        self.address = settings.address

    def start(self) -> Published:
        return Published(self.address, "direct")

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        pass


class NoTunnel:
    """Publish nothing."""

    def __init__(self, settings: TunnelSettings) -> None:
        pass

    def start(self) -> Published:
        return Published(None, "none")

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        pass


_PROVIDERS: dict[str, Callable[[TunnelSettings], Tunnel]] = {
    "cloudflared": CloudflaredTunnel,
    "direct": DirectTunnel,
    "none": NoTunnel,
}


def register_provider(name: str, factory: Callable[[TunnelSettings], Tunnel]) -> None:
    """Add (or replace) a tunnel provider."""
    _PROVIDERS[name] = factory


def providers() -> list[str]:
    return sorted(_PROVIDERS)


def make_tunnel(name: str, settings: TunnelSettings) -> Tunnel:
    """The provider ``name``.

    Raises:
        TunnelError: unknown provider, or its settings are incomplete.
    """
    factory = _PROVIDERS.get(name)
    if factory is None:
        raise TunnelError(f"unknown tunnel {name!r} (known: {', '.join(providers())})")
    return factory(settings)


class Access:
    """The joiner's side of a cloudflared tunnel: ``127.0.0.1:local_port`` leads to ``hostname``."""

    def __init__(self, cloudflared: str, hostname: str, local_port: int,
                 log: Callable[[str], None] = lambda _: None) -> None:
        self.hostname = hostname
        self.local_port = local_port
        self._proc = _Process([cloudflared, "access", "tcp", "--hostname", hostname, "--url",
                               f"127.0.0.1:{local_port}"], log, "cloudflared access")

    def start(self) -> None:
        """Start it and wait until it listens (its ``Start Websocket listener`` line).

        Raises:
            TunnelError: it exited or did not listen within the start timeout.
        """
        self._proc.start()
        try:
            self._proc.wait_for(ACCESS_LISTENING, START_TIMEOUT)
        except TunnelError:
            self._proc.stop()
            raise

    def alive(self) -> bool:
        return self._proc.alive()

    def stop(self) -> None:
        self._proc.stop()
