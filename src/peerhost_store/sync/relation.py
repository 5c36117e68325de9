"""How a repository's head relates to a session's head: up to date, ahead, behind, diverged.

Telling "behind" from "diverged" needs the session's snapshots that this store lacks: they
are fetched (snapshot objects only, at most :data:`STATUS_WALK`) and kept in memory, never
stored, since a stored node must have its whole tree in a local store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from ..errors import ObjectCorrupt
from ..graph import is_ancestor
from ..ids import ObjectId, hash_bytes
from ..maintenance import load_shallow
from ..repo import Repository
from .client import CoordinatorClient

__all__ = ["STATUS_WALK", "Relation", "compare_heads"]

#: Snapshots read from the coordinator to tell "behind" from "diverged".
STATUS_WALK = 2000

Relation = Literal["up-to-date", "ahead", "behind", "diverged", "empty", "unknown"]


class _Snapshots:
    """Snapshot objects from the local store, else from the coordinator (in memory only)."""

    def __init__(self, repo: Repository, client: CoordinatorClient) -> None:
        self.repo = repo
        self.client = client
        self.fetched: dict[ObjectId, bytes] = {}

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        ids = [oid for oid in oids if oid not in self.fetched]
        local_missing = self.repo.store.objects.missing(ids)
        if len(self.fetched) + len(local_missing) > STATUS_WALK:
            raise _TooFar
        remote_missing = set(self.client.missing(local_missing)) if local_missing else set()
        self._fetch([oid for oid in local_missing if oid not in remote_missing])
        return [oid for oid in local_missing if oid in remote_missing]

    def _fetch(self, ids: list[ObjectId]) -> None:
        while ids:
            # A download answers a prefix of ids when the rest would exceed its size cap.
            for oid, data in zip(ids, self.client.download(ids), strict=False):
                if hash_bytes(data) != oid:
                    raise ObjectCorrupt(oid, hash_bytes(data), "the coordinator's answer")
                self.fetched[oid] = data
            ids = [oid for oid in ids if oid not in self.fetched]

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        local = [oid for oid in oids if oid not in self.fetched]
        got = dict(zip(local, self.repo.store.objects.get_many(local), strict=True)) if local else {}
        return [self.fetched[oid] if oid in self.fetched else got[oid] for oid in oids]


class _TooFar(Exception):
    pass


def compare_heads(repo: Repository, client: CoordinatorClient, remote: ObjectId | None) -> Relation:
    """``up-to-date``, ``ahead``, ``behind``, ``diverged``, ``empty`` (neither has a
    snapshot) or ``unknown`` (more than :data:`STATUS_WALK` snapshots apart)."""
    local = repo.head()
    if remote is None:
        return "empty" if local is None else "ahead"
    if local is None:
        return "behind"
    if local == remote:
        return "up-to-date"
    shallow = load_shallow(repo.store)
    if remote in repo.store.objects and is_ancestor(repo.store.objects, remote, local,
                                                    shallow=shallow):
        return "ahead"
    try:
        behind = is_ancestor(_Snapshots(repo, client), local, remote, shallow=shallow)
    except _TooFar:
        return "unknown"
    return "behind" if behind else "diverged"
