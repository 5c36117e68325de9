"""Push and pull: moving snapshots between a repository and a coordinator session.

Both walk the object graph from a head, breadth-first, one level at a time, and ask the other
side about a whole level per request, so the number of requests grows with the depth of the
tree and the size of the change, never one request per object.

* **push** asks the coordinator for the status of each id: a *complete* subgraph is skipped,
  a *present* node is entered but not sent, a *missing* object is sent (and entered). After
  the first push, the coordinator marks what it verified complete, so a later push walks only
  the changed paths. Objects go up in batches of ``batch_bytes`` (4 MiB); an interrupted
  push re-run sends none of the objects that already landed. The head then moves by a fenced
  compare-and-swap.
* **pull** enters only objects the local store lacks: in a repository, a stored tree node
  always has its whole subtree (snapshot and pull store children before parents), so a
  present node is complete. Blobs are stored as they arrive; tree nodes and the
  ``remotes/<session>`` ref are stored together at the end, so an interrupted pull never
  leaves a node without its children.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import NotFound, ObjectCorrupt, PeerhostError
from ..ids import ObjectId, hash_bytes
from ..maintenance import load_shallow
from ..objects import encode_dir_leaf
from ..repo import HEAD, Repository
from ..restore import RestoreResult, apply_restore, prepare_restore
from ..store import ObjectStore, Update
from .client import CoordinatorClient, WireStats
from .protocol import (
    BATCH_BYTES,
    IDS_PER_REQUEST,
    READ_BATCH,
    Kind,
    ObjectStatus,
    batch_by_size,
    children,
    chunked,
    decode_as,
    is_ancestor,
)

Progress = Callable[[int, int], None]

#: Largest upload request: the coordinator refuses bodies over 64 MiB by default.
MAX_REQUEST_BYTES = 60 << 20
EMPTY_TREE = hash_bytes(encode_dir_leaf([]))


class Diverged(PeerhostError):
    """Local and session histories have each moved on; neither head descends from the other.

    Attributes:
        local: the local head (it includes any changes that were just snapshotted).
        remote: the session head (stored locally as ref ``remotes/<session>`` after a pull).
    """

    def __init__(self, local: ObjectId | None, remote: ObjectId | None, hint: str) -> None:
        self.local = local
        self.remote = remote
        loc = local.hex()[:12] if local else "nothing"
        rem = remote.hex()[:12] if remote else "nothing"
        super().__init__(f"local head {loc} and session head {rem} have diverged; {hint}")


class ObjectTooLarge(PeerhostError, ValueError):
    """An object larger than one upload request may carry."""

    def __init__(self, oid: ObjectId, size: int, limit: int) -> None:
        self.oid = oid
        self.size = size
        self.limit = limit
        super().__init__(f"object {oid.hex()} has {size} bytes; uploads carry at most {limit}")


@dataclass
class PushReport:
    """What a push did. ``wire`` counts request and response bytes, headers included."""

    head: ObjectId
    old_head: ObjectId | None
    up_to_date: bool = False
    objects_sent: int = 0
    object_bytes: int = 0
    objects_new: int = 0
    checked: int = 0
    wire: WireStats = field(default_factory=WireStats)


@dataclass
class PullReport:
    """What a pull did.

    ``outcome`` is ``empty`` (the session has no head), ``up-to-date``, ``fast-forward``
    (the local head and world moved to the session head) or ``ahead`` (the local head
    descends from the session head: nothing to do).
    """

    remote: ObjectId | None
    head: ObjectId | None
    outcome: str
    safety: ObjectId | None = None
    objects_received: int = 0
    object_bytes: int = 0
    restored: RestoreResult | None = None
    wire: WireStats = field(default_factory=WireStats)


def _wire_since(client: CoordinatorClient, before: WireStats) -> WireStats:
    now = client.stats
    return WireStats(now.requests - before.requests, now.sent - before.sent,
                     now.received - before.received)


# -- push ---------------------------------------------------------------------------------


def push(
    repo: Repository,
    client: CoordinatorClient,
    *,
    fencing: int,
    progress: Progress | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> PushReport:
    """Send the local head and everything it reaches that the session lacks, then move the
    session head to it.

    Raises:
        NotFound: the repository has no snapshot.
        Diverged: the session head is not an ancestor of the local head (pull first).
        Fenced, HeadMoved, Incomplete: from the final compare-and-swap.
    """
    before = client.stats.copy()
    head = repo.head()
    if head is None:
        raise NotFound("there is no snapshot to push")
    remote = client.head().head
    report = PushReport(head, remote)
    if remote == head:
        report.up_to_date = True
        report.wire = _wire_since(client, before)
        return report
    shallow = load_shallow(repo.store)
    if remote is not None and not is_ancestor(repo.store, remote, head, shallow=shallow):
        raise Diverged(head, remote, "pull, then push again")
    walk = _PushWalk(repo.store, client, head, shallow)
    limit = MAX_REQUEST_BYTES - 64 * 1024  # room for msgpack framing
    for batch in batch_by_size(walk, len, batch_bytes, limit):
        if len(batch[0]) > limit:
            raise ObjectTooLarge(hash_bytes(batch[0]), len(batch[0]), limit)
        result = client.upload(batch)
        report.objects_sent += len(batch)
        report.object_bytes += sum(len(data) for data in batch)
        report.objects_new += result.new
        if progress is not None:
            progress(report.objects_sent, walk.found)
    report.checked = client.set_head(remote, head, fencing)
    report.wire = _wire_since(client, before)
    return report


class _PushWalk:
    """Yields the bytes of every object ``head`` reaches that the session lacks.

    Breadth-first: one ``objects/status`` request per level of the graph (per 16,384 ids);
    complete subgraphs are skipped, present nodes entered but not yielded. Blobs are read from
    the local store in batches, nodes once (to find their children).
    """

    def __init__(self, store: ObjectStore, client: CoordinatorClient, head: ObjectId,
                 shallow: set[ObjectId]) -> None:
        self.store = store
        self.client = client
        self.head = head
        self.shallow = shallow
        self.found = 0  #: objects found missing so far (the progress total grows with it)

    def __iter__(self) -> Iterator[bytes]:
        seen = {self.head}
        frontier: list[tuple[ObjectId, Kind]] = [(self.head, Kind.SNAPSHOT)]
        blobs: list[ObjectId] = []
        while frontier:
            after: list[tuple[ObjectId, Kind]] = []
            for part in chunked(frontier, IDS_PER_REQUEST):
                enter: list[tuple[ObjectId, Kind, bool]] = []
                for (oid, kind), status in zip(part, self.client.object_status([o for o, _ in part])):
                    if status is ObjectStatus.COMPLETE:
                        continue
                    missing = status is ObjectStatus.MISSING
                    self.found += int(missing)
                    if kind is not Kind.BLOB:
                        enter.append((oid, kind, missing))
                    elif missing:
                        blobs.append(oid)
                        if len(blobs) >= READ_BATCH:
                            yield from self.store.get_many(blobs)
                            blobs = []
                for sub in chunked(enter, READ_BATCH):
                    for (oid, kind, missing), data in zip(sub, self.store.get_many([o for o, _, _ in sub])):
                        if missing:
                            yield data
                        obj = decode_as(oid, data, kind)
                        follow = not (kind is Kind.SNAPSHOT and oid in self.shallow)
                        for child in children(oid, obj, kind, follow_parents=follow):
                            if child[0] not in seen:
                                seen.add(child[0])
                                after.append(child)
            frontier = after
        if blobs:
            yield from self.store.get_many(blobs)


# -- pull ---------------------------------------------------------------------------------


def pull(
    repo: Repository,
    client: CoordinatorClient,
    *,
    progress: Progress | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> PullReport:
    """Fetch the session head into the repository and, when it is a fast-forward, move the
    local head and the world to it.

    Unsnapshotted changes in the world are snapshotted first, so they are never lost (and
    then make the histories diverge, unless the session head is unchanged).

    Raises:
        Diverged: neither head descends from the other; the fetched objects and the
            ``remotes/<session>`` ref are kept.
        ObjectCorrupt: the coordinator sent bytes that do not hash to the asked id.
    """
    before = client.stats.copy()
    remote = client.head().head
    if remote is None:
        return PullReport(None, repo.head(), "empty", wire=_wire_since(client, before))
    report = PullReport(remote, repo.head(), "")
    report.objects_received, report.object_bytes = fetch(
        repo.store, client, remote, ref=f"remotes/{client.session}", progress=progress,
        batch_bytes=batch_bytes)
    _integrate(repo, client.session, remote, report)
    report.wire = _wire_since(client, before)
    return report


def fetch(
    store: ObjectStore,
    client: CoordinatorClient,
    remote: ObjectId,
    *,
    ref: str,
    progress: Progress | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> tuple[int, int]:
    """Store every object ``remote`` reaches that ``store`` lacks and point ``ref`` at it.

    Returns:
        How many objects and bytes were received.
    """
    seen = {remote}
    frontier: list[tuple[ObjectId, Kind]] = [(remote, Kind.SNAPSHOT)]
    nodes: list[bytes] = []
    blobs: list[bytes] = []
    blob_bytes = received = received_bytes = known = 0
    while frontier:
        absent = set(store.iter_missing(oid for oid, _ in frontier))
        want = [item for item in frontier if item[0] in absent]
        known += len(want)
        after: list[tuple[ObjectId, Kind]] = []
        for part in chunked(want, IDS_PER_REQUEST):
            for (oid, kind), data in zip(part, _download(client, [oid for oid, _ in part])):
                received += 1
                received_bytes += len(data)
                obj = decode_as(oid, data, kind)
                if kind is Kind.BLOB:
                    blobs.append(data)
                    blob_bytes += len(data)
                    if blob_bytes >= batch_bytes:
                        store.apply(Update(objects=blobs))  # a blob reaches nothing: safe early
                        blobs, blob_bytes = [], 0
                    continue
                nodes.append(data)
                for child in children(oid, obj, kind):
                    if child[0] not in seen:
                        seen.add(child[0])
                        after.append(child)
            if progress is not None:
                progress(received, known)
        frontier = after
    store.apply(Update(objects=blobs + nodes, refs=[(ref, store.get_ref(ref), remote)]))
    return received, received_bytes


def _download(client: CoordinatorClient, ids: list[ObjectId]) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < len(ids):
        for data in client.download(ids[len(out):]):
            expected = ids[len(out)]
            got = hash_bytes(data)
            if got != expected:
                raise ObjectCorrupt(expected, got, "the coordinator's answer")
            out.append(data)
    return out


def _integrate(repo: Repository, session: str, remote: ObjectId, report: PullReport) -> None:
    store = repo.store
    local = repo.head()
    if local is None:
        live = repo.scan().root
        if live not in (EMPTY_TREE, repo.read_snapshot(remote).root):
            kept = repo.snapshot(f"local world before pulling session {session}")
            raise Diverged(kept.oid, remote, f"the world held other files, kept in snapshot "
                           f"{kept.oid.hex()[:12]}; move them away or roll back to the session")
    else:
        taken = repo.snapshot(f"unsnapshotted changes before pulling session {session}")
        report.safety = taken.oid if taken.created else None
        local, live = taken.oid, taken.snapshot.root
    shallow = load_shallow(store)
    if local == remote:
        report.outcome, report.head = "up-to-date", local
    elif local is not None and is_ancestor(store, remote, local, shallow=shallow):
        report.outcome, report.head = "ahead", local
    elif local is None or is_ancestor(store, local, remote, shallow=shallow):
        with repo.lock():
            ops = prepare_restore(store, repo.world, live, repo.read_snapshot(remote).root)
            # Compare-and-swap: a snapshot taken since ours makes this fail, not vanish.
            store.apply(Update(refs=[(HEAD, local, remote)]))
            report.restored = apply_restore(store, repo.world, ops)
        report.outcome, report.head = "fast-forward", remote
    else:
        raise Diverged(local, remote, "the session's snapshot is stored as ref "
                       f"remotes/{session}; roll back to one side, or push after a rollback")
