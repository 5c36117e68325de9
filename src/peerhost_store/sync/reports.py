"""What a push or a pull did: the reports :mod:`.transfer` returns, and the push that finds
nothing to send.

Apart from :mod:`.transfer` so that a ``phs push`` with nothing to send (one ``GET head``)
answers without importing the transfer code: its batches, deltas, tree uploads and restore
cost a process about 40 ms to import.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from ..ids import ObjectId
from ..repo import Repository
from .client import CoordinatorClient, WireStats

if TYPE_CHECKING:
    from ..restore import RestoreResult
    from .delta import DeltaItem

__all__ = ["ChunkCounts", "PullReport", "PushReport", "up_to_date", "wire_since"]


@dataclass(kw_only=True)
class ChunkCounts:
    """How the chunk payload blobs of a transfer travelled (push and pull reports are these).

    Attributes:
        chunks_whole: as full payloads: whole objects, stored items of a delta batch (payloads
            recompression cannot reproduce), and fallbacks.
        chunks_delta: as a delta against their previous version (:data:`BASED_KINDS`).
        chunks_raw: as NBT in a delta batch, recompressed by the receiver (no previous
            version of that chunk on the receiving side).
        delta_bytes: bytes of delta batches (request bodies for a push, answers for a pull).
        fallbacks: chunks a delta batch did not deliver (the receiver could not rebuild them,
            or refused the batch), then sent whole; also counted in ``chunks_whole``.
    """

    chunks_whole: int = 0
    chunks_delta: int = 0
    chunks_raw: int = 0
    delta_bytes: int = 0
    fallbacks: int = 0

    def add_item(self, item: DeltaItem) -> None:
        from .delta import BASED_KINDS, KIND_RAW  # loaded by whoever has items

        if item.kind in BASED_KINDS:
            self.chunks_delta += 1
        elif item.kind == KIND_RAW:
            self.chunks_raw += 1
        else:
            self.chunks_whole += 1

    def counts(self) -> dict[str, int]:
        """The counts alone, by field name."""
        return {f.name: getattr(self, f.name) for f in fields(ChunkCounts)}


@dataclass
class PushReport(ChunkCounts):
    """What a push did. ``wire`` counts request and response bytes, headers included.

    ``objects_sent`` and ``object_bytes`` count the objects that reached the session and their
    encoded size, however they travelled; the ``chunks_*`` fields say how chunk payload blobs
    travelled (see :class:`ChunkCounts`).
    """

    head: ObjectId
    old_head: ObjectId | None
    up_to_date: bool = False
    objects_sent: int = 0
    object_bytes: int = 0
    objects_new: int = 0
    checked: int = 0
    #: Tree nodes the coordinator rebuilt from a tree upload instead of receiving them.
    tree_nodes: int = 0
    wire: WireStats = field(default_factory=WireStats)


@dataclass
class PullReport(ChunkCounts):
    """What a pull did.

    ``outcome`` is ``empty`` (the session has no head), ``up-to-date``, ``fast-forward``
    (the local head and world moved to the session head) or ``ahead`` (the local head
    descends from the session head: nothing to do). ``objects_received`` and ``object_bytes``
    count the objects stored and their encoded size, however they travelled; the
    ``chunks_*`` fields say how chunk payload blobs travelled (see :class:`ChunkCounts`).
    """

    remote: ObjectId | None
    head: ObjectId | None
    outcome: str
    safety: ObjectId | None = None
    objects_received: int = 0
    object_bytes: int = 0
    restored: RestoreResult | None = None
    wire: WireStats = field(default_factory=WireStats)


def wire_since(client: CoordinatorClient, before: WireStats) -> WireStats:
    """What ``client`` sent and received since its stats were ``before``."""
    now = client.stats
    return WireStats(now.requests - before.requests, now.sent - before.sent,
                     now.received - before.received)


def up_to_date(repo: Repository, client: CoordinatorClient) -> PushReport | None:
    """The report of a push with nothing to send (the session head is the local head), or
    None: one ``GET head``, so a push asks before it takes a lease it would not need (as
    ``git push`` of an up-to-date branch changes nothing)."""
    before = client.stats.copy()
    head = repo.head()
    if head is None or client.head().head != head:
        return None
    report = PushReport(head, head)
    report.up_to_date = True
    report.wire = wire_since(client, before)
    return report
