"""The pending-restore mark: what a restore records before it writes the first file, so that
a later command can tell a restore that was interrupted from play that happened since.

A restore (restore, rollback, the restore that ends a pull or a reconcile) stores the mark in
the store's meta, in the same transaction that moves the head (or before its first write when
the head stays), and clears it once every file is written. A command that finds it judges the
live world (:func:`only_restored`):

* every path holds its old version or its target version: the restore was just interrupted,
  and is finished;
* anything else: someone played on the half-restored world. That play is snapshotted like any
  other change and never overwritten; the user chooses to finish the restore (run it again) or
  to drop it (``phs restore --abort``: head goes back to :attr:`PendingRestore.before`, the
  world is not touched).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from .errors import DecodeError, PeerhostError
from .ids import ObjectId
from .objects import DirEntry, EntryKind
from .tree import ObjectLoader, diff_trees

__all__ = [
    "PENDING_RESTORE",
    "PendingRestore",
    "RestoreIncomplete",
    "RestorePending",
    "kept_notice",
    "only_restored",
]

#: Store meta key of the mark.
PENDING_RESTORE = "pending-restore"


@dataclass(frozen=True)
class PendingRestore:
    """A restore that has begun writing the world.

    Attributes:
        target: the root tree being written.
        source: the root tree the world held when the restore started.
        before: the head before the restore (``phs restore --abort`` goes back to it).
        after: the head the restore moved to (``before`` for a plain restore).
        snapshot: the snapshot whose world is being written.
        command: ``restore``, ``rollback``, ``pull`` or ``reconcile``.
    """

    target: ObjectId
    source: ObjectId
    before: ObjectId | None
    after: ObjectId | None
    snapshot: ObjectId | None
    command: str

    def encode(self) -> bytes:
        return bytes(msgpack.packb({"v": 1, "target": self.target, "source": self.source,
                              "before": self.before, "after": self.after,
                              "snapshot": self.snapshot, "command": self.command}))

    @classmethod
    def decode(cls, raw: bytes, head: ObjectId | None, head_tree: ObjectId | None) -> PendingRestore:
        """Read a mark. A mark of an earlier version holds only the target; the world is then
        judged against head's tree, which never takes play for an interruption."""
        if len(raw) == 32:
            return cls(ObjectId(raw), head_tree or ObjectId(raw), head, head, None, "restore")
        try:
            value = msgpack.unpackb(raw)
            return cls(_id(value["target"]), _id(value["source"]), _id_or_none(value["before"]),
                       _id_or_none(value["after"]), _id_or_none(value["snapshot"]),
                       str(value["command"]))
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise DecodeError(f"the store's pending-restore mark is unreadable: {exc}") from exc

    def describe(self) -> str:
        """``rollback to 3fa2c1b2c3d4``, ``restore of ...``, ``pull of ...``."""
        what = self.snapshot.hex()[:12] if self.snapshot else "an earlier snapshot"
        return f"{self.command} to {what}" if self.command == "rollback" else f"{self.command} of {what}"

    def finish_hint(self) -> str:
        """The command that writes the target over whatever the world holds (a pull's or
        reconcile's target is a snapshot that head descends from: rolling back to it keeps
        head's history)."""
        verb = "restore" if self.command == "restore" else "rollback"
        return f"phs {verb} {self.snapshot.hex()[:12]}" if self.snapshot else f"phs {verb} SNAPSHOT"

    def rerun_hint(self) -> str:
        """The command to run again when the restore was only interrupted (any command that
        looks at the world finishes it first)."""
        return "phs pull" if self.command in ("pull", "reconcile") else self.finish_hint()

    def choices(self, finish: str, *, kept: bool = False) -> str:
        """Both ways out, in words: ``finish``, or ``phs restore --abort`` (after play was
        ``kept`` in a snapshot on top, head stays there)."""
        back = self.before.hex()[:12] if self.before else "no snapshot"
        where = "head stays at the kept play" if kept else f"head goes back to {back}"
        return (f"run {finish} to finish it, or phs restore --abort to drop it ({where}, the "
                "world is not touched)")


class RestoreIncomplete(PeerhostError):
    """A restore stopped after it began writing the world (a file could not be written)."""

    def __init__(self, pending: PendingRestore, cause: BaseException) -> None:
        self.pending = pending
        self.cause = cause
        super().__init__(f"{pending.describe()} stopped part-way: {cause}; the world is "
                         f"partly restored: fix that, then "
                         f"{pending.choices(pending.rerun_hint() + ' again')}")


class RestorePending(PeerhostError):
    """The world changed after a restore was interrupted; nothing is written until the user
    chooses (a busy-or-conflict error)."""

    def __init__(self, pending: PendingRestore, kept: ObjectId) -> None:
        self.pending = pending
        self.kept = kept
        super().__init__(kept_notice(pending, kept))


def kept_notice(pending: PendingRestore, kept: ObjectId) -> str:
    """The one line that says play after an interrupted restore was kept, and the choices."""
    return (f"an interrupted {pending.describe()} was not finished: the world changed since "
            f"(kept in snapshot {kept.hex()[:12]}); "
            f"{pending.choices(pending.finish_hint(), kept=True)}")


def only_restored(store: ObjectLoader, pending: PendingRestore, live: ObjectId) -> bool:
    """Whether every path of tree ``live`` holds its version in ``pending.source`` or in
    ``pending.target``: the world is what an interrupted restore leaves, and nothing else."""
    planned = {path: new for path, _, new in diff_trees(store, pending.source, pending.target)}
    for path, _, now in diff_trees(store, pending.source, live):
        if path not in planned or not _same(now, planned[path]):
            return False
    return True


def _same(now: DirEntry | None, want: DirEntry | None) -> bool:
    if now is None or want is None:
        return now is want
    if now.kind is EntryKind.DIR and want.kind is EntryKind.DIR:
        return True  # a folder being filled or emptied: its entries are judged one by one
    return now == want


def _id(value: object) -> ObjectId:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"not an object id: {value!r}")
    return ObjectId(value)


def _id_or_none(value: object) -> ObjectId | None:
    return None if value is None else _id(value)
