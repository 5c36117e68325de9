"""The store contract suites, one per protocol. A backend's tests subclass the suites its
store implements and provide their fixture:

* :class:`ObjectStoreTests`: an ``objects`` fixture, an unchecked
  :class:`~peerhost_store.store.ObjectStore` (LMDB's, a dict, a folder of files, a bucket);
* :class:`RefStoreTests`: a ``refs`` fixture, a :class:`~peerhost_store.store.RefStore`;
* :class:`StoreTests`: a ``store`` fixture, a :class:`~peerhost_store.store.Store`, and
  ``end_pin_owner`` (make a pin's owner look gone, as after its process died).

Backends store what they are given under the id they are given, so corruption is planted
through the backend itself; :class:`~peerhost_store.store.Verified` must refuse it on read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from .errors import ObjectCorrupt, ObjectMissing
from .ids import ObjectId, hash_bytes
from .objects import encode_blob
from .store import ObjectStore, PinsChanged, RefConflict, RefStore, Store, Update, Verified

__all__ = ["ObjectStoreTests", "RefStoreTests", "StoreTests"]


def _blob(text: bytes) -> tuple[ObjectId, bytes]:
    data = encode_blob(text)
    return hash_bytes(data), data


class ObjectStoreTests:
    """Behaviour every :class:`~peerhost_store.store.ObjectStore` must have."""

    @pytest.fixture
    def objects(self) -> Iterator[ObjectStore]:
        raise NotImplementedError

    def test_put_then_get(self, objects: ObjectStore) -> None:
        a, data = _blob(b"hello")
        assert objects.put_many([(a, data)]) == 1
        assert objects.get_many([a]) == [data]
        assert objects.missing([a]) == []

    def test_put_is_idempotent(self, objects: ObjectStore) -> None:
        a, data = _blob(b"x")
        assert objects.put_many([(a, data)]) == 1
        assert objects.put_many([(a, data)]) == 0
        assert list(objects.iter_ids()) == [a]

    def test_views_are_stored_as_bytes(self, objects: ObjectStore) -> None:
        a, data = _blob(b"a view of an upload's body")
        body = bytearray(b"....") + data
        objects.put_many([(a, memoryview(body)[4:])])
        body[4:] = bytes(len(data))  # the caller's buffer is reused
        assert objects.get_many([a]) == [data]

    def test_missing_and_absent_reads(self, objects: ObjectStore) -> None:
        a, data = _blob(b"a")
        b = hash_bytes(b"b")
        objects.put_many([(a, data)])
        assert objects.missing([b, a, b]) == [b, b]
        with pytest.raises(ObjectMissing) as info:
            objects.get_many([a, b])
        assert info.value.oid == b and b.hex() in str(info.value)
        assert isinstance(info.value, KeyError)

    def test_delete(self, objects: ObjectStore) -> None:
        (a, da), (b, db) = _blob(b"a"), _blob(b"b")
        objects.put_many([(a, da), (b, db)])
        objects.delete_many([a, hash_bytes(b"never stored")])
        assert objects.missing([a, b]) == [a]
        assert sorted(objects.iter_ids()) == [b]

    def test_sizes_without_reading(self, objects: ObjectStore) -> None:
        (a, da), (b, db) = _blob(b"a"), _blob(b"bbbb" * 1000)
        objects.put_many([(a, da), (b, db)])
        assert objects.sizes([b, hash_bytes(b"absent"), a]) == [len(db), None, len(da)]
        assert objects.sizes([]) == []

    def test_different_bytes_replace_stored_ones(self, objects: ObjectStore) -> None:
        # What repair relies on: good bytes written over bytes that were damaged.
        a, good = _blob(b"good")
        objects.put_many([(a, encode_blob(b"evil"))])
        assert objects.put_many([(a, good)]) == 1
        assert objects.get_many([a]) == [good]

    def test_verified_refuses_bytes_that_do_not_hash_to_their_id(
            self, objects: ObjectStore) -> None:
        a, _ = _blob(b"good")
        objects.put_many([(a, encode_blob(b"evil"))])  # a backend checks nothing
        checked = Verified(objects, "the store under test")
        with pytest.raises(ObjectCorrupt) as info:
            checked.get_raw(a)
        assert info.value.expected == a and "the store under test" in str(info.value)
        assert checked.get_many([a], trusted={a}) == [encode_blob(b"evil")]
        oid, written = checked.put(encode_blob(b"good"))
        assert (oid, written) == (a, True) and checked.get_raw(a) == encode_blob(b"good")
        assert a in checked and hash_bytes(b"other") not in checked


class RefStoreTests:
    """Behaviour every :class:`~peerhost_store.store.RefStore` must have."""

    @pytest.fixture
    def refs(self) -> Iterator[RefStore]:
        raise NotImplementedError

    def test_compare_and_swap(self, refs: RefStore) -> None:
        a, b = hash_bytes(b"a"), hash_bytes(b"b")
        assert refs.get("main") is None
        refs.set_if_equals("main", None, a)
        with pytest.raises(RefConflict) as info:
            refs.set_if_equals("main", None, b)
        assert info.value.actual == a and info.value.expected is None
        refs.set_if_equals("main", a, b)
        refs.set_if_equals("remotes/s", None, a)
        assert refs.get("main") == b
        assert refs.items() == [("main", b), ("remotes/s", a)]
        refs.set_if_equals("main", b, None)
        assert refs.get("main") is None and refs.items() == [("remotes/s", a)]

    def test_concurrent_compare_and_swap_has_one_winner(self, refs: RefStore) -> None:
        base = hash_bytes(b"base")
        refs.set_if_equals("main", None, base)
        targets = [hash_bytes(bytes([i])) for i in range(8)]
        wins: list[ObjectId] = []

        def race(target: ObjectId) -> None:
            try:
                refs.set_if_equals("main", base, target)
                wins.append(target)
            except RefConflict:
                pass

        threads = [threading.Thread(target=race, args=(t,)) for t in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(wins) == 1
        assert refs.get("main") == wins[0]


class StoreTests:
    """Behaviour every :class:`~peerhost_store.store.Store` must have: its parts, changed
    together by one :class:`~peerhost_store.store.Update`."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError

    def end_pin_owner(self, store: Store, name: str) -> None:
        raise NotImplementedError

    def test_objects_are_checked_on_read(self, store: Store) -> None:
        oid, _ = store.objects.put(encode_blob(b"good"))
        store.objects.backend.put_many([(oid, encode_blob(b"evil"))])
        with pytest.raises(ObjectCorrupt) as info:
            store.objects.get_raw(oid)
        assert info.value.expected == oid

    def test_update_is_atomic(self, store: Store) -> None:
        a, _ = store.objects.put(encode_blob(b"a"))
        store.apply(Update(refs=[("main", None, a)]))
        data = encode_blob(b"lost")
        with pytest.raises(RefConflict):
            store.apply(Update(objects=[data], refs=[("other", None, a), ("main", None, a)],
                               stats={"f": b"1"}, meta={"k": b"v"}))
        assert store.refs.get("other") is None
        assert store.stats.load() == {}
        assert store.meta.get("k") is None
        # One transaction (LMDB, memory) stores nothing; a composed store may have written the
        # objects first, which no ref reaches: harmless, gc takes them.
        assert store.refs.get("main") == a

    def test_stats_and_meta(self, store: Store) -> None:
        store.apply(Update(stats={"a": b"1", "b": b"2"}, meta={"k": b"v"}))
        store.apply(Update(stats={"a": None}))
        assert store.stats.load() == {"b": b"2"}
        assert store.meta.get("k") == b"v"
        store.apply(Update(clear_stats=True, stats={"c": b"3"}))
        assert store.stats.load() == {"c": b"3"}
        store.stats.update({"d": b"4"})
        store.meta.update({"k": None, "j": b"w"})
        assert store.stats.load() == {"c": b"3", "d": b"4"}
        assert (store.meta.get("k"), store.meta.get("j")) == (None, b"w")

    def test_refs_move_by_compare_and_swap(self, store: Store) -> None:
        a, _ = store.objects.put(encode_blob(b"a"))
        store.refs.set_if_equals("main", None, a)
        with pytest.raises(RefConflict):
            store.apply(Update(refs=[("main", None, a)]))
        assert store.refs.items() == [("main", a)]

    def test_delete_objects(self, store: Store) -> None:
        a, _ = store.objects.put(encode_blob(b"a"))
        b, _ = store.objects.put(encode_blob(b"b"))
        store.apply(Update(delete_objects=[a]))
        assert a not in store.objects and b in store.objects

    def test_a_corrupt_object_is_replaced_by_bytes_that_hash_to_its_id(self, store: Store) -> None:
        good = encode_blob(b"good")
        oid, _ = store.objects.put(good)
        store.objects.backend.put_many([(oid, encode_blob(b"evil"))])
        assert store.apply(Update(objects=[good])) == 1, "the good bytes are written over the bad"
        assert store.objects.get_raw(oid) == good
        assert store.apply(Update(objects=[good])) == 0

    def test_required_objects_must_be_present_at_commit(self, store: Store) -> None:
        a, _ = store.objects.put(encode_blob(b"a"))
        absent = hash_bytes(b"never stored")
        with pytest.raises(ObjectMissing) as info:
            store.apply(Update(refs=[("main", None, a)], require=[a, absent]))
        assert info.value.oid == absent
        assert store.refs.get("main") is None, "nothing applied"
        with pytest.raises(ObjectMissing):
            store.apply(Update(delete_objects=[a], refs=[("main", None, a)], require=[a]))
        assert store.refs.get("main") is None
        data = encode_blob(b"with the update")
        store.apply(Update(objects=[data], refs=[("main", None, a)], require=[a, hash_bytes(data)]))
        assert store.refs.get("main") == a

    def test_pins_are_listed_until_dropped(self, store: Store) -> None:
        a, _ = store.objects.put(encode_blob(b"a"))
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

    def test_an_update_made_against_older_pins_is_refused(self, store: Store) -> None:
        a, _ = store.objects.put(encode_blob(b"a"))
        seen = store.load_pins().generation
        name = store.new_pin()
        store.apply(Update(pins={name: [(a, False)]}))
        with pytest.raises(PinsChanged):
            store.apply(Update(delete_objects=[a], pins_at=seen))
        assert a in store.objects
        store.apply(Update(pins={name: None}))
        assert store.load_pins().generation > seen + 1, "dropping a pin changes them too"
        store.apply(Update(delete_objects=[a], pins_at=store.load_pins().generation))
        assert a not in store.objects

    def test_pins_whose_owner_is_gone_are_stale(self, store: Store) -> None:
        a, _ = store.objects.put(encode_blob(b"a"))
        b, _ = store.objects.put(encode_blob(b"b"))
        dead, alive = store.new_pin(), store.new_pin()
        store.apply(Update(pins={dead: [(a, False)], alive: [(b, False)]}))
        self.end_pin_owner(store, dead)
        pins = store.load_pins()
        assert pins.ids == {b: False} and pins.stale == [dead]
        store.apply(Update(pins={dead: None}))
        assert store.load_pins().stale == []
