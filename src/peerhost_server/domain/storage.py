"""What the coordinator deletes: gc, with a grace period and a retention policy.

* **The upload log.** Each write of objects is recorded as an upload with its time
  (:meth:`SessionObjects.write`). gc deletes an object no retained snapshot reaches only once
  no upload newer than ``gc_grace`` names it, so the objects of a push under way (uploaded,
  head not yet moved) survive.
* **Retention.** The owner may set a policy like restic's ``forget``
  (:mod:`peerhost_store.retention`); gc keeps the head and what the policy selects from the
  history, deletes everything else, and records the kept snapshots whose parents it dropped
  as *shallow*: walks stop there, and the head tells pulls where history was cut.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import asdict
from typing import Any

from peerhost_store.errors import ObjectMissing
from peerhost_store.graph import walk
from peerhost_store.ids import ObjectId
from peerhost_store.objects import Snapshot, decode
from peerhost_store.retention import RetentionPolicy, select_snapshots

from .coordinator import Coordinator
from .errors import StoreProblem
from .protocols import SessionObjects

_log = logging.getLogger("peerhost_server.gc")


def collect_garbage(coord: Coordinator, session: str) -> dict[str, Any]:
    """Delete what the session no longer needs: objects no retained snapshot reaches and no
    upload within ``gc_grace`` names, and snapshots the retention policy drops.

    Holds the session's head lock throughout (no head moves meanwhile); the deletion itself
    excludes uploads (one landing meanwhile is protected).

    Raises:
        StoreProblem: the walk found a missing or corrupt object (nothing was deleted).
    """
    store = coord.store(session)
    leases, retention = coord.backends.leases, coord.backends.retention
    with leases.head_lock(session):
        head = leases.head(session)
        shallow = retention.shallow(session)
        history = _history(store, ([head] if head else []) + retention.retained(session), shallow)
        policy = retention.policy(session)
        # Newest first; within one second, nearer the head first (history is in walk order).
        order = {oid: i for i, oid in enumerate(history)}
        newest = sorted(history, key=lambda oid: (-history[oid].time, order[oid]))
        kept = select_snapshots([(oid, history[oid].time) for oid in newest], policy)
        if head is not None:
            kept.add(head)
        cut = {oid for oid in kept if oid in shallow
               or any(p not in kept for p in history[oid].parents)}
        reach = walk(store, sorted(kept), shallow=cut, follow_parents=False, read_blobs=False)
        # Kept snapshots the head no longer reaches through parents (behind a dropped one):
        # remembered, or the next gc would not find them.
        orphans = kept - set(_history(store, [head] if head else [], cut))
        if not reach.ok:
            raise StoreProblem(f"gc stopped, nothing was deleted: {reach.problems[0]}",
                               len(reach.problems))
        before = store.used_bytes()

        def forget(garbage: list[ObjectId]) -> None:
            # Marks first: a mark left on a deleted object would let a head move onto it.
            retention.forget(session, garbage, shallow=cut, retained=orphans)
            coord.pairings.drop(session)

        garbage = store.sweep(reach.reachable, coord.wall() - coord.limits.gc_grace, forget)
    dropped = [oid for oid in history if oid not in kept]
    return {"kept_snapshots": len(kept), "dropped_snapshots": len(dropped),
            "deleted_objects": len(garbage), "freed_bytes": max(0, before - store.used_bytes()),
            "usage": store.used_bytes(), "shallow": sorted(oid.hex() for oid in cut),
            "policy": asdict(policy)}


def _history(store: SessionObjects, roots: list[ObjectId], shallow: set[ObjectId]
             ) -> dict[ObjectId, Snapshot]:
    """Every stored snapshot reachable from ``roots`` through parents, stopping at
    ``shallow`` ones (and at parents gc dropped before), breadth first: nearer the roots
    first."""
    out: dict[ObjectId, Snapshot] = {}
    queue = deque(roots)
    while queue:
        oid = queue.popleft()
        if oid in out:
            continue
        try:
            snap = decode(store.get_raw(oid))
        except ObjectMissing:
            continue
        if not isinstance(snap, Snapshot):
            continue
        out[oid] = snap
        if oid not in shallow:
            queue.extend(snap.parents)
    return out


def storage(coord: Coordinator, session: str) -> dict[str, Any]:
    """The session's retention policy, where its history is cut, its usage and quota."""
    retention = coord.backends.retention
    return {"policy": asdict(retention.policy(session)),
            "shallow": sorted(oid.hex() for oid in retention.shallow(session)),
            "usage": coord.store(session).used_bytes(), "quota": coord.limits.quota_bytes}


def set_retention(coord: Coordinator, session: str, policy: RetentionPolicy) -> dict[str, Any]:
    """Set the session's retention policy (applied by the next gc); return :func:`storage`."""
    coord.backends.retention.set_policy(session, policy)
    return storage(coord, session)


class GcThread:
    """Runs :func:`collect_garbage` over every session every ``gc_interval`` seconds, in a
    daemon thread, until :meth:`stop` (nothing runs when the interval is 0)."""

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if coord.limits.gc_interval > 0:
            self._thread = threading.Thread(target=self._run, name="phs-gc", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.coord.limits.gc_interval):
            for session in self.coord.backends.directory.session_names():
                if self._stop.is_set():
                    return
                try:
                    report = collect_garbage(self.coord, session)
                    _log.info("gc %s: %s", session, report)
                except Exception:  # noqa: BLE001  # one session's problem must not stop the others' gc
                    _log.exception("gc %s failed", session)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
