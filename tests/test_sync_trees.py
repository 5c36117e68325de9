"""Tree uploads: a push sends what changed, the coordinator rebuilds the nodes and chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
from test_sync_support import Server, make_session, new_repo, pushed_then_changed, root_of, running
from worldutil import HISTORIES, replace_world, world_content

from peerhost_server import Limits
from peerhost_store.graph import walk
from peerhost_store.ids import ObjectId
from peerhost_store.objects import BLOB, SNAPSHOT, decode
from peerhost_store.repo import Repository
from peerhost_store.sync.batches import Rebuilder, build_items
from peerhost_store.sync.client import CoordinatorClient, CoordinatorError, UploadResult
from peerhost_store.sync.edits import (
    DERIVED,
    TreePlan,
    decode_tree_upload,
    encode_derived,
    encode_tree_upload,
    plan_tree,
    rebuild_tree,
)
from peerhost_store.sync.transfer import pull, push

HISTORY = "aviadbag-1.19-history"


class Uploads(CoordinatorClient):
    """Records the objects a push uploads whole and the tree uploads it sends."""

    def __init__(self, base: CoordinatorClient) -> None:
        super().__init__(base.http, base.session, base._token)
        self.objects: list[bytes] = []
        self.trees: list[bytes] = []

    def upload(self, objects: Sequence[bytes], ids: Sequence[ObjectId] | None = None,
               sent: Callable[[float], None] | None = None) -> UploadResult:
        self.objects += list(objects)
        return super().upload(objects, ids, sent)

    def upload_tree(self, body: bytes) -> Any:
        self.trees.append(body)
        return super().upload_tree(body)


@pytest.fixture
def pushed_pair(server: Server, tmp_path: Path, real_world: Callable[[str], Path]
                ) -> Iterator[tuple[Server, dict[str, CoordinatorClient], Repository, int]]:
    """A session holding the history's first version; the repository holds the second as
    its head, not pushed yet."""
    c, a, fencing = pushed_then_changed(server, tmp_path, real_world(HISTORY), HISTORIES[HISTORY])
    yield server, c, a, fencing
    a.close()


def _plan(a: Repository, base: ObjectId) -> tuple[TreePlan, bytes]:
    plan = plan_tree(a.store.objects, base, root_of(a))
    assert plan is not None
    built = list(build_items(a.store.objects, plan.pairs, range(len(plan.pairs))))
    return plan, encode_derived(built, plan.pairs)


def test_a_push_sends_the_change_and_no_tree_nodes_and_a_pull_gets_the_world(
        pushed_pair: tuple[Server, dict[str, CoordinatorClient], Repository, int],
        tmp_path: Path, real_world: Callable[[str], Path]) -> None:
    server, c, a, fencing = pushed_pair
    client = Uploads(c["alice"])
    report = push(a, client, fencing=fencing)
    assert len(client.trees) == 1 and report.tree_nodes > 100 and report.chunks_delta > 50
    # Whole objects are the snapshot and the changed files: no tree node travelled.
    assert all(data[1] in (BLOB, SNAPSHOT) for data in client.objects), [decode(d) for d in client.objects if d[1] not in (BLOB, SNAPSHOT)][:3]
    assert c["alice"].head().head == a.head()
    assert walk(server.coordinator.store("s1"), [a.head()]).ok  # type: ignore[list-item]
    b = new_repo(tmp_path / "b")
    pull(b, c["bob"])
    assert world_content(b.world) == world_content(real_world(HISTORY) / HISTORIES[HISTORY][1])


def test_a_tree_upload_round_trips_and_rebuilds_itsroot_of(
        pushed_pair: tuple[Server, dict[str, CoordinatorClient], Repository, int]) -> None:
    _, c, a, _ = pushed_pair
    base = a.read_snapshot(c["alice"].head().head).root  # type: ignore[arg-type]
    plan, batch = _plan(a, base)
    upload = decode_tree_upload(plan.upload(batch), max_changes=100_000, max_bytes=1 << 26)
    assert upload.base == base and upload.root == plan.root and upload.files == plan.files
    assert encode_tree_upload(upload) == plan.upload(batch)
    # Rebuilt here as the coordinator does: ids derived from the items, the root checked.
    from peerhost_store.sync.delta import decode_batch
    from peerhost_store.sync.edits import chunk_wants, derived_slots
    wants = chunk_wants(a.store.objects, base, derived_slots(upload.regions))
    items = decode_batch(upload.batch, max_items=100_000, max_bytes=1 << 26,
                         want=[(DERIVED, None if w.base is None else w.base.oid) for w in wants])
    rebuilder = Rebuilder(a.store.objects, derive=True)
    rebuilder.add_many([(i, None if w.base is None else w.base.compression)
                        for i, w in zip(items, wants, strict=True)])
    assert not rebuilder.failed
    ids = [oid for oid, _ in rebuilder.verified]
    assert ids == [p.new.oid for p in plan.pairs]
    made: dict[ObjectId, bytes] = {}

    def add(data: bytes) -> ObjectId:
        from peerhost_store.ids import hash_bytes
        made[hash_bytes(data)] = data
        return hash_bytes(data)

    assert rebuild_tree(a.store.objects, add, upload, ids) == plan.root
    assert made == plan.nodes


def _refused(client: CoordinatorClient, body: bytes) -> CoordinatorError:
    with pytest.raises(CoordinatorError) as info:
        client.upload_tree(body)
    return info.value


def test_a_tree_upload_that_does_not_rebuild_its_root_stores_nothing(
        pushed_pair: tuple[Server, dict[str, CoordinatorClient], Repository, int]) -> None:
    server, c, a, fencing = pushed_pair
    store = server.coordinator.store("s1")
    before = set(store.iter_ids())
    base = a.read_snapshot(c["alice"].head().head).root  # type: ignore[arg-type]
    plan, batch = _plan(a, base)
    # Another root: the graft gives the true one.
    wrong = replace(plan, root=base)
    err = _refused(c["alice"], wrong.upload(batch))
    assert (err.status, err.code) == (422, "tree_mismatch")
    # One chunk's timestamp altered: its leaf, and so the root, differ.
    path = next(iter(plan.regions))
    slot, entry = next((s, e) for s, e in plan.regions[path].items() if e is not None)
    assert entry is not None
    regions = {**plan.regions, path: {**plan.regions[path],
                                      slot: entry._replace(timestamp=entry.timestamp + 1)}}
    err = _refused(c["alice"], replace(plan, regions=regions).upload(batch))
    assert err.code == "tree_mismatch" and plan.root.hex() in err.message
    # A batch for other bases: its items do not match the want list.
    other, other_batch = _plan(a, plan.root)
    assert other.pairs == [] or other_batch
    err = _refused(c["alice"], plan.upload(other_batch))
    assert err.code == "bad_delta"
    assert set(store.iter_ids()) == before
    # The push itself goes on: the same change, sent properly, lands complete.
    push(a, c["alice"], fencing=fencing)
    assert walk(store, [a.head()]).ok  # type: ignore[list-item]


def test_a_tree_upload_is_refused_on_a_base_the_session_did_not_accept(
        pushed_pair: tuple[Server, dict[str, CoordinatorClient], Repository, int]) -> None:
    _, c, a, _ = pushed_pair
    base = a.read_snapshot(c["alice"].head().head).root  # type: ignore[arg-type]
    plan, batch = _plan(a, base)
    err = _refused(c["alice"], replace(plan, base=plan.root).upload(batch))
    assert (err.status, err.code) == (422, "tree_not_validated")


@pytest.mark.parametrize(("body", "what"), [
    (b"\x00", "not ["),
    (msgpack.packb([1, b"x", b"y", b"z", b""]), "32-byte id"),
    (msgpack.packb([1, bytes(32), bytes(32), b"not zstd", b""]), "zstd"),
    (msgpack.packb([2, bytes(32), bytes(32), b"", b""]), "not ["),
])
def test_a_malformed_tree_upload_is_a_400_naming_what(
        server: Server, body: bytes, what: str) -> None:
    c = make_session(server)
    err = _refused(c["alice"], body)
    assert (err.status, err.code) == (400, "malformed_tree") and what in err.message


@pytest.mark.parametrize("path", ["../evil", "/abs", "a//b", "a/./b", "x" * 2000])
def test_a_tree_upload_refuses_paths_that_are_not_names(path: str) -> None:
    import zstandard
    changes = zstandard.ZstdCompressor().compress(msgpack.packb([[[path]], []]))
    body = msgpack.packb([1, bytes(32), bytes(32), changes, b""])
    from peerhost_store.sync.protocol import ProtocolError
    with pytest.raises(ProtocolError, match="path"):
        decode_tree_upload(body, max_changes=10, max_bytes=1 << 20)


def test_a_tree_upload_past_the_node_budget_is_refused_and_the_push_sends_nodes_whole(
        tmp_path: Path, real_world: Callable[[str], Path]) -> None:
    with running(tmp_path / "coordinator", limits=Limits(max_pairing_nodes=50)) as server:
        c, a, fencing = pushed_then_changed(server, tmp_path, real_world(HISTORY),
                                           HISTORIES[HISTORY])
        base = a.read_snapshot(c["alice"].head().head).root  # type: ignore[arg-type]
        plan, batch = _plan(a, base)
        err = _refused(c["alice"], plan.upload(batch))
        assert (err.status, err.code) == (413, "pairing_too_large")
        client = Uploads(c["alice"])
        report = push(a, client, fencing=fencing)
        assert report.tree_nodes == 0 and any(d[1] not in (BLOB, SNAPSHOT)
                                              for d in client.objects)
        assert walk(server.coordinator.store("s1"), [a.head()]).ok  # type: ignore[list-item]
        a.close()


class Pulls(CoordinatorClient):
    """Records how a pull fetched: tree downloads, ``objects/changed`` and ``objects/get``
    answers; with ``tamper``, the tree download's body has one byte of its batch flipped."""

    def __init__(self, base: CoordinatorClient, *, tamper: bool = False) -> None:
        super().__init__(base.http, base.session, base._token)
        self.trees = 0
        self.changed = 0
        self.got: list[bytes] = []
        self.tamper = tamper

    def download_tree(self, want: ObjectId, have: ObjectId) -> list[bytes]:
        answer = super().download_tree(want, have)
        self.trees += 1
        if self.tamper and answer[0]:
            value = msgpack.unpackb(answer[0])
            batch = bytearray(value[4])
            batch[len(batch) // 2] ^= 0xFF
            value[4] = bytes(batch)
            answer[0] = msgpack.packb(value)
        return answer

    def download_changed(self, want: ObjectId, have: ObjectId) -> list[bytes]:
        self.changed += 1
        return super().download_changed(want, have)

    def download(self, ids: list[ObjectId]) -> list[bytes]:
        datas = super().download(ids)
        self.got += datas
        return datas


@pytest.mark.parametrize("tamper", [False, True], ids=["tree", "tampered-tree"])
def test_a_pull_rebuilds_the_tree_here_and_gets_no_tree_nodes(
        pushed_pair: tuple[Server, dict[str, CoordinatorClient], Repository, int],
        tmp_path: Path, real_world: Callable[[str], Path], tamper: bool) -> None:
    _, c, a, fencing = pushed_pair
    b = new_repo(tmp_path / "b")
    pull(b, c["bob"])  # the first version, the usual way
    push(a, c["alice"], fencing=fencing)
    bob = Pulls(c["bob"], tamper=tamper)
    report = pull(b, bob)
    assert report.outcome == "fast-forward" and report.fallbacks == 0
    assert world_content(b.world) == world_content(real_world(HISTORY) / HISTORIES[HISTORY][1])
    assert walk(b.store.objects, [b.head()]).ok  # type: ignore[list-item]
    assert bob.trees == 1
    if tamper:  # it does not rebuild its root here: the pull walks as before
        assert bob.changed == 1
    else:
        assert bob.changed == 0 and report.chunks_delta > 50
        assert all(data[1] == BLOB for data in bob.got)  # the changed files alone


def test_a_pull_two_snapshots_behind_walks_as_before(
        pushed_pair: tuple[Server, dict[str, CoordinatorClient], Repository, int],
        tmp_path: Path, real_world: Callable[[str], Path]) -> None:
    _, c, a, fencing = pushed_pair
    b = new_repo(tmp_path / "b")
    pull(b, c["bob"])
    push(a, c["alice"], fencing=fencing)
    version = real_world(HISTORY) / HISTORIES[HISTORY][2]
    replace_world(a.world, version)
    a.snapshot("v3")
    push(a, c["alice"], fencing=fencing)
    bob = Pulls(c["bob"])
    pull(b, bob)
    assert bob.trees == 1 and bob.changed == 1  # served [b""]: not one snapshot apart
    assert world_content(b.world) == world_content(version)


def test_a_game_upgrade_that_moves_the_region_folders_travels_as_changes(
        server: Server, tmp_path: Path, real_world: Callable[[str], Path]) -> None:
    """voidchains' second version moved every region file to another folder: the new files
    travel as chunk changes paired with the removed ones at the same place in the world, and
    no tree node travels whole."""
    history = real_world("voidchains-history")
    versions = HISTORIES["voidchains-history"]
    c, a, fencing = pushed_then_changed(server, tmp_path, history, versions[1:])
    b = new_repo(tmp_path / "b")
    pull(b, c["bob"])
    before = a.read_snapshot(c["alice"].head().head).root  # type: ignore[arg-type]
    plan = plan_tree(a.store.objects, before, root_of(a))
    assert plan is not None and len(plan.moved) >= 4
    assert all(pair.base is not None for pair in plan.pairs)  # each against its old place
    client = Uploads(c["alice"])
    report = push(a, client, fencing=fencing)
    assert len(client.trees) == 1 and report.chunks_delta >= 1000 and report.chunks_raw == 0
    # Only empty maps travel as nodes (an empty region file is a whole entry).
    nodes = [decode(d) for d in client.objects if d[1] not in (BLOB, SNAPSHOT)]
    assert all(not node.entries for node in nodes), nodes  # type: ignore[union-attr]
    bob = Pulls(c["bob"])
    pulled = pull(b, bob)
    assert bob.changed == 0 and pulled.chunks_delta >= 1000
    assert world_content(b.world) == world_content(history / versions[2])
    assert walk(b.store.objects, [b.head()]).ok  # type: ignore[list-item]
    a.close()
    b.close()


def test_the_pull_of_a_push_is_answered_the_body_the_push_sent(
        pushed_pair: tuple[Server, dict[str, CoordinatorClient], Repository, int],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peerhost_server.domain import trees

    _, c, a, fencing = pushed_pair
    b = new_repo(tmp_path / "b")
    pull(b, c["bob"])
    alice = Uploads(c["alice"])
    push(a, alice, fencing=fencing)
    planned: list[object] = []
    real = getattr(trees, "build_upload")  # noqa: B009 (not exported)

    def counting(*args: Any, **kw: Any) -> Any:
        planned.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(trees, "build_upload", counting)  # the coordinator runs in this process
    bob = Pulls(c["bob"])
    sent = bob.download_tree(a.head(), b.head())  # type: ignore[arg-type]
    assert sent[0] == alice.trees[0] and planned == []
    pull(b, bob)
    assert bob.changed == 0 and b.head() == a.head()


def test_a_tree_upload_past_the_session_quota_is_refused_and_stores_nothing(
        tmp_path: Path, real_world: Callable[[str], Path]) -> None:
    """The nodes and chunks a coordinator rebuilds count against the session's quota as an
    upload's objects do: one step past the 507 of ``objects``."""
    data = tmp_path / "coordinator"
    with running(data) as server:
        c, a, fencing = pushed_then_changed(server, tmp_path, real_world(HISTORY),
                                           HISTORIES[HISTORY])
        used = server.coordinator.store("s1").used_bytes()
        token, admin = c["alice"]._token, server.admin_token
    with running(data, limits=Limits(quota_bytes=used + 1024), admin_token=admin) as server:
        alice = server.client("s1", token)
        store = server.coordinator.store("s1")
        before = set(store.iter_ids())
        base = a.read_snapshot(alice.head().head).root  # type: ignore[arg-type]
        plan, batch = _plan(a, base)
        err = _refused(alice, plan.upload(batch))
        assert (err.status, err.code) == (507, "quota_exceeded")
        assert set(store.iter_ids()) == before
        # A push stops there, as at an upload past the quota; no rebuilt node was stored (the
        # walk's own small uploads may fit).
        with pytest.raises(CoordinatorError, match="quota"):
            push(a, alice, fencing=fencing)
        assert not set(plan.nodes) & (set(store.iter_ids()) - before)
        assert alice.head().head != a.head()
    a.close()
