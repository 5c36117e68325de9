"""The store seam holds: a third object backend, written here in a few lines (a plain folder of
files, one per object), passes the object contract suite, makes a full store with a state
store beside it, and serves a whole push, pull and gc through a real coordinator."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from test_sync_support import Server, make_session, root_of
from worldfs_helpers import make_world

from peerhost_store.errors import ObjectMissing
from peerhost_store.ids import ObjectId
from peerhost_store.repo import Repository
from peerhost_store.store import Composed, MemoryStore, ObjectStore, Store
from peerhost_store.sync.transfer import pull, push
from peerhost_store.testing import ObjectStoreTests, StoreTests


class FolderObjects:
    """Objects as files ``ROOT/ab/abcdef...`` (an S3 bucket would look much like this)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, oid: ObjectId) -> Path:
        return self.root / oid.hex()[:2] / oid.hex()

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        out = []
        for oid in oids:
            try:
                out.append(self._path(oid).read_bytes())
            except FileNotFoundError:
                raise ObjectMissing(oid) from None
        return out

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        return [oid for oid in oids if not self._path(oid).exists()]

    def put_many(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]]) -> int:
        written = 0
        for oid, data in objects:
            path = self._path(oid)
            if path.exists() and path.read_bytes() == data:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            written += 1
        return written

    def delete_many(self, oids: Sequence[ObjectId]) -> None:
        for oid in oids:
            self._path(oid).unlink(missing_ok=True)

    def iter_ids(self) -> Iterator[ObjectId]:
        return iter(sorted(ObjectId(bytes.fromhex(p.name)) for p in self.root.glob("??/*")
                           if not p.name.startswith(".")))

    def sizes(self, oids: Sequence[ObjectId]) -> list[int | None]:
        paths = [self._path(oid) for oid in oids]
        return [path.stat().st_size if path.exists() else None for path in paths]


class TestFolderObjects(ObjectStoreTests):
    @pytest.fixture
    def objects(self, tmp_path: Path) -> Iterator[ObjectStore]:
        yield FolderObjects(tmp_path / "objects")


class TestComposedStore(StoreTests):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        yield Composed(FolderObjects(tmp_path / "objects"), MemoryStore(), "folder store")

    def end_pin_owner(self, store: Store, name: str) -> None:
        assert isinstance(store, Composed) and isinstance(store.state, MemoryStore)
        store.state.live_pins.discard(name)


def _folder_repo(world: Path, states: dict[Path, MemoryStore]) -> Repository:
    """A repository whose objects are files beside it, its refs and meta in memory (kept in
    ``states`` so that reopening the world finds them again)."""

    def open_store(path: Path, *, readonly: bool = False) -> Store:
        state = states.setdefault(path, MemoryStore())
        return Composed(FolderObjects(path / "objects"), state, f"folder {path}")

    world.mkdir(parents=True, exist_ok=True)
    return Repository.init(world, open_store=open_store)


def test_a_folder_backend_serves_push_pull_and_gc(server: Server, tmp_path: Path,
                                                 data_dir: Path) -> None:
    c = make_session(server)
    fencing = c["alice"].acquire("alice-pc", 60).fencing
    states: dict[Path, MemoryStore] = {}
    a = _folder_repo(tmp_path / "a", states)
    make_world(a.world)
    shutil.copy(data_dir / "mixed.mca", a.world / "region" / "r.0.0.mca")
    v1 = a.snapshot("v1").oid
    push(a, c["alice"], fencing=fencing)
    (a.world / "level.dat").write_bytes(b"changed")
    shutil.copy(data_dir / "gzip.mca", a.world / "region" / "r.0.0.mca")
    v2 = a.snapshot("v2").oid
    assert push(a, c["alice"], fencing=fencing).objects_sent > 0

    b = _folder_repo(tmp_path / "b", states)
    report = pull(b, c["bob"])
    assert report.outcome == "fast-forward" and b.head() == v2
    assert root_of(b) == root_of(a) and b.scan().root == root_of(a)
    assert b.verify().ok and a.verify().ok
    files = len(list(b.store.objects.iter_ids()))
    assert files > 10

    before = len(list(a.store.objects.iter_ids()))
    gc = a.gc(keep_last=1)
    assert gc.deleted_objects > 0
    assert len(list(a.store.objects.iter_ids())) == before - gc.deleted_objects
    assert a.verify().ok and a.head() == v2
    with pytest.raises(ObjectMissing):  # v1's tree is partly gone, as gc promised
        a.checkout(v1, tmp_path / "old")
    a.close()
    b.close()
