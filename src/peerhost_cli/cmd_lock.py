"""phs lock acquire|renew|release|status: the session lease, i.e. who hosts the world.

``acquire`` remembers the fencing token in ``WORLD/.peerhost/lease.json`` so that ``push``,
``renew``, ``release`` and ``rollback --remote`` use it; a lease the coordinator says is lost
is forgotten. The coordinator grants the lease again to the holder name that holds it (a host
that restarted and lost its token), fencing out the old grant; so ``acquire`` refuses, unless
``--force``, when its holder name holds the lease and this world did not take it: that is
another world's lease, or a ``phs host`` still running (both default to ``user@host``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import Parents, Subparsers, open_repo
from .output import emit_json, out

if TYPE_CHECKING:
    from peerhost_store.sync.client import Lease
    from peerhost_store.sync.remotes import Remote

DEFAULT_TTL = 300.0


def register(commands: Subparsers, parents: Parents) -> None:
    common = parents("world", "json")
    lock = commands.add_parser("lock", help="the session lease: who hosts the world")
    sub = lock.add_subparsers(dest="lock_command", metavar="ACTION", required=True)
    p = sub.add_parser("acquire", parents=common, help="take the lease (you host the world)")
    p.add_argument("remote", nargs="?")
    p.add_argument("--ttl", type=float, default=DEFAULT_TTL,
                   help="seconds until it lapses unless renewed (default %(default)g)")
    p.add_argument("--address", default=None, help="where friends connect (host:port)")
    p.add_argument("--holder", default=None, help="holder name (default: user@host)")
    p.add_argument("--standby", action="store_true",
                   help="if someone else holds it, queue to get it next")
    p.add_argument("--force", action="store_true",
                   help="take it even when this holder name holds it elsewhere (that lease, "
                        "e.g. a running phs host, is fenced out)")
    p.set_defaults(func=run_acquire)
    p = sub.add_parser("renew", parents=common,
                       help="extend your lease; reports whether someone asked for a sync")
    p.add_argument("remote", nargs="?")
    p.add_argument("--address", default=None, help="update where friends connect")
    _fencing_option(p)
    p.set_defaults(func=run_renew)
    p = sub.add_parser("release", parents=common, help="give the lease up")
    p.add_argument("remote", nargs="?")
    _fencing_option(p)
    p.set_defaults(func=run_release)
    p = sub.add_parser("status", parents=common, help="who holds the lease, standby queue")
    p.add_argument("remote", nargs="?")
    p.set_defaults(func=run_status)


def _fencing_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fencing", type=int, default=None,
                   help="fencing token (default: the one phs lock acquire remembered)")


def lease_json(lease: Lease) -> dict[str, Any]:
    return dataclasses.asdict(lease)


def _fencing(args: argparse.Namespace, remembered: dict[str, Any] | None) -> int:
    if args.fencing is not None:
        return int(args.fencing)
    from peerhost_store.sync.remotes import NoRemote

    if remembered is None:
        raise NoRemote("no lease remembered for this remote (phs lock acquire, or --fencing N)")
    return int(remembered["fencing"])


def _say_lease(verb: str, remote: Remote, lease: Lease) -> None:
    out.line(f"{verb} the lease of session {remote.session} as {lease.holder}: fencing "
             f"{lease.fencing}, {lease.expires_in:.0f} s left"
             + (f", address {lease.address}" if lease.address else ""))


def _base(args: argparse.Namespace) -> Path:
    from peerhost_store.sync.remotes import meta_dir

    with open_repo(args) as repo:
        return meta_dir(repo)


def run_acquire(args: argparse.Namespace) -> int:
    from peerhost_store.sync.leasing import acquire_for_world
    from peerhost_store.sync.remotes import connect_remote, holder_name, pick_remote

    base = _base(args)
    remote = pick_remote(base, args.remote)
    holder = args.holder or holder_name()
    with connect_remote(remote) as client:
        got = acquire_for_world(client, base, remote, holder, args.ttl, address=args.address,
                                standby=args.standby, force=args.force)
    if isinstance(got, int):
        if args.json:
            emit_json({**remote.public(), "queued": True, "position": got, "holder": holder})
        else:
            out.line(f"queued as standby, position {got}; when the lease ends you get a short "
                     "window to take it (run phs lock acquire again)")
        return 0
    if args.json:
        emit_json({**remote.public(), "lease": lease_json(got)})
    else:
        _say_lease("took", remote, got)
        out.line(f"renew within {got.ttl:.0f} s (phs lock renew); phs push uses this lease")
    return 0


def run_renew(args: argparse.Namespace) -> int:
    from peerhost_store.sync.client import LeaseLost
    from peerhost_store.sync.remotes import connect_remote, load_lease, pick_remote, save_lease

    base = _base(args)
    remote = pick_remote(base, args.remote)
    fencing = _fencing(args, load_lease(base, remote))
    with connect_remote(remote) as client:
        try:
            renewal = client.renew(fencing, address=args.address)
        except LeaseLost:
            if args.fencing is None:
                save_lease(base, remote, None)  # the coordinator says it is gone: forget it
            raise
    if args.json:
        emit_json({**remote.public(), "lease": lease_json(renewal.lease),
                   "sync_requested": renewal.sync_requested})
        return 0
    _say_lease("renewed", remote, renewal.lease)
    if renewal.sync_requested:
        out.line("someone asked for a sync: save the world and run phs snapshot, phs push")
    return 0


def run_release(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect_remote, load_lease, pick_remote, save_lease

    base = _base(args)
    remote = pick_remote(base, args.remote)
    remembered = load_lease(base, remote)
    fencing = _fencing(args, remembered)
    with connect_remote(remote) as client:
        try:
            client.release(fencing)
        finally:
            if remembered is not None and remembered["fencing"] == fencing:
                save_lease(base, remote, None)  # released, or lost already: useless either way
    if args.json:
        emit_json({**remote.public(), "released": True, "fencing": fencing})
    else:
        out.line(f"released lease {fencing} of session {remote.session}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect_remote, load_lease, pick_remote

    base = _base(args)
    remote = pick_remote(base, args.remote)
    remembered = load_lease(base, remote)
    with connect_remote(remote) as client:
        status = client.lease_status()
    held = status.lease
    mine = remembered is not None and held is not None and held.fencing == remembered["fencing"]
    if args.json:
        emit_json({**remote.public(), "held": held is not None,
                   "lease": None if held is None else lease_json(held), "mine": mine,
                   "fencing": status.fencing, "standby": status.standby,
                   "reserved_for": status.reserved_for,
                   "reserved_for_seconds": status.reserved_for_seconds})
        return 0
    if held is None:
        out.line(f"nobody holds the lease of session {remote.session} "
                 f"(last fencing token {status.fencing})")
    else:
        _say_lease("you hold" if mine else f"member {held.member} holds", remote, held)
    if status.reserved_for:
        out.line(f"reserved for {status.reserved_for} for {status.reserved_for_seconds:.0f} s")
    if status.standby:
        out.line(f"standby: {', '.join(status.standby)}")
    return 0
