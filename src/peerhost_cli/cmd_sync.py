"""phs push, phs pull, phs status, phs sync, and ``phs rollback SNAP --remote``."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from typing import Any

from peerhost_store.errors import NotFound, ObjectCorrupt
from peerhost_store.ids import ObjectId, from_hex, hash_bytes
from peerhost_store.maintenance import load_shallow
from peerhost_store.repo import Repository
from peerhost_store.sync.client import (
    CoordinatorClient,
    CoordinatorError,
    Forbidden,
    Lease,
    LeaseHeld,
    LeaseLost,
    LeaseStatus,
)
from peerhost_store.sync.protocol import is_ancestor
from peerhost_store.sync.transfer import Diverged, PullReport, PushReport, pull, push

from . import cmd_restore
from .cmd_remote import (
    Remote,
    connect_remote,
    holder_name,
    load_lease,
    meta_dir,
    pick_remote,
    save_lease,
    wire_json,
)
from .common import Subparsers, ago, open_repo, short
from .output import emit_json, err, human_bytes, out, progress_bar
from .play.waiting import SyncWait

#: The lease ``phs push`` takes when nobody holds one; renewed while the push runs.
PUSH_TTL = 120.0
#: Snapshots ``phs status`` reads from the coordinator to tell "behind" from "diverged".
STATUS_WALK = 2000

Progress = Callable[[int, int], None]


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser("push", parents=[common],
                            help="send the local head to a session and move its head")
    p.add_argument("remote", nargs="?", help="remote name (default: origin, or the only one)")
    p.add_argument("--fencing", type=int, default=None,
                   help="the fencing token of a lease you hold (default: the one phs lock "
                        "acquire remembered; without one, a short lease is taken and released)")
    p.add_argument("--holder", default=None, help="lease holder name (default: user@host)")
    p.set_defaults(func=run_push)
    p = commands.add_parser("pull", parents=[common],
                            help="fetch a session's head and move the world to it")
    p.add_argument("remote", nargs="?", help="remote name (default: origin, or the only one)")
    p.add_argument("--keep", choices=("theirs", "ours"), default=None,
                   help="when the histories diverged: continue from the session's world "
                        "(theirs) or this one (ours); both histories are kept")
    p.set_defaults(func=run_pull)
    p = commands.add_parser("status", parents=[common],
                            help="the session's head, host, lease and standby; local vs remote")
    p.add_argument("remote", nargs="?")
    p.set_defaults(func=run_status)
    p = commands.add_parser("sync", parents=[common],
                            help="ask the current host to push (seen at its next renewal)")
    p.add_argument("remote", nargs="?")
    p.set_defaults(func=run_sync)
    _extend_rollback(commands)


def _extend_rollback(commands: Subparsers) -> None:
    # `phs rollback` belongs to cmd_restore; --remote turns it into the coordinator-side one.
    p = commands.choices["rollback"]
    p.add_argument("--remote", nargs="?", const="", default=None, metavar="REMOTE",
                   help="roll back the session on the coordinator (owner or lease holder), "
                        "then pull")
    p.add_argument("--fencing", type=int, default=None,
                   help="with --remote: the fencing token of a lease you hold")
    p.set_defaults(func=run_rollback)


# -- reports --------------------------------------------------------------------------------


def chunk_counts(report: PushReport | PullReport) -> dict[str, int]:
    """How chunk payloads travelled: ``chunks_whole``, ``chunks_delta``, ``chunks_raw``,
    ``delta_bytes`` and ``fallbacks`` (see ``transfer.ChunkCounts``)."""
    return report.counts()


def _hex(oid: ObjectId | None) -> str | None:
    return None if oid is None else oid.hex()


def _wire_text(wire: dict[str, int]) -> str:
    return (f"{human_bytes(wire['bytes_total'])} on the wire in {wire['requests']} requests "
            f"({human_bytes(wire['bytes_sent'])} up, {human_bytes(wire['bytes_received'])} down)")


def chunks_text(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    chunks = ", ".join(f"{k.removeprefix('chunks_')} {v}" for k, v in sorted(counts.items())
                       if k.startswith("chunks_"))
    extra = []
    if "delta_bytes" in counts:
        extra.append(f"{human_bytes(counts['delta_bytes'])} of delta batches")
    if counts.get("fallbacks"):
        extra.append(f"{counts['fallbacks']} sent whole after a failed delta")
    return "; chunks: " + ", ".join(filter(None, [chunks, *extra]))


def push_json(remote: Remote, report: PushReport, wire: dict[str, int],
              lease: dict[str, Any]) -> dict[str, Any]:
    return {
        "remote": remote.name, "session": remote.session, "head": report.head.hex(),
        "old_head": _hex(report.old_head), "up_to_date": report.up_to_date,
        "objects_sent": report.objects_sent, "object_bytes": report.object_bytes,
        "objects_new": report.objects_new, "checked": report.checked,
        "chunks": chunk_counts(report), "wire": wire, "lease": lease,
    }


def pull_json(remote: Remote, report: PullReport, wire: dict[str, int]) -> dict[str, Any]:
    restored = report.restored
    return {
        "remote": remote.name, "session": remote.session, "outcome": report.outcome,
        "remote_head": _hex(report.remote), "head": _hex(report.head),
        "safety_snapshot": _hex(report.safety), "objects_received": report.objects_received,
        "object_bytes": report.object_bytes, "chunks": chunk_counts(report),
        "restored": None if restored is None else {
            "written": restored.written, "removed": restored.removed,
            "bytes_written": restored.bytes_written, "warnings": restored.warnings},
        "wire": wire,
    }


def print_push(remote: Remote, report: PushReport, wire: dict[str, int],
               lease: dict[str, Any]) -> None:
    where = f"{remote.name} (session {remote.session})"
    if report.up_to_date:
        out.print(f"{where} already has {short(report.head)}; nothing to send. {_wire_text(wire)}",
                  markup=False)
        return
    out.print(f"pushed {short(report.head)} to {where}: {report.objects_sent} objects "
              f"({human_bytes(report.object_bytes)}) sent, {report.objects_new} new there"
              f"{chunks_text(chunk_counts(report))}; {_wire_text(wire)}", markup=False)
    if lease["temporary"]:
        out.print(f"(took lease {lease['fencing']} as {lease['holder']} for the push and "
                  "released it)", markup=False)
    if lease["sync_requested"]:
        out.print("someone asked for a sync while this push ran: snapshot and push again")


def print_pull(remote: Remote, report: PullReport, wire: dict[str, int]) -> None:
    for warning in report.restored.warnings if report.restored else []:
        err.print(f"warning: {warning}", markup=False)
    if report.safety is not None:
        out.print(f"unsnapshotted changes were saved first as snapshot {short(report.safety)}")
    got = (f"{report.objects_received} objects ({human_bytes(report.object_bytes)}) received"
           f"{chunks_text(chunk_counts(report))}")
    text = {
        "empty": f"session {remote.session} has no snapshot yet",
        "up-to-date": f"up to date with {remote.name} at {short(report.head)}; {got}",
        "ahead": (f"local head {short(report.head)} already descends from the session head "
                  f"{short(report.remote)} (phs push publishes it); {got}"),
    }.get(report.outcome)
    if text is None:
        r = report.restored
        text = (f"fast-forward to {short(report.head)}: {got}; "
                + (f"{r.written} files written ({human_bytes(r.bytes_written)}), {r.removed} removed"
                   if r else "world unchanged"))
    out.print(f"{text}; {_wire_text(wire)}", markup=False)


# -- push -----------------------------------------------------------------------------------


class _KeepAlive:
    """A progress callback that also renews the push's own lease before it can lapse."""

    def __init__(self, client: CoordinatorClient, lease: Lease, progress: Progress | None) -> None:
        self.client = client
        self.lease = lease
        self.progress = progress
        self.due = time.monotonic() + lease.ttl / 3
        #: A sync asked for while this push ran: it may not hold what the asker waits for.
        self.sync_requested = False

    def __call__(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)
        if time.monotonic() >= self.due:
            self.sync_requested |= self.client.renew(self.lease.fencing).sync_requested
            self.due = time.monotonic() + self.lease.ttl / 3


def lease_held(lease: Lease) -> LeaseHeld:
    """The one-line refusal when someone else runs the world."""
    return LeaseHeld(
        "lease_held",
        f"the lease is held by {lease.holder} (member {lease.member}) for {lease.expires_in:.0f} s "
        "more; pull instead, ask them to push (phs sync), or pass --fencing if it is yours",
        409, {"lease": dataclasses.asdict(lease)})


def lease_lost(client: CoordinatorClient, exc: LeaseLost) -> LeaseLost:
    """``exc`` with who holds the session now (a host that crashed and came back)."""
    with suppress(CoordinatorError):
        current = client.lease_status().lease
        now = (f"{current.holder} (member {current.member}) holds it now" if current
               else "nobody holds it now")
        return LeaseLost(exc.code, f"{exc.message}: the lease this world used has ended and "
                         f"{now}; nothing was pushed, your snapshots stay local (phs pull "
                         "shows how the session moved on)", exc.status, exc.details)
    return exc


def push_with_lease(repo: Repository, client: CoordinatorClient, *, fencing: int | None,
                    holder: str, progress: Progress | None = None,
                    remember: Callable[[Lease | None], None] | None = None,
                    ) -> tuple[PushReport, dict[str, Any]]:
    """Push with the caller's lease (``fencing``), or with a short lease of its own when
    nobody holds one, released afterwards. Either lease is renewed while the push runs.
    ``remember`` is told the short lease once taken, and None once released.

    Raises:
        LeaseHeld: someone else holds (or has reserved) the lease.
        LeaseLost: ``fencing`` is not the current lease of this member.
    """
    if fencing is not None:
        # Renew first: a lost lease is refused before anything is sent, and a long push
        # cannot outlive the lease (a push is also the sync a renewal may have asked for).
        lease = client.renew(fencing).lease
        keep = _KeepAlive(client, lease, progress)
        report = push(repo, client, fencing=fencing, progress=keep)
        return report, {"fencing": fencing, "holder": lease.holder, "temporary": False,
                        "sync_requested": keep.sync_requested}
    # Look first: acquiring while our own long lease is held would re-grant it and fence out
    # the host process that holds it.
    current = client.lease_status().lease
    if current is not None:
        raise lease_held(current)
    lease = client.acquire(holder, PUSH_TTL)
    if remember is not None:
        remember(lease)
    keep = _KeepAlive(client, lease, progress)
    try:
        report = push(repo, client, fencing=lease.fencing, progress=keep)
    finally:
        with suppress(CoordinatorError):  # it lapses after PUSH_TTL anyway
            client.release(lease.fencing)
            if remember is not None:
                remember(None)
    return report, {"fencing": lease.fencing, "holder": holder, "temporary": True,
                    "sync_requested": keep.sync_requested}


def _fencing(args: argparse.Namespace, repo: Repository, remote: Remote) -> int | None:
    if args.fencing is not None:
        return int(args.fencing)
    remembered = load_lease(meta_dir(repo), remote)
    if remembered is None or remembered.get("temporary"):
        return None
    return int(remembered["fencing"])


#: The fencing token remembered while a push's own short lease is being asked for (real
#: tokens are at least the wall clock in milliseconds).
ACQUIRING = 0


def _end_killed_push(client: CoordinatorClient, repo: Repository, remote: Remote) -> None:
    """A push killed mid-way left its short lease held (and remembered): end it, or a re-run
    would be refused as someone else's until the lease lapses."""
    remembered = load_lease(meta_dir(repo), remote)
    if remembered is None or not remembered.get("temporary"):
        return
    fencing = int(remembered["fencing"])
    if fencing == ACQUIRING:
        # Killed between asking for the lease and remembering it: if our holder name holds
        # a lease now, it is that one (a push of this world by another phs of ours would be
        # refused too: its lease would end and it would stop, fenced, moving nothing).
        current = client.lease_status().lease
        fencing = current.fencing if current and current.holder == remembered["holder"] else 0
    if fencing:
        with suppress(LeaseLost):
            client.release(fencing)
    save_lease(meta_dir(repo), remote, None)


def run_push(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        remote = pick_remote(meta_dir(repo), args.remote)

        def remember(lease: Lease | None) -> None:
            save_lease(meta_dir(repo), remote, None if lease is None else {
                "fencing": lease.fencing, "holder": lease.holder, "ttl": lease.ttl,
                "temporary": True})

        with connect_remote(remote) as client, \
                progress_bar("push", enabled=not args.json, as_bytes=False) as bar:
            try:
                fencing = _fencing(args, repo, remote)
                if fencing is None:
                    _end_killed_push(client, repo, remote)
                    # Written before the lease is asked for, so a kill right after the grant
                    # still leaves a trace the re-run can end it by.
                    save_lease(meta_dir(repo), remote, {
                        "fencing": ACQUIRING, "holder": args.holder or holder_name(),
                        "temporary": True})
                report, lease = push_with_lease(repo, client, fencing=fencing, remember=remember,
                                                holder=args.holder or holder_name(), progress=bar)
            except LeaseLost as exc:
                if args.fencing is None:
                    save_lease(meta_dir(repo), remote, None)  # remembered, but gone: forget it
                raise lease_lost(client, exc) from None
            wire = wire_json(client)
    if args.json:
        emit_json(push_json(remote, report, wire, lease))
    else:
        print_push(remote, report, wire, lease)
    return 0


# -- pull -----------------------------------------------------------------------------------


def run_pull(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        remote = pick_remote(meta_dir(repo), args.remote)
        with connect_remote(remote) as client, \
                progress_bar("pull", enabled=not args.json, as_bytes=False) as bar:
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
        out.print(f"reconciled: new head {short(result.oid)} holds the world of "
                  f"{short(kept)} ({args.keep}); its parents are {short(local)} (this world) and "
                  f"{short(remote)} (the session), so both histories stay and phs push (or "
                  "phs host) is accepted", markup=False)
    return 0


# -- status ---------------------------------------------------------------------------------


class _Snapshots:
    """Snapshot objects from the local store, else from the coordinator (kept in memory only:
    a stored node must have its whole tree in a local store)."""

    def __init__(self, repo: Repository, client: CoordinatorClient) -> None:
        self.repo = repo
        self.client = client
        self.fetched: dict[ObjectId, bytes] = {}

    def iter_missing(self, oids: Iterable[ObjectId]) -> Iterator[ObjectId]:
        ids = [oid for oid in oids if oid not in self.fetched]
        local_missing = list(self.repo.store.iter_missing(ids))
        if len(self.fetched) + len(local_missing) > STATUS_WALK:
            raise _TooFar
        remote_missing = set(self.client.missing(local_missing)) if local_missing else set()
        self._fetch([oid for oid in local_missing if oid not in remote_missing])
        return iter(remote_missing)

    def _fetch(self, ids: list[ObjectId]) -> None:
        while ids:
            for oid, data in zip(ids, self.client.download(ids)):
                if hash_bytes(data) != oid:
                    raise ObjectCorrupt(oid, hash_bytes(data), "the coordinator's answer")
                self.fetched[oid] = data
            ids = [oid for oid in ids if oid not in self.fetched]

    def get_many(self, oids: list[ObjectId]) -> list[bytes]:
        local = [oid for oid in oids if oid not in self.fetched]
        got = dict(zip(local, self.repo.store.get_many(local))) if local else {}
        return [self.fetched[oid] if oid in self.fetched else got[oid] for oid in oids]


class _TooFar(Exception):
    pass


def compare_heads(repo: Repository, client: CoordinatorClient, remote: ObjectId | None) -> str:
    """``up-to-date``, ``ahead``, ``behind``, ``diverged``, ``empty`` (neither has a
    snapshot) or ``unknown`` (more than STATUS_WALK snapshots apart)."""
    local = repo.head()
    if remote is None:
        return "empty" if local is None else "ahead"
    if local is None:
        return "behind"
    if local == remote:
        return "up-to-date"
    shallow = load_shallow(repo.store)
    if remote in repo.store and is_ancestor(repo.store, remote, local, shallow=shallow):
        return "ahead"
    try:
        behind = is_ancestor(_Snapshots(repo, client), local, remote, shallow=shallow)
    except _TooFar:
        return "unknown"
    return "behind" if behind else "diverged"


_RELATION_HINT = {
    "ahead": "phs push publishes it",
    "behind": "phs pull brings it here",
    "diverged": "phs pull --keep theirs|ours to pick a world (both histories stay), then push",
    "unknown": "more than 2000 snapshots apart",
}


def run_status(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        remote = pick_remote(meta_dir(repo), args.remote)
        remembered = load_lease(meta_dir(repo), remote)
        with connect_remote(remote) as client:
            head = client.head().head
            lease = client.lease_status()
            last = client.log(1)
            relation = compare_heads(repo, client, head)
        local = repo.head()
    mine = (remembered is not None and lease.lease is not None
            and lease.lease.fencing == remembered["fencing"])
    if args.json:
        emit_json({
            **remote.public(), "head": _hex(head), "last_move": last[-1] if last else None,
            "lease": None if lease.lease is None else dataclasses.asdict(lease.lease),
            "lease_is_mine": mine, "fencing": lease.fencing, "standby": lease.standby,
            "reserved_for": lease.reserved_for, "reserved_for_seconds": lease.reserved_for_seconds,
            "local_head": _hex(local), "relation": relation, "sync_wait": _wait_json(lease.lease),
        })
        return 0
    _print_status(remote, head, last[-1] if last else None, lease, mine, local, relation)
    return 0


def _print_status(remote: Remote, head: ObjectId | None, last: dict[str, Any] | None,
                  lease: LeaseStatus, mine: bool, local: ObjectId | None, relation: str) -> None:
    out.print(f"session {remote.session} at {remote.url} (remote {remote.name})", markup=False)
    moved = (f" ({last['kind']} by {last['member']}, {ago(last['time'])})" if last else "")
    out.print(f"  head     {short(head)}{moved}", markup=False)
    if lease.lease is None:
        out.print("  host     nobody holds the lease", markup=False)
    else:
        held = lease.lease
        out.print(f"  host     {held.holder} (member {held.member}){' - you' if mine else ''}, "
                  f"fencing {held.fencing}, {held.expires_in:.0f} s left"
                  + (f", at {held.address}" if held.address else ""), markup=False)
        wait = SyncWait.from_lease(held)
        if wait is not None:
            out.print(f"  waiting  {wait.describe()}", markup=False)
    if lease.reserved_for:
        out.print(f"  reserved for {lease.reserved_for} for {lease.reserved_for_seconds:.0f} s",
                  markup=False)
    out.print(f"  standby  {', '.join(lease.standby) or '-'}", markup=False)
    hint = _RELATION_HINT.get(relation)
    out.print(f"  local    {short(local)}: {relation}" + (f" ({hint})" if hint else ""),
              markup=False)


# -- sync request ---------------------------------------------------------------------------


def run_sync(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        remote = pick_remote(meta_dir(repo), args.remote)
    with connect_remote(remote) as client:
        holder = client.request_sync()
        wait = SyncWait.from_lease(client.lease_status().lease)
    if args.json:
        emit_json({**remote.public(), "requested": True, "holder": holder,
                   "sync_wait": None if wait is None else wait.to_json()})
        return 0
    out.print(f"asked {holder} to push; the host sees it at its next lease renewal", markup=False)
    if wait is not None:
        out.print(f"{holder} has not taken the snapshot yet: {wait.describe()}", markup=False)
    return 0


def _wait_json(lease: Lease | None) -> dict[str, Any] | None:
    wait = SyncWait.from_lease(lease)
    return None if wait is None else wait.to_json()


# -- rollback --remote ----------------------------------------------------------------------


def _target(repo: Repository, spec: str) -> ObjectId:
    try:
        return repo.resolve(spec)
    except NotFound:
        text = spec.strip().lower()
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            return from_hex(text)  # not here, but the coordinator may have it
        raise


def remote_rollback(client: CoordinatorClient, target: ObjectId, *, fencing: int | None,
                    holder: str) -> tuple[ObjectId, dict[str, Any]]:
    """Roll the session back to ``target`` with the caller's lease, as owner, or (a member
    without a lease, nobody hosting) with a short lease of its own."""
    if fencing is not None:
        return client.rollback(target, fencing), {"fencing": fencing, "temporary": False}
    try:
        return client.rollback(target), {"fencing": None, "temporary": False}
    except Forbidden as exc:
        current = client.lease_status().lease
        if current is not None:
            raise lease_held(current) from exc
    lease = client.acquire(holder, PUSH_TTL)
    try:
        return client.rollback(target, lease.fencing), {"fencing": lease.fencing, "temporary": True}
    finally:
        with suppress(CoordinatorError):
            client.release(lease.fencing)


def run_rollback(args: argparse.Namespace) -> int:
    if args.remote is None:
        return cmd_restore.run_rollback(args)
    with open_repo(args) as repo:
        remote = pick_remote(meta_dir(repo), args.remote or None)
        target = _target(repo, args.snapshot)
        with connect_remote(remote) as client, \
                progress_bar("pull", enabled=not args.json, as_bytes=False) as bar:
            new_head, lease = remote_rollback(client, target, fencing=_fencing(args, repo, remote),
                                              holder=holder_name())
            report = pull(repo, client, progress=bar)
            wire = wire_json(client)
    if args.json:
        emit_json({"target": target.hex(), "session_head": new_head.hex(), "lease": lease,
                   "pull": pull_json(remote, report, wire)})
        return 0
    out.print(f"session {remote.session} rolled back to {short(target)}: its head is now "
              f"{short(new_head)} (nothing deleted; undo with another rollback)", markup=False)
    print_pull(remote, report, wire)
    return 0
