"""What the coordinator's domain refuses, and why. No HTTP here: the edge maps each class to a
status in one table (:data:`peerhost_server.errors.STATUS`).

Each error carries a stable ``code`` (the ``error.code`` of the answer, documented in
docs/protocol.md), a message naming sessions, members and ids (never a token) and ``details``,
the JSON fields that go with it::

    DomainError
     +-- BadName                 bad_name
     +-- NoSession               no_session
     +-- SessionExists           session_exists
     +-- MemberExists            member_exists
     +-- NoMember                no_member
     +-- Forbidden               forbidden
     +-- LeaseRefused            lease_held, lease_reserved, lease_lost (details: lease)
     +-- NoLease                 no_lease
     +-- Fenced                  fenced (details: lease)
     +-- HeadMoved               head_moved (details: head)
     |    +-- NotFastForward     not_fast_forward
     +-- Incomplete              incomplete (missing, where)
     +-- MalformedTree           malformed_tree
     +-- RefusedTree             tree_refused (reason, path, value, limit)
     +-- TreeNotValidated        tree_not_validated (id, which)
     +-- TreeMismatch            tree_mismatch (root, got)
     +-- NoSnapshot, NotASnapshot
     +-- AreaRefused             area_refused (path)
     +-- NothingToRollBack       nothing_to_roll_back (target)
     +-- ObjectNotStored         object_missing (id)
     +-- StoredObjectCorrupt     object_corrupt (id)
     +-- BadObjects, MalformedObject, NodeTooLarge, IdMismatch   (index)
     +-- BadDelta                bad_delta (index)
     +-- TooManyItems, DeltaTooLarge, PairingRefused  (limit)
     +-- QuotaExceeded           quota_exceeded (usage, limit, incoming)
     +-- DiskFull                disk_full (free, needed)
     +-- Unavailable             unavailable (retry_after, what)
     +-- StoreProblem            store_problem (problems)
     +-- Cancelled               cancelled
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peerhost_store.area import GraftRefused
from peerhost_store.bounds import TreeRefused
from peerhost_store.errors import PeerhostError
from peerhost_store.ids import ObjectId
from peerhost_store.sync.pairing import PairingTooLarge
from peerhost_store.worldfs import UnsafePath

#: The rule for session and member names, as refusals state it.
NAME_RULE = "1-64 letters, digits, '-' or '_', starting with a letter or digit"


def _hex(oid: ObjectId | None) -> str | None:
    return None if oid is None else oid.hex()


class DomainError(PeerhostError):
    """A request the coordinator refuses.

    Attributes:
        code: a short machine-readable reason (``lease_held``, ``head_moved``, ...).
        message: what happened, for people.
        details: extra JSON fields of the answer (the current lease, the actual head).
    """

    code: str = "error"

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        self.message = message
        self.details = dict(details or {})
        super().__init__(message)


class BadName(DomainError):
    code = "bad_name"

    def __init__(self, what: str) -> None:
        super().__init__(f"a {what} name is {NAME_RULE}")


class NoSession(DomainError):
    code = "no_session"

    def __init__(self, name: str | None = None) -> None:
        super().__init__("there is no such session" if name is None
                         else f"there is no session {name!r}")
        self.name = name


class SessionExists(DomainError):
    code = "session_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"session {name!r} already exists")
        self.name = name


class MemberExists(DomainError):
    code = "member_exists"

    def __init__(self, session: str, name: str) -> None:
        super().__init__(f"{name!r} is already a member of {session!r}")
        self.session, self.name = session, name


class NoMember(DomainError):
    code = "no_member"

    def __init__(self, session: str, name: str) -> None:
        super().__init__(f"{name!r} is not a member of {session!r}")
        self.session, self.name = session, name


class Forbidden(DomainError):
    code = "forbidden"


class LeaseRefused(DomainError):
    """A lease request refused: ``code`` is ``lease_held``, ``lease_reserved`` or
    ``lease_lost``; ``details`` hold the current lease (and ``reserved_for``)."""

    def __init__(self, code: str, message: str, lease: dict[str, Any] | None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, {"lease": lease, **(extra or {})})
        self.code = code  # one class, three codes
        self.lease = lease


class NoLease(DomainError):
    code = "no_lease"

    def __init__(self) -> None:
        super().__init__("nobody holds the lease; there is no one to ask")


class Fenced(DomainError):
    code = "fenced"

    def __init__(self, fencing: int, lease: dict[str, Any] | None) -> None:
        super().__init__(f"fencing token {fencing} is not the current lease; the head can no "
                         "longer be moved with it", {"lease": lease})
        self.fencing, self.lease = fencing, lease


class HeadMoved(DomainError):
    """A compare-and-swap of the head lost; ``actual`` is the head now."""

    code = "head_moved"

    def __init__(self, actual: ObjectId | None,
                 message: str = "the head moved; pull, then try again") -> None:
        super().__init__(message, {"head": _hex(actual)})
        self.actual = actual


class NotFastForward(HeadMoved):
    code = "not_fast_forward"

    def __init__(self, head: ObjectId, new: ObjectId) -> None:
        super().__init__(head, f"{new.hex()[:12]} does not descend from the head "
                         f"{head.hex()[:12]}; roll back or merge first")


class Incomplete(DomainError):
    code = "incomplete"

    def __init__(self, missing: ObjectId, where: str) -> None:
        super().__init__(f"object {missing.hex()} ({where}) is not stored; upload it first",
                         {"missing": missing.hex(), "where": where})
        self.missing, self.where = missing, where


class MalformedTree(DomainError):
    code = "malformed_tree"


class RefusedTree(DomainError):
    """A tree an honest client would refuse to write (the library's :class:`TreeRefused` or
    :class:`UnsafePath`, kept as ``refusal``)."""

    code = "tree_refused"

    def __init__(self, refusal: TreeRefused | UnsafePath) -> None:
        details: dict[str, Any]
        if isinstance(refusal, UnsafePath):
            details = {"reason": "name", "path": refusal.path}
        else:
            details = {"reason": refusal.what, "path": refusal.path}
            if refusal.limit is not None:
                details.update(value=refusal.value, limit=refusal.limit)
        super().__init__(str(refusal), details)
        self.refusal = refusal


class TreeNotValidated(DomainError):
    code = "tree_not_validated"

    def __init__(self, which: str, tree: ObjectId) -> None:
        super().__init__(f"the {which} tree {tree.hex()} is not the tree of a head or of its "
                         "history in this session", {"id": tree.hex(), "which": which})


class TreeMismatch(DomainError):
    """A tree upload's changes, grafted onto its base, do not give its root (or its chunks
    do not rebuild): nothing of it was stored; the client sends the nodes whole."""

    code = "tree_mismatch"

    def __init__(self, root: ObjectId, got: ObjectId | None, reason: str) -> None:
        super().__init__(f"the tree upload does not rebuild tree {root.hex()}: {reason}",
                         {"root": root.hex(), "got": None if got is None else got.hex()})


class NoSnapshot(DomainError):
    code = "no_snapshot"

    def __init__(self, oid: ObjectId) -> None:
        super().__init__(f"snapshot {oid.hex()} is not stored here")


class NotASnapshot(DomainError):
    code = "not_a_snapshot"

    def __init__(self, oid: ObjectId) -> None:
        super().__init__(f"object {oid.hex()} is not a snapshot")


class AreaRefused(DomainError):
    """An area rollback that cannot be built: a region file of the area is damaged (the
    library's :class:`~peerhost_store.area.GraftRefused`)."""

    code = "area_refused"

    def __init__(self, refusal: GraftRefused) -> None:
        super().__init__(str(refusal), {"path": refusal.path})
        self.refusal = refusal


class NothingToRollBack(DomainError):
    code = "nothing_to_roll_back"

    def __init__(self, what: str, target: ObjectId) -> None:
        super().__init__(f"the head already holds {what} as snapshot {target.hex()} has it: "
                         "nothing to roll back", {"target": target.hex()})


class ObjectNotStored(DomainError):
    code = "object_missing"

    def __init__(self, oid: ObjectId, message: str | None = None) -> None:
        super().__init__(message or f"object {oid.hex()} is not stored in this session",
                         {"id": oid.hex()})
        self.oid = oid


class StoredObjectCorrupt(DomainError):
    code = "object_corrupt"

    def __init__(self, oid: ObjectId, message: str) -> None:
        super().__init__(message, {"id": oid.hex()})
        self.oid = oid


class BadObjects(DomainError):
    code = "bad_objects"

    def __init__(self, message: str, index: int | None) -> None:
        super().__init__(message, {"index": index})


class MalformedObject(DomainError):
    code = "malformed_object"

    def __init__(self, index: int, reason: object) -> None:
        super().__init__(f"object {index} is malformed: {reason}", {"index": index})


class IdMismatch(DomainError):
    """An uploaded object hashes to another id than the one sent with it: the uploader's copy
    is damaged (nothing of the upload was stored)."""

    code = "id_mismatch"

    def __init__(self, index: int, expected: ObjectId, got: ObjectId) -> None:
        super().__init__(f"object {index} should be {expected.hex()} but its bytes hash to "
                         f"{got.hex()}; nothing was stored",
                         {"index": index, "expected": expected.hex(), "got": got.hex()})


class NodeTooLarge(DomainError):
    code = "node_too_large"

    def __init__(self, index: int, size: int, limit: int) -> None:
        super().__init__(f"object {index} is a tree node or snapshot of {size:,} bytes; at "
                         f"most {limit:,} are accepted", {"index": index, "limit": limit})


class BadDelta(DomainError):
    code = "bad_delta"

    def __init__(self, message: str, index: int | None) -> None:
        super().__init__(message, {"index": index})


class TooManyItems(DomainError):
    code = "too_many_items"

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} items asked; a delta batch holds at most {limit}",
                         {"limit": limit})


class DeltaTooLarge(DomainError):
    code = "delta_too_large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the batch decompresses to {size} bytes; at most {limit} are "
                         "accepted", {"limit": limit})


class PairingRefused(DomainError):
    """Pairing two trees would take more than one request's budget (the library's
    :class:`PairingTooLarge`)."""

    code = "pairing_too_large"

    def __init__(self, refusal: PairingTooLarge) -> None:
        super().__init__(str(refusal), {"what": refusal.what, "limit": refusal.limit})


class QuotaExceeded(DomainError):
    code = "quota_exceeded"

    def __init__(self, session: str, usage: int, incoming: int, limit: int) -> None:
        super().__init__(f"session {session!r} stores {usage:,} bytes; {incoming:,} more would "
                         f"pass its quota of {limit:,}",
                         {"usage": usage, "limit": limit, "incoming": incoming})


class DiskFull(DomainError):
    """Too little room to write: refused before the write started (``needed`` says how much
    room it wanted), or a write that failed (no ``needed``)."""

    code = "disk_full"

    def __init__(self, free: int, needed: int | None = None) -> None:
        details: dict[str, Any] = {"free": free}
        if needed is not None:
            details["needed"] = needed
        super().__init__(f"the coordinator's disk is full ({free:,} bytes free); nothing was "
                         "written, reads still work", details)
        self.free, self.needed = free, needed


class Unavailable(DomainError):
    """A backend the coordinator depends on (its database, the object bucket) did not answer
    or refused for now: nothing of the request was acknowledged (it may or may not have taken
    effect; what was acknowledged before is kept), and the same request may be retried after
    ``retry_after`` seconds."""

    code = "unavailable"

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(f"{what}; nothing was acknowledged, retry in {retry_after} s",
                         {"retry_after": retry_after, "what": what})
        self.retry_after = retry_after


class StoreProblem(DomainError):
    code = "store_problem"

    def __init__(self, message: str, problems: int) -> None:
        super().__init__(message, {"problems": problems})


class Cancelled(DomainError):
    """The caller went away while its request's work ran; the work stopped."""

    code = "cancelled"

    def __init__(self) -> None:
        super().__init__("the client went away")
