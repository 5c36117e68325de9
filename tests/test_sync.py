from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import msgpack
import pytest
from hostile_trees import Sized
from hypothesis import given
from hypothesis import strategies as st
from test_sync_support import Server, make_session, new_repo, root_of
from worldfs_helpers import make_world, refuse_writes_to
from worldutil import HISTORIES, replace_world, world_content

from peerhost_server.backends.lmdb import LmdbSessionObjects
from peerhost_store.bounds import SnapshotCheck, Summary, TreeLimits, check_snapshot
from peerhost_store.errors import ObjectCorrupt
from peerhost_store.graph import walk
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import decode, encode_blob, encode_dir_leaf
from peerhost_store.repo import Repository
from peerhost_store.store import MemoryStore, Update
from peerhost_store.sync.client import (
    CoordinatorClient,
    CoordinatorError,
    CoordinatorUnavailable,
    Head,
    Lease,
    TreeUploadResult,
    UploadResult,
)
from peerhost_store.sync.protocol import (
    PIECE_BYTES,
    ObjectStatus,
    ProtocolError,
    batch_by_size,
    decode_ids,
    decode_objects,
    encode_ids,
    encode_objects,
    frame_objects,
    split_objects,
    split_upload,
)
from peerhost_store.sync.transfer import Diverged, pull, push

# -- pure protocol --------------------------------------------------------------------------


@given(st.lists(st.integers(0, 50)), st.integers(1, 100), st.integers(1, 200))
def test_batches_reach_the_target_and_keep_order(sizes: list[int], target: int, limit: int) -> None:
    batches = list(batch_by_size(sizes, lambda n: n, target, limit))
    assert [x for b in batches for x in b] == sizes
    for batch, following in itertools.pairwise(batches):
        assert sum(batch) >= target or sum(batch) + following[0] > limit
    for batch in batches:
        assert sum(batch) <= limit or len(batch) == 1


@given(st.lists(st.binary(max_size=70000), max_size=20) | st.lists(st.binary(max_size=4), max_size=70))
def test_object_lists_are_framed_like_msgpack(objects: list[bytes]) -> None:
    data = encode_objects(objects)
    assert data == msgpack.packb(objects, use_bin_type=True)
    assert [bytes(v) for v in split_objects(data)] == decode_objects(data) == objects


@given(st.lists(st.binary(max_size=70000), max_size=20) | st.lists(st.binary(max_size=4), max_size=70),
       st.booleans())
def test_streamed_object_lists_are_the_same_bytes_in_pieces(objects: list[bytes],
                                                             with_ids: bool) -> None:
    ids = [hash_bytes(o) for o in objects] if with_ids else None
    length, pieces = frame_objects(objects, ids)
    parts = list(pieces)
    data = b"".join(parts)
    head = [] if ids is None else [b"".join(ids)]
    assert data == msgpack.packb(head + objects, use_bin_type=True)
    assert length == len(data)
    assert all(len(part) < PIECE_BYTES + 70010 for part in parts)  # one object past a piece
    got, views = split_upload(data, with_ids=with_ids)
    assert got == ids and [bytes(v) for v in views] == objects


def test_an_upload_whose_ids_do_not_fit_its_objects_is_refused() -> None:
    blobs = [encode_blob(b"a"), encode_blob(b"b")]
    for ids in ([b"x" * 31, *blobs], [b"x" * 32, *blobs], []):
        with pytest.raises(ProtocolError) as refused:
            split_upload(msgpack.packb(ids, use_bin_type=True), with_ids=True)
        assert refused.value.index == 0 or not ids
    with pytest.raises(ValueError, match="1 ids for 2 objects"):
        frame_objects(blobs, [hash_bytes(blobs[0])])


@given(st.binary(max_size=64) | st.builds(
    lambda objects, cut, junk: encode_objects(objects)[:cut] + junk,
    st.lists(st.binary(max_size=300), max_size=5), st.integers(0, 2000), st.binary(max_size=3)))
def test_split_objects_refuses_exactly_what_decode_objects_refuses(data: bytes) -> None:
    try:
        expected: list[bytes] | None = decode_objects(data)
    except ProtocolError:
        expected = None
    try:
        got: list[bytes] | None = [bytes(v) for v in split_objects(data)]
    except ProtocolError:
        got = None
    assert got == expected


def test_id_lists_are_validated() -> None:
    ids = [hash_bytes(b"a"), hash_bytes(b"b")]
    assert decode_ids(encode_ids(ids)) == ids
    with pytest.raises(ProtocolError) as err:
        decode_ids(encode_ids([ids[0], ObjectId(b"short")]))
    assert err.value.index == 1
    with pytest.raises(ProtocolError):
        decode_ids(b"\xc1")
    with pytest.raises(ProtocolError):
        decode_objects(encode_ids([]) + b"x")


def test_completeness_check_skips_what_is_marked_complete(tmp_path: Path) -> None:
    store = MemoryStore()
    repo = new_repo(tmp_path / "w", None)
    make_world(repo.world / "world")
    (repo.world / "world" / "a.txt").write_bytes(b"hello")
    head = repo.snapshot("one").oid
    for oid in walk(repo.store.objects, [head]).reachable:
        store.objects.put(repo.store.objects.get_raw(oid))
    marked: dict[ObjectId, Summary] = {}

    def check() -> SnapshotCheck:
        return check_snapshot(Sized(store), lambda ids: [marked.get(i) for i in ids], head,
                              TreeLimits())

    first = check()
    assert first.missing is None and first.checked == len(walk(store.objects, [head]).reachable)
    marked.update(first.summaries)
    assert check().checked == 1
    blob = next(oid for oid in walk(store.objects, [head]).reachable
                if store.objects.get_raw(oid) == encode_blob(b"hello"))
    del store.backend.data[blob]
    marked.clear()
    missing = check()
    assert missing.missing == blob and missing.where.endswith("/world/a.txt")
    repo.close()


# -- push and pull --------------------------------------------------------------------------


def test_push_then_pull_gives_the_same_tree(server: Server, tmp_path: Path) -> None:
    c = make_session(server)
    a = new_repo(tmp_path / "a")
    make_world(a.world / "w")
    (a.world / "w" / "region" / "notes.txt").write_text("hi")
    a.snapshot("first")
    lease = c["alice"].acquire("alice-pc", 60)
    report = push(a, c["alice"], fencing=lease.fencing)
    assert report.objects_sent == report.objects_new > 0 and report.wire.requests >= 3
    assert report.wire.sent > report.object_bytes
    b = new_repo(tmp_path / "b")
    pulled = pull(b, c["bob"])
    assert pulled.outcome == "fast-forward" and pulled.objects_received == report.objects_sent
    assert root_of(b) == root_of(a) and b.head() == a.head()
    assert world_content(b.world) == world_content(a.world)
    assert b.store.refs.get("remotes/s1") == a.head()
    again = pull(b, c["bob"])
    assert again.outcome == "up-to-date" and again.objects_received == 0
    assert push(a, c["alice"], fencing=lease.fencing).up_to_date


def test_a_small_change_costs_little_to_push(server: Server, tmp_path: Path,
                                             real_world: Callable[[str], Path]) -> None:
    c = make_session(server)
    a = new_repo(tmp_path / "a", real_world("aviadbag-1.19-history") / "3195128")
    a.snapshot("v1")
    lease = c["alice"].acquire("alice-pc", 60)
    first = push(a, c["alice"], fencing=lease.fencing)
    (a.world / "data").mkdir(exist_ok=True)
    (a.world / "data" / "note.dat").write_bytes(b"one more file")
    a.snapshot("v2")
    second = push(a, c["alice"], fencing=lease.fencing)
    assert first.checked > 1000
    assert second.objects_sent <= 6 and second.checked <= 12
    assert second.wire.requests <= 10 and second.wire.sent < 20_000


class AskingClient(CoordinatorClient):
    """Counts the ids a push asks ``objects/status`` about; with ``trees`` False, a
    coordinator without tree uploads (404), so nodes go whole."""

    def __init__(self, base: CoordinatorClient, *, trees: bool = True) -> None:
        super().__init__(base.http, base.session, base._token)
        self.asked: list[ObjectId] = []
        self.requests = 0
        self.trees = trees

    def head(self) -> Head:
        answer = super().head()
        self.tree_uploads &= self.trees  # as an older coordinator answers
        return answer

    def upload_tree(self, body: bytes) -> TreeUploadResult:
        if not self.trees:
            raise CoordinatorError("not_found", "no such route", 404)
        return super().upload_tree(body)

    def object_status(self, ids: list[ObjectId]) -> list[ObjectStatus]:
        self.asked += ids
        self.requests += 1
        return super().object_status(ids)


@pytest.mark.parametrize("trees", [True, False], ids=["tree-upload", "nodes-whole"])
def test_a_push_asks_only_about_new_paths_once_and_survives_a_revert(
        server: Server, tmp_path: Path, real_world: Callable[[str], Path], trees: bool) -> None:
    c = make_session(server)
    a = new_repo(tmp_path / "a", real_world("aviadbag-1.19-history") / "3195128")
    a.snapshot("v1")
    lease = c["alice"].acquire("alice-pc", 60)
    push(a, c["alice"], fencing=lease.fencing)
    client = AskingClient(c["alice"], trees=trees)
    level = a.world / "level.dat"
    original = level.read_bytes()
    level.write_bytes(original + b"changed")
    changed = a.snapshot("v2").oid
    pushed = push(a, client, fencing=lease.fencing)
    snapshot = a.read_snapshot(changed)
    assert client.asked[0] == changed and client.requests == 1
    if trees:
        # The coordinator rebuilt the root from the change: only the snapshot and the
        # changed file are asked about, and the root is not sent.
        assert pushed.tree_nodes >= 1 and snapshot.root not in client.asked
        assert len(client.asked) == 2 and pushed.objects_sent == 2 + pushed.tree_nodes
    else:
        # The folders above the changed file are set beside the session head's: only what
        # changed is asked about, none of its unchanged siblings.
        # They are found by walking here first, so the session is asked once, not per level.
        assert snapshot.root in client.asked and pushed.tree_nodes == 0
        assert len(client.asked) == pushed.objects_sent <= 4
    # Back to v1's tree, which the session holds from its history: found there, not sent.
    # The same path is asked about (its nodes differ from the head's), in one request.
    level.write_bytes(original)
    reverted = a.snapshot("v3").oid
    client.asked, client.requests = [], 0
    again = push(a, client, fencing=lease.fencing)
    # The snapshot alone is sent (and the root rebuilt there, which it held already).
    assert again.objects_sent - again.tree_nodes == 1 and client.requests == 1
    assert client.asked[0] == reverted and len(client.asked) == len(set(client.asked)) <= 4
    assert c["alice"].head().head == reverted
    assert walk(server.coordinator.store("s1"), [reverted]).ok


def test_a_push_does_not_ask_about_the_region_maps_under_changed_nodes(
        server: Server, tmp_path: Path, real_world: Callable[[str], Path]) -> None:
    """A play session's changed region maps are taken to be missing (their parents are),
    not asked about; what is sent still makes the session head complete."""
    history = real_world("aviadbag-1.19-history")
    c = make_session(server)
    a = new_repo(tmp_path / "a", history / HISTORIES["aviadbag-1.19-history"][0])
    a.snapshot("v1")
    lease = c["alice"].acquire("alice-pc", 60)
    push(a, c["alice"], fencing=lease.fencing)
    replace_world(a.world, history / HISTORIES["aviadbag-1.19-history"][1])
    changed = a.snapshot("v2").oid
    client = AskingClient(c["alice"], trees=False)
    pushed = push(a, client, fencing=lease.fencing)
    assert pushed.chunks_delta > 50 and client.requests == 1
    kinds = {type(decode(data)).__name__ for data in a.store.objects.get_many(
        [oid for oid in client.asked if oid != changed and oid in a.store.objects])}
    assert "RegionLeaf" not in kinds and "Index" in kinds
    assert c["alice"].head().head == changed
    assert walk(server.coordinator.store("s1"), [changed]).ok


def _pushed(c: dict[str, CoordinatorClient], folder: Path,
            ttl: float = 60) -> tuple[Repository, Lease]:
    """A repository at ``folder`` holding a generated world in ``w``, snapshotted and pushed
    by alice under a lease of ``ttl`` seconds (returned, still held)."""
    a = new_repo(folder)
    make_world(a.world / "w")
    a.snapshot("v1")
    lease = c["alice"].acquire("alice-pc", ttl)
    push(a, c["alice"], fencing=lease.fencing)
    return a, lease


def _diverge(a: Repository, b: Repository, c: dict[str, CoordinatorClient],
             fencing: int) -> Diverged:
    """``b`` pulls the session, ``a`` pushes a change, ``b`` changes its world too (not
    snapshotted): ``b``'s next pull diverges. Returns that refusal."""
    pull(b, c["bob"])
    (a.world / "w" / "from-a.txt").write_text("a")
    a.snapshot("v2 on a")
    push(a, c["alice"], fencing=fencing)
    (b.world / "w" / "from-b.txt").write_text("b")  # not snapshotted
    with pytest.raises(Diverged) as err:
        pull(b, c["bob"])
    return err.value


def test_a_merge_push_asks_about_the_history_once_not_its_trees(
        server: Server, tmp_path: Path) -> None:
    """A merge's other parent reaches the history the session holds: its snapshots are
    asked about in one request, and each local tree is set beside a complete one, so the
    push does not walk and ask about every tree of the history (found by a review: 761
    ids for 30 snapshots before the fix)."""
    c = make_session(server)
    a, lease = _pushed(c, tmp_path / "a", ttl=600)
    for i in range(30):
        folder = a.world / "w" / f"d{i}"
        folder.mkdir()
        for j in range(20):
            (folder / f"f{j}.txt").write_text(f"{i}-{j}")
        a.snapshot(f"v{i + 1}")
        push(a, c["alice"], fencing=lease.fencing)
    b = new_repo(tmp_path / "b")
    diverged = _diverge(a, b, c, lease.fencing)
    assert diverged.remote is not None
    b.reconcile(diverged.remote, keep_other=True)
    client = AskingClient(c["alice"])
    push(b, client, fencing=lease.fencing)
    assert client.requests <= 2 and len(client.asked) <= 31 + 10
    head = b.head()
    assert head is not None and c["alice"].head().head == head
    assert walk(server.coordinator.store("s1"), [head]).ok


class FailingClient(CoordinatorClient):
    """Breaks the connection after ``allowed`` uploads."""

    def __init__(self, base: CoordinatorClient, allowed: int) -> None:
        super().__init__(base.http, base.session, base._token)
        self.allowed = allowed
        self.sent_ids: list[ObjectId] = []

    def upload(self, objects: Sequence[bytes], ids: Sequence[ObjectId] | None = None,
               sent: Callable[[float], None] | None = None) -> UploadResult:
        if self.allowed == 0:
            raise CoordinatorUnavailable("unavailable", "connection reset (simulated)", 0)
        self.allowed -= 1
        self.sent_ids += [hash_bytes(o) for o in objects]
        return super().upload(objects, ids, sent)


def test_an_interrupted_push_resumes_without_resending(
    server: Server, tmp_path: Path, real_world: Callable[[str], Path]
) -> None:
    c = make_session(server)
    a = new_repo(tmp_path / "a", real_world("aviadbag-1.19-history") / "3195128")
    a.snapshot("v1")
    lease = c["alice"].acquire("alice-pc", 60)
    broken = FailingClient(c["alice"], allowed=3)
    with pytest.raises(CoordinatorUnavailable):
        push(a, broken, fencing=lease.fencing, batch_bytes=128 << 10)
    landed = set(broken.sent_ids)
    assert len(landed) > 100 and c["bob"].head().head is None
    retry = FailingClient(c["alice"], allowed=10**6)
    report = push(a, retry, fencing=lease.fencing, batch_bytes=128 << 10)
    assert not landed & set(retry.sent_ids)
    assert report.objects_new == report.objects_sent == len(retry.sent_ids)
    total = len(walk(a.store.objects, [a.resolve("head")]).reachable)
    assert len(landed) + report.objects_sent == total
    assert [e["new"] for e in c["bob"].log()] == [a.resolve("head").hex()]
    assert push(a, retry, fencing=lease.fencing).up_to_date


def test_pull_refuses_bytes_that_do_not_match_their_id(server: Server, tmp_path: Path) -> None:
    c = make_session(server)
    a = new_repo(tmp_path / "a")
    make_world(a.world / "w")
    a.snapshot("one")
    push(a, c["alice"], fencing=c["alice"].acquire("pc", 60).fencing)

    class Tampering(CoordinatorClient):
        def download(self, ids: list[ObjectId]) -> list[bytes]:
            return [o[:-1] + bytes([o[-1] ^ 1]) for o in super().download(ids)]

    b = new_repo(tmp_path / "b")
    with pytest.raises(ObjectCorrupt):
        pull(b, Tampering(server.http, "s1", c["bob"]._token))
    assert b.head() is None and b.store.refs.get("remotes/s1") is None


def test_divergence_is_reported_and_local_changes_are_kept(server: Server, tmp_path: Path) -> None:
    c = make_session(server)
    a, lease = _pushed(c, tmp_path / "a")
    b = new_repo(tmp_path / "b")
    assert _diverge(a, b, c, lease.fencing).remote == a.head()
    assert b.read_snapshot(b.resolve("head")).message.startswith("unsnapshotted changes")
    assert (b.world / "w" / "from-b.txt").read_text() == "b"
    assert b.store.refs.get("remotes/s1") == a.head()
    with pytest.raises(Diverged):
        push(b, c["bob"], fencing=lease.fencing)


@pytest.mark.parametrize("keep", ["theirs", "ours"])
def test_a_divergence_is_reconciled_keeping_both_histories(server: Server, tmp_path: Path,
                                                           keep: str) -> None:
    c = make_session(server)
    a, lease = _pushed(c, tmp_path / "a")
    b = new_repo(tmp_path / "b")
    err = _diverge(a, b, c, lease.fencing)
    mine, theirs = err.local, err.remote
    assert mine is not None and theirs is not None

    result = b.reconcile(theirs, keep_other=keep == "theirs")
    merged = b.read_snapshot(result.oid)
    assert merged.parents == (mine, theirs)
    kept = theirs if keep == "theirs" else mine
    assert merged.root == b.read_snapshot(kept).root == b.scan().root
    assert (b.world / "w" / "from-a.txt").exists() == (keep == "theirs")
    assert (b.world / "w" / "from-b.txt").exists() == (keep == "ours")
    # The session takes it as a fast-forward; both sides stay reachable there.
    push(b, c["alice"], fencing=lease.fencing)
    fresh = new_repo(tmp_path / "fresh")
    pull(fresh, c["bob"])
    assert fresh.head() == result.oid
    assert root_of(fresh) == b.read_snapshot(kept).root
    assert {mine, theirs} <= {oid for oid, _ in fresh.log()}


def test_pull_when_ahead_or_unchanged_moves_nothing(server: Server, tmp_path: Path) -> None:
    c = make_session(server)
    a = new_repo(tmp_path / "a")
    make_world(a.world / "w")
    a.snapshot("v1")
    push(a, c["alice"], fencing=c["alice"].acquire("pc", 60).fencing)
    (a.world / "w" / "new.txt").write_text("local work")
    report = pull(a, c["alice"])
    assert report.outcome == "ahead" and report.safety == a.head()
    assert (a.world / "w" / "new.txt").exists()


def test_pull_into_a_world_with_unrelated_files_keeps_them(server: Server, tmp_path: Path) -> None:
    c = make_session(server)
    a = new_repo(tmp_path / "a")
    make_world(a.world / "w")
    a.snapshot("v1")
    push(a, c["alice"], fencing=c["alice"].acquire("pc", 60).fencing)
    b = new_repo(tmp_path / "b")
    (b.world / "mine.txt").write_text("keep me")
    with pytest.raises(Diverged):
        pull(b, c["bob"])
    assert (b.world / "mine.txt").read_text() == "keep me" and b.head() is not None


def test_pushed_store_verifies_clean(server: Server, tmp_path: Path) -> None:
    c = make_session(server)
    a = new_repo(tmp_path / "a")
    make_world(a.world / "w")
    a.snapshot("v1")
    push(a, c["alice"], fencing=c["alice"].acquire("pc", 60).fencing)
    store = server.coordinator.store("s1")
    head = c["bob"].head().head
    assert head is not None and walk(store, [head]).ok


def test_a_blob_damaged_here_is_refused_by_the_coordinator_naming_this_store(
        server: Server, tmp_path: Path) -> None:
    """Blobs go up unchecked, with their ids: the coordinator's one hash catches a bad copy
    here before it stores anything of that upload."""
    c = make_session(server)
    a = new_repo(tmp_path / "a")
    (a.world / "data.bin").write_bytes(random.Random(7).randbytes(5000))
    a.snapshot("v1")
    oid = hash_bytes(encode_blob((a.world / "data.bin").read_bytes()))
    data = bytearray(a.store.objects.backend.get_many([oid])[0])
    data[len(data) // 2] ^= 0x10
    a.store.objects.backend.put_many([(oid, bytes(data))])
    with pytest.raises(ObjectCorrupt) as refused:
        push(a, c["alice"], fencing=c["alice"].acquire("pc", 60).fencing)
    assert refused.value.expected == oid and refused.value.where == a.store.objects.where
    assert refused.value.got == hash_bytes(bytes(data))
    assert c["alice"].missing([oid, hash_bytes(bytes(data))]) == [oid, hash_bytes(bytes(data))]
    assert c["alice"].head().head is None


def test_a_blob_damaged_on_the_coordinator_is_caught_by_the_one_hash_of_the_pull(
        server: Server, tmp_path: Path) -> None:
    """Downloads are read unhashed there: the puller's hash against the id it asked for is
    the check, and nothing damaged reaches its store or its world."""
    c = make_session(server)
    a = new_repo(tmp_path / "a")
    (a.world / "data.bin").write_bytes(random.Random(8).randbytes(5000))
    a.snapshot("v1")
    push(a, c["alice"], fencing=c["alice"].acquire("pc", 60).fencing)
    oid = hash_bytes(encode_blob((a.world / "data.bin").read_bytes()))
    session = server.coordinator.store("s1")
    assert isinstance(session, LmdbSessionObjects)
    stored = session._store
    data = bytearray(stored.objects.backend.get_many([oid])[0])
    data[len(data) // 2] ^= 0x10
    stored.objects.backend.put_many([(oid, bytes(data))])
    b = new_repo(tmp_path / "b")
    with pytest.raises(ObjectCorrupt) as caught:
        pull(b, c["bob"])
    assert caught.value.expected == oid and caught.value.where == "the coordinator's answer"
    assert b.store.objects.missing([oid]) == [oid] and b.head() is None
    assert not (b.world / "data.bin").exists()


def test_uploads_with_ids_store_exactly_the_objects_whose_ids_match(server: Server) -> None:
    c = make_session(server)
    blobs = [encode_blob(b"one"), encode_blob(b"two")]
    ids = [hash_bytes(b) for b in blobs]
    assert c["alice"].upload(blobs, ids).new == 2
    with pytest.raises(CoordinatorError) as refused:
        c["alice"].upload([encode_blob(b"three"), encode_blob(b"four")],
                          [hash_bytes(encode_blob(b"three")), ids[0]])
    assert (refused.value.status, refused.value.code) == (400, "id_mismatch")
    assert refused.value.details["index"] == 1 and refused.value.details["expected"] == ids[0].hex()
    assert c["alice"].missing([hash_bytes(encode_blob(b"three"))]) != []  # nothing stored


def test_incomplete_upload_cannot_become_head(server: Server) -> None:
    c = make_session(server)
    lease = c["alice"].acquire("pc", 60)
    store = MemoryStore()
    leaf = encode_dir_leaf([])
    store.apply(Update(objects=[leaf]))
    from peerhost_store.objects import Snapshot, encode_snapshot
    from peerhost_store.sync.client import Incomplete

    snap = encode_snapshot(Snapshot(hash_bytes(leaf), (), 1, "t", "h", "", {}))
    c["alice"].upload([snap])
    with pytest.raises(Incomplete) as err:
        c["alice"].set_head(None, hash_bytes(snap), lease.fencing)
    assert err.value.missing == hash_bytes(leaf)
    c["alice"].upload([leaf])
    c["alice"].set_head(None, hash_bytes(snap), lease.fencing)
    served = server.coordinator.store("s1")
    assert check_snapshot(served, lambda ids: [None] * len(ids), hash_bytes(snap),
                          TreeLimits()).missing is None


class GcWhileFetching(CoordinatorClient):
    """A client whose blob downloads answer two objects at a time and run ``phs gc`` on the
    pulling repository each time, as a concurrent gc would between the fetch's batches (the
    fetch holds no lock)."""

    def __init__(self, base: CoordinatorClient, repo: Repository) -> None:
        super().__init__(base.http, base.session, base._token)
        self.repo = repo
        self.gcs = 0

    def download(self, ids: list[ObjectId]) -> list[bytes]:
        answer = super().download(ids)[:2]
        if any(isinstance(decode(data), bytes) for data in answer):
            self.repo.gc()
            self.gcs += 1
        return answer


def alice_and_bob(server: Server, tmp_path: Path) -> tuple[
        dict[str, CoordinatorClient], int, Repository, Repository]:
    """A session whose head alice pushed from repository ``a``; bob pulled it into ``b``."""
    c = make_session(server)
    fencing = c["alice"].acquire("alice-pc", 60).fencing
    a = new_repo(tmp_path / "a")
    make_world(a.world)
    a.snapshot("v1")
    push(a, c["alice"], fencing=fencing)
    b = new_repo(tmp_path / "b")
    pull(b, c["bob"])
    return c, fencing, a, b


def test_gc_during_a_pull_deletes_nothing_the_pull_wrote_or_relied_on(
        server: Server, tmp_path: Path) -> None:
    c, fencing, a, b = alice_and_bob(server, tmp_path)
    rng = random.Random(11)
    shared = {f"shared{i}.dat": rng.randbytes(40 << 10) for i in range(4)}
    for name, data in shared.items():  # b stores these blobs unreachable (as phs diff does)
        (b.world / name).write_bytes(data)
    b.scan()
    for name in shared:
        (b.world / name).unlink()
    for name, data in shared.items():
        (a.world / name).write_bytes(data)
    for i in range(8):
        (a.world / f"new{i}.dat").write_bytes(rng.randbytes(40 << 10))
    v2 = a.snapshot("v2").oid
    push(a, c["alice"], fencing=fencing)
    racing = GcWhileFetching(c["bob"], b)
    report = pull(b, racing, batch_bytes=64 << 10)  # a durable batch every two blobs
    assert racing.gcs > 1 and report.outcome == "fast-forward" and b.head() == v2
    assert b.verify().ok, [str(p) for p in b.verify().problems[:3]]
    assert b.scan().root == a.read_snapshot(v2).root
    assert b.store.load_pins().ids == {}, "the pull's pins are gone with it"


def test_a_pull_that_finds_play_after_an_interrupted_pull_stops_and_keeps_it(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peerhost_store.pending import RestoreIncomplete, RestorePending

    c, fencing, a, b = alice_and_bob(server, tmp_path)
    (a.world / "level.dat").write_bytes(b"v2")
    (a.world / "new.txt").write_bytes(b"v2")
    a.snapshot("v2")
    push(a, c["alice"], fencing=fencing)
    refuse_writes_to(monkeypatch, "new.txt")
    with pytest.raises(RestoreIncomplete):
        pull(b, c["bob"])
    monkeypatch.undo()
    (b.world / "played.txt").write_bytes(b"bob played on")
    played = {p.name: p.read_bytes() for p in b.world.iterdir() if p.is_file()}
    with pytest.raises(RestorePending, match="phs restore --abort") as stopped:
        pull(b, c["bob"])
    assert {p.name: p.read_bytes() for p in b.world.iterdir() if p.is_file()} == played
    assert b.head() == stopped.value.kept and b.scan().root == root_of(b)
    assert b.abort_restore().head == stopped.value.kept
    assert pull(b, c["bob"]).outcome == "ahead", "the kept play descends from the session head"
