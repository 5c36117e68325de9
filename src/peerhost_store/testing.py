"""The store contract suite. A backend's tests subclass :class:`ObjectStoreTests` and provide
a ``store`` fixture plus ``raw_put`` (write bytes under a key bypassing the API, to plant
corruption)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from .errors import ObjectCorrupt, ObjectMissing
from .ids import ObjectId, hash_bytes
from .objects import encode_blob
from .store import ObjectStore, RefConflict, Update


class ObjectStoreTests:
    """Behaviour every :class:`~peerhost_store.store.ObjectStore` must have."""

    @pytest.fixture
    def store(self) -> Iterator[ObjectStore]:
        raise NotImplementedError

    def raw_put(self, store: ObjectStore, oid: ObjectId, data: bytes) -> None:
        raise NotImplementedError

    def test_add_then_get(self, store: ObjectStore) -> None:
        data = encode_blob(b"hello")
        oid, new = store.add_raw(data)
        assert oid == hash_bytes(data) and new
        assert oid in store
        assert store.get_raw(oid) == data

    def test_add_is_idempotent(self, store: ObjectStore) -> None:
        data = encode_blob(b"x")
        assert store.add_raw(data)[1] is True
        assert store.add_raw(data)[1] is False
        assert list(store.iter_ids()) == [hash_bytes(data)]

    def test_missing_object(self, store: ObjectStore) -> None:
        oid = hash_bytes(b"nothing")
        assert oid not in store
        with pytest.raises(ObjectMissing) as info:
            store.get_raw(oid)
        assert oid.hex() in str(info.value)
        assert isinstance(info.value, KeyError)

    def test_corrupt_object_is_refused_on_read(self, store: ObjectStore) -> None:
        oid, _ = store.add_raw(encode_blob(b"good"))
        self.raw_put(store, oid, encode_blob(b"evil"))
        with pytest.raises(ObjectCorrupt) as info:
            store.get_raw(oid)
        assert info.value.expected == oid

    def test_iter_missing(self, store: ObjectStore) -> None:
        a, _ = store.add_raw(encode_blob(b"a"))
        b = hash_bytes(b"b")
        assert list(store.iter_missing([a, b])) == [b]

    def test_ref_compare_and_swap(self, store: ObjectStore) -> None:
        a, _ = store.add_raw(encode_blob(b"a"))
        b, _ = store.add_raw(encode_blob(b"b"))
        assert store.get_ref("main") is None
        store.apply(Update(refs=[("main", None, a)]))
        with pytest.raises(RefConflict) as info:
            store.apply(Update(refs=[("main", None, b)]))
        assert info.value.actual == a
        store.apply(Update(refs=[("main", a, b)]))
        assert store.get_ref("main") == b
        assert list(store.iter_refs()) == [("main", b)]
        store.apply(Update(refs=[("main", b, None)]))
        assert store.get_ref("main") is None

    def test_update_is_atomic(self, store: ObjectStore) -> None:
        a, _ = store.add_raw(encode_blob(b"a"))
        store.apply(Update(refs=[("main", None, a)]))
        data = encode_blob(b"lost")
        with pytest.raises(RefConflict):
            store.apply(
                Update(
                    objects=[data],
                    refs=[("other", None, a), ("main", None, a)],
                    stats={"f": b"1"},
                    meta={"k": b"v"},
                )
            )
        assert hash_bytes(data) not in store
        assert store.get_ref("other") is None
        assert store.load_stats() == {}
        assert store.get_meta("k") is None

    def test_stats_and_meta(self, store: ObjectStore) -> None:
        store.apply(Update(stats={"a": b"1", "b": b"2"}, meta={"k": b"v"}))
        store.apply(Update(stats={"a": None}))
        assert store.load_stats() == {"b": b"2"}
        assert store.get_meta("k") == b"v"
        store.apply(Update(clear_stats=True, stats={"c": b"3"}))
        assert store.load_stats() == {"c": b"3"}

    def test_delete_objects(self, store: ObjectStore) -> None:
        a, _ = store.add_raw(encode_blob(b"a"))
        b, _ = store.add_raw(encode_blob(b"b"))
        store.apply(Update(delete_objects=[a]))
        assert a not in store and b in store

    def test_concurrent_compare_and_swap_has_one_winner(self, store: ObjectStore) -> None:
        base, _ = store.add_raw(encode_blob(b"base"))
        store.apply(Update(refs=[("main", None, base)]))
        targets = [store.add_raw(encode_blob(bytes([i])))[0] for i in range(8)]
        wins: list[ObjectId] = []

        def race(target: ObjectId) -> None:
            try:
                store.apply(Update(refs=[("main", base, target)]))
                wins.append(target)
            except RefConflict:
                pass

        threads = [threading.Thread(target=race, args=(t,)) for t in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(wins) == 1
        assert store.get_ref("main") == wins[0]
