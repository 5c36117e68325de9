"""The store contract suite. A backend's tests subclass :class:`ObjectStoreTests` and provide
a ``store`` fixture plus ``raw_put`` (write bytes under a key bypassing the API, to plant
corruption) and ``end_pin_owner`` (make a pin's owner look gone, as after its process died)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from .errors import ObjectCorrupt, ObjectMissing
from .ids import ObjectId, hash_bytes
from .objects import encode_blob
from .store import ObjectStore, PinsChanged, RefConflict, Update


class ObjectStoreTests:
    """Behaviour every :class:`~peerhost_store.store.ObjectStore` must have."""

    @pytest.fixture
    def store(self) -> Iterator[ObjectStore]:
        raise NotImplementedError

    def raw_put(self, store: ObjectStore, oid: ObjectId, data: bytes) -> None:
        raise NotImplementedError

    def end_pin_owner(self, store: ObjectStore, name: str) -> None:
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

    def test_a_corrupt_object_is_replaced_by_bytes_that_hash_to_its_id(self, store: ObjectStore) -> None:
        good = encode_blob(b"good")
        oid, _ = store.add_raw(good)
        self.raw_put(store, oid, encode_blob(b"evil"))
        assert store.add_raw(good) == (oid, True), "the good bytes are written over the bad"
        assert store.get_raw(oid) == good
        assert store.add_raw(good) == (oid, False)

    def test_required_objects_must_be_present_at_commit(self, store: ObjectStore) -> None:
        a, _ = store.add_raw(encode_blob(b"a"))
        gone = hash_bytes(b"never stored")
        data = encode_blob(b"new")
        with pytest.raises(ObjectMissing) as info:
            store.apply(Update(objects=[data], refs=[("main", None, a)], require=[a, gone]))
        assert info.value.oid == gone
        assert store.get_ref("main") is None and hash_bytes(data) not in store, "nothing applied"
        with pytest.raises(ObjectMissing):  # deleted in the same update counts as absent
            store.apply(Update(refs=[("main", None, a)], require=[a], delete_objects=[a]))
        assert a in store
        store.apply(Update(objects=[data], refs=[("main", None, a)], require=[a, hash_bytes(data)]))
        assert store.get_ref("main") == a

    def test_pins_are_listed_until_dropped(self, store: ObjectStore) -> None:
        a, _ = store.add_raw(encode_blob(b"a"))
        b = hash_bytes(b"pinned before it is stored")
        first = store.load_pins()
        assert first.ids == {} and first.stale == []
        name = store.new_pin()
        store.apply(Update(pins={name: [(a, True)]}))
        store.apply(Update(pins={name: [(b, False)]}))
        pins = store.load_pins()
        assert pins.ids == {a: True, b: False} and pins.generation > first.generation
        store.apply(Update(pins={name: None}))
        assert store.load_pins().ids == {}

    def test_an_update_made_against_older_pins_is_refused(self, store: ObjectStore) -> None:
        a, _ = store.add_raw(encode_blob(b"a"))
        seen = store.load_pins().generation
        name = store.new_pin()
        store.apply(Update(pins={name: [(a, False)]}))
        with pytest.raises(PinsChanged):
            store.apply(Update(delete_objects=[a], pins_at=seen))
        assert a in store
        store.apply(Update(pins={name: None}))
        assert store.load_pins().generation > seen + 1, "dropping a pin changes them too"
        store.apply(Update(delete_objects=[a], pins_at=store.load_pins().generation))
        assert a not in store

    def test_pins_whose_owner_is_gone_are_stale(self, store: ObjectStore) -> None:
        a, _ = store.add_raw(encode_blob(b"a"))
        b, _ = store.add_raw(encode_blob(b"b"))
        dead, alive = store.new_pin(), store.new_pin()
        store.apply(Update(pins={dead: [(a, False)], alive: [(b, False)]}))
        self.end_pin_owner(store, dead)
        pins = store.load_pins()
        assert pins.ids == {b: False} and pins.stale == [dead]
        store.apply(Update(pins={dead: None}))
        assert store.load_pins().stale == []
