"""Stores: where objects, refs, the stat cache, meta and pins live.

Three small protocols, each tested on its own (:mod:`peerhost_store.testing`):

* :class:`ObjectStore`: objects alone, keyed by id (get, put, missing, iterate, delete). A
  backend keeps bytes under the id it is given and checks nothing; :class:`Verified` wraps one
  and is the single place where ids are derived from bytes (on write) and checked (on read,
  by :func:`check_read`, which a reader that gets its bytes another way calls too), as
  dulwich's ``BaseObjectStore`` does. :class:`Overlay` reads objects held in memory (checked
  when they arrived) over a store, for a transfer in progress.
* :class:`RefStore`: named heads, moved only by compare-and-swap (``set_if_equals``).
* :class:`StatCache` and :class:`MetaStore`: the stat cache (``path -> bytes``, so unchanged
  files are never re-read) and small settings.

A repository keeps all of them in a :class:`Store` and changes them together with an
:class:`Update`: all of it or, when a ref's expected value does not match (:class:`RefConflict`),
a required object is absent or the pins moved (:class:`PinsChanged`), none of it. Pins are ids
a running transfer wrote or relies on before any ref reaches them; gc treats live pins as roots
and ignores pins whose owner (a process) is gone.

Implementations: :class:`LmdbStore` (durable; everything in one environment, one transaction
per update), :class:`MemoryStore` (the reference) and :class:`Composed`, which keeps objects in
any :class:`ObjectStore` (a directory, a bucket) and the rest in a state store, writing objects
first: an object no ref reaches yet is harmless, so ordering gives the same guarantees as one
transaction.
"""

from __future__ import annotations

from ..errors import StoreError
from ._base import (
    Compaction,
    MetaStore,
    ObjectStore,
    Overlay,
    Pins,
    PinsChanged,
    RefConflict,
    RefStore,
    StatCache,
    Store,
    Update,
    Verified,
    check_read,
)
from ._composed import Composed
from ._lmdb import PACK_MIN, LmdbStore, ReadOnlyStore
from ._memory import MemoryObjects, MemoryStore

__all__ = [
    "PACK_MIN",
    "Compaction",
    "Composed",
    "LmdbStore",
    "MemoryObjects",
    "MemoryStore",
    "MetaStore",
    "ObjectStore",
    "Overlay",
    "Pins",
    "PinsChanged",
    "ReadOnlyStore",
    "RefConflict",
    "RefStore",
    "StatCache",
    "Store",
    "StoreError",
    "Update",
    "Verified",
    "check_read",
]
