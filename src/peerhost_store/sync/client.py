"""A typed client for the coordinator's HTTP API.

:class:`CoordinatorClient` takes an ``httpx.Client`` (tests pass starlette's ``TestClient``,
which is one) and turns every error answer into an exception::

    PeerhostError
     +-- CoordinatorError (code, message, status, details)   any error answer
          +-- CoordinatorUnavailable     no answer at all (connection refused, reset, timeout)
          +-- Unauthorized               401, and 403 (Forbidden)
          |    +-- Forbidden
          +-- LeaseHeld (lease)          409 lease_held / lease_reserved
          +-- LeaseLost (lease)          409 lease_lost: the fencing token is no longer current
          |    +-- Fenced                409 fenced: a head move with a stale fencing token
          +-- HeadMoved (head)           409 head_moved: the compare-and-swap lost
          +-- NotFastForward (head)      409 not_fast_forward
          +-- Incomplete (missing)       400 incomplete: the new head reaches a missing object
          +-- RateLimited (retry_after)  429
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..errors import PeerhostError
from ..ids import ObjectId, from_hex
from .protocol import (
    ENCODINGS,
    MSGPACK,
    ZMSGPACK,
    DeltaRequest,
    ObjectStatus,
    ProtocolError,
    compress_body,
    decode_delta_answer,
    decode_ids,
    decode_objects,
    decode_statuses,
    decompress_body,
    encode_delta_get,
    encode_delta_upload,
    encode_ids,
    frame_objects,
    parse_hex_id,
)

if TYPE_CHECKING:  # phs status and push need no area code
    from ..area import Area

__all__ = [
    "BULK_SECONDS",
    "CONNECT_SECONDS",
    "CONTROL_SECONDS",
    "MAX_ANSWER_BYTES",
    "CoordinatorClient",
    "CoordinatorError",
    "CoordinatorUnavailable",
    "DeltaUploadResult",
    "Fenced",
    "Forbidden",
    "Head",
    "HeadMoved",
    "Incomplete",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "LeaseStatus",
    "NotFastForward",
    "RateLimited",
    "Renewal",
    "TreeUploadResult",
    "Unauthorized",
    "UploadResult",
    "WireStats",
    "body_size",
    "timeout_of",
]

T = TypeVar("T")

#: Seconds to wait for a connection; past that the coordinator counts as unreachable.
CONNECT_SECONDS = 10.0
#: Seconds to wait for the answer to a small request (lease, head, log, members): a
#: coordinator that accepts a connection and never answers is given up on after this.
CONTROL_SECONDS = 20.0
#: Seconds for a bulk request: object batches of up to 60 MiB each way, and the head's
#: completeness check, on a slow home uplink.
BULK_SECONDS = 120.0
#: The most a compressed answer may decompress to: an ``objects/get`` answer stops before
#: 32 MiB of objects but holds at least one, and no upload holds more than 60 MiB.
MAX_ANSWER_BYTES = 128 << 20

#: What a read answer's stream is replaced by (see :meth:`CoordinatorClient._send`).
_CLOSED = httpx.ByteStream(b"")


def _objects(response: httpx.Response, what: str) -> list[bytes]:
    """The objects of an ``objects/get``-style answer (compressed or not)."""
    body = response.content
    if _media_type(response) == ZMSGPACK:  # an older coordinator answers MSGPACK
        body = decompress_body(body, MAX_ANSWER_BYTES, what)
    return decode_objects(body)


def timeout_of(seconds: float) -> httpx.Timeout:
    """A request timeout: :data:`CONNECT_SECONDS` to connect, ``seconds`` for the rest."""
    return httpx.Timeout(seconds, connect=min(CONNECT_SECONDS, seconds))


class CoordinatorError(PeerhostError):
    """The coordinator answered with an error (or, for a subclass, not at all).

    Attributes:
        code: the error code (``lease_held``, ``head_moved``, ...; ``unavailable`` for no answer).
        message: the coordinator's explanation.
        status: the HTTP status (0 when there was no answer).
        details: the other fields of the error object.
    """

    def __init__(self, code: str, message: str, status: int,
                 details: dict[str, Any] | None = None) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}
        super().__init__(f"coordinator: {message} ({status} {code})")


class CoordinatorUnavailable(CoordinatorError):
    """No answer: the coordinator is down or unreachable, or the connection broke.

    Its message is one line naming the URL, what happened and what to check
    (:meth:`from_transport`); ``url`` and ``reason`` are also in ``details``.
    """

    def __str__(self) -> str:
        return self.message

    @property
    def url(self) -> str:
        return str(self.details.get("url", ""))

    @property
    def reason(self) -> str:
        return str(self.details.get("reason", self.message))

    @classmethod
    def from_transport(cls, url: str, exc: httpx.TransportError,
                       timeout: httpx.Timeout) -> CoordinatorUnavailable:
        """The error for ``exc``, raised by a request to the coordinator at ``url``."""
        reason = _transport_reason(exc, timeout)
        return cls("unavailable", f"cannot reach the coordinator at {url}: {reason}; check that "
                   "it is running and that this URL reaches it from here (phs remote list shows "
                   "a world's URL, phs remote set-url changes it)", 0,
                   {"url": url, "reason": reason})


def _transport_reason(exc: httpx.TransportError, timeout: httpx.Timeout) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout.connect:g} s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"it accepted the connection but sent no answer within {timeout.read:g} s"
    if isinstance(exc, httpx.WriteTimeout):
        return f"it took no data for {timeout.write:g} s"
    if isinstance(exc, httpx.PoolTimeout):
        return f"no free connection within {timeout.pool:g} s"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed before an answer came"
    # "[Errno 111] Connection refused" -> "connection refused"
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(exc).strip()) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return text[:1].lower() + text[1:]
    return f"the connection broke ({text})"


class Unauthorized(CoordinatorError):
    """The token is missing, wrong or revoked (401), or may not do this (403)."""


class Forbidden(Unauthorized):
    """The token is valid but lacks the role or belongs to another session (403)."""


class LeaseHeld(CoordinatorError):
    """Someone else holds (or has reserved) the lease; ``lease`` is theirs (JSON) or None."""

    @property
    def lease(self) -> dict[str, Any] | None:
        value = self.details.get("lease")
        return value if isinstance(value, dict) else None


class LeaseLost(CoordinatorError):
    """The fencing token is not the session's current, unexpired lease."""


class Fenced(LeaseLost):
    """A head move (or fenced rollback) refused because the fencing token is stale."""


class HeadMoved(CoordinatorError):
    """The head is not what the caller expected; ``head`` is the actual one."""

    @property
    def head(self) -> ObjectId | None:
        value = self.details.get("head")
        return None if value is None else from_hex(value)


class NotFastForward(HeadMoved):
    """The new head does not descend from the current one."""


class Incomplete(CoordinatorError):
    """The new head reaches an object the session does not store; ``missing`` is its id."""

    @property
    def missing(self) -> ObjectId | None:
        value = self.details.get("missing")
        return None if value is None else from_hex(value)


class RateLimited(CoordinatorError):
    """Too many requests; retry after ``retry_after`` seconds."""

    @property
    def retry_after(self) -> float:
        return float(self.details.get("retry_after", 1))


_BY_CODE: dict[str, type[CoordinatorError]] = {
    "lease_held": LeaseHeld,
    "lease_reserved": LeaseHeld,
    "lease_lost": LeaseLost,
    "fenced": Fenced,
    "head_moved": HeadMoved,
    "not_fast_forward": NotFastForward,
    "incomplete": Incomplete,
    "rate_limited": RateLimited,
}


@dataclass(frozen=True)
class Lease:
    """A granted lease."""

    holder: str
    member: str
    fencing: int
    ttl: float
    expires_in: float
    address: str | None = None
    game: Any = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        return cls(data["holder"], data["member"], int(data["fencing"]), float(data["ttl"]),
                   float(data["expires_in"]), data.get("address"), data.get("game"))


@dataclass(frozen=True)
class Renewal:
    """The answer to a renewal: the extended lease and whether someone asked for a sync."""

    lease: Lease
    sync_requested: bool


@dataclass(frozen=True)
class LeaseStatus:
    """The whole lease state of a session."""

    lease: Lease | None
    fencing: int
    standby: list[str]
    reserved_for: str | None
    reserved_for_seconds: float | None


@dataclass(frozen=True)
class Head:
    """The session head, the current lease's fencing token (None when nobody holds it) and
    the snapshots whose parents the session's retention dropped (its history stops there)."""

    head: ObjectId | None
    fencing: int | None
    shallow: frozenset[ObjectId] = frozenset()


@dataclass
class WireStats:
    """What the client put on the wire: requests, and bytes each way (headers included)."""

    requests: int = 0
    sent: int = 0
    received: int = 0
    #: body bytes of requests still being sent, not yet in ``sent`` (for a live rate)
    streaming: int = 0

    def copy(self) -> WireStats:
        return WireStats(self.requests, self.sent, self.received)


@dataclass
class UploadResult:
    """``stored`` objects accepted, ``new`` of them not stored before."""

    stored: int
    new: int


@dataclass(frozen=True)
class TreeUploadResult:
    """The coordinator's answer to a tree upload (:mod:`peerhost_store.sync.edits`): the
    tree nodes and chunks it rebuilt and stored, and how many objects were new."""

    nodes: int
    chunks: int
    new: int


@dataclass
class DeltaUploadResult:
    """The coordinator's answer to a delta batch.

    Attributes:
        items: items in the batch.
        stored: items whose object is now stored (rebuilt and verified, or stored before).
        new: of those, objects not stored before.
        failed: ``(id, reason)`` of each item that did not rebuild its object (a mismatch,
            a missing base, over the request's rebuild budget); nothing was stored for it,
            so send it whole.
    """

    items: int
    stored: int
    new: int
    failed: list[tuple[ObjectId, str]]


class CoordinatorClient:
    """The coordinator API for one session.

    Args:
        http: an ``httpx.Client`` whose ``base_url`` is the coordinator.
        session: the session name (admin calls ignore it).
        token: the admin, owner or member token. It is sent only in the Authorization header.
    """

    def __init__(self, http: httpx.Client, session: str, token: str) -> None:
        self.http = http
        self.session = session
        self._token = token
        self.stats = WireStats()
        #: Whether uploads go compressed (:data:`~.protocol.ZMSGPACK`): set by :meth:`head`
        #: when the coordinator lists an encoding it reads, cleared when it refuses one.
        self.compress_uploads = False
        #: Whether the coordinator takes and serves tree uploads (``objects/tree``): set by
        #: :meth:`head` from its answer, so a push to an older one does not try.
        self.tree_uploads = False
        # Transfers send several requests at once from worker threads; counting is serialised.
        self._stats_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the token
        return f"CoordinatorClient({self.http.base_url!s}, session={self.session!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _path(self, tail: str) -> str:
        return f"/v1/sessions/{self.session}/{tail}"

    def _send(self, method: str, path: str, *, body: Any = None, raw: bytes | None = None,
              stream: tuple[int, Iterator[bytes]] | None = None,
              params: dict[str, str] | None = None, media: str = MSGPACK,
              accept: str | None = None,
              seconds: float = CONTROL_SECONDS) -> httpx.Response:
        # identity: httpx would decode a gzip, br or zstd answer by itself, with no bound on
        # what it inflates to; compressed answers come as ZMSGPACK, decoded within bounds.
        headers = {"Authorization": f"Bearer {self._token}", "Accept-Encoding": "identity"}
        if accept is not None:
            headers["Accept"] = accept
        content: bytes | Iterator[bytes] | None
        if stream is not None:  # (length, pieces): sent as they come, with a Content-Length
            headers["Content-Type"] = media
            headers["Content-Length"] = str(stream[0])
            content = stream[1]
        elif raw is not None:
            headers["Content-Type"] = MSGPACK
            content = raw
        elif body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        else:
            content = None
        timeout = timeout_of(seconds)
        try:
            # The timeout goes in the extensions, where httpx puts its ``timeout=`` argument:
            # starlette's TestClient (the tests' transport) warns about the argument.
            request = self.http.build_request(method, path, content=content, headers=headers,
                                              params=params,
                                              extensions={"timeout": timeout.as_dict()})
            response = self.http.send(request, stream=True)
            try:
                encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding != "identity":  # before a byte of it is read, so never inflated
                    raise ProtocolError(f"{method} {path}: the answer came with Content-Encoding "
                                        f"{encoding!r}, which phs does not accept")
                response.read()
            finally:
                response.close()
                # httpx's Response and its stream refer to each other, so a read answer
                # (objects/get: up to 8 MiB) would live until the cyclic collector runs, which
                # with a large world's tree in memory it seldom does: a 1 GiB clone held 14 of
                # them (113 MiB) when its restore began. Breaking the cycle frees it at once.
                response.stream = _CLOSED
        except httpx.TransportError as exc:
            with self._stats_lock:
                self.stats.requests += 1
            raise CoordinatorUnavailable.from_transport(
                str(self.http.base_url).rstrip("/"), exc, timeout) from None
        with self._stats_lock:
            self._count(response)
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _metered(self, length: int, pieces: Iterator[bytes], done: list[int],
                 sent: Callable[[float], None] | None) -> Iterator[bytes]:
        """``pieces``, counting each in :attr:`WireStats.streaming` (and ``done[0]``) once the
        transport asks for the next one (it has written this one), and telling ``sent`` the
        share so far."""
        for piece in pieces:
            yield piece
            done[0] += len(piece)
            with self._stats_lock:
                self.stats.streaming += len(piece)
            if sent is not None:
                sent(done[0] / length if length else 1.0)

    def _count(self, response: httpx.Response) -> None:
        request = response.request
        sent = len(f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n")
        sent += sum(len(k) + len(v) + 4 for k, v in request.headers.raw) + 2
        sent += body_size(request)
        received = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
        received += sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + 2
        received += response.num_bytes_downloaded
        self.stats.requests += 1
        self.stats.sent += sent
        self.stats.received += received

    def _json(self, method: str, path: str, body: Any = None,
              params: dict[str, str] | None = None,
              seconds: float = CONTROL_SECONDS) -> dict[str, Any]:
        response = self._send(method, path, body=body, params=params, seconds=seconds)
        try:
            value = response.json()
        except (ValueError, RecursionError) as exc:  # RecursionError: "[" * 100000
            raise ProtocolError(f"{method} {path}: the answer is not JSON") from exc
        if not isinstance(value, dict):
            raise ProtocolError(f"{method} {path}: the answer is not a JSON object")
        return value

    def _parse(self, what: str, make: Callable[[], T]) -> T:
        """``make()``, which reads fields of an answer; a hostile or broken coordinator's
        answer of the wrong shape becomes a ProtocolError naming the endpoint."""
        try:
            return make()
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise ProtocolError(f"{what}: malformed answer from the coordinator "
                                f"({type(exc).__name__}: {exc})") from None

    # -- unauthenticated ------------------------------------------------------------------

    def health(self) -> bool:
        """Whether the coordinator answers."""
        return bool(self._json("GET", "/v1/health").get("ok"))

    def metrics(self) -> str:
        """The Prometheus metrics text."""
        return self._send("GET", "/metrics").text

    # -- admin ----------------------------------------------------------------------------

    def create_session(self, name: str) -> str:
        """Create a session (admin); return its owner token."""
        return str(self._json("POST", "/v1/sessions", {"name": name})["owner_token"])

    def list_sessions(self) -> list[dict[str, Any]]:
        """Every session (admin)."""
        return list(self._json("GET", "/v1/sessions")["sessions"])

    def status(self) -> dict[str, Any]:
        """The coordinator's status (admin)."""
        return self._json("GET", "/v1/status")

    # -- members (owner) ------------------------------------------------------------------

    def add_member(self, name: str) -> str:
        """Add a member (owner); return its token."""
        return str(self._json("POST", self._path("members"), {"name": name})["token"])

    def remove_member(self, name: str) -> None:
        """Revoke a member's token (owner)."""
        self._json("DELETE", self._path(f"members/{name}"))

    # -- lease ----------------------------------------------------------------------------

    def acquire(self, holder: str, ttl: float, *, address: str | None = None,
                game: Any = None) -> Lease:
        """Take the lease. Raises LeaseHeld when someone else holds or has reserved it."""
        body = {"holder": holder, "ttl": ttl, "address": address, "game": game}
        answer = self._json("POST", self._path("lease"), body)
        return self._parse("POST lease", lambda: Lease.from_json(answer))

    def standby(self, holder: str, ttl: float, *, address: str | None = None,
                game: Any = None) -> Lease | int:
        """Take the lease if free, else queue as standby: return the lease or the position."""
        body = {"holder": holder, "ttl": ttl, "address": address, "game": game, "standby": True}
        answer = self._json("POST", self._path("lease"), body)
        return self._parse("POST lease", lambda: int(answer["position"]) if answer.get("queued")
                           else Lease.from_json(answer))

    def renew(self, fencing: int, *, address: str | None = None, game: Any = None,
              seconds: float = CONTROL_SECONDS) -> Renewal:
        """Extend the lease. Raises LeaseLost when ``fencing`` is no longer current.

        Args:
            seconds: how long to wait for the answer (a lease keeper gives no more than the
                lease has left).
        """
        answer = self._json("POST", self._path("lease/renew"),
                            {"fencing": fencing, "address": address, "game": game},
                            seconds=seconds)
        return self._parse("POST lease/renew", lambda: Renewal(Lease.from_json(answer),
                                                                bool(answer["sync_requested"])))

    def release(self, fencing: int) -> None:
        """Give the lease up. Raises LeaseLost when ``fencing`` is no longer current."""
        self._json("POST", self._path("lease/release"), {"fencing": fencing})

    def reset_lease(self, *, lease: bool = True, standby: bool = True) -> dict[str, Any]:
        """End the lease whoever holds it (``lease``) and empty the standby queue
        (``standby``); owner only. Returns ``{released, dropped, fencing}``: the holder whose
        lease ended (or None) and the standby holders dropped."""
        return self._json("POST", self._path("lease/reset"), {"lease": lease, "standby": standby})

    def lease_status(self) -> LeaseStatus:
        """Who holds the lease, the last fencing token, the standby queue."""
        a = self._json("GET", self._path("lease"))
        return self._parse("GET lease", lambda: LeaseStatus(
            None if a["lease"] is None else Lease.from_json(a["lease"]), int(a["fencing"]),
            list(a["standby"]), a["reserved_for"], a["reserved_for_seconds"]))

    def request_sync(self) -> str:
        """Ask the holder to push; return the holder's name."""
        return str(self._json("POST", self._path("sync-request"), {})["holder"])

    # -- objects --------------------------------------------------------------------------

    def missing(self, ids: list[ObjectId]) -> list[ObjectId]:
        """The ids the session does not store."""
        response = self._send("POST", self._path("objects/missing"), raw=encode_ids(ids),
                              seconds=BULK_SECONDS)
        return decode_ids(response.content)

    def object_status(self, ids: list[ObjectId]) -> list[ObjectStatus]:
        """Missing, present or complete, for each id."""
        response = self._send("POST", self._path("objects/status"), raw=encode_ids(ids),
                              seconds=BULK_SECONDS)
        return decode_statuses(response.content, len(ids))

    def upload(self, objects: Sequence[bytes], ids: Sequence[ObjectId] | None = None,
               sent: Callable[[float], None] | None = None) -> UploadResult:
        """Store encoded objects (the coordinator derives their ids). With ``ids``, the id
        each object should have goes with it: the coordinator refuses the upload (400
        ``id_mismatch``, naming the index and both ids) when one hashes to another, so bytes
        read here without a check are checked once, there. The body is streamed; ``sent``
        is called with the share of it handed to the connection after each piece (a
        progress bar's motion during one large request)."""
        params = None if ids is None else {"ids": "1"}
        length, pieces = frame_objects(objects, ids)
        packed = False
        if self.compress_uploads:
            packed, length, pieces = compress_body(length, pieces)
        done = [0]
        try:
            response = self._send("POST", self._path("objects"),
                                  stream=(length, self._metered(length, pieces, done, sent)),
                                  params=params, media=ZMSGPACK if packed else MSGPACK,
                                  seconds=BULK_SECONDS)
        except CoordinatorError as exc:
            if not packed or exc.code != "unsupported_media_type":
                raise
            self.compress_uploads = False  # a coordinator that stopped reading them
            return self.upload(objects, ids, sent)
        finally:  # now in ``sent`` (counted by _send with the answer), or never sent whole
            with self._stats_lock:
                self.stats.streaming -= done[0]
        return self._parse("POST objects", lambda: UploadResult(
            int(response.json()["stored"]), int(response.json()["new"])))

    def download(self, ids: list[ObjectId]) -> list[bytes]:
        """Fetch objects in order. The answer may hold only a prefix of ``ids`` (the
        coordinator caps answer size); ask again for the rest. Bytes are not checked here."""
        response = self._send("POST", self._path("objects/get"), raw=encode_ids(ids),
                              accept=ZMSGPACK, seconds=BULK_SECONDS)  # or MSGPACK
        objects = _objects(response, "objects/get answer")
        if (not objects and ids) or len(objects) > len(ids):
            raise ProtocolError(f"asked for {len(ids)} objects, got {len(objects)}")
        return objects

    def download_changed(self, want: ObjectId, have: ObjectId) -> list[bytes]:
        """The snapshots and tree nodes of ``want`` that a store holding snapshot ``have``
        most likely lacks, in one answer (empty when the coordinator cannot tell). Bytes are
        not checked here: the caller keys each by its hash and uses only what its own walk
        reaches. Raises CoordinatorError (404) from a coordinator without the route."""
        response = self._send("POST", self._path("objects/changed"),
                              raw=encode_ids([want, have]), accept=ZMSGPACK,
                              seconds=BULK_SECONDS)
        return _objects(response, "objects/changed answer")

    def download_tree(self, want: ObjectId, have: ObjectId) -> list[bytes]:
        """``[tree upload, snapshot want]`` for a store holding ``have``, ``want``'s parent
        (:mod:`peerhost_store.sync.edits`), or ``[b""]`` when the coordinator cannot serve it
        so. Nothing is checked here: the caller rebuilds the tree and checks its root.
        Raises CoordinatorError (404) from a coordinator without the route."""
        response = self._send("POST", self._path("objects/tree/get"),
                              raw=encode_ids([want, have]), accept=ZMSGPACK,
                              seconds=BULK_SECONDS)
        return _objects(response, "objects/tree/get answer")

    def upload_delta(self, batch: bytes, request: DeltaRequest | None = None) -> DeltaUploadResult:
        """Send a delta batch (:mod:`peerhost_store.sync.delta`) for the coordinator to rebuild
        objects from; its answer lists the items that failed.

        Args:
            batch: for ``request``'s selection (``want`` mode), or carrying its ids when
                ``request`` is None.
            request: the trees and pairing-list positions the batch is for.
        """
        response = self._send("POST", self._path("objects/delta"),
                               raw=encode_delta_upload(request, batch), seconds=BULK_SECONDS)
        try:
            answer = response.json()
            failed = [(parse_hex_id(f["id"], "failed id"), str(f["reason"]))
                      for f in answer["failed"]]
            return DeltaUploadResult(int(answer["items"]), int(answer["stored"]),
                                     int(answer["new"]), failed)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"objects/delta: unexpected answer: {exc}") from exc

    def upload_tree(self, body: bytes) -> TreeUploadResult:
        """Send a tree upload (:func:`peerhost_store.sync.edits.encode_tree_upload`) for the
        coordinator to rebuild the tree's nodes and chunks from. A refusal (the tree does not
        rebuild, past a limit, an older coordinator) stores nothing."""
        response = self._send("POST", self._path("objects/tree"), raw=body, seconds=BULK_SECONDS)
        try:
            answer = response.json()
            return TreeUploadResult(int(answer["nodes"]), int(answer["chunks"]),
                                    int(answer["new"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"objects/tree: unexpected answer: {exc}") from exc

    def download_delta(self, request: DeltaRequest) -> tuple[int, bytes]:
        """Ask for a delta batch of ``request``'s selection. The coordinator caps what it
        builds per answer: it returns ``(count, batch)`` for the first ``count`` selected
        positions (at least one); ask again for the rest. The batch is not checked here."""
        response = self._send("POST", self._path("objects/delta/get"),
                              raw=encode_delta_get(request), seconds=BULK_SECONDS)
        return decode_delta_answer(response.content, request.count)

    # -- head -----------------------------------------------------------------------------

    def head(self) -> Head:
        """The session head and the current fencing token."""
        a = self._json("GET", self._path("head"))
        encodings = a.get("encodings")
        self.compress_uploads = isinstance(encodings, list) and all(
            name in encodings for name in ENCODINGS)
        self.tree_uploads = a.get("trees") is True
        return self._parse("GET head", lambda: Head(
            None if a["head"] is None else from_hex(a["head"]),
            None if a["fencing"] is None else int(a["fencing"]),
            frozenset(from_hex(h) for h in a.get("shallow") or ())))

    def set_head(self, old: ObjectId | None, new: ObjectId, fencing: int) -> int:
        """Move the head from ``old`` to ``new`` (compare-and-swap, fenced).

        Returns how many objects the coordinator's completeness check looked at.
        Raises Fenced, HeadMoved, NotFastForward or Incomplete.
        """
        body = {"old": None if old is None else old.hex(), "new": new.hex(), "fencing": fencing}
        answer = self._json("POST", self._path("head"), body, seconds=BULK_SECONDS)
        return self._parse("POST head", lambda: int(answer["checked"]))

    def rollback(self, target: ObjectId, fencing: int | None = None, *,
                 area: Area | None = None) -> ObjectId:
        """Make a new head holding ``target``'s tree (with ``area``: the head's tree with that
        area from ``target``); return its id."""
        body: dict[str, Any] = {"target": target.hex()}
        if fencing is not None:
            body["fencing"] = fencing
        if area is not None:
            body["area"] = area.to_json()
        answer = self._json("POST", self._path("rollback"), body, seconds=BULK_SECONDS)
        return self._parse("POST rollback", lambda: from_hex(answer["head"]))

    # -- storage ---------------------------------------------------------------------------

    def retention(self) -> dict[str, Any]:
        """The retention policy, where history is cut, usage and quota (bytes)."""
        return self._json("GET", self._path("retention"))

    def set_retention(self, **policy: int | None) -> dict[str, Any]:
        """Set the retention policy (owner): ``keep_last``, ``keep_hourly``, ``keep_daily``,
        ``keep_weekly``; none keeps everything. The next gc applies it."""
        return self._json("PUT", self._path("retention"), policy)

    def gc(self) -> dict[str, Any]:
        """Run the coordinator's gc of this session now (owner); returns its report."""
        return self._json("POST", self._path("gc"), {})

    def settings(self) -> dict[str, Any]:
        """The session's settings: ``rollback`` (who may roll back: ``owner`` or ``lease``)."""
        return self._json("GET", self._path("settings"))

    def set_settings(self, *, rollback: str) -> dict[str, Any]:
        """Set the session's settings (owner); returns them."""
        return self._json("PUT", self._path("settings"), {"rollback": rollback})

    def log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last head moves, oldest first."""
        answer = self._json("GET", self._path("log"), params={"limit": str(limit)})
        return self._parse("GET log", lambda: list(answer["entries"]))


def body_size(request: httpx.Request) -> int:
    """The bytes of a request's body: its content, or for a streamed body its
    Content-Length (a stream cannot be read again)."""
    try:
        return len(request.content)
    except httpx.RequestNotRead:
        return int(request.headers.get("content-length", "0"))


def _media_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";")[0].strip().lower()


def _error(response: httpx.Response) -> CoordinatorError:
    try:
        error = response.json()["error"]
        code, message = str(error.pop("code")), str(error.pop("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, error = "http_error", response.text[:200], {}
    status = response.status_code
    if status == 401:
        return Unauthorized(code, message, status, error)
    if status == 403:
        return Forbidden(code, message, status, error)
    if status == 429 and "retry_after" not in error:
        error["retry_after"] = float(response.headers.get("retry-after", "1"))
    return _BY_CODE.get(code, CoordinatorError)(code, message, status, error)
