"""``phs join``: find the session's host and connect to it, following it when it changes.

The host publishes its address on the lease. A cloudflared address needs the joiner's side of
the tunnel, ``cloudflared access tcp`` on a local port, which Minecraft then connects to; a
direct address is used as it is. With ``--standby`` the joiner also volunteers as the next
host: it queues for the lease and, when it gets it, hosts (:class:`~.host.Host`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from peerhost_store.sync.client import CoordinatorClient, CoordinatorUnavailable, Lease

from .tunnel import Access, TunnelError
from .view import View
from .waiting import SyncWait

#: How often the joiner looks at the lease.
POLL = 1.0

Connect = Callable[[], AbstractContextManager[CoordinatorClient]]
#: Called when a standby gets the lease: hosts, returns the exit code.
BecomeHost = Callable[[Lease, float], int]


class Follower:
    """Keeps ``127.0.0.1:local_port`` leading to the current host (cloudflared), or tells
    where to connect (direct)."""

    def __init__(self, view: View, local_port: int, cloudflared: str) -> None:
        self.view = view
        self.local_port = local_port
        self.cloudflared = cloudflared
        #: (holder, address, via) last followed; None before the first look.
        self.target: tuple[str | None, str | None, str | None] | None = None
        self.access: Access | None = None
        #: The host's owed snapshot last said (a sync someone asked for, waiting for quiet files).
        self.wait: SyncWait | None = None

    def follow(self, lease: Lease | None) -> None:
        """Adjust to the lease now on the coordinator."""
        via = lease.game.get("tunnel") if lease is not None and isinstance(lease.game, dict) else None
        target = (lease.holder if lease else None, lease.address if lease else None, via)
        if target == self.target and (self.access is None or self.access.alive()):
            self._say_wait(lease)
            return
        changed = target != self.target
        self.close()
        _, address, via = target
        if address and via == "cloudflared":
            access = Access(self.cloudflared, address, self.local_port)
            try:
                access.start()
            except TunnelError as exc:
                self.view.event(f"cannot reach {address}: {exc}; trying again")
                self.target = None  # so the next look starts it again
                return
            self.access = access
        self.target = target
        if changed:
            self._announce(lease, target)
        self._say_wait(lease)

    def _say_wait(self, lease: Lease | None) -> None:
        wait = SyncWait.from_lease(lease)
        if wait == self.wait:
            return
        if lease is not None and wait is not None:
            self.view.event(f"{lease.holder}: {wait.describe()}")
        elif lease is not None:
            self.view.event(f"{lease.holder} is no longer waiting for quiet files")
        self.wait = wait

    def _announce(self, lease: Lease | None, target: tuple[str | None, str | None, str | None]) -> None:
        holder, address, via = target
        game = lease.game if lease is not None and isinstance(lease.game, dict) else {}
        version = game.get("version")
        # The lease is any member's JSON: only a short plain version name is repeated.
        what = (f" Minecraft {version}" if isinstance(version, str) and len(version) <= 32
                and version.isprintable() else "")
        if lease is None:
            self.view.event("nobody hosts the session right now; waiting for a host")
        elif not address:
            self.view.event(f"{holder} hosts{what} but published no address yet")
        elif via == "cloudflared":
            self.view.event(f"{holder} hosts{what} at {address} (cloudflared); point Minecraft "
                            f"at 127.0.0.1:{self.local_port}")
        else:
            self.view.event(f"{holder} hosts{what}; point Minecraft at {address}")

    def close(self) -> None:
        if self.access is not None:
            self.access.stop()
            self.access = None


def run_join(connect: Connect, view: View, stop: threading.Event, *, local_port: int,
             cloudflared: str, standby: tuple[str, float, BecomeHost] | None = None,
             clock: Callable[[], float] = time.monotonic) -> int:
    """Follow the host until ``stop``; with ``standby = (holder, ttl, become_host)`` also
    queue for the lease and host when it comes (returns what hosting returned)."""
    follower = Follower(view, local_port, cloudflared)
    unreachable = False
    position: int | None = None
    try:
        with connect() as client:
            while not stop.is_set():
                try:
                    current = client.lease_status().lease
                    if standby is not None:
                        holder, ttl, become_host = standby
                        # Never ask while our own name holds it: that would fence ourselves.
                        if current is None or current.holder != holder:
                            sent = clock()
                            got = client.standby(holder, ttl)
                            if isinstance(got, Lease):
                                follower.close()
                                view.event("the lease came to this standby: hosting now")
                                return become_host(got, sent)
                            if got != position:
                                view.event(f"standby for the lease, position {got}: this "
                                           "machine hosts when the host leaves")
                                position = got
                    follower.follow(current)
                    if unreachable:
                        view.event("the coordinator answers again")
                    unreachable = False
                except CoordinatorUnavailable as exc:
                    if not unreachable:
                        view.event(f"{exc}; retrying (a game connection already made "
                                   "keeps working)")
                    unreachable = True
                stop.wait(POLL)
    finally:
        follower.close()
    return 0
