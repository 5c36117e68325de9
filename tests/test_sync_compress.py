"""Compressed object transfer (docs/protocol.md §2): uploads and ``objects/get`` answers as one
zstd frame (``application/x-msgpack+zstd``) between peers that both read it, plain msgpack
with a peer that does not, and hostile frames refused by what they declare."""

from __future__ import annotations

import gc
import json
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
import zstandard
from starlette.requests import Request
from test_sync_support import FAST, Server, make_session, new_repo, root_of, running

from peerhost_server import Limits, head_routes, web
from peerhost_store.ids import hash_bytes
from peerhost_store.objects import encode_blob
from peerhost_store.sync.client import CoordinatorClient, CoordinatorError
from peerhost_store.sync.protocol import (
    MSGPACK,
    PIECE_BYTES,
    ZMSGPACK,
    FrameTooLarge,
    ProtocolError,
    compress_body,
    decode_objects,
    decompress_body,
    encode_ids,
    encode_objects,
    frame_objects,
)
from peerhost_store.sync.transfer import pull, push

MIB = 1 << 20


def _text_blobs(count: int) -> list[bytes]:
    """Blobs like stats and advancements files: JSON text, which compresses well."""
    return [encode_blob(json.dumps({f"minecraft:stat_{i}_{k}": k * i for k in range(200)})
                        .encode()) for i in range(count)]


def _sent_types(http: httpx.Client) -> list[str]:
    """Records the Content-Type of every request ``http`` sends."""
    seen: list[str] = []
    http.event_hooks["request"].append(
        lambda request: seen.append(request.headers.get("content-type", "")))
    return seen


@pytest.mark.parametrize("pieces", [1, 3])
def test_compress_body_round_trips_and_skips_what_does_not_shrink(pieces: int) -> None:
    text = b"".join(_text_blobs(400))[: pieces * PIECE_BYTES - 17]
    parts = [text[i:i + PIECE_BYTES // 3] for i in range(0, len(text), PIECE_BYTES // 3)]
    packed, length, out = compress_body(len(text), parts)
    frame = b"".join(out)
    assert packed and length == len(frame) < len(text) // 4
    assert decompress_body(frame, len(text), "test") == text
    noise = os.urandom(pieces * PIECE_BYTES)
    packed, length, out = compress_body(len(noise), [noise[:MIB], noise[MIB:]])
    assert not packed and length == len(noise) and b"".join(out) == noise


def test_push_and_pull_compress_uploads_and_answers(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        c = make_session(server)
        seen = _sent_types(server.http)
        a = new_repo(tmp_path / "a")
        for i in range(30):
            (a.world / f"stats-{i}.json").write_bytes(_text_blobs(1)[0][7:] + bytes([i]))
        a.snapshot("v1")
        fencing = c["alice"].acquire("a", 60).fencing
        report = push(a, c["alice"], fencing=fencing)
        assert c["alice"].compress_uploads, "the coordinator said it reads zstd uploads"
        assert ZMSGPACK in seen, "the objects went compressed"
        assert report.wire.sent < report.object_bytes / 2, report
        b = new_repo(tmp_path / "b")
        got = pull(b, c["bob"])
        assert root_of(b) == root_of(a)
        assert got.wire.received < report.object_bytes / 2, got


def test_an_old_coordinator_gets_plain_uploads(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(head_routes, "ENCODINGS", ())  # lists no encoding, as before
    with running(tmp_path / "c") as server:
        c = make_session(server)
        seen = _sent_types(server.http)
        a = new_repo(tmp_path / "a")
        (a.world / "stats.json").write_bytes(_text_blobs(1)[0])
        a.snapshot("v1")
        push(a, c["alice"], fencing=c["alice"].acquire("a", 60).fencing)
        assert not c["alice"].compress_uploads
        assert ZMSGPACK not in seen and MSGPACK in seen


def test_a_coordinator_that_refuses_a_compressed_upload_gets_it_plain(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    original = web.read_msgpack_parts

    async def old(request: Request, *, compressed: bool = False) -> list[bytes]:
        return await original(request, compressed=False)

    monkeypatch.setattr("peerhost_server.object_routes.read_msgpack_parts", old)
    alice = make_session(server)["alice"]
    alice.compress_uploads = True  # as if its head said so, then it was downgraded
    blobs = _text_blobs(20)
    assert alice.upload(blobs, [hash_bytes(b) for b in blobs]).new == 20
    assert not alice.compress_uploads, "it stops trying"
    assert alice.download([hash_bytes(b) for b in blobs]) == blobs


def test_answers_are_compressed_only_for_a_client_that_asks(server: Server) -> None:
    alice = make_session(server)["alice"]
    blobs = _text_blobs(50)
    noise = [encode_blob(os.urandom(64 << 10)) for _ in range(4)]
    alice.upload(blobs + noise)
    headers = {"Authorization": f"Bearer {alice._token}", "Content-Type": MSGPACK}
    ids = encode_ids([hash_bytes(b) for b in blobs])
    old = server.http.post("/v1/sessions/s1/objects/get", content=ids, headers=headers)
    assert old.headers["content-type"] == MSGPACK and decode_objects(old.content) == blobs
    new = server.http.post("/v1/sessions/s1/objects/get", content=ids,
                           headers={**headers, "Accept": f"{ZMSGPACK}, {MSGPACK}"})
    assert new.headers["content-type"] == ZMSGPACK and len(new.content) < len(old.content) // 4
    assert decode_objects(decompress_body(new.content, 64 * MIB, "answer")) == blobs
    noisy = server.http.post("/v1/sessions/s1/objects/get",
                             content=encode_ids([hash_bytes(b) for b in noise]),
                             headers={**headers, "Accept": ZMSGPACK})
    assert noisy.headers["content-type"] == MSGPACK, "incompressible: sent as it is"
    assert alice.download([hash_bytes(b) for b in blobs]) == blobs


# -- hostile frames ---------------------------------------------------------------------------


def _declare(frame: bytes, size: int) -> bytes:
    """``frame`` with its header claiming ``size`` bytes of content (an 8-byte size field)."""
    descriptor = frame[4]
    size_bytes = {0: 1 if descriptor & 0x20 else 0, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    at = 5 + (0 if descriptor & 0x20 else 1) + (0, 1, 2, 4)[descriptor & 3]
    return (frame[:4] + bytes([0xC0 | descriptor & 0x3F]) + frame[5:at]
            + size.to_bytes(8, "little") + frame[at + size_bytes:])


def _unsized(data: bytes) -> bytes:
    stream = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    return stream.compress(data) + stream.flush()


def _hostile_frames(limit: int) -> Iterator[tuple[str, bytes, int, str]]:
    """``(name, body, status, code)`` of uploads the coordinator must refuse unread."""
    blobs = _text_blobs(4)
    body = encode_objects(blobs)
    frame = zstandard.ZstdCompressor().compress(body)
    yield "a bomb: zeros 4 times the limit", zstandard.ZstdCompressor().compress(
        bytes(4 * limit)), 413, "body_too_large"
    yield "declares a gigabyte", _declare(frame, 1 << 30), 413, "body_too_large"
    yield "declares no size", _unsized(body), 400, "bad_encoding"
    yield "declares less than it holds", _declare(frame, len(body) - 5), 400, "bad_encoding"
    yield "corrupt", frame[:20] + bytes(len(frame) - 20), 400, "bad_encoding"
    yield "truncated", frame[:-3], 400, "bad_encoding"
    packed, _, pieces = compress_body(len(body), [body])
    assert packed
    flipped = bytearray(b"".join(pieces))
    flipped[len(flipped) // 2] ^= 0x40
    yield "damaged in transit (checksum)", bytes(flipped), 400, "bad_encoding"
    yield "two frames", frame + frame, 400, "bad_encoding"
    yield "not zstd", body, 400, "bad_encoding"
    yield "zstd of garbage", zstandard.ZstdCompressor().compress(b"\xc1" * 100), 400, \
        "bad_objects"


def test_hostile_upload_frames_are_refused_by_what_they_declare(tmp_path: Path) -> None:
    limit = 2 * MIB
    with running(tmp_path / "c", limits=Limits(rate=FAST.rate, burst=FAST.burst,
                                               max_body_bytes=limit)) as server:
        alice = make_session(server)["alice"]
        headers = {"Authorization": f"Bearer {alice._token}", "Content-Type": ZMSGPACK}
        for name, body, status, code in _hostile_frames(limit):
            r = server.http.post("/v1/sessions/s1/objects", content=body, headers=headers)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (name, r.text)
            if status == 413:
                assert r.json()["error"]["limit"] == limit and str(limit) in r.text
        assert alice.missing([hash_bytes(b) for b in _text_blobs(4)]) != []
        good = zstandard.ZstdCompressor().compress(b"".join(frame_objects(_text_blobs(4))[1]))
        r = server.http.post("/v1/sessions/s1/objects", content=good, headers=headers)
        assert r.status_code == 200 and r.json()["new"] == 4


def test_the_client_bounds_what_an_answer_decompresses() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(8 * MIB))
    with pytest.raises(FrameTooLarge) as refused:
        decompress_body(bomb, MIB, "objects/get answer")
    assert refused.value.limit == MIB and "objects/get answer" in str(refused.value)
    for bad in (_unsized(b"x" * 100), b"\x28\xb5\x2f\xfd" + bytes(8), b"", msgpack.packb([])):
        with pytest.raises(ProtocolError):
            decompress_body(bad, MIB, "objects/get answer")


def test_a_hostile_coordinator_answer_is_a_protocol_error(tmp_path: Path) -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(200 * MIB))

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bomb, headers={"Content-Type": ZMSGPACK})

    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://coordinator")
    with pytest.raises(FrameTooLarge), http:
        CoordinatorClient(http, "s1", "token").download([hash_bytes(b"x")])


def test_a_refused_compressed_upload_stores_nothing_and_is_not_retried(server: Server) -> None:
    """A refused compressed upload stores nothing, and a 4xx other than 415 is not retried."""
    alice = make_session(server)["alice"]
    alice.compress_uploads = True
    blobs = _text_blobs(3)
    with pytest.raises(CoordinatorError) as refused:
        alice.upload(blobs, [hash_bytes(b"other")] * 3)
    assert refused.value.code == "id_mismatch"
    assert alice.compress_uploads
    assert len(alice.missing([hash_bytes(b) for b in blobs])) == 3


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd"])
def test_an_answer_with_a_content_encoding_is_refused_before_it_is_inflated(
        encoding: str) -> None:
    """httpx would inflate a Content-Encoding answer by itself, with no bound: phs asks for
    identity and refuses anything else before reading a byte of it."""
    import gzip

    seen: list[str] = []
    bomb = gzip.compress(bytes(64 * MIB))  # 64 MiB of zeros in ~64 KB

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Accept-Encoding"])
        # A stream, as a server's answer arrives (content= would be inflated right here).
        return httpx.Response(200, stream=httpx.ByteStream(bomb),
                              headers={"Content-Type": "application/json",
                                       "Content-Encoding": encoding})

    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://coordinator")
    with pytest.raises(ProtocolError, match=f"Content-Encoding '{encoding}'"), http:
        CoordinatorClient(http, "s1", "token").head()
    assert seen == ["identity"]


def test_a_read_answer_is_freed_at_once_not_by_the_cyclic_collector() -> None:
    """httpx's Response and its stream refer to each other; the client breaks that cycle, so
    an answer's bytes go when the request ends (a 1 GiB clone held 113 MiB of answers that
    only the cyclic collector would have freed)."""
    blob = encode_blob(b"x" * 1000)
    answers: list[weakref.ref[httpx.Response]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        response = httpx.Response(200, content=encode_objects([blob]),
                                  headers={"Content-Type": MSGPACK})
        answers.append(weakref.ref(response))
        return response

    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://coordinator")
    with http:
        client = CoordinatorClient(http, "s1", "token")
        gc.disable()
        try:
            assert client.download([hash_bytes(blob)]) == [blob]
            assert len(answers) == 1 and answers[0]() is None
        finally:
            gc.enable()
