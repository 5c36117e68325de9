"""Push and pull: moving snapshots between a repository and a coordinator session.

Both walk the object graph from a head, breadth-first, one level at a time, and ask the other
side about a whole level per request, so the number of requests grows with the depth of the
tree and the size of the change, never one request per object.

* **push** asks the coordinator for the status of each id: a *complete* subgraph is skipped,
  a *present* node is entered but not sent, a *missing* object is sent (and entered). After
  the first push, the coordinator marks what it verified complete, so a later push walks only
  the changed paths. Objects go up in batches of ``batch_bytes`` (16 MiB), two requests in
  flight at once; an interrupted push re-run sends none of the objects that already landed.
  The head then moves by a fenced compare-and-swap.
* **pull** enters only objects the local store lacks: in a repository, a stored tree node
  always has its whole subtree (snapshot and pull store children before parents), so a
  present node is complete. Blobs are stored as they arrive; tree nodes and the
  ``remotes/<session>`` ref are stored together at the end, so an interrupted pull never
  leaves a node without its children. Until then no ref reaches what the pull stored or
  found present, so it pins those (a concurrent gc keeps them, see
  :class:`~peerhost_store.store.Pins`), and the final update requires them present.

**Chunk deltas.** When the receiving side already holds a snapshot (the session head for a
push; for a pull, a snapshot that both the session's history and the local store hold), the
chunk payload blobs it lacks travel as deltas against the previous version of the same chunk
(:mod:`peerhost_store.sync.pairing`, :mod:`peerhost_store.sync.delta`): a few bytes per
re-saved chunk instead of its whole zlib payload. Both sides derive the same pairing list from
the two trees, so requests name the trees and list positions, never the ids. Every other
object (tree nodes, file blobs, snapshots) travels whole, and so does any chunk whose delta
the receiver could not rebuild (a *fallback*). A first push or clone, with nothing to pair
against, sends everything whole.

**Tree uploads.** A push against a session head first sends its tree as what changed from the
head's (:mod:`peerhost_store.sync.edits`, one request): the coordinator rebuilds the changed
chunks and every new tree node itself and checks the root, so neither the nodes nor the ids
of rebuilt chunks travel. The walk then sends only what that left out (the snapshot, changed
files). When the coordinator refuses it, the push goes on as above. A pull one snapshot
behind asks for the same (``objects/tree/get``) and rebuilds the tree here, checking its root;
otherwise it walks as above.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TypeVar

import msgpack

from ..counterparts import align
from ..errors import (
    DamagedObjects,
    DecodeError,
    NotFound,
    ObjectCorrupt,
    ObjectMissing,
    PeerhostError,
)
from ..graph import Kind, children, decode_as, history, is_ancestor
from ..ids import ObjectId, from_hex, hash_bytes
from ..maintenance import load_shallow
from ..objects import (
    RegionLeaf,
    Snapshot,
    decode,
    encode_dir_leaf,
)
from ..pending import RestorePending
from ..repo import HEAD, Repository
from ..restore import RestoreOp, prepare_restore
from ..store import Overlay, Store, Update, Verified
from .batches import BatchLimits, Built, Rebuilder, build_items, cut, encode
from .client import (
    CoordinatorClient,
    CoordinatorError,
    RateLimited,
    TreeUploadResult,
    Unauthorized,
    UploadResult,
)
from .delta import (
    DeltaError,
    decode_batch,
)
from .edits import BuiltUpload, build_upload, decode_tree_upload, rebuild_upload
from .pairing import Budget, Pair, pair_chunks, want_of
from .protocol import (
    BATCH_BYTES,
    DELTA_ANSWER_BYTES,
    DELTA_BATCH_BYTES,
    DELTA_BATCH_ITEMS,
    DELTA_STREAM_BYTES,
    IDS_PER_REQUEST,
    READ_BATCH,
    DeltaRequest,
    ObjectStatus,
    batch_by_size,
    chunked,
    select_ranges,
)
from .reports import ChunkCounts, PullReport, PushReport, wire_since

__all__ = [
    "DIVERGED_HINT",
    "DOWNLOAD_BYTES",
    "EMPTY_TREE",
    "HEAL_ROUNDS",
    "IN_FLIGHT",
    "MAX_REQUEST_BYTES",
    "STORE_BATCH_BYTES",
    "Behind",
    "CoordinatorSource",
    "Diverged",
    "FetchResult",
    "ObjectTooLarge",
    "Progress",
    "fetch",
    "pull",
    "push",
]

Progress = Callable[[int, int], None]
T = TypeVar("T")
R = TypeVar("R")

#: Largest upload request: the coordinator refuses bodies over 64 MiB by default.
MAX_REQUEST_BYTES = 60 << 20
#: Bulk requests (uploads, blob downloads) in flight at once. Two keep both ends busy: the
#: coordinator hashes and stores one batch while it receives the next (and its fsync waits
#: on the disk, not the CPU), and this side prepares or stores a third meanwhile.
IN_FLIGHT = 2
#: A pull stores blobs in transactions of this many bytes: each commit is an fsync.
STORE_BATCH_BYTES = 32 << 20
#: A pull asks for blobs in requests of about this many bytes (estimated from the sizes seen
#: so far), below the coordinator's answer cap so that each request is answered whole.
DOWNLOAD_BYTES = 8 << 20
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


#: The next step after a divergence, the same wherever one is found (push, pull, host, status).
DIVERGED_HINT = ("nothing was overwritten; pick a world with phs pull --keep theirs (the "
                 "session's) or --keep ours (this one): both histories stay, and the next push "
                 "is accepted")


class Behind(Diverged):
    """A push of a head the session has already moved past: nothing of it is missing there."""

    def __init__(self, local: ObjectId, remote: ObjectId) -> None:
        PeerhostError.__init__(
            self, f"the session head {remote.hex()[:12]} already descends from local head "
                  f"{local.hex()[:12]}: there is nothing to push; phs pull brings the session's "
                  "world here")
        self.local = local
        self.remote = remote


class ObjectTooLarge(PeerhostError, ValueError):
    """An object larger than one upload request may carry."""

    def __init__(self, oid: ObjectId, size: int, limit: int) -> None:
        self.oid = oid
        self.size = size
        self.limit = limit
        super().__init__(f"object {oid.hex()} has {size} bytes; uploads carry at most {limit}")


def _falls_back(exc: CoordinatorError) -> bool:
    """Whether an error means "do without it" (for a delta request: send these whole; a
    refused batch, limits smaller than ours, a coordinator without the route), not "stop"."""
    if isinstance(exc, (Unauthorized, RateLimited)):
        return False
    return 400 <= exc.status < 500


# -- push ---------------------------------------------------------------------------------


def push(
    repo: Repository,
    client: CoordinatorClient,
    *,
    fencing: int,
    progress: Progress | None = None,
    batch_bytes: int = BATCH_BYTES,
    delta: bool = True,
    delta_batch_bytes: int = DELTA_BATCH_BYTES,
) -> PushReport:
    """Send the local head and everything it reaches that the session lacks, then move the
    session head to it.

    Args:
        delta: send chunk payloads the session has a previous version of as deltas.
        delta_batch_bytes: rebuilt object bytes per delta batch.

    Raises:
        NotFound: the repository has no snapshot.
        Diverged: the session head is not an ancestor of the local head (:class:`Behind`
            when the local head is an ancestor of the session head).
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
        report.wire = wire_since(client, before)
        return report
    shallow = load_shallow(repo.store)
    if remote is not None and not is_ancestor(repo.store.objects, remote, head, shallow=shallow):
        from .relation import compare_heads  # fetches snapshots of the session's history

        if compare_heads(repo, client, remote) == "behind":
            raise Behind(head, remote)
        raise Diverged(head, remote, DIVERGED_HINT)
    # The session holds the remote head complete, and so does this store (a stored snapshot
    # has its whole tree here): its chunks are the previous versions to send deltas against.
    remote_root = repo.read_snapshot(remote).root if remote is not None else None
    base = remote_root if delta else None
    tree = None if base is None or not client.tree_uploads else _tree_send(
        repo.store.objects, base, repo.read_snapshot(head).root, delta_batch_bytes)

    def walking(tree: _TreeSend | None) -> _PushWalk:
        return _PushWalk(repo.store.objects, client, head, shallow,
                         defer_chunks=base is not None, remote=remote, remote_root=remote_root,
                         stored=None if tree is None else tree.stored,
                         whole=None if tree is None else tree.named)

    walk = walking(tree)

    def tick(moving: int = 0) -> None:  # moving: objects of requests still being sent
        if progress is not None:
            progress(report.objects_sent + moving, walk.found)

    where = repo.store.objects.where
    if tree is None:
        _upload_whole(client, walk, report, batch_bytes, tick, where)
    else:
        # The walk sends what the tree upload leaves out (the snapshot, changed files) while
        # the coordinator rebuilds the tree; the head moves only once both landed.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="phs-tree") as pool:
            sending = pool.submit(client.upload_tree, tree.upload.body)
            try:
                _upload_whole(client, walk, report, batch_bytes, tick, where)
            finally:
                wait([sending])
        try:
            tree.landed(report, sending.result())
        except CoordinatorError as exc:
            if not _falls_back(exc):
                raise
            # Refused, nothing stored: walk again, sending the nodes (what the first walk
            # sent is found there now).
            walk = walking(None)
            _upload_whole(client, walk, report, batch_bytes, tick, where)
    report.chunks_whole += walk.whole_chunks
    if walk.missing_chunks or walk.unasked_chunks:
        assert base is not None
        deltas = _PushDeltas(repo.store.objects, client, base, report, delta_batch_bytes, tick)
        deltas.send(walk.snapshots, walk.missing_chunks + walk.unasked_chunks)
        whole = deltas.leftovers(set(walk.missing_chunks))
        walk.found = report.objects_sent + len(whole)  # unasked chunks the session had drop out
        report.chunks_whole += len(whole)
        _upload_whole(client, _read_blobs(repo.store.objects, whole), report, batch_bytes, tick,
                      where)
    report.checked = client.set_head(remote, head, fencing)
    report.wire = wire_since(client, before)
    return report


@dataclass
class _TreeSend:
    """A tree upload ready to go (:func:`_tree_send`), and what it stores when it lands."""

    upload: BuiltUpload
    stored: set[ObjectId]  #: the nodes and chunks the coordinator will store
    named: set[ObjectId]  #: what the change names whole (files, what is added whole)

    def landed(self, report: PushReport, result: TreeUploadResult) -> None:
        """Count what the coordinator rebuilt."""
        report.delta_bytes += len(self.upload.batch)
        for one in self.upload.built:
            report.add_item(one.item)
            report.objects_sent += 1
            report.object_bytes += one.size
        nodes = self.upload.plan.nodes
        report.tree_nodes += len(nodes)
        report.objects_sent += len(nodes)
        report.object_bytes += sum(len(data) for data in nodes.values())
        report.objects_new += result.new


def _tree_send(store: Verified, base: ObjectId, root: ObjectId, batch_bytes: int
               ) -> _TreeSend | None:
    """Tree ``root`` as what changed from tree ``base`` (the session head's), for the
    coordinator to rebuild its nodes and changed chunks (:mod:`.edits`). Every child of a
    node it stores is stored too, or the base's (complete there), or named whole by the
    change: the push must still send those where the session lacks them.

    None when the change does not fit one request (the push then goes as before: nodes
    whole, chunks as delta batches).
    """
    if root == base:
        return None
    upload = build_upload(store, store, base, root, max_items=DELTA_BATCH_ITEMS,
                          max_rebuilt=batch_bytes, max_stream=DELTA_STREAM_BYTES)
    if upload is None or len(upload.body) > MAX_REQUEST_BYTES - 64 * 1024:
        return None
    plan = upload.plan
    named = {oid for e in plan.files.values() if e is not None
             for oid in (e.oid, e.raw) if oid is not None}
    return _TreeSend(upload, set(plan.nodes) | {pair.new.oid for pair in plan.pairs}, named)


def _read_blobs(store: Verified, ids: list[ObjectId]) -> Iterator[tuple[ObjectId, bytes]]:
    """``(id, bytes)`` of blobs to send, read unchecked: the coordinator checks each against
    the id sent with it, the one hash these bytes get between this store and that one."""
    for part in chunked(ids, READ_BATCH):
        yield from zip(part, store.backend.get_many(list(part)), strict=True)


def _overlapped(items: Iterable[T], call: Callable[[T], R],
                depth: int = IN_FLIGHT) -> Iterator[tuple[T, R]]:
    """``(item, call(item))`` for each item in order, with up to ``depth`` calls running at
    once on worker threads while this thread produces the next items and consumes results.

    When a call fails, the calls already running finish first (what they stored is stored),
    no new call starts, and the failure is raised.
    """
    running: deque[tuple[T, Future[R]]] = deque()
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="phs-transfer") as pool:
        try:
            for item in items:
                if len(running) >= depth:
                    done, future = running.popleft()
                    yield done, future.result()
                running.append((item, pool.submit(call, item)))
            while running:
                done, future = running.popleft()
                yield done, future.result()
        finally:
            for _, future in running:
                future.cancel()


def _upload_whole(client: CoordinatorClient, objects: Iterable[tuple[ObjectId, bytes]],
                  report: PushReport, batch_bytes: int, tick: Callable[[int], None],
                  where: str) -> None:
    """Upload ``(id, bytes)`` pairs, each with its id: the coordinator refuses one that
    hashes to another (:class:`ObjectCorrupt` here, naming ``where`` they were read)."""
    limit = MAX_REQUEST_BYTES - 64 * 1024  # room for msgpack framing and the ids

    def batches() -> Iterator[list[tuple[ObjectId, bytes]]]:
        for batch in batch_by_size(objects, lambda pair: len(pair[1]) + 32, batch_bytes, limit):
            if len(batch[0][1]) > limit:
                raise ObjectTooLarge(batch[0][0], len(batch[0][1]), limit)
            yield batch

    # Objects of the batches in flight whose bytes the connection has taken, so the count
    # moves during a request (a 16 MiB batch is 16 s on a 1 MiB/s uplink), never backwards.
    partial: dict[int, int] = {}
    lock = threading.Lock()

    def moving(key: int, count: int) -> Callable[[float], None]:
        def sent(share: float) -> None:
            with lock:  # max: an upload sent again from its start (uncompressed) counts on
                partial[key] = max(partial.get(key, 0), int(count * share))
            tick_partial()
        return sent

    def tick_partial() -> None:
        with lock:  # the sum and the report's count as one reading
            tick(sum(partial.values()))

    def send(batch: list[tuple[ObjectId, bytes]]) -> UploadResult:
        try:
            return client.upload([data for _, data in batch], [oid for oid, _ in batch],
                                 moving(id(batch), len(batch)))
        except CoordinatorError as exc:
            if exc.code != "id_mismatch":
                raise
            try:
                expected, got = from_hex(exc.details["expected"]), from_hex(exc.details["got"])
            except (KeyError, TypeError, ValueError):
                raise exc from None
            raise ObjectCorrupt(expected, got, where) from None

    for batch, result in _overlapped(batches(), send):
        with lock:
            partial.pop(id(batch), None)
            report.objects_sent += len(batch)
        report.object_bytes += sum(len(data) for _, data in batch)
        report.objects_new += result.new
        tick_partial()


class _PushDeltas:
    """Sends chunk blobs as delta batches against the chunks of tree ``base`` (the session
    head's), and works out which blobs must still go whole."""

    def __init__(self, store: Verified, client: CoordinatorClient, base: ObjectId,
                 report: PushReport, batch_bytes: int, tick: Callable[[], None]) -> None:
        self.store = store
        self.client = client
        self.base = base
        self.report = report
        self.batch_bytes = batch_bytes
        self.tick = tick
        self.pending: dict[ObjectId, None] = {}  # candidates not delivered yet, in tree order
        self.listed: set[ObjectId] = set()  # candidates some pairing list holds
        self.unpaired = False  # a tree could not be paired (never, in a sound repository)
        self.refused = False  # the coordinator refused a batch as a whole
        self.failed: set[ObjectId] = set()  # items a batch reported it could not rebuild

    def send(self, snapshots: list[tuple[ObjectId, ObjectId]], candidates: list[ObjectId]) -> None:
        """Send the ``candidates`` each snapshot's pairing list holds, newest snapshot first."""
        self.pending = dict.fromkeys(candidates)
        for _, root in snapshots:
            if not self.pending or self.refused:
                return
            try:
                pairs = pair_chunks(self.store, self.base, root)
            except (ObjectMissing, DecodeError):
                self.unpaired = True
                continue
            chosen = [i for i, pair in enumerate(pairs) if pair.new.oid in self.pending]
            self.listed.update(pairs[i].new.oid for i in chosen)
            limits = BatchLimits(self.batch_bytes, DELTA_STREAM_BYTES, DELTA_BATCH_ITEMS)
            for group in cut(build_items(self.store, pairs, chosen), limits):
                if not self._send(root, pairs, group):
                    return

    def _send(self, root: ObjectId, pairs: list[Pair], group: list[Built]) -> bool:
        batch = encode(group, pairs)
        try:
            result = self.client.upload_delta(
                batch, DeltaRequest(self.base, root, select_ranges(b.position for b in group)))
        except CoordinatorError as exc:
            if not _falls_back(exc):
                raise
            self.report.fallbacks += len(group)
            self.refused = True  # it will not take our batches: the rest goes whole
            return False
        self.report.delta_bytes += len(batch)
        failed = {oid for oid, _ in result.failed}
        self.failed |= failed
        self.report.fallbacks += len(failed)
        for built in group:
            if built.item.new_id not in failed:
                self.pending.pop(built.item.new_id, None)
                self.report.add_item(built.item)
                self.report.objects_sent += 1
                self.report.object_bytes += built.size
        self.report.objects_new += result.new
        self.tick()
        return True

    def leftovers(self, known_missing: set[ObjectId]) -> list[ObjectId]:
        """The candidates to upload whole.

        Those the session said it lacks, and those a batch reported failed, go whole. A
        candidate in no pairing list is in the base tree at the same place (every other chunk
        of a tree is in its pairing list), which the session holds complete: it is dropped.
        The rest (listed but never delivered: a refused batch; or under a tree that could not
        be paired) are asked about first, since some may be stored there already.
        """
        whole, unknown = [], []
        for oid in self.pending:
            if oid in known_missing or oid in self.failed:
                whole.append(oid)
            elif oid in self.listed or self.unpaired or self.refused:
                # A refused batch stops the pairing: a candidate of a later snapshot is in no
                # list yet, which says nothing about the base tree holding it.
                unknown.append(oid)
        for part in chunked(unknown, IDS_PER_REQUEST):
            whole += self.client.missing(list(part))
        return whole


class _PushWalk:
    """Yields ``(id, bytes)`` of every object ``head`` reaches that the session lacks.

    The graph is walked here first, breadth-first, without asking (:meth:`_candidates`):
    what the walk cannot tell is complete there (below) is then asked about in one
    ``objects/status`` request (per 16,384 ids), not one per level of the graph, so a push
    costs one round trip for it, not the tree's depth (9 on a real world: 3.4 KB of
    headers alone). Subgraphs under a complete node are skipped, present nodes not yielded.
    What that costs: the descendants of a node the session holds complete are asked about
    too (an interrupted push's upload, or older history), 34 bytes each, where a walk by
    levels would have stopped at the node. Objects are read from the local store in
    batches, unchecked (:func:`_read_blobs`: the coordinator checks them against their
    ids); nodes were read checked once before, since the walk decodes them.

    With ``defer_chunks``, chunk payload blobs (those region maps point at) are not yielded
    but listed for delta batches after the walk: in :attr:`missing_chunks` when the session
    said it lacks them, in :attr:`unasked_chunks` when they hang off a region node the session
    lacks. Those are not asked about: most are in the pairing lists (so missing), and the rest
    are unchanged chunks the session already holds (see :meth:`_PushDeltas.leftovers`); asking
    would cost 34 bytes per chunk, more than most deltas.

    With ``remote`` (the session head, which the session holds complete) and its tree's root,
    the walk does not ask about what it can tell: each node entered is set beside the node at
    the same place in the remote tree (its *counterpart*: the same file or folder name, the
    same index key), read here, and a child equal to its counterpart's child is complete
    there. Only children that differ are asked about (an interrupted push's nodes, or a
    subtree the session holds from older history, are then found present and not sent
    again), so the walk costs what changed, not the siblings of what changed.
    """

    def __init__(self, store: Verified, client: CoordinatorClient, head: ObjectId,
                 shallow: set[ObjectId], *, defer_chunks: bool = False,
                 remote: ObjectId | None = None, remote_root: ObjectId | None = None,
                 stored: set[ObjectId] | None = None,
                 whole: set[ObjectId] | None = None) -> None:
        self.store = store
        #: Ids a tree upload just stored there: taken as missing (not asked about, their
        #: children walked as under a missing node) but not sent, and the chunks of such a
        #: region map are not candidates (each is stored there, or was in the base).
        self.stored = stored or set()
        #: Ids the tree upload named whole: the only children of a stored node, besides
        #: stored ones, that the session may lack (every other one is the base's).
        self.whole = whole or set()
        self.client = client
        self.head = head
        self.shallow = shallow
        self.defer_chunks = defer_chunks
        self.found = 0  #: objects found missing so far (the progress total grows with it)
        self.missing_chunks: list[ObjectId] = []
        self.unasked_chunks: list[ObjectId] = []
        self.whole_chunks = 0  #: missing chunk blobs yielded
        #: ``(snapshot, root)`` of every snapshot the session does not hold complete, newest
        #: first: the trees whose chunks may travel as deltas.
        self.snapshots: list[tuple[ObjectId, ObjectId]] = []
        self._chunks: set[ObjectId] = set()
        self.remote_root = remote_root
        #: What the walk knows without asking: complete there.
        self._known: dict[ObjectId, ObjectStatus] = {} if remote is None else {
            remote: ObjectStatus.COMPLETE}
        self._counterpart: dict[ObjectId, ObjectId] = {}
        self._roots: dict[ObjectId, ObjectId] = {}  # snapshot -> its root, as walked
        self._remote = remote
        self._history_known = False  # the session head's ancestors were asked about
        #: Snapshots the session holds complete -> their roots.
        self._complete_roots: dict[ObjectId, ObjectId] = {}
        if remote is not None and remote_root is not None:
            self._complete_roots[remote] = remote_root
        self.asked = 0  #: ids sent in ``objects/status`` requests

    def _align(self, obj: object, base: object) -> None:
        """Tell the children of ``obj`` from those of its counterpart ``base``."""
        told = align(obj, base)
        for oid in told.same:
            self._known[oid] = ObjectStatus.COMPLETE
        self._counterpart.update(told.differ)

    def _counterparts(self, ids: list[ObjectId], kinds: list[Kind]) -> dict[ObjectId, object]:
        """The decoded counterparts of ``ids`` (those that have one), read here."""
        wanted = [(oid, self._counterpart[oid], kind) for oid, kind in zip(ids, kinds, strict=True)
                  if oid in self._counterpart]
        if not wanted:
            return {}
        out: dict[ObjectId, object] = {}
        try:
            datas = self.store.get_many([base for _, base, _ in wanted])
        except (ObjectMissing, ObjectCorrupt):
            return {}  # not in a sound repository: its children are asked about instead
        for (oid, base, kind), data in zip(wanted, datas, strict=True):
            with suppress(DecodeError):
                out[oid] = decode_as(base, data, kind)
        return out

    def __iter__(self) -> Iterator[tuple[ObjectId, bytes]]:
        order, under, leaves = self._candidates()
        statuses = self._ask([oid for oid, _ in order if oid not in leaves])
        # A region map under a node the session lacks is taken to be lacking too, as its
        # chunks are, and not asked about: most changed (their chunks did), and asking costs
        # 34 bytes each (3.6 KB of a real session's 62 KB push). Only a map the session holds
        # from older history, under a changed node, is sent again. Maps under a node the
        # session holds in part are asked about.
        covered: set[ObjectId] = set()  # complete there: a candidate, or found under one
        unsure: list[ObjectId] = []
        for oid, _ in order:  # each after the node it was found under
            up = under.get(oid)
            if up in covered or statuses.get(oid) is ObjectStatus.COMPLETE:
                covered.add(oid)
            elif oid in leaves:
                assert up is not None  # a region map is found under a node
                if statuses[up] is ObjectStatus.MISSING:
                    statuses[oid] = ObjectStatus.MISSING
                else:
                    unsure.append(oid)
        statuses.update(self._ask(unsure))
        covered.clear()
        nodes: list[ObjectId] = []
        blobs: list[ObjectId] = []
        recheck: list[ObjectId] = []  # chunks of region maps the session holds in part
        for oid, kind in order:
            status = statuses.get(oid)  # None: under a complete node
            if status is ObjectStatus.COMPLETE or under.get(oid) in covered:
                covered.add(oid)
                continue
            missing = status is ObjectStatus.MISSING
            if kind is Kind.SNAPSHOT:
                self.snapshots.append((oid, self._roots[oid]))
            if oid in leaves:  # a region map whose chunks travel as deltas
                if oid in self.stored:
                    pass
                elif missing:
                    self.unasked_chunks += leaves[oid]
                    self.found += len(leaves[oid])
                else:
                    recheck += leaves[oid]
            if oid in self.stored:
                continue
            self.found += int(missing)
            if not missing:
                continue
            if kind is not Kind.BLOB:
                nodes.append(oid)
            elif oid in self._chunks and self.defer_chunks:
                self.missing_chunks.append(oid)
            else:
                self.whole_chunks += oid in self._chunks
                blobs.append(oid)
            # Read unchecked, as blobs are: the coordinator checks each against its id (the
            # nodes were read checked once already, to find their children).
            for batch in (nodes, blobs):
                if len(batch) >= READ_BATCH:
                    yield from _read_blobs(self.store, batch)
                    batch.clear()
        yield from _read_blobs(self.store, nodes)
        yield from _read_blobs(self.store, blobs)
        recheck = [oid for oid in recheck if self._known.get(oid) is not ObjectStatus.COMPLETE]
        for oid, status in self._ask(recheck).items():
            if status is ObjectStatus.MISSING:
                self.missing_chunks.append(oid)
                self.found += 1

    def _know_history(self) -> None:
        """Learn which of the session head's ancestors held here the session holds complete,
        in one request. Done once, at the first merge the walk meets: its other parent's line
        reaches history the session holds, and without this the walk would read and ask
        about every tree of it (2,635 ids for a merge after 100 snapshots, where asking by
        levels stopped at the fork: 22). Asked, not assumed: retention may have dropped old
        snapshots there (then they are walked and sent as any other).
        """
        if self._history_known or self._remote is None:
            return
        self._history_known = True
        found = {oid: snap.root  # ancestor -> its root
                 for oid, snap in history(self.store, self._remote, shallow=self.shallow)
                 if snap is not None}
        for oid, status in self._ask(list(found)).items():
            if status is ObjectStatus.COMPLETE:
                self._known[oid] = status
                self._complete_roots[oid] = found[oid]

    def _align_snapshot(self, oid: ObjectId, snap: Snapshot) -> None:
        """Set a snapshot's root beside a tree the session holds complete: a parent's that
        it holds complete, else the session head's (close in time, and either is complete
        there, which is all a counterpart must be)."""
        base = next((self._complete_roots[p] for p in snap.parents
                     if p in self._complete_roots), self.remote_root)
        if base is None:
            return
        if snap.root == base:
            self._known[snap.root] = ObjectStatus.COMPLETE
        else:
            self._counterpart[snap.root] = base

    def _ask(self, ids: list[ObjectId]) -> dict[ObjectId, ObjectStatus]:
        """The session's status of each id, asked in as few requests as the limit allows;
        ids known complete there are not sent."""
        out: dict[ObjectId, ObjectStatus] = {}
        ask = []
        for oid in ids:
            if self._known.get(oid) is ObjectStatus.COMPLETE:
                out[oid] = ObjectStatus.COMPLETE
            elif oid in self.stored:
                out[oid] = ObjectStatus.MISSING
            else:
                ask.append(oid)
        self.asked += len(ask)
        for part in chunked(ask, IDS_PER_REQUEST):
            out.update(zip(part, self.client.object_status(list(part)), strict=True))
        return out

    def _candidates(self) -> tuple[list[tuple[ObjectId, Kind]], dict[ObjectId, ObjectId],
                                   dict[ObjectId, list[ObjectId]]]:
        """Walk ``head``'s graph here, breadth-first, without asking: every object not known
        complete in the session, in order; the node each was first found under; and, with
        ``defer_chunks``, each region map's chunks (not walked: they are the deltas')."""
        seen = {self.head}
        frontier: list[tuple[ObjectId, Kind]] = [(self.head, Kind.SNAPSHOT)]
        order: list[tuple[ObjectId, Kind]] = []
        under: dict[ObjectId, ObjectId] = {}
        leaves: dict[ObjectId, list[ObjectId]] = {}
        while frontier:
            after: list[tuple[ObjectId, Kind]] = []
            enter: list[tuple[ObjectId, Kind]] = []
            for oid, kind in frontier:
                if self._known.get(oid) is ObjectStatus.COMPLETE:
                    continue
                order.append((oid, kind))
                if kind is not Kind.BLOB:
                    enter.append((oid, kind))
            for sub in chunked(enter, READ_BATCH):
                bases = self._counterparts([o for o, _ in sub], [k for _, k in sub])
                for (oid, kind), data in zip(sub, self.store.get_many([o for o, _ in sub]), strict=True):
                    obj = decode_as(oid, data, kind)
                    if oid in bases:
                        self._align(obj, bases[oid])
                    if isinstance(obj, Snapshot):
                        self._roots[oid] = obj.root
                        if len(obj.parents) > 1:
                            self._know_history()
                        self._align_snapshot(oid, obj)
                    elif isinstance(obj, RegionLeaf):
                        self._chunks.update(entry.oid for entry in obj.entries)
                        if self.defer_chunks:
                            fresh = [e.oid for e in obj.entries if e.oid not in seen]
                            seen.update(fresh)
                            leaves[oid] = fresh
                            continue
                    follow = not (kind is Kind.SNAPSHOT and oid in self.shallow)
                    for child in children(oid, obj, kind, follow_parents=follow):
                        if (oid in self.stored and child[0] not in self.stored
                                and child[0] not in self.whole):
                            self._known[child[0]] = ObjectStatus.COMPLETE  # the base's
                        if child[0] not in seen:
                            seen.add(child[0])
                            under[child[0]] = oid
                            after.append(child)
            frontier = after
        return order, under, leaves


# -- pull ---------------------------------------------------------------------------------


def pull(
    repo: Repository,
    client: CoordinatorClient,
    *,
    progress: Progress | None = None,
    batch_bytes: int = STORE_BATCH_BYTES,
    delta: bool = True,
) -> PullReport:
    """Fetch the session head into the repository and, when it is a fast-forward, move the
    local head and the world to it.

    Unsnapshotted changes in the world are snapshotted first, so they are never lost (and
    then make the histories diverge, unless the session head is unchanged).

    Args:
        delta: fetch chunk payloads this repository has a previous version of as deltas.

    Raises:
        Diverged: neither head descends from the other; the fetched objects and the
            ``remotes/<session>`` ref are kept.
        ObjectCorrupt: the coordinator sent bytes that do not hash to the asked id.
    """
    before = client.stats.copy()
    answer = client.head()
    remote = answer.head
    if remote is None:
        return PullReport(None, repo.head(), "empty", wire=wire_since(client, before))
    report = PullReport(remote, repo.head(), "")
    run = _Fetch(repo.store, client, progress, batch_bytes, cut=answer.shallow)
    fetched = run.run(remote, ref=f"remotes/{client.session}", delta=delta)
    report.objects_received, report.object_bytes = fetched.objects, fetched.object_bytes
    for name, value in fetched.chunks.counts().items():
        setattr(report, name, value)
    _integrate(repo, client.session, remote, report, run.reader(), client)
    report.wire = wire_since(client, before)
    return report


@dataclass
class FetchResult:
    """What :func:`fetch` stored: objects, their encoded bytes, how chunk blobs travelled."""

    objects: int = 0
    object_bytes: int = 0
    chunks: ChunkCounts = field(default_factory=ChunkCounts)


class _Fetched(Overlay):
    """The store as the restore that ends a pull reads it: the objects this fetch checked
    are not hashed a second time.

    Invariant 2 (every object crossing a boundary is checked once) holds: each of them was
    hashed against its id when it crossed into this process (:func:`_download`, or the
    delta rebuild), moments before this read. They are read back from this process's own
    store, where the fetch put them from its checked bytes: a read of our own fresh write
    crosses no boundary, so they are read as ``trusted`` (:meth:`Verified.get_many`). Every
    other object (anything the store held before this pull) is read and checked as usual.
    Nothing fetched is kept in memory for the restore: its peak does not grow with the world.
    """

    def __init__(self, store: Verified, fetched: set[ObjectId]) -> None:
        super().__init__({}, store, trusted=fetched)
        self.fetched = fetched

    def checked(self, oid: ObjectId) -> bool:
        """Whether this fetch checked the object moments ago (a restore need not read it
        before it writes, see :func:`~peerhost_store.restore.check_objects`)."""
        return oid in self.fetched


class _Fetch:
    """One fetch: the node walk, then chunk deltas, then whole blobs, then the final update."""

    def __init__(self, store: Store, client: CoordinatorClient, progress: Progress | None,
                 batch_bytes: int, cut: frozenset[ObjectId] = frozenset()) -> None:
        self.store = store
        #: Snapshots whose parents the session's retention dropped: not followed, and
        #: recorded as shallow here when this store lacks their parents too.
        self.cut = cut
        self.client = client
        self.progress = progress
        self.batch_bytes = batch_bytes
        self.result = FetchResult()
        self.known = 0
        self.nodes: dict[ObjectId, bytes] = {}  # stored last, with the ref
        self.blobs: dict[ObjectId, None] = {}  # missing blobs, in tree order
        self.chunks: set[ObjectId] = set()  # blobs region maps point at
        self.snapshots: list[tuple[ObjectId, ObjectId]] = []  # fetched: (snapshot, root)
        self.held: list[ObjectId] = []  # snapshots of the session's history stored here
        self._pending: list[bytes] = []
        self._pending_hashed: list[tuple[ObjectId, bytes]] = []
        self._pending_bytes = 0
        self.checked: set[ObjectId] = set()  # objects this fetch hashed and stored
        self._storer: ThreadPoolExecutor | None = None
        self._storing: Future[int] | None = None  # the blob batch being committed
        #: What this fetch stored or found present: pinned until the ref reaches it.
        self.pin = store.new_pin()
        self.relied: list[ObjectId] = []
        #: Chunk blobs a tree download rebuilt here (kept, so not fetched again).
        self.derived: set[ObjectId] = set()

    def run(self, remote: ObjectId, *, ref: str, delta: bool) -> FetchResult:
        """See :func:`fetch`."""
        # Blob batches are committed on their own thread: the fsync of one overlaps the
        # downloads and the checking of the next (on an error, a running commit finishes).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="phs-store") as storer:
            self._storer = storer
            try:
                self.walk(remote, ref, delta=delta)
                if delta:
                    self.deltas(self.store.refs.get(HEAD))
                self.whole_blobs()
                self.finish(ref, remote)
            except BaseException:
                with suppress(PeerhostError):  # else the pin goes stale when we exit
                    self.store.apply(Update(pins={self.pin: None}))
                raise
            finally:
                self._storer = None
        return self.result

    def reader(self) -> _Fetched:
        """The store as the restore after this fetch should read it (see :class:`_Fetched`)."""
        return _Fetched(self.store.objects, self.checked)

    def tick(self) -> None:
        if self.progress is not None:
            self.progress(self.result.objects, self.known)

    def walk(self, remote: ObjectId, ref: str, *, delta: bool = True) -> None:
        """Fetch every node ``remote`` reaches that the store lacks; list the missing blobs."""
        seen = {remote}
        frontier: list[tuple[ObjectId, Kind]] = [(remote, Kind.SNAPSHOT)]
        rebuilt = self._tree(remote, ref) if delta else None
        hinted = self._changed(remote, ref) if rebuilt is None else rebuilt
        while frontier:
            absent = set(self.store.objects.missing(oid for oid, _ in frontier))
            absent |= self._rely_on([item for item in frontier if item[0] not in absent])
            self.held += [oid for oid, kind in frontier
                          if kind is Kind.SNAPSHOT and oid not in absent]
            want = [item for item in frontier if item[0] in absent]
            self.known += len(want)
            self.blobs.update((oid, None) for oid, kind in want
                              if kind is Kind.BLOB and oid not in self.derived)
            nodes = [item for item in want if item[1] is not Kind.BLOB]
            after: list[tuple[ObjectId, Kind]] = []
            for part in chunked(nodes, IDS_PER_REQUEST):
                lacking = [oid for oid, _ in part if oid not in hinted]
                got = dict(zip(lacking, _download(self.client, lacking), strict=True))
                for oid, kind in part:
                    data = hinted.pop(oid, None)
                    data = got[oid] if data is None else data
                    obj = decode_as(oid, data, kind)
                    self.nodes[oid] = data
                    self._count(len(data))
                    if isinstance(obj, Snapshot):
                        self.snapshots.append((oid, obj.root))
                    elif isinstance(obj, RegionLeaf):
                        self.chunks.update(entry.oid for entry in obj.entries)
                    for child in children(oid, obj, kind, follow_parents=oid not in self.cut):
                        if child[0] not in seen:
                            seen.add(child[0])
                            after.append(child)
                self.tick()
            frontier = after

    def _tree(self, remote: ObjectId, ref: str) -> dict[ObjectId, bytes] | None:
        """The snapshot ``remote`` and the nodes of its tree, rebuilt here from a tree
        download (:mod:`.edits`) against its parent, held here (``ref``, else the local
        head): by their hashes, as :meth:`_changed` gives them. The chunks it rebuilt are
        kept, hashed here; the root was checked against the snapshot's, which the walk checks
        against ``remote``. None when it cannot be had so (not one snapshot apart, an older
        coordinator, anything that does not rebuild): the walk goes on as before."""
        have = self.store.refs.get(ref) or self.store.refs.get(HEAD)
        if (not self.client.tree_uploads or have is None or have == remote
                or not self.store.objects.missing([remote])):
            return None
        try:
            answer = self.client.download_tree(remote, have)
        except CoordinatorError as exc:
            if not _falls_back(exc):
                raise
            return None
        if len(answer) != 2 or not answer[0] or hash_bytes(answer[1]) != remote:
            return None
        objects = self.store.objects
        try:
            snapshot, base = decode(answer[1]), decode(objects.get_raw(have))
            if not isinstance(snapshot, Snapshot) or not isinstance(base, Snapshot):
                return None
            upload = decode_tree_upload(answer[0], max_changes=Budget().chunks,
                                        max_bytes=DELTA_ANSWER_BYTES)
            if upload.base != base.root or upload.root != snapshot.root:
                return None
            rebuilt = rebuild_upload(objects, objects, upload, max_bytes=DELTA_ANSWER_BYTES)
        except PeerhostError:  # malformed, damaged here, does not rebuild
            return None
        counts = self.result.chunks
        counts.delta_bytes += len(upload.batch)
        for item, oid, blob in rebuilt.chunks:
            counts.add_item(item)
            self.derived.add(oid)
            self._count(len(blob))
            self._keep(hashed=(oid, blob))  # hashed here, and proven by the root
        return {**rebuilt.nodes, remote: answer[1]}

    def _changed(self, remote: ObjectId, ref: str) -> dict[ObjectId, bytes]:
        """The nodes of ``remote`` the coordinator guesses this store lacks, by the hash of
        their bytes (so each is checked against the id the walk reaches it by): a play
        session's changed nodes in one answer instead of one request per level of the tree.
        Set beside ``ref`` (the session's head as last fetched), else the local head; empty
        when neither is here, when ``remote`` is, or from a coordinator without the route."""
        have = self.store.refs.get(ref) or self.store.refs.get(HEAD)
        if have is None or have == remote or not self.store.objects.missing([remote]):
            return {}
        try:
            datas = self.client.download_changed(remote, have)
        except CoordinatorError as exc:
            if not _falls_back(exc):
                raise
            return {}  # an older coordinator: walk as before
        return {hash_bytes(data): data for data in datas}

    def _rely_on(self, present: list[tuple[ObjectId, Kind]]) -> set[ObjectId]:
        """Pin objects found present (a present node: with its subtree), then return those
        that a concurrent gc deleted before the pin landed: they are fetched instead."""
        if not present:
            return set()
        self.store.apply(Update(pins={self.pin: [(oid, kind is not Kind.BLOB)
                                                 for oid, kind in present]}))
        ids = [oid for oid, _ in present]
        self.relied += ids
        return set(self.store.objects.missing(ids))

    def deltas(self, prefer: ObjectId | None) -> None:
        """Fetch the missing chunk blobs that pair with a snapshot held here as deltas."""
        if not self.held or not self.snapshots:
            return
        # Any held snapshot of the session's history is complete here and on the coordinator;
        # the local head (the world's current state) is the closest to what comes.
        held = prefer if prefer in self.held else self.held[0]
        try:
            snapshot = decode(self.store.objects.get_raw(held))
        except ObjectCorrupt:
            return  # damaged here (phs repair heals it): every blob comes whole
        assert isinstance(snapshot, Snapshot)  # the walk reached it as a parent snapshot
        overlay = Overlay(self.nodes, self.store.objects)
        for _, root in self.snapshots:
            try:
                pairs = pair_chunks(overlay, snapshot.root, root)
            except (ObjectMissing, ObjectCorrupt, DecodeError):
                continue  # not in a sound repository; the blobs then go whole
            chosen = [i for i, pair in enumerate(pairs)
                      if pair.new.oid in self.blobs and pair.new.oid in self.chunks]
            while chosen:
                request = DeltaRequest(snapshot.root, root, select_ranges(chosen))
                try:
                    count, batch = self.client.download_delta(request)
                except CoordinatorError as exc:
                    if not _falls_back(exc):
                        raise
                    self.result.chunks.fallbacks += len(chosen)
                    return  # this coordinator will not build batches: the rest goes whole
                self.result.chunks.delta_bytes += len(batch)
                self._apply([pairs[i] for i in chosen[:count]], batch)
                chosen = chosen[count:]
                self.tick()

    def _apply(self, pairs: list[Pair], batch: bytes) -> None:
        counts = self.result.chunks
        try:
            items = decode_batch(batch, max_items=len(pairs), max_bytes=DELTA_ANSWER_BYTES,
                                 want=want_of(pairs))
        except DeltaError:
            counts.fallbacks += len(pairs)  # left in self.blobs: fetched whole later
            return
        rebuilder = Rebuilder(self.store.objects)
        blobs = rebuilder.add_many([(item, None if pair.base is None else pair.base.compression)
                                    for pair, item in zip(pairs, items, strict=True)])
        for item, blob in zip(items, blobs, strict=True):  # decode_batch checked the count
            if blob is None:  # a damaged base, or a delta that does not rebuild: whole later
                counts.fallbacks += 1
                continue
            counts.add_item(item)
            self.blobs.pop(item.new_id, None)
            self._count(len(blob))
            # apply_delta hashed the blob here and checked it against the id.
            self._keep(hashed=(item.new_id, blob))

    def whole_blobs(self) -> None:
        """Fetch the blobs still missing as whole objects, storing one answer while the
        next ones download."""
        ids = list(self.blobs)
        self.result.chunks.chunks_whole += sum(1 for oid in ids if oid in self.chunks)
        got = [0, 0]  # blobs and bytes received: their mean size sizes the next requests

        def groups() -> Iterator[list[ObjectId]]:
            start = 0
            while start < len(ids):
                mean = got[1] // got[0] if got[0] else 8 << 10
                count = max(64, min(IDS_PER_REQUEST, DOWNLOAD_BYTES // max(1, mean)))
                yield ids[start : start + count]
                start += count

        for wanted, datas in _overlapped(groups(), lambda part: _download(self.client, part)):
            # _download checked each answer's hash against its id: store them as hashed.
            for oid, data in zip(wanted, datas, strict=True):
                self._count(len(data))
                self._keep(hashed=(oid, data))
                got[0] += 1
                got[1] += len(data)
            self.tick()

    def finish(self, ref: str, remote: ObjectId) -> None:
        if self._storing is not None:
            self._storing.result()  # every blob is stored before the nodes that reach it
            self._storing = None
        # Every object the nodes reach is here (pinned, so gc kept it): checked at commit.
        self.store.apply(Update(objects=self._pending + list(self.nodes.values()),
                                hashed=self._pending_hashed,
                                refs=[(ref, self.store.refs.get(ref), remote)],
                                meta=self._shallow(),
                                require=[*self.relied, *self.checked],
                                pins={self.pin: None}))
        # The restore that follows reads what this fetch stored from the store (checked: the
        # node ids join the blobs'), so none of it stays in memory (at 1 GiB, 32 MiB of
        # blobs and 50 MiB of nodes, as bytes and decoded).
        self.checked.update(self.nodes)
        self._pending, self._pending_hashed, self._pending_bytes = [], [], 0
        self.nodes = {}

    def _shallow(self) -> dict[str, bytes | None]:
        """The local ``shallow`` list, grown by fetched snapshots whose history was cut."""
        cut = [oid for oid in self.cut if oid in self.nodes]
        parents = [p for oid in cut for p in _parents(self.nodes[oid])]
        absent = set(self.store.objects.missing(parents))
        new = {oid for oid in cut if any(p in absent for p in _parents(self.nodes[oid]))}
        if not new:
            return {}
        return {"shallow": msgpack.packb(sorted(load_shallow(self.store) | new))}

    def _count(self, size: int) -> None:
        self.result.objects += 1
        self.result.object_bytes += size

    def _keep(self, *, data: bytes | None = None,
              hashed: tuple[ObjectId, bytes] | None = None) -> None:
        if data is not None:
            self._pending.append(data)
            self._pending_bytes += len(data)
        if hashed is not None:
            self._pending_hashed.append(hashed)
            self.checked.add(hashed[0])
            self._pending_bytes += len(hashed[1])
        if self._pending_bytes >= self.batch_bytes:
            # A blob reaches nothing: storing it before the nodes that point at it is safe,
            # pinned in the same transaction (no ref reaches it yet).
            update = Update(objects=self._pending, hashed=self._pending_hashed, pins={
                self.pin: [(hash_bytes(data), False) for data in self._pending]
                + [(oid, False) for oid, _ in self._pending_hashed]})
            self._pending, self._pending_hashed, self._pending_bytes = [], [], 0
            if self._storing is not None:
                self._storing.result()  # one batch in memory while another is committed
            if self._storer is None:
                self._storing = None
                self.store.apply(update)
            else:
                self._storing = self._storer.submit(self.store.apply, update)


def fetch(
    store: Store,
    client: CoordinatorClient,
    remote: ObjectId,
    *,
    ref: str,
    progress: Progress | None = None,
    batch_bytes: int = STORE_BATCH_BYTES,
    delta: bool = True,
    cut: frozenset[ObjectId] = frozenset(),
) -> FetchResult:
    """Store every object ``remote`` reaches that ``store`` lacks and point ``ref`` at it.

    Tree nodes come first, a level per request; then the missing chunk blobs that pair with a
    snapshot this store holds come as delta batches (with ``delta``); then every other
    missing blob, whole. Parents of ``cut`` snapshots (``Head.shallow``) are not fetched.
    """
    return _Fetch(store, client, progress, batch_bytes, cut).run(remote, ref=ref, delta=delta)


def _parents(data: bytes) -> tuple[ObjectId, ...]:
    snap = decode(data)
    return snap.parents if isinstance(snap, Snapshot) else ()


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


class CoordinatorSource:
    """Good copies of objects from a coordinator session (:class:`~peerhost_store.repair.
    ObjectSource`): for ``phs repair``, and for a pull whose restore needs an object that is
    damaged here."""

    def __init__(self, client: CoordinatorClient, name: str) -> None:
        self.client = client
        self.name = name

    def fetch(self, ids: list[ObjectId]) -> dict[ObjectId, bytes]:
        """The bytes of those of ``ids`` the session stores, each checked against its id."""
        out: dict[ObjectId, bytes] = {}
        for part in chunked(ids, IDS_PER_REQUEST):
            lacking = set(self.client.missing(list(part)))
            have = [oid for oid in part if oid not in lacking]
            out.update(zip(have, _download(self.client, have), strict=True) if have else ())
        return out


#: Times a pull heals objects its restore needs before it gives up (a healed region map can
#: reveal damaged chunks under it).
HEAL_ROUNDS = 4


def _prepare_healing(repo: Repository, client: CoordinatorClient, reader: _Fetched,
                     live: ObjectId, target: ObjectId) -> list[RestoreOp]:
    """:func:`prepare_restore`; objects it needs that are damaged here are fetched again from
    the session first (nothing is written before every one is good)."""
    for _ in range(HEAL_ROUNDS):
        try:
            return prepare_restore(reader, repo.world, live, target)
        except DamagedObjects as exc:
            got = CoordinatorSource(client, client.session).fetch(exc.oids)
            if not got:
                raise
            repo.store.apply(Update(objects=list(got.values())))
    return prepare_restore(reader, repo.world, live, target)


def _integrate(repo: Repository, session: str, remote: ObjectId, report: PullReport,
               reader: _Fetched, client: CoordinatorClient) -> None:
    store = repo.store
    local = repo.head()
    if local is None:
        live = repo.scan().root
        if live not in (EMPTY_TREE, repo.read_snapshot(remote).root):
            kept = repo.snapshot(f"local world before pulling session {session}")
            raise Diverged(kept.oid, remote, f"the world held other files, kept in snapshot "
                           f"{kept.oid.hex()[:12]}; {DIVERGED_HINT}")
    else:
        taken = repo.snapshot(f"unsnapshotted changes before pulling session {session}",
                              tell_pending=False)
        report.safety = taken.oid if taken.created else None
        local, live = taken.oid, taken.snapshot.root
        if (pending := repo.pending_restore()) is not None:
            raise RestorePending(pending, taken.oid)  # play after it: the user chooses
    shallow = load_shallow(store)
    if local == remote:
        report.outcome, report.head = "up-to-date", local
    elif local is not None and is_ancestor(store.objects, remote, local, shallow=shallow):
        report.outcome, report.head = "ahead", local
    elif local is None or is_ancestor(store.objects, local, remote, shallow=shallow):
        target = repo.read_snapshot(remote).root
        with repo.lock():
            ops = _prepare_healing(repo, client, reader, live, target)
            # Compare-and-swap: a snapshot taken since ours makes this fail, not vanish. A kill
            # during the restore leaves it pending; the next command finishes it.
            report.restored = repo.restore_moving_head(
                ops, target, [(HEAD, local, remote)], reader=reader, source=live)
        report.outcome, report.head = "fast-forward", remote
    else:
        raise Diverged(local, remote, DIVERGED_HINT)
