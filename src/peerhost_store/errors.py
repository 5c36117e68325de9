"""Errors shared across modules.

Every error PeerHost raises derives from :class:`PeerhostError`; errors specific to one
module live next to the code that raises them::

    PeerhostError
     +-- ObjectMissing (also KeyError)        store: no object with that id
     +-- ObjectCorrupt (also ValueError)      store/objects: bytes do not hash to their id
     +-- DamagedObjects                       restore: objects it needs are missing or corrupt
     +-- DecodeError (also ValueError)        objects: bytes are not a valid object
     +-- RegionError (also ValueError)        region: a region file that cannot be parsed
     +-- ChunkDecodeError (also ValueError)   chunk: payload or NBT refused
     +-- NbtError (also ValueError)           nbt: NBT refused, or a value of the wrong type
     +-- UnsafePath (also ValueError)         worldfs: a path that would escape the world
     +-- RefConflict                          refs: compare-and-swap lost
     +-- NotFound (also LookupError)          snapshot ids, prefixes, refs
     +-- StoreError                           store: cannot open, map full, ...
          +-- StoreDamaged                    store: its file is damaged (restore a backup)
"""

from __future__ import annotations

from .ids import ObjectId

__all__ = [
    "DamagedObjects",
    "DecodeError",
    "NotFound",
    "ObjectCorrupt",
    "ObjectMissing",
    "PeerhostError",
    "StoreDamaged",
    "StoreError",
]


class PeerhostError(Exception):
    """Base class of every PeerHost error."""


class ObjectMissing(PeerhostError, KeyError):
    """The store has no object with this id."""

    def __init__(self, oid: ObjectId, where: str = "") -> None:
        self.oid = oid
        self.where = where
        suffix = f" (needed by {where})" if where else ""
        super().__init__(f"object {oid.hex()} is missing{suffix}")

    def __str__(self) -> str:
        return str(self.args[0])


class ObjectCorrupt(PeerhostError, ValueError):
    """Bytes read or received do not hash to the id they were stored under."""

    def __init__(self, expected: ObjectId, got: ObjectId, where: str = "") -> None:
        self.expected = expected
        self.got = got
        self.where = where
        suffix = f" in {where}" if where else ""
        super().__init__(
            f"object {expected.hex()} is corrupt{suffix}: its bytes hash to {got.hex()}"
        )


class DecodeError(PeerhostError, ValueError):
    """Bytes that are not a well-formed object."""


class NotFound(PeerhostError, LookupError):
    """A snapshot, prefix or ref that does not exist."""


class StoreError(PeerhostError):
    """The store cannot be opened or written."""


class StoreDamaged(StoreError):
    """The store's file itself is damaged (its pages, not one object): nothing in it can be
    trusted to be found. The way out is a backup of the store folder, or a fresh clone."""

    def __init__(self, path: object, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"the store at {path} is damaged ({detail}): restore that folder from "
                         "a backup, or clone the session again into a new folder (phs clone); "
                         "the world's files are not affected")


class DamagedObjects(PeerhostError):
    """Objects an operation needs are missing or corrupt; it stopped before writing anything
    (or, as ``outcome`` says, where it can be run again).

    Attributes:
        problems: ``(id, "missing" | "corrupt", path that needs it)`` for each one found.
    """

    def __init__(self, problems: list[tuple[ObjectId, str, str]], what: str = "the restore",
                 outcome: str = "nothing was written") -> None:
        self.problems = problems
        oid, kind, where = problems[0]
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        super().__init__(f"{what} needs {kind} object {oid.hex()} ({where}){more}; {outcome}; "
                         "run phs repair (it fetches good copies from the remotes, or drops "
                         "what is lost from the snapshots that hold it)")

    @property
    def oids(self) -> list[ObjectId]:
        return [oid for oid, _, _ in self.problems]
