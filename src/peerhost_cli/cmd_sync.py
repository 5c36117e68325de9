"""phs push, phs pull, phs status, phs sync: parse, call :mod:`peerhost_store.sync`, print."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

from .common import Parents, Subparsers, ago, fencing_of, open_repo, short
from .output import emit_json, out, progress_bar

if TYPE_CHECKING:
    from peerhost_store.ids import ObjectId
    from peerhost_store.repo import Repository
    from peerhost_store.sync.client import Lease, LeaseStatus
    from peerhost_store.sync.remotes import Remote


def register(commands: Subparsers, parents: Parents) -> None:
    common = parents("world", "json")
    p = commands.add_parser("push", parents=common,
                            help="send the local head to a session and move its head")
    p.add_argument("remote", nargs="?", help="remote name (default: origin, or the only one)")
    p.add_argument("--fencing", type=int, default=None,
                   help="the fencing token of a lease you hold (default: the one phs lock "
                        "acquire remembered; without one, a short lease is taken and released)")
    p.add_argument("--holder", default=None, help="lease holder name (default: user@host)")
    p.set_defaults(func=run_push)
    p = commands.add_parser("pull", parents=common,
                            help="fetch a session's head and move the world to it")
    p.add_argument("remote", nargs="?", help="remote name (default: origin, or the only one)")
    p.add_argument("--keep", choices=("theirs", "ours"), default=None,
                   help="when the histories diverged: continue from the session's world "
                        "(theirs) or this one (ours); both histories are kept")
    p.set_defaults(func=run_pull)
    p = commands.add_parser("status", parents=common,
                            help="the session's head, host, lease and standby; local vs remote")
    p.add_argument("remote", nargs="?")
    p.set_defaults(func=run_status)
    p = commands.add_parser("sync", parents=common,
                            help="ask the current host to push (seen at its next renewal)")
    p.add_argument("remote", nargs="?")
    p.set_defaults(func=run_sync)


def _hex(oid: ObjectId | None) -> str | None:
    return None if oid is None else oid.hex()


# -- push -----------------------------------------------------------------------------------


def run_push(args: argparse.Namespace) -> int:
    from peerhost_store.sync.client import LeaseLost
    from peerhost_store.sync.leasing import (
        ACQUIRING,
        PushLease,
        end_killed_push,
        lease_lost,
        push_with_lease,
    )
    from peerhost_store.sync.remotes import (
        connect_remote,
        holder_name,
        meta_dir,
        pick_remote,
        save_lease,
    )
    from peerhost_store.sync.reports import up_to_date

    from .reports import print_push, push_json, wire_json

    with open_repo(args) as repo:
        base = meta_dir(repo)
        remote = pick_remote(base, args.remote)
        holder = args.holder or holder_name()
        # Play not in a snapshot is not in the session either: snapshot it first (refused, with
        # what to do, when Minecraft has the world open).
        taken = repo.snapshot("unsnapshotted changes before pushing")
        safety = taken.oid if taken.created else None

        def remember(lease: Lease | None) -> None:
            save_lease(base, remote, None if lease is None else {
                "fencing": lease.fencing, "holder": lease.holder, "ttl": lease.ttl,
                "temporary": True})

        with connect_remote(remote) as client, \
                progress_bar("push", enabled=not args.json, unit="objects",
                             moved=lambda: client.stats.sent + client.stats.streaming) as bar:
            try:
                fencing = fencing_of(args, base, remote)
                if fencing is None:
                    end_killed_push(client, base, remote)
                # Nothing to send: no lease taken (none refused for either), no lease file
                # written: a no-op push costs one request.
                done = None if fencing is not None else up_to_date(repo, client)
                lease: PushLease | None = None
                if done is not None:
                    report = done
                else:
                    if fencing is None:
                        # Written before the lease is asked for, so a kill right after the
                        # grant still leaves a trace the re-run can end it by.
                        save_lease(base, remote, {"fencing": ACQUIRING, "holder": holder,
                                                  "temporary": True})
                    report, lease = push_with_lease(repo, client, fencing=fencing,
                                                    remember=remember, holder=holder,
                                                    progress=bar)
            except LeaseLost as exc:
                if args.fencing is None:
                    save_lease(base, remote, None)  # remembered, but gone: forget it
                raise lease_lost(client, exc) from None
            wire = wire_json(client)
    held = None if lease is None else lease.to_json()
    if args.json:
        emit_json({**push_json(remote, report, wire, held), "safety_snapshot": _hex(safety)})
    else:
        if safety is not None:
            out.line(f"unsnapshotted changes were saved first as snapshot {short(safety)}")
        print_push(remote, report, wire, held)
    return 0


# -- pull -----------------------------------------------------------------------------------


def run_pull(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect_remote, meta_dir, pick_remote
    from peerhost_store.sync.transfer import Diverged, pull

    from .reports import print_pull, pull_json, wire_json

    with open_repo(args) as repo:
        remote = pick_remote(meta_dir(repo), args.remote)
        with connect_remote(remote) as client, \
                progress_bar("pull", enabled=not args.json, unit="objects",
                             moved=lambda: client.stats.received) as bar:
            try:
                report = pull(repo, client, progress=bar)
            except Diverged as exc:
                if args.keep is None or exc.remote is None:
                    raise
                return _reconcile(args, repo, exc.remote, exc.local)
            wire = wire_json(client)
    if args.json:
        emit_json(pull_json(remote, report, wire))
    else:
        print_pull(remote, report, wire)
    return 0


def _reconcile(args: argparse.Namespace, repo: Repository, remote: ObjectId,
               local: ObjectId | None) -> int:
    result = repo.reconcile(remote, keep_other=args.keep == "theirs")
    kept = remote if args.keep == "theirs" else local
    if args.json:
        emit_json({"outcome": "reconciled", "keep": args.keep, "head": result.oid.hex(),
                   "kept": _hex(kept), "parents": [_hex(local), remote.hex()],
                   "safety": _hex(result.safety)})
    else:
        out.line(f"reconciled: new head {short(result.oid)} holds the world of "
                 f"{short(kept)} ({args.keep}); its parents are {short(local)} (this world) and "
                 f"{short(remote)} (the session), so both histories stay and phs push (or "
                 "phs host) is accepted")
    return 0


# -- status ---------------------------------------------------------------------------------


_RELATION_HINT = {
    "ahead": "phs push publishes it",
    "behind": "phs pull brings it here",
    "diverged": "phs pull --keep theirs|ours to pick a world (both histories stay), then push",
    "unknown": "more than 2000 snapshots apart",
}


def run_status(args: argparse.Namespace) -> int:
    from peerhost_store.sync.relation import compare_heads
    from peerhost_store.sync.remotes import connect_remote, load_lease, meta_dir, pick_remote

    with open_repo(args) as repo:
        remote = pick_remote(meta_dir(repo), args.remote)
        remembered = load_lease(meta_dir(repo), remote)
        with connect_remote(remote) as client:
            head = client.head().head
            lease = client.lease_status()
            last = client.log(1)
            relation = compare_heads(repo, client, head)
        local = repo.head()
        changed = _unsnapshotted(repo)
    mine = (remembered is not None and lease.lease is not None
            and lease.lease.fencing == remembered["fencing"])
    if args.json:
        emit_json({
            **remote.public(), "head": _hex(head), "last_move": last[-1] if last else None,
            "lease": None if lease.lease is None else dataclasses.asdict(lease.lease),
            "lease_is_mine": mine, "fencing": lease.fencing, "standby": lease.standby,
            "reserved_for": lease.reserved_for, "reserved_for_seconds": lease.reserved_for_seconds,
            "local_head": _hex(local), "relation": relation, "sync_wait": _wait_json(lease.lease),
            "unsnapshotted_changes": changed,
        })
        return 0
    _print_status(remote, head, last[-1] if last else None, lease, mine, local, relation)
    out.line(f"  world    {_WORLD_STATE[changed]}")
    return 0


_WORLD_STATE = {
    False: "no changes since the local head",
    True: "has changes no snapshot holds yet (phs push snapshots them first; phs snapshot)",
    None: "not looked at: another phs is working on this world right now",
}


def _unsnapshotted(repo: Repository) -> bool | None:
    """Whether the live world differs from the local head (None: another phs holds the
    world's lock). The stat cache makes this cheap: unchanged files are not read."""
    from peerhost_store.lock import Locked

    try:
        live = repo.scan().root
    except Locked:
        return None
    head = repo.head()
    return head is None or repo.read_snapshot(head).root != live


def _print_status(remote: Remote, head: ObjectId | None, last: dict[str, Any] | None,
                  lease: LeaseStatus, mine: bool, local: ObjectId | None, relation: str) -> None:
    from .play.waiting import SyncWait

    out.line(f"session {remote.session} at {remote.url} (remote {remote.name})")
    moved = (f" ({last['kind']} by {last['member']}, {ago(last['time'])})" if last else "")
    out.line(f"  head     {short(head)}{moved}")
    if lease.lease is None:
        out.line("  host     nobody holds the lease")
    else:
        held = lease.lease
        out.line(f"  host     {held.holder} (member {held.member}){' - you' if mine else ''}, "
                 f"fencing {held.fencing}, {held.expires_in:.0f} s left"
                 + (f", at {held.address}" if held.address else ""))
        wait = SyncWait.from_lease(held)
        if wait is not None:
            out.line(f"  waiting  {wait.describe()}")
    if lease.reserved_for:
        out.line(f"  reserved for {lease.reserved_for} for {lease.reserved_for_seconds:.0f} s")
    out.line(f"  standby  {', '.join(lease.standby) or '-'}")
    hint = _RELATION_HINT.get(relation)
    out.line(f"  local    {short(local)}: {relation}" + (f" ({hint})" if hint else ""))


# -- sync request ---------------------------------------------------------------------------


def run_sync(args: argparse.Namespace) -> int:
    from peerhost_store.sync.remotes import connect_remote, meta_dir, pick_remote

    from .play.waiting import SyncWait

    with open_repo(args) as repo:
        remote = pick_remote(meta_dir(repo), args.remote)
    with connect_remote(remote) as client:
        holder = client.request_sync()
        wait = SyncWait.from_lease(client.lease_status().lease)
    if args.json:
        emit_json({**remote.public(), "requested": True, "holder": holder,
                   "sync_wait": None if wait is None else wait.to_json()})
        return 0
    out.line(f"asked {holder} to push; the host sees it at its next lease renewal")
    if wait is not None:
        out.line(f"{holder} has not taken the snapshot yet: {wait.describe()}")
    return 0


def _wait_json(lease: Lease | None) -> dict[str, Any] | None:
    from .play.waiting import SyncWait

    wait = SyncWait.from_lease(lease)
    return None if wait is None else wait.to_json()
