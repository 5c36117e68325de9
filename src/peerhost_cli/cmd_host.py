"""phs host, phs join: the play loop (see :mod:`peerhost_cli.play`)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from .common import Parents, Subparsers, UsageError, token_from

if TYPE_CHECKING:
    from peerhost_store.sync.remotes import Remote

    from .play.config import HostConfig

DEFAULT_JOIN_PORT = 25565


def _host_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", default=None,
                   help="the remote naming the session (default: origin, or the only one)")
    g = p.add_argument_group("hosting (flags override peerhost.toml beside the world)")
    g.add_argument("--server", default=None, metavar="COMMAND",
                   help="the server command, e.g. \"java -jar server.jar nogui\"")
    g.add_argument("--server-dir", type=Path, default=None,
                   help="folder the server runs in (default: the world's parent)")
    g.add_argument("--tunnel", default=None, metavar="PROVIDER",
                   help="how friends reach you: cloudflared (default), direct or none")
    g.add_argument("--address", default=None, help="with --tunnel direct: HOST:PORT to publish")
    g.add_argument("--game-port", type=int, default=None,
                   help="the game port (default: server-port of server.properties, else 25565)")
    g.add_argument("--snapshot-minutes", type=float, default=None,
                   help="snapshot and push this often (default 10)")
    g.add_argument("--ttl", type=float, default=None, help="lease seconds (default 60)")
    g.add_argument("--holder", default=None, help="name on the lease (default: user@host)")
    g.add_argument("--cloudflared", default=None, help="the cloudflared executable")
    g.add_argument("--game-version", default=None, metavar="VERSION",
                   help="the server's Minecraft version (1.21.4) when its jar does not say")
    g.add_argument("--upgrade", action="store_true", default=None,
                   help="host even though the server is newer than the world: it upgrades "
                        "the world (friends then need the new version too)")


def register(commands: Subparsers, parents: Parents) -> None:
    p = commands.add_parser("host", parents=parents("world"),
                            help="host the session: lease, pull, run the server, tunnel, push")
    p.add_argument("folder", nargs="?", type=Path, default=None, metavar="WORLD",
                   help="the world folder (default: -C, else the current folder)")
    p.add_argument("--standby", action="store_true",
                   help="if someone hosts, queue and take over when they leave")
    _host_options(p)
    p.set_defaults(func=run_host)

    p = commands.add_parser("join", parents=parents("world"),
                            help="connect to whoever hosts the session, following host changes")
    p.add_argument("--url", default=None, help="a coordinator URL (without a world folder)")
    p.add_argument("--session", default=None, help="with --url: the session")
    p.add_argument("--token", default=None, help="with --url: the token (default: $PHS_TOKEN)")
    p.add_argument("--port", type=int, default=DEFAULT_JOIN_PORT,
                   help="local port Minecraft connects to (default %(default)s)")
    p.add_argument("--standby", action="store_true",
                   help="also volunteer as the next host (needs a world: -C WORLD)")
    _host_options(p)
    p.set_defaults(func=run_join_command)


def host_config(world: Path, args: argparse.Namespace) -> HostConfig:
    from .play.config import CONFIG_FILE, load_host_config, split_command

    config = load_host_config(world.parent / CONFIG_FILE)
    return config.with_overrides(
        server=None if args.server is None else split_command(args.server, "--server"),
        server_dir=args.server_dir, tunnel=args.tunnel, address=args.address,
        port=args.game_port, snapshot_minutes=args.snapshot_minutes, ttl=args.ttl,
        holder=args.holder, cloudflared=args.cloudflared,
        remote=args.remote, game_version=args.game_version, upgrade=args.upgrade)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM (SIGBREAK on Windows); a second Ctrl-C interrupts."""
    stop = threading.Event()

    def graceful(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    names = ["SIGINT", "SIGTERM", "SIGBREAK"]
    previous = {}
    for name in names:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, graceful)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_host(args: argparse.Namespace) -> int:
    from peerhost_store.repo import Repository
    from peerhost_store.sync.remotes import meta_dir, pick_remote

    from .play.host import Host
    from .play.view import View

    world = (args.folder or args.world).resolve()
    with Repository.open(world) as repo:
        config = host_config(repo.world, args)
        remote = pick_remote(meta_dir(repo), config.remote)
        with stop_on_signals() as stop:
            return Host(repo, remote, config, View(), stop, standby=args.standby).run()


def _join_remote(args: argparse.Namespace) -> Remote | None:
    from peerhost_store.sync.remotes import Remote

    if args.url is not None:
        if args.session is None:
            raise UsageError("--url needs --session (and a token: --token or $PHS_TOKEN)")
        return Remote("url", args.url, args.session, token_from(args))
    return None


def run_join_command(args: argparse.Namespace) -> int:
    from peerhost_store.repo import Repository
    from peerhost_store.sync.client import Lease
    from peerhost_store.sync.remotes import connect_remote, holder_name, meta_dir, pick_remote

    from .play.config import HostConfig
    from .play.host import Host
    from .play.join import run_join
    from .play.view import View

    view = View()
    remote = _join_remote(args)
    if remote is not None and not args.standby:
        config = HostConfig().with_overrides(cloudflared=args.cloudflared)
        with stop_on_signals() as stop:
            return run_join(lambda: connect_remote(remote), view, stop, local_port=args.port,
                            cloudflared=config.cloudflared)
    with Repository.open(args.world.resolve()) as repo:
        config = host_config(repo.world, args)
        chosen = remote or pick_remote(meta_dir(repo), config.remote)
        with stop_on_signals() as stop:
            standby = None
            if args.standby:
                # What this machine needs to host is checked now, not when the lease comes.
                Host(repo, chosen, config, view, stop).preflight()
                holder = config.holder or holder_name()

                def become_host(lease: Lease, sent: float) -> int:
                    return Host(repo, chosen, config, view, stop, lease=(lease, sent)).run()

                standby = (holder, config.ttl, become_host)
            return run_join(lambda: connect_remote(chosen), view, stop, local_port=args.port,
                            cloudflared=config.cloudflared, standby=standby)
