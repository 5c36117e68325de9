"""Garbage-collect a store: delete what the retained snapshots, the pins and pending restores
do not reach (the walk is :func:`peerhost_store.graph.walk`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

from .errors import DecodeError, PeerhostError
from .graph import walk
from .ids import ObjectId
from .objects import Snapshot, decode
from .scan import cached_ids
from .store import Pins, Store, Update

__all__ = [
    "GC_TRIES",
    "GcBusy",
    "GcReport",
    "collect_garbage",
    "load_shallow",
]

#: Walks gc makes before it gives up while transfers keep pinning objects.
GC_TRIES = 5


class GcBusy(PeerhostError):
    """The pins changed during each of gc's walks (a pull kept running); nothing was
    deleted."""


def load_shallow(store: Store) -> set[ObjectId]:
    """Snapshots whose parents gc pruned."""
    raw = store.meta.get("shallow")
    if not raw:
        return set()
    try:
        return {ObjectId(bytes(x)) for x in msgpack.unpackb(raw)}
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"the store's list of shallow snapshots is unreadable: {exc}") from exc


@dataclass
class GcReport:
    """What gc kept and deleted (or, in a dry run, would delete), sizes in bytes.

    Attributes:
        kept_bytes, deleted_bytes: the stored size of the objects kept and deleted.
        file_bytes_before, file_bytes_after: the store's file before gc and after its
            compaction (None for a store without one).
        compacted: the file was compacted; ``note`` says why not.
    """

    kept_snapshots: int
    kept_objects: int
    deleted_objects: int
    kept_bytes: int = 0
    deleted_bytes: int = 0
    dry_run: bool = False
    file_bytes_before: int | None = None
    file_bytes_after: int | None = None
    compacted: bool = False
    note: str = ""


def collect_garbage(store: Store, retained: list[ObjectId], *,
                    keep: Iterable[ObjectId] = (), pins: Pins | None = None,
                    dry_run: bool = False) -> GcReport:
    """Delete every object that the ``retained`` snapshots do not reach (with ``dry_run``,
    only say what that would delete).

    Snapshots whose parents are not retained become shallow. Stat cache entries that point at
    deleted objects are dropped, so a later snapshot never reuses a deleted object. Live pins
    (objects a running pull wrote or relies on) are kept, with the subtrees of pinned nodes,
    and so are the trees in ``keep`` (a pending restore's); stale pins are dropped.

    Args:
        pins: the pins loaded before ``retained`` was read from the refs (default: now). A
            pull drops its pin in the transaction that moves its ref, so pins read first and
            refs read after cannot both miss what it stored.

    Raises:
        PinsChanged: pins changed since ``pins`` were loaded; nothing was deleted (walk again).
    """
    pins = store.load_pins() if pins is None else pins
    shallow = load_shallow(store)
    kept = set(retained)
    for oid in retained:
        snap = decode(store.objects.get_raw(oid))
        if not isinstance(snap, Snapshot):
            raise DecodeError(f"gc: retained object {oid.hex()} is not a snapshot")
        if any(p not in kept for p in snap.parents):
            shallow.add(oid)
    shallow &= kept
    nodes = [oid for oid, node in pins.ids.items() if node] + list(keep)
    present = set(nodes) - set(store.objects.missing(nodes))  # pinned before it is stored
    report = walk(store.objects, retained, shallow=shallow, follow_parents=False, read_blobs=False,
                  nodes=[oid for oid in nodes if oid in present])
    if not report.ok:
        raise DecodeError(f"gc stopped, the store has problems: {report.problems[0]}")
    protected = report.reachable | pins.ids.keys()
    every = list(store.objects.iter_ids())
    sizes = dict(zip(every, store.objects.sizes(every), strict=True))
    garbage = [oid for oid in every if oid not in protected]
    deleted_bytes = sum(sizes[oid] or 0 for oid in garbage)
    result = GcReport(len(retained), len(report.reachable), len(garbage),
                      kept_bytes=sum(n or 0 for n in sizes.values()) - deleted_bytes,
                      deleted_bytes=deleted_bytes, dry_run=dry_run)
    if dry_run:
        return result
    stale = {
        path: None
        for path, value in store.stats.load().items()
        if not _stat_reachable(value, report.reachable)
    }
    store.apply(
        Update(
            delete_objects=garbage,
            stats=stale,  # type: ignore[arg-type]
            meta={"shallow": msgpack.packb(sorted(shallow))},
            pins=dict.fromkeys(pins.stale),
            pins_at=pins.generation,
        )
    )
    return result


def _stat_reachable(value: bytes, reachable: set[ObjectId]) -> bool:
    ids = cached_ids(value)
    return bool(ids) and all(oid in reachable for oid in ids)
