"""Walking a tree beside another (peerhost_store.counterparts): what the coordinator's
``objects/changed`` answers, and what a pull does with it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
from test_sync_support import Server, new_repo, pushed_then_changed
from worldutil import HISTORIES, replace_world, world_content

from peerhost_store.counterparts import align, changed_nodes
from peerhost_store.graph import Kind, children, decode_as
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import ChunkEntry, RegionLeaf
from peerhost_store.repo import Repository
from peerhost_store.sync.client import CoordinatorClient
from peerhost_store.sync.transfer import pull, push

HISTORY = "aviadbag-1.19-history"


def _reached(repo: Repository, snapshot: ObjectId) -> set[ObjectId]:
    """The snapshots and tree nodes ``snapshot`` reaches, its history included."""
    seen = {snapshot}
    frontier = [(snapshot, Kind.SNAPSHOT)]
    while frontier:
        after = []
        datas = repo.store.objects.get_many([oid for oid, _ in frontier])
        for (oid, kind), data in zip(frontier, datas, strict=True):
            for child in children(oid, decode_as(oid, data, kind), kind):
                if child[1] is not Kind.BLOB and child[0] not in seen:
                    seen.add(child[0])
                    after.append(child)
        frontier = after
    return seen


def test_align_tells_equal_children_from_changed_ones() -> None:
    a, b, c = (hash_bytes(bytes([i])) for i in range(3))
    new = RegionLeaf((ChunkEntry(0, a, 2, 1), ChunkEntry(1, c, 2, 5)))
    old = RegionLeaf((ChunkEntry(0, a, 2, 1), ChunkEntry(1, b, 2, 1)))
    told = align(new, old)
    assert told.same == [a] and told.differ == []  # chunk blobs are nobody's node
    assert align(new, "not a node").same == []


def test_changed_nodes_are_what_a_play_session_added(tmp_path: Path,
                                                     real_world: Callable[[str], Path]) -> None:
    history = real_world(HISTORY)
    versions = HISTORIES[HISTORY]
    repo = new_repo(tmp_path / "w", history / versions[0])
    old = repo.snapshot("v1").oid
    replace_world(repo.world, history / versions[1])
    new = repo.snapshot("v2").oid
    got = changed_nodes(repo.store.objects, new, old, max_nodes=100_000, max_bytes=1 << 30)
    ids = [hash_bytes(data) for data in got]
    added = _reached(repo, new) - _reached(repo, old)
    assert ids[0] == new and len(ids) == len(set(ids))
    # Every node the holder of v1 lacks, and little else: a node that differs from its
    # counterpart but is elsewhere in v1's tree (an identical region map in another
    # place) is sent though the receiver has it.
    assert added <= set(ids) and len(set(ids) - added) <= len(ids) // 20
    # Bounded: a prefix, at least one object.
    assert [hash_bytes(d) for d in changed_nodes(repo.store.objects, new, old, max_nodes=5,
                                                 max_bytes=1 << 30)] == ids[:5]
    assert len(changed_nodes(repo.store.objects, new, old, max_nodes=5, max_bytes=1)) == 1

    class Counting:
        """Counts the ids read."""

        def __init__(self) -> None:
            self.read = 0

        def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
            self.read += len(oids)
            return repo.store.objects.get_many(oids)

        def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
            return repo.store.objects.missing(oids)

    # The bounds are checked before each read: one node asked for, two read (have, want).
    counting = Counting()
    assert len(changed_nodes(counting, new, old, max_nodes=1, max_bytes=1 << 30)) == 1
    assert counting.read == 2


class Hinting(CoordinatorClient):
    """Records the pull's requests; can replace the ``objects/changed`` answer."""

    def __init__(self, base: CoordinatorClient,
                 hint: Callable[[list[bytes]], list[bytes]] | None = None) -> None:
        super().__init__(base.http, base.session, base._token)
        self.hint = hint
        self.gets = 0

    def download(self, ids: list[ObjectId]) -> list[bytes]:
        self.gets += 1
        return super().download(ids)

    def download_changed(self, want: ObjectId, have: ObjectId) -> list[bytes]:
        got = super().download_changed(want, have)
        return got if self.hint is None else self.hint(got)

    def download_tree(self, want: ObjectId, have: ObjectId) -> list[bytes]:
        return [b""]  # as a coordinator that cannot serve it: the pull walks with the hint


@pytest.mark.parametrize("hint", ["as sent", "cut short", "with junk", "none"])
def test_a_pull_takes_the_changed_nodes_in_one_answer_and_checks_them(
        server: Server, tmp_path: Path, real_world: Callable[[str], Path], hint: str) -> None:
    history = real_world(HISTORY)
    versions = HISTORIES[HISTORY]
    c, a, fencing = pushed_then_changed(server, tmp_path, history, versions)
    b = new_repo(tmp_path / "b")
    pull(b, c["bob"])  # the session's first version
    push(a, c["alice"], fencing=fencing)
    change = {"as sent": None, "cut short": lambda got: got[:3],
              "with junk": lambda got: [b"\x92\x01\xc4\x00", *got[1:], b"junk"],
              "none": lambda got: []}[hint]
    client = Hinting(c["bob"], change)
    report = pull(b, client)
    assert report.outcome == "fast-forward" and b.head() == a.head()
    assert world_content(b.world) == world_content(history / versions[1]) and b.verify().ok
    if hint == "as sent":  # the nodes came in the hint; objects/get only for whole blobs
        assert client.gets <= 1
    else:  # what the hint lacked (or got wrong) was asked for as before
        assert client.gets >= 2
