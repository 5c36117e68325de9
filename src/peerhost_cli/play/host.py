"""``phs host``: run the session's world on this machine under its lease.

1. Take the lease (or queue as standby and wait for it).
2. Pull the session head into the world; unsnapshotted local changes are snapshotted first
   and a history that diverged stops here, before anything is overwritten.
3. Start the server command and wait until it is ready.
4. Start the tunnel and publish its address on the lease.
5. Keep the lease renewed (:class:`~peerhost_store.sync.keeper.LeaseKeeper`), the only
   renewals while hosting (pushes use it too).
6. Every ``snapshot_minutes``, and when someone asks for a sync: a consistent snapshot
   (:mod:`.saving`), then a push. Without RCON it waits for quiet files, at most
   ``max_quiet_wait`` s, then saves through the server console (``console_save``); a server
   without either keeps the snapshot waiting, shown in the panel and on the lease
   (:mod:`.waiting`). When a sync request finds that the session head moved without this host
   (the owner rolled an area back on the coordinator, which asks for the sync), the server is
   stopped instead (it would save its loaded chunks over the change), the world is snapshotted
   and takes the change (a pull, or, when there was play since the last push, that play with
   the change on top: :meth:`~peerhost_store.repo.Repository.take_changes`), that is pushed,
   and the server starts again.
7. On Ctrl-C / SIGTERM or when the server exits: stop the server, snapshot, push, release.
8. If the lease is lost: stop the server at once, snapshot locally, never push, and say how to
   reconcile.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from peerhost_store.errors import PeerhostError
from peerhost_store.graph import is_ancestor
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.repo import Repository
from peerhost_store.sync.client import (
    CoordinatorClient,
    CoordinatorError,
    CoordinatorUnavailable,
    HeadMoved,
    Lease,
    LeaseHeld,
    LeaseLost,
)
from peerhost_store.sync.keeper import LeaseKeeper
from peerhost_store.sync.leasing import push_with_lease
from peerhost_store.sync.remotes import Remote, connect_remote, holder_name, meta_dir, save_lease
from peerhost_store.sync.reports import PushReport
from peerhost_store.sync.transfer import Diverged, pull
from peerhost_store.worldinfo import mods_in

from .config import HostConfig, load_properties
from .game import GameServer, forward_console
from .guards import STARTING, check_version, mods_warning, preflight, server_version
from .notify import Notifier
from .saving import (
    ConsoleSaveControl,
    QuietFilesControl,
    SaveControl,
    SaveControlError,
    save_control,
)
from .tunnel import Published, Tunnel, TunnelError, TunnelSettings, make_tunnel
from .view import HostStatus, View
from .waiting import GAME_KEY, SyncWait


def short_id(oid: ObjectId | None) -> str:
    return oid.hex()[:12] if oid is not None else "-"


#: How often the loop looks at the server, the lease and the clock.
TICK = 0.5
#: Without RCON, how soon to look again when the world files were not quiet.
QUIET_RETRY = 5.0
#: How often a standby asks for the lease.
STANDBY_POLL = 1.0
#: Seconds a server that lost the lease gets to stop before it is killed.
LOST_STOP_TIMEOUT = 10.0


class HostingEnded(PeerhostError):
    """Hosting ended without the final push: the lease was lost, or the session moved.

    Attributes:
        kept: the local snapshot holding the world as this host left it.
    """

    def __init__(self, message: str, kept: str | None) -> None:
        self.kept = kept
        super().__init__(message)


class LostLease(HostingEnded):
    """The lease expired or another holder fenced this one out while hosting."""


@dataclass
class Stop:
    """Why the loop ended; ``take``: the session moved on the coordinator (an area
    rollback), so the server stops, the world takes the change, and the server starts again."""

    reason: str
    take: bool = False


class Host:
    """One hosting run of a world.

    Args:
        repo: the world and its store.
        remote: the session to host.
        config: the settings.
        view: where lines and status go.
        stop: set from outside (signals) to end hosting gracefully.
        standby: queue for the lease instead of failing when it is held.
        lease: a lease already taken (``phs join --standby``), with when it was asked for.
    """

    def __init__(self, repo: Repository, remote: Remote, config: HostConfig, view: View,
                 stop: threading.Event, *, standby: bool = False,
                 lease: tuple[Lease, float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.repo = repo
        self.remote = remote
        self.config = config
        self.view = view
        self.stop = stop
        self.standby = standby
        self.clock = clock
        self.holder = config.holder or holder_name()
        self.server_dir = config.server_dir or repo.world.parent
        props = load_properties(self.server_dir / "server.properties")
        self.port = config.port or props.port
        self.saver: SaveControl = save_control(props, config.quiet_seconds, view.event)
        #: Without RCON, a server that reads its console: the fallback past max_quiet_wait
        #: (set once the server runs; dropped when it does not answer).
        self.console_save = config.console_save and isinstance(self.saver, QuietFilesControl)
        self._console: ConsoleSaveControl | None = None
        saving = self.saver.kind + (f", then the server console after {config.max_quiet_wait:g} s"
                                    if self.console_save else "")
        self.status = HostStatus(remote.session, self.holder, saving=saving)
        self._lease = lease
        self.keeper: LeaseKeeper | None = None
        self._address: str | None = None
        self._game: dict[str, Any] = {}
        #: What the lease says of the game: the version to join with, the mods (set after the
        #: pull, when the world is the one this host runs).
        self._game_info: dict[str, Any] = {}
        self.version = server_version(config, self.server_dir)
        self._saw_version = False
        repo.server_dir = self.server_dir  # the mods each snapshot records
        self.notify = Notifier(config.webhook, log=view.event)
        #: Someone else hosted before this run (it took over as standby): hosting moved.
        self._moved = lease is not None
        self._announced: str | None = None  # the address the webhook was last told
        self._push_failing = False
        #: The session head as this host last left it (its last push, or what it pulled).
        self._session_head: ObjectId | None = None
        self._wait: SyncWait | None = None
        self._wait_started = 0.0

    # -- the run --------------------------------------------------------------------------

    def run(self) -> int:
        """Host until stopped; 0 after a clean hand-back.

        Raises:
            LeaseHeld: someone else hosts (without ``standby``).
            Diverged: the world's history and the session's diverged (nothing overwritten).
            LostLease, HostingEnded: hosting ended without the final push (kept locally).
        """
        with self.view.live(self.status), connect_remote(self.remote) as client:
            if self._lease is None:  # a standby checked before it queued (phs join --standby)
                self.preflight()
            lease, sent = self._lease or self._take_lease(client)
            if lease is None:
                return 130  # stopped while waiting as standby
            self.status.fencing = lease.fencing
            # Marked as the host's: phs lock acquire in this world must not take it over.
            save_lease(meta_dir(self.repo), self.remote, {
                "fencing": lease.fencing, "holder": lease.holder, "ttl": lease.ttl, "host": True})
            keeper = self.keeper = LeaseKeeper(lambda: connect_remote(self.remote), lease, sent,
                                               clock=self.clock, log=self.view.event)
            self.status.lease_left = keeper.seconds_left
            keeper.start()
            try:
                self.view.event(f"took the lease of session {self.remote.session}: fencing "
                                f"{lease.fencing}, ttl {lease.ttl:g} s")
                self._prepare(client)
                self._play(client)
            except LostLease:
                raise
            except BaseException:
                # Nothing is running any more: let the next host in without waiting for expiry.
                keeper.stop()
                with suppress(CoordinatorError):
                    client.release(lease.fencing)
                raise
            finally:
                keeper.stop()
                save_lease(meta_dir(self.repo), self.remote, None)
                self.notify.close()
        return 0

    def preflight(self) -> None:
        """Check what hosting needs on this machine, before the lease (:mod:`.guards`)."""
        for note in preflight(self.config, self.server_dir, self.repo.world, self.port,
                              self.repo.game()):
            self.view.event(note)

    def _check_game(self) -> None:
        """After the pull, before the server starts: the session's world against this
        server's version, and its mods against those of the last host."""
        world = self.repo.game()
        note = check_version(world, self.version, upgrade=self.config.upgrade)
        if note:
            self.view.event(note)
        mods = mods_in(self.server_dir)
        last = self._last_game()
        if last is not None:
            warning = mods_warning(last[1], mods, last[0])
            if warning:
                self.view.event(f"warning: {warning}")
        version = self.version.name if self.version and self.version.name else world.get("version")
        self._game_info = {k: v for k, v in (
            ("version", version),
            ("data_version", (self.version.data_version if self.version else None)
             or world.get("data_version")),
            ("mods", {"count": len(mods), "digest": hash_bytes("\n".join(mods).encode()).hex()[:16]}
             if mods else None)) if v is not None}

    def _last_game(self) -> tuple[str, dict[str, Any]] | None:
        """Who made the newest snapshot (a few back at most) that recorded mods, and its game."""
        oid = self.repo.head()
        for _ in range(20):
            if oid is None:
                return None
            snap = self.repo.read_snapshot(oid)
            if "mods" in snap.game:
                return f"{snap.author}@{snap.host}", dict(snap.game)
            oid = snap.parents[0] if snap.parents else None
        return None

    def _console_line(self, line: str) -> None:
        """A server console line: shown, and its version compared once it says it."""
        self.view.line(line)
        if self._saw_version:
            return
        match = STARTING.search(line)
        if match is None:
            return
        self._saw_version = True
        world = self.repo.game().get("version")
        if self.version is None and isinstance(world, str) and match.group(1) != world:
            self.view.event(f"warning: the server says it is Minecraft {match.group(1)} and the "
                            f"world was saved by {world}: set game_version in peerhost.toml so "
                            "that phs can refuse a downgrade or an unasked upgrade before start")

    def _take_lease(self, client: CoordinatorClient) -> tuple[Lease | None, float]:
        queued = False
        while True:
            current = client.lease_status().lease
            mine = current is not None and current.holder == self.holder
            if current is not None and not self.standby:
                raise LeaseHeld("lease_held", f"{current.holder} (member {current.member}) hosts "
                                f"session {self.remote.session} now, lease {current.fencing} for "
                                f"{current.expires_in:.0f} s more; join them (phs join), or "
                                f"phs host --standby to take over when they leave", 409,
                                {"lease": dataclasses.asdict(current)})
            # Never ask while our own name holds it: the coordinator would re-grant it and
            # fence out the phs host that holds it (maybe still running elsewhere).
            if not mine:
                sent = self.clock()
                got = client.standby(self.holder, self.config.ttl) if self.standby else \
                    client.acquire(self.holder, self.config.ttl)
                if isinstance(got, Lease):
                    return got, sent
                if not queued:
                    self.view.event(f"queued as standby (position {got}); hosting starts when "
                                    f"{current.holder if current else 'the host'} leaves")
                    queued = self._moved = True
            self.status.phase = "standby"
            if self.stop.wait(STANDBY_POLL):
                return None, 0.0

    def _prepare(self, client: CoordinatorClient) -> None:
        """Step 2: the world becomes the session head; local-only work is pushed."""
        self.status.phase = "pulling"
        try:
            report = pull(self.repo, client)
        except Diverged as exc:
            ours = exc.local.hex()[:12] if exc.local else None
            self.notify.send(f"histories diverged: {self.holder} cannot host "
                             f"{self.remote.session}, its world has play the session lacks and "
                             "the session moved on; nothing was overwritten (they pick a world "
                             "with phs pull --keep theirs|ours)")
            raise HostingEnded(
                f"this world and session {self.remote.session} have diverged: the session moved "
                f"on (to {exc.remote.hex()[:12] if exc.remote else '-'}) since this world's last "
                f"push, and this world has play the session lacks (local snapshot {ours}). "
                f"Nothing was overwritten or pushed. Pick a world with phs pull --keep theirs "
                f"(the session's) or --keep ours (this one), then phs host again; both "
                f"histories stay", ours) from None
        if report.safety is not None:
            self.view.event(f"unsnapshotted changes in the world were kept in snapshot "
                            f"{report.safety.hex()[:12]} before pulling")
        self.view.event({
            "empty": "the session has no snapshot yet: this world becomes its first",
            "up-to-date": "the world is the session head",
            "fast-forward": f"pulled the session head {report.head.hex()[:12] if report.head else '-'}"
                            f" ({report.objects_received} objects)",
            "ahead": "this world has snapshots the session lacks: pushing them",
        }[report.outcome])
        self._check_game()
        self._snapshot_and_push(client, "before hosting")

    def _play(self, client: CoordinatorClient) -> None:
        while True:
            ended = self._run_server(client)
            if not ended.take:
                return
            # The server and tunnel are stopped: the world takes the change, then again.

    def _run_server(self, client: CoordinatorClient) -> Stop:
        """Steps 3 to 7: start the server, host, and stop (or take a change and say so)."""
        assert self.keeper is not None
        self.status.phase = "starting the server"
        server = GameServer(self.config.server, self.server_dir, self.port, self._console_line)
        tunnel: Tunnel | None = None
        try:
            server.start()
            # The server holds session.lock from now on: this host's own snapshots pause its
            # saving (or wait for quiet files), so they may read the world it has open.
            self.repo.check_world = False
            self.view.event(f"started the server (pid {server.pid}) in {self.server_dir}")
            if self.console_save:
                self._console = ConsoleSaveControl(server)
            forward_console(server, self.stop)
            try:
                server.wait_ready(self.config.ready_timeout, self.stop)
            except InterruptedError:
                ended = Stop("stopped while the server was starting")
            else:
                self.view.event(f"the server is ready on port {self.port}")
                tunnel = self._start_tunnel()
                self.status.phase = "hosting"
                ended = self._loop(client, server, tunnel)
            if ended.take:
                self._take_session(client, server, tunnel)
                return ended
        except BaseException as exc:
            self._abort(server, tunnel, exc)
            raise
        self._finish(client, server, tunnel, ended)
        return ended

    def _start_tunnel(self) -> Tunnel:
        assert self.keeper is not None
        tunnel = make_tunnel(self.config.tunnel, TunnelSettings(
            self.port, self.config.address, self.config.cloudflared, log=lambda _: None))
        published: Published = tunnel.start()
        self.status.address, self.status.via = published.address, published.via
        self._address = published.address
        self._game = {"tunnel": published.via, "port": self.port, **self._game_info}
        self._publish()
        if published.address:
            self.view.event(f"published {published.address} ({published.via}); friends run: "
                            f"phs join")
            self._announce(published.address)
        return tunnel

    def _announce(self, address: str) -> None:
        version = self._game_info.get("version")
        playing = f" (Minecraft {version})" if version else ""
        if self._announced is not None:
            text = (f"hosting moved: {self.holder}'s address for {self.remote.session} is now "
                    f"{address} (its tunnel restarted)")
        elif self._moved:
            text = f"hosting moved: {self.holder} now hosts {self.remote.session} at {address}{playing}"
        else:
            text = f"{self.holder} now hosts {self.remote.session} at {address}{playing}"
        self._announced = address
        self.notify.send(text + "; friends run phs join")

    def _loop(self, client: CoordinatorClient, server: GameServer, tunnel: Tunnel) -> Stop:
        assert self.keeper is not None
        keeper = self.keeper
        interval = self.config.snapshot_minutes * 60
        due = self.clock() + interval
        owed: str | None = None  # why a snapshot is owed and not taken yet
        retry_at = 0.0
        while True:
            if self.stop.is_set():
                return Stop("stopped")
            code = server.returncode()
            if code is not None:
                return Stop(f"the server exited (code {code})")
            if keeper.lost is not None:
                raise self._lost(server, tunnel, keeper.lost)
            if not tunnel.alive():
                self.view.event("the tunnel died; starting a new one")
                tunnel.stop()
                tunnel = self._start_tunnel()
            if keeper.sync_requested.is_set():
                keeper.sync_requested.clear()
                if self._session_moved(client):
                    return Stop("the session head moved on the coordinator", take=True)
                owed, retry_at = "sync requested", 0.0
            elif owed is None and self.clock() >= due:
                owed = "snapshot due"
            if owed is not None and self.clock() >= retry_at:
                if self._live_sync(client, server, tunnel, owed):
                    owed, due = None, self.clock() + interval
                else:
                    retry_at = self.clock() + min(QUIET_RETRY, max(TICK, self.config.max_quiet_wait))
            keeper.changed.wait(TICK)
            keeper.changed.clear()

    def _session_moved(self, client: CoordinatorClient) -> bool:
        """Whether the session head is no longer what this host left it at: someone changed
        it on the coordinator (an area rollback asks the host to sync for this)."""
        try:
            head = client.head().head
        except CoordinatorError:
            return False  # unreachable: the next sync request asks again
        return head is not None and self._session_head is not None and head != self._session_head

    def _take_session(self, client: CoordinatorClient, server: GameServer,
                      tunnel: Tunnel | None) -> None:
        """The session head moved on the coordinator while this host played: stop the
        server (so it cannot save over the change), snapshot, take the change into the world
        (keeping the play since the last push where the change did not touch it), push."""
        assert self.keeper is not None
        self.status.phase = "taking the session's change"
        self.view.event("the session head moved on the coordinator (a rollback?): stopping the "
                        "server to take it into the world, then starting it again")
        self.notify.send(f"{self.holder} restarts the server of {self.remote.session} to take "
                         "a change made on the coordinator (a rollback)")
        self._stop_everything(server, tunnel, self.config.stop_timeout)
        if self.keeper.lost is not None:
            raise self._lost(None, None, self.keeper.lost)
        self._snapshot("hosting: before taking the session's change")
        base = self._session_head
        try:
            report = pull(self.repo, client)
            self.view.event(f"pulled the session head {short_id(report.head)}")
        except Diverged as exc:
            # Play since the last push: keep it, and take the session's change on top.
            if exc.remote is None or base is None or \
                    not is_ancestor(self.repo.store.objects, base, exc.remote):
                raise self._ended(None, None, f"the session head moved without this host and "
                                  f"not on top of its last push: {exc}") from None
            result = self.repo.take_changes(exc.remote, base)
            self.view.event(f"took the session's change on top of the play since the last "
                            f"push: snapshot {short_id(result.oid)}")
        self._push(client, None, None)

    def _live_sync(self, client: CoordinatorClient, server: GameServer, tunnel: Tunnel,
                   why: str) -> bool:
        """Step 6; False while the snapshot has to wait (try again soon)."""
        saver = self._saver_now(why)
        if saver is None:
            return False
        try:
            with saver.paused():
                self._snapshot(f"hosting ({why})")
        except SaveControlError as exc:
            if saver is self._console:
                self._console = None
                self.view.event(f"{exc}; phs will not type on it again and waits for quiet files")
            else:
                self.view.event(f"could not pause saving: {exc}; trying again later")
            return False
        self._set_wait(None)
        self._push(client, server, tunnel)
        return True

    def _saver_now(self, why: str) -> SaveControl | None:
        """How to snapshot now, or None: wait (said in the panel and on the lease)."""
        if self.saver.ready(self.repo.world):
            return self.saver
        wait = self._wait
        if wait is None or wait.reason != why:
            if wait is None:
                self._wait_started = self.clock()
            self.view.event(f"{why}: waiting for quiet files (unchanged for "
                            f"{self.config.quiet_seconds:g} s)")
            self._set_wait(wait := SyncWait(why, time.time(), wait.overdue if wait else False))
        waited = self.clock() - self._wait_started
        if waited < self.config.max_quiet_wait:
            return None
        if self._console is not None:
            self.view.event(f"waited {waited:.0f} s for quiet files: saving through the server "
                            "console (save-off, save-all flush)")
            return self._console
        if not wait.overdue:
            self.view.event(f"waited {waited:.0f} s for quiet files; with no RCON and no console "
                            "save phs cannot pause the server, so it keeps waiting (enable RCON "
                            "in server.properties, or console_save in peerhost.toml)")
            self._set_wait(replace(wait, overdue=True))
        return None

    def _set_wait(self, wait: SyncWait | None) -> None:
        if wait != self._wait:
            self._wait = self.status.wait = wait
            self._publish()

    def _publish(self) -> None:
        """The address, the tunnel and any wait, on the lease with the next renewal (now)."""
        assert self.keeper is not None
        game = dict(self._game)
        if self._wait is not None:
            game[GAME_KEY] = self._wait.to_json()
        self.keeper.publish(self._address, game)

    # -- snapshots and pushes -------------------------------------------------------------

    def _snapshot(self, message: str) -> str:
        result = self.repo.snapshot(message)
        short = result.oid.hex()[:12]
        self.status.last_snapshot, self.status.last_snapshot_at = short, time.time()
        if result.created:
            self.view.event(f"snapshot {short}: {result.new_objects} new objects "
                            f"({result.seconds:.1f} s)")
        return short

    def _push(self, client: CoordinatorClient, server: GameServer | None,
              tunnel: Tunnel | None) -> PushReport | None:
        """Push the local head under the lease; None when the coordinator is unreachable."""
        assert self.keeper is not None
        try:
            report, _ = push_with_lease(self.repo, client, keeper=self.keeper,
                                        holder=self.holder)
        except CoordinatorUnavailable as exc:
            self.view.event(f"push failed: {exc}; the next one will send it")
            if not self._push_failing:  # once per outage, not once per try
                self._push_failing = True
                self.notify.send(f"sync failed: {self.holder} cannot reach the coordinator to "
                                 f"push {self.remote.session} ({exc.reason}); it keeps hosting "
                                 "and tries again")
            return None
        except LeaseLost as exc:
            raise self._lost(server, tunnel, f"the coordinator refused the push: {exc.message}") from exc
        except (HeadMoved, Diverged) as exc:
            raise self._ended(server, tunnel, f"the session head moved without this host "
                              f"(a rollback on the coordinator?): {exc}") from exc
        self._session_head = report.head
        if self._push_failing:
            self._push_failing = False
            self.notify.send(f"{self.holder} reached the coordinator again: "
                             f"{self.remote.session} is in sync")
        if not report.up_to_date:
            self.status.pushes += 1
            self.status.last_push_at = time.time()
            self.status.bytes_sent += report.wire.sent
            self.view.event(f"pushed {report.head.hex()[:12]}: {report.objects_sent} objects, "
                            f"{report.wire.sent / 1024:.0f} KiB sent")
        return report

    def _snapshot_and_push(self, client: CoordinatorClient, why: str) -> None:
        self._snapshot(why)
        self._push(client, None, None)

    # -- endings --------------------------------------------------------------------------

    def _finish(self, client: CoordinatorClient, server: GameServer, tunnel: Tunnel | None,
                ended: Stop) -> None:
        """Step 7: a clean hand-back."""
        assert self.keeper is not None
        self.view.event(f"{ended.reason}: stopping the server, then the final snapshot and push")
        self.status.phase = "stopping"
        self._stop_everything(server, tunnel, self.config.stop_timeout)
        if self.keeper.lost is not None:
            raise self._lost(None, None, self.keeper.lost)
        self._snapshot("hosting ended")
        for attempt in range(3):
            if self._push(client, None, None) is not None:
                break
            if self.keeper.lost is not None:
                raise self._lost(None, None, self.keeper.lost)
            time.sleep(2 + 2 * attempt)
        else:
            self.notify.send(f"sync failed: {self.holder} stopped hosting {self.remote.session} "
                             "but its final push did not reach the coordinator; the world is "
                             "kept on its machine until it runs phs push")
            raise HostingEnded("the final push did not reach the coordinator; the world is "
                               "kept in the local snapshot: run phs push when it is back",
                               self.status.last_snapshot)
        self.keeper.stop()
        self.notify.send(f"{self.holder} stopped hosting {self.remote.session}; its world is "
                         f"pushed (snapshot {self.status.last_snapshot})")
        try:
            client.release(self.keeper.fencing)
            self.view.event("released the lease")
        except CoordinatorError as exc:
            self.view.event(f"could not release the lease ({exc}); it lapses by itself")

    def _stop_everything(self, server: GameServer | None, tunnel: Tunnel | None,
                         timeout: float = LOST_STOP_TIMEOUT) -> None:
        # The tunnel first: nobody should join a server that is going away.
        if tunnel is not None:
            tunnel.stop()
        if server is not None:
            server.stop(min(timeout, self.config.stop_timeout))
            self.repo.check_world = True

    def _lost(self, server: GameServer | None, tunnel: Tunnel | None, why: str) -> LostLease:
        """Step 8: stop now, keep the world locally, never push."""
        self.status.phase = "lease lost"
        self.view.event(f"LEASE LOST: {why}; stopping the server now")
        self.notify.send(f"sync failed: {self.holder} lost the lease of {self.remote.session} "
                         "and stopped its server; its last play is kept on its machine, not "
                         "pushed")
        self._stop_everything(server, tunnel)
        kept = self._snapshot("hosting lost the lease: kept locally, not pushed")
        return LostLease(
            f"lost the lease of session {self.remote.session}: {why}. The server was stopped "
            f"and the world kept in local snapshot {kept}; it was not pushed, because the "
            f"session may have moved on without it. When the session is free, phs host (or "
            f"phs pull) says whether it did; then phs pull --keep theirs|ours picks a world, "
            f"and both histories stay.", kept)

    def _ended(self, server: GameServer | None, tunnel: Tunnel | None, why: str) -> HostingEnded:
        self.notify.send(f"histories diverged: the head of {self.remote.session} moved without "
                         f"its host {self.holder} (a rollback?); it stopped its server and keeps "
                         "its world on its machine, not pushed")
        self._stop_everything(server, tunnel)
        kept = self._snapshot("hosting ended: the session moved; kept locally, not pushed")
        return HostingEnded(f"{why}. The server was stopped and the world kept in local "
                            f"snapshot {kept}; it was not pushed.", kept)

    def _abort(self, server: GameServer, tunnel: Tunnel | None, exc: BaseException) -> None:
        """Anything unexpected (including Ctrl-C during start-up): leave nothing running."""
        if isinstance(exc, HostingEnded):
            return  # stopped already
        if tunnel is not None:
            tunnel.stop()
        if server.returncode() is None and server.pid is not None:
            server.stop(self.config.stop_timeout)
        self.repo.check_world = True


def run_host(world: Path, remote: Remote, config: HostConfig, view: View, stop: threading.Event,
             *, standby: bool = False) -> int:
    """Open the world's repository and host it (see :class:`Host`)."""
    with Repository.open(world) as repo:
        return Host(repo, remote, config, view, stop, standby=standby).run()


__all__ = ["Host", "HostingEnded", "LeaseHeld", "LostLease", "TunnelError", "run_host"]
