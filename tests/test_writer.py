"""ObjectWriter: early batches are committed on a worker thread while the caller goes on, and
nothing about that is visible but the time it saves."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from peerhost_store.errors import StoreError
from peerhost_store.ids import hash_bytes
from peerhost_store.store import MemoryStore, Update
from peerhost_store.writer import ObjectWriter

BATCH = 1000


class Gated:
    """A MemoryStore whose staged updates wait for ``release`` (or fail with ``fail``)."""

    def __init__(self, fail: bool = False) -> None:
        self.store = MemoryStore()
        self.release = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.fail = fail
        self.threads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def apply(self, update: Update) -> int:
        if not update.staged:
            return self.store.apply(update)
        self.threads.append(threading.current_thread().name)
        self.started.set()
        try:
            assert self.release.wait(10), "never released"
            if self.fail:
                raise StoreError("disk full (injected)")
            return self.store.apply(update)
        finally:
            self.finished.set()


def blobs(count: int, tag: bytes = b"") -> list[bytes]:
    return [tag + bytes([i % 256]) * 400 + i.to_bytes(4, "big") for i in range(count)]


def test_a_batch_commits_while_the_next_is_made() -> None:
    gated = Gated()
    with ObjectWriter(gated, BATCH) as writer:
        first = [writer.add(data) for data in blobs(3)]  # 1,212 bytes: flushed
        assert gated.started.wait(10)
        later = [writer.add(data) for data in blobs(2, b"x")]  # while the commit waits
        assert not gated.finished.is_set()
        gated.release.set()
        fresh = writer.take()
    assert gated.threads and all(name.startswith("phs-writer") for name in gated.threads)
    assert [oid for oid, _ in fresh] == later
    gated.store.apply(Update(hashed=fresh))
    assert gated.store.objects.missing(first + later) == []


def test_a_failed_commit_is_raised_by_take_and_publishes_nothing() -> None:
    gated = Gated(fail=True)
    gated.release.set()
    head = hash_bytes(b"head")

    def snapshot() -> None:
        with ObjectWriter(gated, BATCH) as writer:
            for data in blobs(3):
                writer.add(data)
            objects = writer.take()
        gated.store.apply(Update(hashed=objects, refs=[("HEAD", None, head)]))

    with pytest.raises(StoreError, match="disk full"):
        snapshot()
    assert gated.store.refs.get("HEAD") is None


def test_a_caller_that_fails_waits_for_the_running_commit() -> None:
    """Else the store could close under a transaction still running on the worker."""
    gated = Gated()
    timer = threading.Timer(0.2, gated.release.set)

    def scan() -> None:
        with ObjectWriter(gated, BATCH) as writer:
            for data in blobs(3):
                writer.add(data)
            assert gated.started.wait(10)
            timer.start()
            raise ValueError("scan failed")

    with pytest.raises(ValueError, match="scan failed"):
        scan()
    assert gated.finished.is_set()
    timer.join()


def test_a_failed_commit_does_not_hide_the_callers_failure() -> None:
    gated = Gated(fail=True)
    gated.release.set()

    def scan() -> None:
        with ObjectWriter(gated, BATCH) as writer:
            for data in blobs(3):
                writer.add(data)
            assert gated.finished.wait(10)
            raise ValueError("scan failed")

    with pytest.raises(ValueError, match="scan failed"):
        scan()
