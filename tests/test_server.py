from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from test_sync_support import Clock, Server, make_session, running

from peerhost_server import Limits
from peerhost_server.domain.protocols import WebSession
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import Snapshot, encode_blob, encode_dir_leaf, encode_snapshot
from peerhost_store.sync.client import (
    CoordinatorClient,
    CoordinatorError,
    Fenced,
    Forbidden,
    HeadMoved,
    Incomplete,
    Lease,
    LeaseHeld,
    LeaseLost,
    NotFastForward,
    RateLimited,
    Unauthorized,
)
from peerhost_store.sync.protocol import (
    MSGPACK,
    DeltaRequest,
    ObjectStatus,
    encode_delta_get,
    encode_delta_upload,
    encode_ids,
    encode_objects,
)

EMPTY_DIR = encode_dir_leaf([])
EMPTY_DIR_ID = hash_bytes(EMPTY_DIR)


def snapshot_bytes(root: ObjectId = EMPTY_DIR_ID, parents: tuple[ObjectId, ...] = (),
                   message: str = "") -> bytes:
    return encode_snapshot(Snapshot(root, parents, 1, "t", "h", message, {}))


def publish(client: CoordinatorClient, fencing: int, old: ObjectId | None,
            message: str = "") -> ObjectId:
    snap = snapshot_bytes(parents=(old,) if old else (), message=message)
    client.upload([EMPTY_DIR, snap])
    new = hash_bytes(snap)
    client.set_head(old, new, fencing)
    return new


# -- sessions, members, tokens --------------------------------------------------------------


def test_session_member_token_lifecycle(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        c = make_session(server)
        assert [s["name"] for s in server.admin.list_sessions()] == ["s1"]
        assert server.admin.list_sessions()[0]["members"] == ["alice", "bob"]
        c["alice"].lease_status()
        c["owner"].remove_member("alice")
        with pytest.raises(Unauthorized) as err:
            c["alice"].lease_status()
        assert err.value.status == 401
        with pytest.raises(CoordinatorError) as dup:
            server.admin.create_session("s1")
        assert dup.value.code == "session_exists"
        # Tokens are stored hashed only.
        raw = (tmp_path / "c" / "coordinator" / "data.mdb").read_bytes()
        assert server.admin_token.encode() not in raw
        assert server.admin_token.split(".")[2].encode() not in raw


def test_tokens_are_never_echoed_or_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="peerhost_server.access")
    with running(tmp_path / "c") as server:
        c = make_session(server)
        c["alice"].lease_status()
        bad = server.client("s1", server.admin_token[:-4] + "AAAA")
        with pytest.raises(Unauthorized) as err:
            bad.lease_status()
        assert "AAAA" not in str(err.value)
    assert "s1/alice" in caplog.text
    assert "phs." not in caplog.text


# -- the auth matrix ------------------------------------------------------------------------

OID = "00" * 32
ZERO_ID = ObjectId(bytes(32))
ID_BODY = encode_ids([ZERO_ID])
DELTA_GET = encode_delta_get(DeltaRequest(ZERO_ID, ZERO_ID, ((0, 1),)))
SESSION_ENDPOINTS = [
    # (method, path under /v1/sessions/s1, body, roles allowed)
    ("POST", "members", {"name": "zed"}, {"owner"}),
    ("DELETE", "members/bob", None, {"owner"}),
    ("POST", "lease", {"holder": "h", "ttl": 10}, {"owner", "member"}),
    ("POST", "lease/renew", {"fencing": 1}, {"owner", "member"}),
    ("POST", "lease/release", {"fencing": 1}, {"owner", "member"}),
    ("POST", "lease/reset", {}, {"owner"}),
    ("GET", "lease", None, {"owner", "member"}),
    ("POST", "sync-request", {}, {"owner", "member", "admin"}),
    ("POST", "objects/missing", ID_BODY, {"owner", "member"}),
    ("POST", "objects/status", ID_BODY, {"owner", "member"}),
    ("POST", "objects", encode_objects([b"\x92\x01\xc4\x00"]), {"owner", "member"}),
    ("POST", "objects/get", ID_BODY, {"owner", "member"}),
    ("POST", "objects/changed", encode_ids([ZERO_ID, ZERO_ID]), {"owner", "member"}),
    ("POST", "objects/delta", encode_delta_upload(None, b"batch"), {"owner", "member"}),
    ("POST", "objects/delta/get", DELTA_GET, {"owner", "member"}),
    ("POST", "objects/tree", b"\x90", {"owner", "member"}),
    ("POST", "objects/tree/get", encode_ids([ZERO_ID, ZERO_ID]), {"owner", "member"}),
    ("GET", "head", None, {"owner", "member"}),
    ("POST", "head", {"old": None, "new": OID, "fencing": 1}, {"owner", "member"}),
    ("POST", "rollback", {"target": OID}, {"owner"}),
    ("GET", "log", None, {"owner", "member"}),
    ("GET", "retention", None, {"owner", "member"}),
    ("PUT", "retention", {"keep_last": 5}, {"owner"}),
    ("POST", "gc", {}, {"owner"}),
    ("GET", "settings", None, {"owner", "member"}),
    ("PUT", "settings", {"rollback": "owner"}, {"owner"}),
]
ADMIN_ENDPOINTS = [("POST", "/v1/sessions", {"name": "new"}), ("GET", "/v1/sessions", None),
                   ("GET", "/v1/status", None)]


def call(server: Server, method: str, path: str, body: object,
         token: str | None) -> tuple[int, dict[str, Any]]:  # a JSON answer
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    content: bytes | None
    if isinstance(body, bytes):
        headers["Content-Type"] = MSGPACK
        content = body
    else:
        content = None if body is None else json.dumps(body).encode()
    r = server.http.request(method, path, content=content, headers=headers)
    return r.status_code, r.json() if r.headers.get("content-type", "").startswith("application/json") else {}


@pytest.fixture
def two_sessions(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    with running(tmp_path / "c") as server:
        s1 = make_session(server, "s1")
        s2 = make_session(server, "s2")
        tokens = {"owner": s1["owner"]._token, "member": s1["alice"]._token,
                  "admin": server.admin_token, "other": s2["owner"]._token,
                  "other_member": s2["alice"]._token}
        yield server, tokens


def test_auth_matrix(two_sessions: tuple[Server, dict[str, str]]) -> None:
    server, tokens = two_sessions
    wrong = tokens["owner"][:-6] + "xxxxxx"
    for method, tail, body, allowed in SESSION_ENDPOINTS:
        path = f"/v1/sessions/s1/{tail}"
        for token in (None, wrong, "garbage", "phs.0123456789abcdef.nope"):
            status, answer = call(server, method, path, body, token)
            assert (status, answer["error"]["code"]) == (401, "unauthorized"), (method, path, token)
        for who in ("other", "other_member"):
            status, answer = call(server, method, path, body, tokens[who])
            assert status == 403, (method, path, who)
            assert "another session" in answer["error"]["message"]
        for role in ("owner", "member", "admin"):
            status, answer = call(server, method, path, body, tokens[role])
            if role not in allowed:
                assert status == 403, (method, path, role)
            else:
                assert status not in (401, 403), (method, path, role, answer)
    for method, path, body in ADMIN_ENDPOINTS:
        assert call(server, method, path, body, None)[0] == 401
        for role in ("owner", "member", "other"):
            assert call(server, method, path, body, tokens[role])[0] == 403, (path, role)
        assert call(server, method, path, body, tokens["admin"])[0] in (200, 201)


def test_another_sessions_token_cannot_probe_objects(two_sessions: tuple[Server, dict[str, str]]) -> None:
    server, tokens = two_sessions
    blob = encode_blob(b"secret chunk")
    oid = hash_bytes(blob)
    s1 = server.client("s1", tokens["member"])
    s1.upload([blob])
    assert s1.missing([oid]) == []
    answers = []
    for probe in (oid, ObjectId(bytes(32))):
        answers += [call(server, "POST", f"/v1/sessions/s1/{tail}", encode_ids([probe]),
                         tokens["other"])
                    for tail in ("objects/missing", "objects/status", "objects/get")]
        request = DeltaRequest(probe, probe, ((0, 1),))
        answers.append(call(server, "POST", "/v1/sessions/s1/objects/delta/get",
                            encode_delta_get(request), tokens["other"]))
        answers.append(call(server, "POST", "/v1/sessions/s1/objects/delta",
                            encode_delta_upload(request, b""), tokens["other"]))
    # The same refusal whether or not the object exists there.
    assert all(a == answers[0] for a in answers)
    assert answers[0][0] == 403
    # And the other session's own store does not have it.
    assert server.client("s2", tokens["other"]).missing([oid]) == [oid]
    # A session that does not exist answers the same to a foreign token.
    assert call(server, "GET", "/v1/sessions/nope/head", None, tokens["other"]) == \
        call(server, "GET", "/v1/sessions/s1/head", None, tokens["other"])


def test_member_cannot_act_as_owner(two_sessions: tuple[Server, dict[str, str]]) -> None:
    server, tokens = two_sessions
    member = server.client("s1", tokens["member"])
    with pytest.raises(Forbidden):
        member.add_member("mallory")
    with pytest.raises(Forbidden):
        member.remove_member("bob")
    with pytest.raises(Forbidden):
        member.rollback(ObjectId(bytes(32)))
    with pytest.raises(Forbidden):
        member.create_session("mine")


# -- objects --------------------------------------------------------------------------------


def test_objects_are_rehashed_and_malformed_ones_refused(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        alice = make_session(server)["alice"]
        good = encode_blob(b"payload")
        r = server.http.post("/v1/sessions/s1/objects", content=encode_objects([good, b"\x93junk"]),
                             headers={"Authorization": f"Bearer {alice._token}",
                                      "Content-Type": MSGPACK})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "malformed_object"
        assert r.json()["error"]["index"] == 1
        assert alice.missing([hash_bytes(good)]) == [hash_bytes(good)]  # nothing stored
        assert (alice.upload([good, good]).stored, alice.upload([good]).new) == (2, 0)
        # Ids are derived: a claimed id that differs from the bytes' hash is simply missing,
        # and a head reaching it is refused.
        tampered = bytearray(good)
        tampered[-1] ^= 1
        alice.upload([bytes(tampered)])
        claimed = hash_bytes(good[:-1] + b"X")
        assert alice.object_status([hash_bytes(good), claimed]) == [ObjectStatus.PRESENT,
                                                                   ObjectStatus.MISSING]
        lease = alice.acquire("pc", 30)
        snap = snapshot_bytes(root=claimed)
        alice.upload([snap])
        with pytest.raises(Incomplete) as err:
            alice.set_head(None, hash_bytes(snap), lease.fencing)
        assert err.value.missing == claimed
        r = server.http.post("/v1/sessions/s1/objects/get", content=encode_ids([claimed]),
                             headers={"Authorization": f"Bearer {alice._token}",
                                      "Content-Type": MSGPACK})
        assert (r.status_code, r.json()["error"]["id"]) == (404, claimed.hex())
        r = server.http.post("/v1/sessions/s1/objects/missing", content=msgpack.packb([b"short"]),
                             headers={"Authorization": f"Bearer {alice._token}",
                                      "Content-Type": MSGPACK})
        assert (r.status_code, r.json()["error"]["index"]) == (400, 0)


def test_download_answers_are_capped(tmp_path: Path) -> None:
    with running(tmp_path / "c", limits=Limits(rate=1e6, burst=10**6, max_response_bytes=3000)) as server:
        alice = make_session(server)["alice"]
        blobs = [encode_blob(bytes([i]) * 1000) for i in range(5)]
        alice.upload(blobs)
        ids = [hash_bytes(b) for b in blobs]
        first = alice.download(ids)
        assert 1 <= len(first) < 5 and first == blobs[: len(first)]


def test_oversized_body_is_refused(tmp_path: Path) -> None:
    with running(tmp_path / "c", limits=Limits(rate=1e6, burst=10**6, max_body_bytes=1024)) as server:
        alice = make_session(server)["alice"]
        headers = {"Authorization": f"Bearer {alice._token}", "Content-Type": MSGPACK}
        body = encode_objects([encode_blob(b"x" * 2000)])
        r = server.http.post("/v1/sessions/s1/objects", content=body, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 100):
                yield body[i : i + 100]

        r = server.http.post("/v1/sessions/s1/objects", content=chunks(), headers=headers)
        assert "content-length" not in r.request.headers
        assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")
        assert alice.missing([hash_bytes(encode_blob(b"x" * 2000))])  # nothing stored


def test_slow_body_times_out(tmp_path: Path) -> None:
    import anyio
    from starlette.types import Message

    from peerhost_server import create_app

    app = create_app(tmp_path / "c", limits=Limits(body_timeout=0.2))
    token = app.state.admin_token
    sent: list[Message] = []

    async def receive() -> Message:
        if not sent:
            sent.append({})
            return {"type": "http.request", "body": b'{"na', "more_body": True}
        await anyio.sleep(5)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/sessions", "raw_path": b"/v1/sessions",
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("t", 80),
             "client": ("127.0.0.1", 1), "http_version": "1.1",
             "headers": [(b"authorization", f"Bearer {token}".encode()),
                         (b"content-type", b"application/json")]}
    try:
        anyio.run(app, scope, receive, send)
    finally:
        app.state.coordinator.close()
    start = next(m for m in sent if m.get("type") == "http.response.start")
    assert start["status"] == 408


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    clock = Clock()
    with running(tmp_path / "c", clock=clock, limits=Limits(rate=0.5, burst=3)) as server:
        owner = server.client("s1", server.admin.create_session("s1"))  # spends admin tokens
        for _ in range(3):
            owner.head()
        r = server.http.get("/v1/sessions/s1/head", headers={"Authorization": f"Bearer {owner._token}"})
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "2"
        with pytest.raises(RateLimited) as err:
            owner.head()
        assert err.value.retry_after == 2
        clock.advance(2)
        owner.head()


# -- leases ---------------------------------------------------------------------------------


def race_rounds(server: Server, clients: list[CoordinatorClient], rounds: int) -> list[int]:
    import threading

    fencings = []
    for _ in range(rounds):
        barrier = threading.Barrier(len(clients))
        results: list[Lease | LeaseHeld | None] = [None] * len(clients)

        def contend(i: int, barrier: threading.Barrier = barrier,
                    results: list[Lease | LeaseHeld | None] = results) -> None:
            barrier.wait(timeout=10)
            try:
                results[i] = clients[i].acquire(f"host{i}", 30)
            except LeaseHeld as exc:
                results[i] = exc

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        winners = [r for r in results if isinstance(r, Lease)]
        assert len(winners) == 1 and not [r for r in results if r is None], results
        fencings.append(winners[0].fencing)
        clients[results.index(winners[0])].release(winners[0].fencing)
    return fencings


def test_racing_threads_get_one_lease_per_round_across_a_restart(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        c = make_session(server, members=tuple(f"m{i}" for i in range(8)))
        tokens = [c[f"m{i}"]._token for i in range(8)]
        first = race_rounds(server, [server.client("s1", t) for t in tokens], 20)
        held = server.client("s1", tokens[0]).acquire("keeper", 30)
        admin = server.admin_token
    with running(tmp_path / "c", admin_token=admin) as server:
        status = server.client("s1", tokens[0]).lease_status()
        assert status.lease is not None and status.lease.fencing == held.fencing
        server.client("s1", tokens[0]).release(held.fencing)
        second = race_rounds(server, [server.client("s1", t) for t in tokens], 20)
    fencings = [*first, held.fencing, *second]
    assert fencings == sorted(set(fencings)) and len(fencings) == 41


def test_an_expired_holder_cannot_move_the_head(tmp_path: Path) -> None:
    clock = Clock()
    with running(tmp_path / "c", clock=clock) as server:
        c = make_session(server)
        lease = c["alice"].acquire("alice-pc", 10)
        head = publish(c["alice"], lease.fencing, None, "v1")
        clock.advance(10.5)
        snap = snapshot_bytes(parents=(head,), message="v2")
        c["alice"].upload([snap])
        with pytest.raises(Fenced) as err:
            c["alice"].set_head(head, hash_bytes(snap), lease.fencing)
        assert err.value.code == "fenced"
        with pytest.raises(LeaseLost):
            c["alice"].renew(lease.fencing)
        assert c["bob"].head().head == head and c["bob"].head().fencing is None
        # A newer grant fences the old token out even before any clock moves.
        bob = c["bob"].acquire("bob-pc", 10)
        assert bob.fencing > lease.fencing
        with pytest.raises(Fenced):
            c["alice"].set_head(head, hash_bytes(snap), lease.fencing)
        # Bob cannot use Alice's fencing either; the token belongs to the member who got it.
        with pytest.raises(LeaseLost):
            c["alice"].renew(bob.fencing)
        c["bob"].set_head(head, hash_bytes(snap), bob.fencing)


def test_lease_survives_a_restart_for_ttl_after_it(tmp_path: Path) -> None:
    clock = Clock()
    with running(tmp_path / "c", clock=clock) as server:
        alice = make_session(server)["alice"]
        lease = alice.acquire("alice-pc", 10, address="10.0.0.2:25565", game={"version": "1.20"})
        admin, token = server.admin_token, alice._token
    clock.advance(9)
    with running(tmp_path / "c", clock=clock, admin_token=admin) as server:
        clock.advance(5)  # 14 s after the grant, 5 s after the restart
        renewal = server.client("s1", token).renew(lease.fencing)
        assert renewal.lease.fencing == lease.fencing
        assert renewal.lease.address == "10.0.0.2:25565"
        clock.advance(10.1)
        with pytest.raises(LeaseLost):
            server.client("s1", token).renew(lease.fencing)


def test_standby_gets_a_reserved_window(tmp_path: Path) -> None:
    clock = Clock()
    limits = Limits(rate=1e6, burst=10**6, standby_window=15)
    with running(tmp_path / "c", clock=clock, limits=limits) as server:
        c = make_session(server, members=("alice", "bob", "carol", "dave"))
        lease = c["alice"].acquire("alice-pc", 60)
        assert c["bob"].standby("bob-pc", 60) == 1
        assert c["carol"].standby("carol-pc", 60) == 2
        assert c["bob"].standby("bob-pc", 60) == 1  # queuing twice keeps the place
        with pytest.raises(LeaseHeld) as err:
            c["dave"].acquire("dave-pc", 60)
        assert err.value.code == "lease_held"
        assert err.value.lease is not None and err.value.lease["holder"] == "alice-pc"
        c["alice"].release(lease.fencing)
        with pytest.raises(LeaseHeld) as err:
            c["dave"].acquire("dave-pc", 60)
        assert err.value.code == "lease_reserved" and err.value.details["reserved_for"] == "bob-pc"
        with pytest.raises(LeaseHeld):
            c["carol"].acquire("carol-pc", 60)
        bob = c["bob"].acquire("bob-pc", 60)
        assert bob.fencing > lease.fencing
        status = c["dave"].lease_status()
        assert status.standby == ["carol-pc"] and status.reserved_for is None
        # Bob's lease expires; Carol's window starts at the expiry and lapses unused.
        clock.advance(60 + 15)
        assert c["dave"].lease_status().reserved_for is None
        assert c["dave"].acquire("dave-pc", 60).fencing > bob.fencing


def test_sync_request_reaches_the_holder_once(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        c = make_session(server)
        with pytest.raises(CoordinatorError) as err:
            c["bob"].request_sync()
        assert err.value.code == "no_lease"
        lease = c["alice"].acquire("alice-pc", 30)
        assert c["alice"].renew(lease.fencing).sync_requested is False
        assert c["bob"].request_sync() == "alice-pc"
        server.admin.session = "s1"
        server.admin.request_sync()
        assert c["alice"].renew(lease.fencing).sync_requested is True
        assert c["alice"].renew(lease.fencing).sync_requested is False


# -- head, rollback, log, status, metrics ---------------------------------------------------


def test_head_compare_and_swap_rules(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        c = make_session(server)
        lease = c["alice"].acquire("alice-pc", 30)
        v1 = publish(c["alice"], lease.fencing, None, "v1")
        v2 = snapshot_bytes(parents=(v1,), message="v2")
        c["alice"].upload([v2])
        with pytest.raises(HeadMoved) as moved:
            c["alice"].set_head(None, hash_bytes(v2), lease.fencing)
        assert moved.value.head == v1
        orphan = snapshot_bytes(message="unrelated")
        c["alice"].upload([orphan])
        with pytest.raises(NotFastForward):
            c["alice"].set_head(v1, hash_bytes(orphan), lease.fencing)
        with pytest.raises(Fenced):
            c["bob"].set_head(v1, hash_bytes(v2), lease.fencing)
        c["alice"].set_head(v1, hash_bytes(v2), lease.fencing)
        log = c["bob"].log()
        assert [(e["old"], e["new"], e["member"], e["fencing"]) for e in log] == [
            (None, v1.hex(), "alice", lease.fencing),
            (v1.hex(), hash_bytes(v2).hex(), "alice", lease.fencing),
        ]


def test_rollback_adds_a_snapshot_and_deletes_nothing(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        c = make_session(server)
        lease = c["alice"].acquire("alice-pc", 30)
        blob = encode_blob(b"level")
        from peerhost_store.objects import DirEntry, EntryKind

        tree2 = encode_dir_leaf([DirEntry("level.dat", EntryKind.FILE, hash_bytes(blob), 5)])
        v1 = publish(c["alice"], lease.fencing, None, "v1")
        snap2 = snapshot_bytes(root=hash_bytes(tree2), parents=(v1,), message="v2")
        c["alice"].upload([blob, tree2, snap2])
        c["alice"].set_head(v1, hash_bytes(snap2), lease.fencing)
        new = c["owner"].rollback(v1)
        back = msgpack.unpackb(c["bob"].download([new])[0])
        assert back[1] == hash_bytes(EMPTY_DIR) and back[2] == [hash_bytes(snap2)]
        assert c["bob"].head().head == new
        assert c["bob"].missing([hash_bytes(snap2), hash_bytes(tree2), hash_bytes(blob)]) == []
        # Where the owner lets lease holders roll back, the holder may, with its fencing
        # token, e.g. to undo the rollback.
        c["owner"].set_settings(rollback="lease")
        again = c["alice"].rollback(hash_bytes(snap2), fencing=lease.fencing)
        assert msgpack.unpackb(c["bob"].download([again])[0])[1] == hash_bytes(tree2)
        assert [e["kind"] for e in c["bob"].log()] == ["push", "push", "rollback", "rollback"]
        with pytest.raises(Fenced):
            c["bob"].rollback(v1, fencing=lease.fencing)


def test_only_the_owner_rolls_back_unless_the_session_lets_the_lease_holder(
        tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        c = make_session(server)
        lease = c["alice"].acquire("alice-pc", 30)
        v1 = publish(c["alice"], lease.fencing, None, "v1")
        v2 = publish(c["alice"], lease.fencing, v1, "v2")
        assert c["bob"].settings() == {"session": "s1", "rollback": "owner"}
        # By default only the owner: holding the lease is not enough.
        with pytest.raises(Forbidden) as refused:
            c["alice"].rollback(v1, fencing=lease.fencing)
        assert refused.value.code == "forbidden" and "owner" in str(refused.value)
        with pytest.raises(Forbidden):
            c["bob"].rollback(v1)
        with pytest.raises(Forbidden):
            c["alice"].set_settings(rollback="lease")  # members cannot widen it
        assert c["bob"].head().head == v2
        # The owner lets the lease holder roll back: with its current fencing token only.
        assert c["owner"].set_settings(rollback="lease")["rollback"] == "lease"
        assert c["alice"].settings()["rollback"] == "lease"
        with pytest.raises(Forbidden):
            c["bob"].rollback(v1)  # no lease
        with pytest.raises(Fenced):
            c["bob"].rollback(v1, fencing=lease.fencing)  # alice's lease, not bob's
        rolled = c["alice"].rollback(v1, fencing=lease.fencing)
        assert c["bob"].head().head == rolled
        assert c["bob"].log()[-1]["kind"] == "rollback"
        with pytest.raises(CoordinatorError) as bad:
            c["owner"].set_settings(rollback="anyone")
        assert bad.value.status == 400
        c["owner"].set_settings(rollback="owner")
        with pytest.raises(Forbidden):
            c["alice"].rollback(v2, fencing=lease.fencing)
        assert c["owner"].rollback(v2) != rolled  # the owner, without a lease, always


def test_web_sessions_expire_are_bounded_and_are_dropped(tmp_path: Path) -> None:
    """The dashboard's web sessions behind the directory: each ends ``seconds`` after it was
    created, a creation first deletes the expired ones and then the oldest past ``keep``."""
    clock = Clock()
    with running(tmp_path / "c", clock=clock) as server:
        directory = server.coordinator.backends.directory
        start = clock.now
        directory.create_web_session("k1", "t1", "d1", "c1", seconds=10, keep=3)
        assert directory.web_session("k1") == WebSession("t1", "d1", "c1", start + 10)
        clock.advance(5)
        for key in ("k2", "k3"):
            directory.create_web_session(key, "t2", "d2", key, seconds=10, keep=3)
        directory.create_web_session("k4", "t4", "d4", "c4", seconds=10, keep=3)
        # Three kept at most: the oldest went first.
        assert directory.web_session("k1") is None
        assert [web.csrf for key in ("k2", "k3", "k4")
                if (web := directory.web_session(key)) is not None] == ["k2", "k3", "c4"]
        clock.advance(9.5)
        assert directory.web_session("k2") is not None
        clock.advance(0.5)  # 10 s after k2..k4 were created: expired
        assert directory.web_session("k2") is None
        directory.create_web_session("k5", "t5", "d5", "c5", seconds=10, keep=1)
        assert [directory.web_session(key) for key in ("k3", "k4")] == [None, None]
        assert directory.web_session("k5") is not None
        directory.drop_web_session("k5")
        directory.drop_web_session("never")  # nothing to drop: no error
        assert directory.web_session("k5") is None


def test_status_and_metrics(tmp_path: Path) -> None:
    with running(tmp_path / "c") as server:
        c = make_session(server)
        lease = c["alice"].acquire("alice-pc", 30, address="192.168.1.5:25565")
        c["bob"].standby("bob-pc", 30)
        head = publish(c["alice"], lease.fencing, None)
        status = server.admin.status()["sessions"][0]
        assert status["session"] == "s1" and status["lease"]["holder"] == "alice-pc"
        assert status["lease"]["address"] == "192.168.1.5:25565"
        assert status["head"] == head.hex() and status["standby"] == ["bob-pc"]
        assert status["storage_bytes"] > 0 and 0 < status["lease"]["expires_in"] <= 30
        text = server.http.get("/metrics").text
        assert "peerhost_leases_granted_total 1.0" in text
        assert "peerhost_objects_stored_total 2.0" in text
        assert 'route="/v1/sessions/{session}/objects"' in text
        assert "peerhost_bytes_received_total" in text and "peerhost_request_seconds_bucket" in text
        assert server.http.get("/nope").json()["error"]["code"] == "not_found"


def test_exported_members() -> None:
    import peerhost_server

    for name in peerhost_server.__all__:
        assert getattr(peerhost_server, name) is not None
    assert sorted(peerhost_server.__all__) == peerhost_server.__all__


def test_a_second_coordinator_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    from peerhost_server import create_app
    from peerhost_store.errors import StoreError

    with running(tmp_path / "c"), pytest.raises(StoreError, match="another coordinator"):
        create_app(tmp_path / "c")


def test_fencing_tokens_stay_above_those_issued_before_a_backup_was_restored() -> None:
    from peerhost_server.leases import Lease, Queued, SessionLease

    def granted(answer: Lease | Queued) -> Lease:
        assert isinstance(answer, Lease), answer
        return answer

    restored = SessionLease(window=15.0, fencing=5)  # the counter as an old backup had it
    issued_since_backup = SessionLease(window=15.0, fencing=5)
    later = [granted(issued_since_backup.acquire(float(i), holder="h", member=f"m{i}", ttl=1)).fencing
             for i in range(0, 40, 2)]
    time.sleep(0.05)  # the floor holds while fewer than 1,000 grants a second were issued
    assert granted(restored.acquire(100.0, holder="h", member="x", ttl=1)).fencing > max(later)
