"""Objects in S3-compatible storage: ``phs serve --objects s3://bucket/prefix``.

Each session's objects are packed, as restic packs its blobs: an upload's new objects are
one key ``PREFIX/<session>/packs/<hex id>``, their bytes end to end and a trailer that lists
them (:func:`encode_pack`), named by the blake3 of the whole, so a push of 100,000 chunks is a
few dozen PUTs rather than 100,000 and a download reads each run of wanted objects with one
ranged GET. The bucket alone still says what it holds (:func:`pack_contents` reads a pack's
trailer); the coordination state's index says where each object is. Objects stored before
packs keep keys of their own, ``PREFIX/<session>/objects/<hex id>``, and are still read. A
session's tokens reach only its own keys. The client is boto3, configured from the
environment as every AWS tool is (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``).

* :class:`S3Objects` is the library's :class:`~peerhost_store.store.ObjectStore` over one key
  prefix (objects stored before packs), with the pack operations beside it: it stores what
  it is given under the name it is given, many requests at once (a thread pool), and checks
  nothing.
* :class:`S3SessionObjects` is one session's
  :class:`~peerhost_server.domain.protocols.SessionObjects`: the packs in the bucket, and
  beside them, in the coordination state, an index of what is stored (``id -> size``, the
  object's first bytes, which a head move's checks read, and its pack and offset), what it
  all takes (the quota) and the upload log (gc's grace period). An upload puts its pack in
  the bucket first (each id was derived from the bytes in this process, and the client's
  checksum makes the bucket refuse bytes that changed on the way) and indexes its objects
  only once the put has succeeded: an object is visible (``missing``, a head move's
  completeness walk) only once it is whole in the bucket. A failed upload leaves a pack no
  index names, which gc deletes once it is older than the grace period; gc deletes a pack
  once no indexed object is in it and rewrites one less than half alive (a pack more alive
  is kept whole, and what it takes beyond its live objects is not counted against the
  quota). Every object its reads return is re-hashed
  (:func:`~peerhost_store.store.check_read`).
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
import msgpack
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from peerhost_store.errors import ObjectMissing, StoreError
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.store import check_read

from ..domain.errors import Unavailable
from ..domain.protocols import Backends, Indexed, IndexingBackends, ObjectIndex, Usage
from ..limits import Limits

__all__ = ["S3ObjectStores", "S3Objects", "S3SessionObjects", "S3Unavailable", "encode_pack",
           "open_s3", "pack_contents", "parse_s3_url"]

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
#: Bytes of objects one pack holds at most (an upload request carries at most 64 MiB).
PACK_MAX = 32 << 20
#: Bytes between two wanted objects of one pack that a read fetches and drops rather than
#: split the read in two GETs (a round trip costs more than this much transfer).
READ_GAP = 256 << 10
#: A pack whose live objects take less than this share of it is rewritten by gc.
REPACK_BELOW = 0.5
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


def encode_pack(objects: Sequence[tuple[ObjectId, bytes | memoryview]]
                ) -> tuple[bytes, list[int]]:
    """One pack of ``objects`` and each one's offset in it: their bytes end to end, then a
    trailer (msgpack ``[nonce, [[id, size], ...]]``, the objects in the same order), then the
    trailer's length as 4 bytes, big-endian.

    The nonce (16 random bytes) makes every pack's name new: two uploads of the same objects
    in the same order would otherwise make the same key, and gc, deleting a pack it listed
    when no index named it, could delete it just after another coordinator put it again and
    indexed its objects."""
    offsets, at = [], 0
    for _, data in objects:
        offsets.append(at)
        at += len(data)
    trailer = msgpack.packb([os.urandom(16), [[bytes(oid), len(data)] for oid, data in objects]])
    body = b"".join([*(bytes(data) for _, data in objects), trailer,
                     len(trailer).to_bytes(4, "big")])
    return body, offsets


def pack_contents(body: bytes, where: str = "pack") -> list[tuple[ObjectId, int, int]]:
    """``(id, offset, size)`` of each object a pack made by :func:`encode_pack` holds, read
    from its trailer alone (the objects are not hashed: the index and reads do that).

    Raises:
        ValueError: ``body`` is not a whole pack (naming ``where``).
    """
    try:
        length = int.from_bytes(body[-4:], "big")
        if len(body) < 4 or length > len(body) - 4:
            raise ValueError("no trailer")
        nonce, entries = msgpack.unpackb(body[-4 - length:-4])
        if not isinstance(nonce, bytes) or not isinstance(entries, list):
            raise ValueError("a malformed trailer")
        out, at = [], 0
        for oid, size in entries:
            if not (isinstance(oid, bytes) and len(oid) == 32 and isinstance(size, int)
                    and size >= 0):
                raise ValueError("a malformed entry")
            out.append((ObjectId(oid), at, size))
            at += size
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"{where}: not a pack: {exc}") from exc
    if at != len(body) - 4 - length:
        raise ValueError(f"{where}: not a pack: its trailer names {at} bytes of objects, "
                         f"it holds {len(body) - 4 - length}")
    return out


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Objects:
    """An :class:`~peerhost_store.store.ObjectStore` over the keys ``PREFIX/objects/<hex id>``
    of ``bucket``, and the packs ``PREFIX/packs/<hex id>`` beside them; requests run
    ``pool``'s threads at once. Checks nothing (see the module).

    Args:
        client: a boto3 S3 client (thread-safe; :func:`make_client`).
        where: names the store in errors (``s3://bucket/prefix``).
    """

    def __init__(self, client: Any, bucket: str, prefix: str, pool: ThreadPoolExecutor) -> None:
        self.client, self.bucket, self.pool = client, bucket, pool
        self.prefix = f"{prefix}/objects/" if prefix else "objects/"
        self.pack_prefix = f"{prefix}/packs/" if prefix else "packs/"
        self.where = f"s3://{bucket}/{prefix}"

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
        self._delete_keys([self._key(oid) for oid in oids])

    def delete_packs(self, packs: Sequence[ObjectId]) -> None:
        """Delete the packs ``packs`` (those absent are no error)."""
        self._delete_keys([self.pack_prefix + pack.hex() for pack in packs])

    def _delete_keys(self, named: Sequence[str]) -> None:
        keys = list(dict.fromkeys(named))
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

    def put_pack(self, pack: ObjectId, body: bytes) -> None:
        """Store one pack (:func:`encode_pack`) under its id. Unconditionally: a key already
        there holds these bytes, or bytes that were corrupt."""
        self._call(f"PUT pack {pack.hex()}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=self.pack_prefix + pack.hex(), Body=body))

    def get_range(self, pack: ObjectId, start: int, end: int) -> bytes | None:
        """Bytes ``start`` to ``end`` (exclusive) of a pack, fewer where it is shorter, or
        None when it is absent."""
        if end <= start:
            return b""
        args = {"Bucket": self.bucket, "Key": self.pack_prefix + pack.hex(),
                "Range": f"bytes={start}-{end - 1}"}

        def get() -> bytes | None:
            try:
                answer = self.client.get_object(**args)
            except ClientError as exc:
                if _code(exc) in _ABSENT:
                    return None
                if _code(exc) == "InvalidRange":
                    return b""
                raise
            with answer["Body"] as body:
                data: bytes = body.read()
            return data

        return self._call(f"GET pack {pack.hex()} bytes {start}-{end - 1}", get)

    def listing(self) -> Iterator[tuple[ObjectId, int, float]]:
        """``(id, size, last modified as epoch seconds)`` of every object stored under a key
        of its own, in key order (keys that are not ids are skipped)."""
        return self._listing(self.prefix)

    def pack_listing(self) -> Iterator[tuple[ObjectId, int, float]]:
        """``(pack id, size, last modified as epoch seconds)`` of every pack, in key order."""
        return self._listing(self.pack_prefix)

    def _listing(self, prefix: str) -> Iterator[tuple[ObjectId, int, float]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        it = iter(pages)
        while True:
            page = self._call("LIST", lambda: next(it, None))
            if page is None:
                return
            for item in page.get("Contents", []):
                name = str(item["Key"])[len(prefix):]
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


class _Span:
    """One ranged GET of a pack: bytes ``start`` to ``end`` and the wanted objects in them,
    ``(position in the answer, offset in the pack, size)``."""

    def __init__(self, pack: ObjectId, start: int) -> None:
        self.pack, self.start, self.end = pack, start, start
        self.wanted: list[tuple[int, int, int]] = []


def _spans(entries: Sequence[tuple[int, Indexed]]) -> list[_Span]:
    """The ranged GETs that read ``entries`` (``(position, packed entry)``): per pack, runs
    of objects no more than :data:`READ_GAP` apart, each one GET."""
    spans: list[_Span] = []
    last: dict[ObjectId, _Span] = {}
    for i, entry in sorted(entries, key=lambda e: (e[1].pack or b"", e[1].offset)):
        assert entry.pack is not None
        span = last.get(entry.pack)
        if span is None or entry.offset - span.end > READ_GAP:
            span = last[entry.pack] = _Span(entry.pack, entry.offset)
            spans.append(span)
        span.wanted.append((i, entry.offset, entry.size))
        span.end = max(span.end, entry.offset + entry.size)
    return spans


class S3SessionObjects:
    """One session's objects: packs in the bucket (:class:`S3Objects`), what is stored,
    where, what it takes and the upload log in ``index`` (the coordination state's). See
    the module."""

    def __init__(self, objects: S3Objects, index: ObjectIndex) -> None:
        self.bucket = objects
        self.index = index
        self._gate = _Gate()

    def __contains__(self, oid: object) -> bool:
        return isinstance(oid, bytes) and self.index.sizes([ObjectId(oid)])[0] is not None

    def get_raw(self, oid: ObjectId) -> bytes:
        return self.get_many([oid])[0]

    def get_many(self, oids: Sequence[ObjectId]) -> list[bytes]:
        """Each object's bytes, re-hashed against its id (ObjectMissing, ObjectCorrupt)."""
        datas = self.get_unchecked(oids)
        check_read(oids, datas, self.bucket.where)
        return datas

    def get_unchecked(self, oids: Sequence[ObjectId]) -> list[bytes]:
        """Each object's bytes as the bucket holds them (ObjectMissing). A download's: its
        receiver hashes each object against the id it asked for, which checks the bucket's
        bytes too."""
        entries = self.index.locate(oids)
        out: list[bytes] = [b""] * len(oids)
        loose, packed = [], []
        for i, (oid, entry) in enumerate(zip(oids, entries, strict=True)):
            if entry is None:
                raise ObjectMissing(oid, self.bucket.where)
            if entry.pack is None:
                loose.append(i)
            else:
                packed.append((i, entry))
        for i, data in zip(loose, self.bucket.get_many([oids[i] for i in loose]), strict=True):
            out[i] = data
        gone = self._read_packed(packed, out)
        if gone:
            # A pack gc deleted after this read located its objects: it repacked them, and
            # the index says where they are now.
            retry: list[tuple[int, Indexed]] = []
            for i, entry in zip(gone, self.index.locate([oids[i] for i in gone]), strict=True):
                if entry is None or entry.pack is None:
                    raise ObjectMissing(oids[i], self.bucket.where)
                retry.append((i, entry))
            gone = self._read_packed(retry, out)
            if gone:
                raise ObjectMissing(oids[gone[0]], self.bucket.where)
        return out

    def _read_packed(self, packed: Sequence[tuple[int, Indexed]], out: list[bytes]
                     ) -> list[int]:
        """Read each ``(position, entry)`` into ``out[position]``; the positions whose pack is
        absent."""
        spans = _spans(packed)
        bodies = self.bucket._map(
            lambda span: self.bucket.get_range(span.pack, span.start, span.end), spans)
        gone = []
        for span, body in zip(spans, bodies, strict=True):
            for i, offset, size in span.wanted:
                if body is None:
                    gone.append(i)
                else:
                    # A pack shorter than its index says gives short bytes: their hash says so.
                    out[i] = body[offset - span.start : offset - span.start + size]
        return gone

    def peek(self, oids: list[ObjectId], n: int) -> list[tuple[int, bytes] | None]:
        # From the index, with no round trip, when it holds enough of each object: a head
        # move peeks at every new blob (its length header), which would be a GET each.
        entries = self.index.locate(oids)
        out: list[tuple[int, bytes] | None] = [
            None if e is None else (e.size, e.head[:n]) for e in entries]
        loose: list[int] = []  # short in the index, read from the bucket
        packed: list[tuple[int, Indexed]] = []
        for i, e in enumerate(entries):
            if e is not None and len(e.head) < min(n, e.size):
                if e.pack is None:
                    loose.append(i)
                else:
                    packed.append((i, e))
        for i, got in zip(loose, self.bucket.peek([oids[i] for i in loose], n), strict=True):
            out[i] = got

        def first(item: tuple[int, Indexed]) -> tuple[int, bytes] | None:
            _, entry = item
            assert entry.pack is not None
            data = self.bucket.get_range(entry.pack, entry.offset,
                                         entry.offset + min(n, entry.size))
            return None if data is None else (entry.size, data)

        for (i, _), got in zip(packed, self.bucket._map(first, packed), strict=True):
            out[i] = got
        return out

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        wanted = list(oids)
        return [oid for oid, size in zip(wanted, self.index.sizes(wanted), strict=True)
                if size is None]

    def iter_ids(self) -> Iterator[ObjectId]:
        return self.index.ids()

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
            # Every pack first; only then are the objects indexed (visible).
            return self.index.add(self._put_packs(new), ids, stamp)

    def _put_packs(self, objects: Sequence[tuple[ObjectId, bytes | memoryview]]
                   ) -> dict[ObjectId, Indexed]:
        """Put ``objects`` in new packs; the index entries that say where each one is."""
        entries: dict[ObjectId, Indexed] = {}
        for batch in _batches(objects, PACK_MAX):
            body, offsets = encode_pack(batch)
            pack = hash_bytes(body)
            self.bucket.put_pack(pack, body)
            for (oid, data), offset in zip(batch, offsets, strict=True):
                entries[oid] = Indexed(len(data), bytes(data[:INDEX_HEAD]), pack, offset)
        return entries

    def sweep(self, keep: Container[ObjectId], horizon: float,
              before: Callable[[list[ObjectId]], None]) -> list[ObjectId]:
        with self._gate.exclusive():
            protected = self.index.recent(horizon)
            indexed = set(self.index.ids())
            garbage = [oid for oid in indexed if oid not in keep and oid not in protected]
            # Keys of their own written at or after the horizon (the bucket's clock) are kept
            # too: an upload that failed or died after its puts, before its indexing, or one
            # made by another coordinator. Those before it that no index names are orphans.
            loose = [oid for oid, _, modified in self.bucket.listing()
                     if oid not in keep and oid not in protected
                     and (oid in indexed or modified < horizon)]
            # Only what this sweep saw indexed is unindexed: an orphan key's id may be indexed
            # meanwhile by another coordinator's upload, in a pack of its own.
            before(garbage)
            self.index.remove(garbage, horizon)
            garbage = garbage + [oid for oid in loose if oid not in indexed]
            # Unindexed first, deleted second: a crash in between leaves keys and packs no
            # index names, which the next sweep deletes.
            self.bucket.delete_many(loose)
            live = self.index.packs()
            old = [(pack, size) for pack, size, modified in self.bucket.pack_listing()
                   if modified < horizon]
            self.bucket.delete_packs([pack for pack, _ in old if pack not in live])
            # As restic's prune: a pack mostly garbage is rewritten with its live objects,
            # or the garbage in it would stay in the bucket for as long as one object lives.
            sparse = [pack for pack, size in old if 0 < live.get(pack, 0) < size * REPACK_BELOW]
            if sparse:
                self._repack(sparse)
            return garbage

    def _repack(self, packs: Sequence[ObjectId]) -> None:
        """Rewrite the live objects of ``packs`` into new packs, point the index at them,
        then delete ``packs``. A pack that is absent, is not a pack or whose bytes do not hash
        to its name (damaged in the bucket) is left as it is (logged): a read of a damaged
        object says so. Holds about :data:`PACK_MAX` of live objects at a time, however many
        packs there are."""
        moved: list[tuple[ObjectId, bytes | memoryview]] = []
        done: list[ObjectId] = []

        def flush() -> None:
            # New packs first, the index second, the old packs last: a crash in between
            # leaves a pack no index names, deleted by a later sweep.
            self.index.relocate(self._put_packs(moved))
            self.bucket.delete_packs(done)
            moved.clear()
            done.clear()

        for pack in packs:
            body = self.bucket.get_range(pack, 0, 1 << 62)
            try:
                if body is None:
                    raise ValueError("it is absent")
                if hash_bytes(body) != pack:
                    raise ValueError("its bytes do not hash to its name")
                contents = pack_contents(body, f"pack {pack.hex()}")
            except ValueError as exc:
                _log.warning("%s: pack %s not repacked: %s", self.bucket.where, pack.hex(), exc)
                continue
            here = [(oid, at, size) for (oid, at, size), entry in
                    zip(contents, self.index.locate([c[0] for c in contents]), strict=True)
                    if entry is not None and entry.pack == pack]
            moved += [(oid, body[at : at + size]) for oid, at, size in here]
            done.append(pack)
            if sum(len(data) for _, data in moved) >= PACK_MAX:
                flush()
        flush()


def _batches(pairs: Sequence[tuple[ObjectId, bytes | memoryview]], most: int
             ) -> Iterator[list[tuple[ObjectId, bytes | memoryview]]]:
    """``pairs`` in runs of at most ``most`` bytes (an object longer is a run of its own)."""
    run: list[tuple[ObjectId, bytes | memoryview]] = []
    size = 0
    for pair in pairs:
        if run and size + len(pair[1]) > most:
            yield run
            run, size = [], 0
        run.append(pair)
        size += len(pair[1])
    if run:
        yield run


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
