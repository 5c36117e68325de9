"""Objects in S3-compatible storage: ``phs serve --objects s3://bucket/prefix``.

Each session's objects are keys ``PREFIX/<session>/objects/<hex id>`` holding the object's
bytes, so a key names what it holds and a session's tokens reach only its own keys. The
client is boto3, configured from the environment as every AWS tool is (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``).

* :class:`S3Objects` is the library's :class:`~peerhost_store.store.ObjectStore` over one key
  prefix: it stores what it is given under the id it is given, many requests at once (a
  thread pool), and checks nothing; reads go through
  :class:`~peerhost_store.store.Verified`, which re-hashes every object it returns.
* :class:`S3SessionObjects` is one session's
  :class:`~peerhost_server.domain.protocols.SessionObjects`: the bytes in the bucket, and
  beside them, in the coordination state, an index of what is stored (``id -> size`` and
  the object's first bytes, which a head move's checks read), what it
  all takes (the quota) and the upload log (gc's grace period). An upload puts its objects in
  the bucket first (the id was derived from the bytes in this process, and the client's
  checksum makes the bucket refuse bytes that changed on the way) and indexes them only once
  every put has succeeded: an object is visible (``missing``, a head move's completeness
  walk) only once it is whole in the bucket. A failed upload leaves unindexed keys, which no
  head reaches and gc deletes once they are older than the grace period.
* :class:`S3ObjectStores` opens them; :func:`open_s3` is the opener
  :func:`peerhost_server.backends.open_backends` calls for ``--objects s3://...``.

The index is the coordination state's (:class:`~peerhost_server.domain.protocols.ObjectIndex`):
with the embedded one, ``DATA/sessions/<name>/index`` (LMDB, ~400 bytes per object).

Failures of the bucket (unreachable, throttled, a 5xx, refused credentials) are
:class:`S3Unavailable`, which the coordinator answers as 503 ``unavailable`` with
``Retry-After``: nothing of the request was acknowledged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from peerhost_store.errors import ObjectMissing, StoreError
from peerhost_store.ids import ObjectId
from peerhost_store.store import Verified

from ..domain.errors import Unavailable
from ..domain.protocols import Backends, IndexingBackends, ObjectIndex, Usage
from ..limits import Limits

__all__ = ["S3ObjectStores", "S3Objects", "S3SessionObjects", "S3Unavailable", "open_s3",
           "parse_s3_url"]

T = TypeVar("T")
_log = logging.getLogger("peerhost_server.s3")

#: Requests in flight at once per coordinator (gets, puts, heads): a push of many small
#: objects costs a round trip per WORKERS objects, not one per object.
WORKERS = 32
#: Keys one DeleteObjects request may name (S3's limit).
DELETE_BATCH = 1000
#: The first bytes of each object the index keeps: enough for a blob's length header, so a
#: head move's checks (:func:`peerhost_store.bounds.check_snapshot` peeks at 7) need no GET.
INDEX_HEAD = 16
#: What a client is told to wait before retrying when the bucket does not answer.
RETRY_AFTER = 5
_ABSENT = {"NoSuchKey", "404", "NotFound"}


class S3Unavailable(StoreError):
    """The bucket did not answer, or refused for now (throttled, a 5xx, refused
    credentials): nothing was changed by the call that failed, and it may be retried."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``(bucket, prefix)`` (the prefix without slashes at its ends,
    maybe empty).

    Raises:
        ValueError: not an ``s3://`` URL with a bucket.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"objects URL {url!r}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    return parts.netloc, parts.path.strip("/")


def make_client(workers: int = WORKERS) -> Any:
    """An S3 client configured from the environment, with a connection per worker, short
    connect timeouts and botocore's standard retries (throttling and 5xx, with backoff).

    With an endpoint of its own (``AWS_ENDPOINT_URL``: MinIO, Ceph, Garage, moto), buckets are
    addressed by path, which those servers accept without DNS names per bucket."""
    custom = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    config = Config(max_pool_connections=workers, connect_timeout=5, read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"},
                    s3={"addressing_style": "path" if custom else "auto"})
    return boto3.session.Session().client("s3", config=config)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Objects:
    """An :class:`~peerhost_store.store.ObjectStore` over the keys ``PREFIX/objects/<hex id>``
    of ``bucket``, requests run ``pool``'s threads at once. Checks nothing (see the module).

    Args:
        client: a boto3 S3 client (thread-safe; :func:`make_client`).
        where: names the store in errors (``s3://bucket/prefix``).
    """

    def __init__(self, client: Any, bucket: str, prefix: str, pool: ThreadPoolExecutor) -> None:
        self.client, self.bucket, self.pool = client, bucket, pool
        self.prefix = f"{prefix}/objects/" if prefix else "objects/"
        self.where = f"s3://{bucket}/{self.prefix}"

    def _key(self, oid: ObjectId) -> str:
        return self.prefix + oid.hex()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, its failures said as :class:`S3Unavailable` naming ``what`` and where."""
        try:
            return fn()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise S3Unavailable(f"object storage {self.where}: {what} failed: "
                                f"{error.get('Code', '?')} {error.get('Message', '')}".rstrip()
                                ) from exc
        except BotoCoreError as exc:
            raise S3Unavailable(f"object storage {self.where}: {what} failed: {exc}") from exc

    def _map(self, fn: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        return list(self.pool.map(fn, items))

    def _get(self, oid: ObjectId, byte_range: str | None = None) -> tuple[int, bytes] | None:
        """(size, bytes) of one object (the first bytes only, with ``byte_range``), or None."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(oid)}
        if byte_range is not None:
            args["Range"] = byte_range

        def get() -> tuple[int, bytes] | None:
            try:
                answer = self.client.get_object(**args)
            except ClientError as exc:
                if _code(exc) in _ABSENT:
                    return None
                if _code(exc) == "InvalidRange":  # an empty object has no first byte
                    return 0, b""
                raise
            with answer["Body"] as body:
                data: bytes = body.read()
            total = answer.get("ContentRange", "").rpartition("/")[2]
            return (int(total) if total.isdigit() else len(data)), data

        return self._call(f"GET {oid.hex()}", get)

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        out = []
        for oid, got in zip(oids, self._map(self._get, list(oids)), strict=True):
            if got is None:
                raise ObjectMissing(oid, self.where)
            out.append(got[1])
        return out

    def peek(self, oids: Sequence[ObjectId], n: int) -> list[tuple[int, bytes] | None]:
        """Each object's size and first ``n`` bytes (one ranged GET each), None when absent."""
        if n <= 0:
            return [None if s is None else (s, b"") for s in self.sizes(oids)]
        return self._map(lambda oid: self._get(oid, f"bytes=0-{n - 1}"), list(oids))

    def _head(self, oid: ObjectId) -> dict[str, Any] | None:
        def head() -> dict[str, Any] | None:
            try:
                answer: dict[str, Any] = self.client.head_object(
                    Bucket=self.bucket, Key=self._key(oid))
                return answer
            except ClientError as exc:
                if _code(exc) in _ABSENT:
                    return None
                raise

        return self._call(f"HEAD {oid.hex()}", head)

    def sizes(self, oids: Sequence[ObjectId]) -> list[int | None]:
        return [None if h is None else int(h["ContentLength"])
                for h in self._map(self._head, list(oids))]

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        wanted = list(oids)
        return [oid for oid, size in zip(wanted, self.sizes(wanted), strict=True) if size is None]

    def _put(self, pair: tuple[ObjectId, bytes | memoryview]) -> int:
        """Put one object unless the bucket holds these very bytes; 1 when it was written.

        A conditional put (``If-None-Match: *``) writes a new key in one round trip; a key
        already there is compared by its ETag (the MD5 of a plain put's bytes) and replaced
        only when its bytes differ (they were corrupt: the caller hashed these to the id)."""
        oid, data = pair
        body = bytes(data)  # a view of a request's body may be reused once this returns
        key = self._key(oid)

        def put(**extra: str) -> None:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)

        def run() -> int:
            try:
                put(IfNoneMatch="*")
                return 1
            except ClientError as exc:
                if _code(exc) not in ("PreconditionFailed", "412"):
                    raise
            head = self.client.head_object(Bucket=self.bucket, Key=key)
            if str(head.get("ETag", "")).strip('"') == hashlib.md5(body).hexdigest():
                return 0
            put()
            return 1

        return self._call(f"PUT {oid.hex()}", run)

    def put_many(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]]) -> int:
        unique = list({oid: (oid, data) for oid, data in objects}.values())
        return sum(self._map(self._put, unique))

    def delete_many(self, oids: Sequence[ObjectId]) -> None:
        keys = list(dict.fromkeys(self._key(oid) for oid in oids))
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            request = {"Objects": [{"Key": k} for k in batch], "Quiet": True}

            def delete(request: dict[str, Any] = request) -> dict[str, Any]:
                answer: dict[str, Any] = self.client.delete_objects(
                    Bucket=self.bucket, Delete=request)
                return answer

            answer = self._call(f"DELETE {len(batch)} keys", delete)
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise S3Unavailable(f"object storage {self.where}: DELETE of {len(errors)} "
                                    f"keys failed, first {first.get('Key')}: "
                                    f"{first.get('Code')} {first.get('Message', '')}".rstrip())

    def listing(self) -> Iterator[tuple[ObjectId, int, float]]:
        """``(id, size, last modified as epoch seconds)`` of every stored object, in key order
        (keys that are not ids are skipped)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix)
        it = iter(pages)
        while True:
            page = self._call("LIST", lambda: next(it, None))
            if page is None:
                return
            for item in page.get("Contents", []):
                name = str(item["Key"])[len(self.prefix):]
                try:
                    oid = ObjectId(bytes.fromhex(name))
                except ValueError:
                    continue
                if len(oid) == 32:
                    yield oid, int(item["Size"]), float(item["LastModified"].timestamp())

    def iter_ids(self) -> Iterator[ObjectId]:
        return (oid for oid, _, _ in self.listing())


class _Gate:
    """Many uploads at once (shared), or one sweep (exclusive): gc never deletes between an
    upload's puts and its indexing."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._cond.wait_for(lambda: self._shared == 0)
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class S3SessionObjects:
    """One session's objects: bytes in the bucket (:class:`S3Objects`), what is stored, what
    it takes and the upload log in ``index`` (the coordination state's). See the module."""

    def __init__(self, objects: S3Objects, index: ObjectIndex) -> None:
        self.bucket = objects
        self.verified = Verified(objects, objects.where)
        self.index = index
        self._gate = _Gate()

    def __contains__(self, oid: object) -> bool:
        return isinstance(oid, bytes) and self.index.sizes([ObjectId(oid)])[0] is not None

    def get_raw(self, oid: ObjectId) -> bytes:
        return self.verified.get_raw(oid)

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        return self.verified.get_many(oids)

    def get_unchecked(self, oids: Sequence[ObjectId]) -> list[bytes]:
        # A download's: its receiver hashes each object against the id it asked for, which
        # checks the bucket's bytes too.
        return self.bucket.get_many(oids)

    def peek(self, oids: list[ObjectId], n: int) -> list[tuple[int, bytes] | None]:
        # From the index, with no round trip, when it holds enough of each object: a head
        # move peeks at every new blob (its length header), which would be a GET each.
        heads = self.index.heads(oids)
        out: list[tuple[int, bytes] | None] = [
            None if h is None else (h[0], h[1][:n]) for h in heads]
        short = [i for i, h in enumerate(heads)
                 if h is not None and len(h[1]) < min(n, h[0])]
        for i, got in zip(short, self.bucket.peek([oids[i] for i in short], n), strict=True):
            out[i] = got
        return out

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        wanted = list(oids)
        return [oid for oid, size in zip(wanted, self.index.sizes(wanted), strict=True)
                if size is None]

    def iter_ids(self) -> Iterator[ObjectId]:
        return (oid for oid in self.bucket.iter_ids() if oid in self)

    def used_bytes(self) -> int:
        return self.index.used()

    def check_room(self, incoming: int, reserve: int) -> None:
        # The bytes go to the bucket, which has no full disk; the index needs an entry per
        # object, counted here as one per KiB (pushes average ~9 KiB an object; the reserve
        # covers batches of smaller ones).
        self.index.check_room(max(1, incoming // 1024), reserve)

    def write(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]], stamp: int) -> int:
        with self._gate.shared():
            pairs = list({oid: (oid, data) for oid, data in objects}.values())
            ids = [oid for oid, _ in pairs]
            new = [pair for pair, size in zip(pairs, self.index.sizes(ids), strict=True)
                   if size is None]
            # Every put first; only then are the objects indexed (visible).
            self.bucket.put_many(new)
            return self.index.add({oid: (len(data), bytes(data[:INDEX_HEAD]))
                                   for oid, data in new}, ids, stamp)

    def sweep(self, keep: Container[ObjectId], horizon: float,
              before: Callable[[list[ObjectId]], None]) -> list[ObjectId]:
        with self._gate.exclusive():
            protected = self.index.recent(horizon)
            # Keys written at or after the horizon (the bucket's clock) are kept too: an
            # upload that failed or died after its puts, before its indexing, or one made
            # by another coordinator.
            garbage = [oid for oid, _, modified in self.bucket.listing()
                       if oid not in keep and oid not in protected and modified < horizon]
            before(garbage)
            self.index.remove(garbage, horizon)
            # Unindexed first, deleted second: a crash in between leaves keys no index names,
            # which the next sweep deletes.
            self.bucket.delete_many(garbage)
            return garbage


class S3ObjectStores:
    """Every session's objects in one bucket under ``prefix``, their indexes in the
    coordination state ``indexes``.

    Raises:
        StoreError: the bucket cannot be reached (checked once, here).
    """

    def __init__(self, bucket: str, prefix: str, indexes: IndexingBackends, *,
                 client: Any = None, workers: int = WORKERS) -> None:
        self.bucket, self.prefix, self._indexes = bucket, prefix, indexes
        self.client = client if client is not None else make_client(workers)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="phs-s3")
        self._stores: dict[str, S3SessionObjects] = {}
        self._lock = threading.Lock()
        try:
            self.client.head_bucket(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            self.pool.shutdown()
            raise StoreError(f"cannot use bucket {bucket!r} (endpoint "
                             f"{self.client.meta.endpoint_url}): {exc}") from exc

    def _session_prefix(self, session: str) -> str:
        return f"{self.prefix}/{session}" if self.prefix else session

    def open(self, session: str) -> S3SessionObjects:
        store = self._stores.get(session)
        if store is None:
            with self._lock:
                store = self._stores.get(session)
                if store is None:
                    objects = S3Objects(self.client, self.bucket, self._session_prefix(session),
                                        self.pool)
                    store = S3SessionObjects(objects, self._indexes.object_index(session))
                    self._stores[session] = store
        return store

    def usage(self, session: str) -> Usage:
        used = self._indexes.object_index(session).used()
        return Usage(used, used)

    def classify(self, exc: BaseException) -> Unavailable | None:
        """503 ``unavailable`` when ``exc`` is (or was caused by) the bucket failing."""
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, S3Unavailable):
                return Unavailable(seen.what, RETRY_AFTER)
            seen = seen.__cause__
        return None

    def close(self) -> None:
        with self._lock:
            self._stores.clear()  # their indexes close with the coordination state
        self.pool.shutdown(wait=True)


def open_s3(data_dir: Path, *, url: str, limits: Limits, backends: Backends
            ) -> S3ObjectStores:
    """The opener :func:`peerhost_server.backends.open_backends` calls for ``s3://`` objects,
    indexed in ``backends``' coordination state.

    Raises:
        ValueError: a malformed URL, or a coordination state that keeps no object index.
        StoreError: the bucket cannot be reached.
    """
    bucket, prefix = parse_s3_url(url)
    if not hasattr(backends, "object_index"):
        raise ValueError(f"objects in {url} need an index in the coordination state, which "
                         f"{type(backends).__name__} does not keep")
    return S3ObjectStores(bucket, prefix, cast(IndexingBackends, backends))
