"""Lease safety, Jepsen style: concurrent clients against a real coordinator under faults.

Four client processes (tests/jepsen.py) acquire, renew, push and release the lease of one
session for a bounded time, recording every operation. Meanwhile a seeded nemesis pauses
clients past the lease ttl (SIGSTOP, then SIGCONT; mostly the current holder) and SIGKILLs and
restarts the coordinator on the same data folder and port. Three clients have skewed clocks:
an offset, and for two a wrong rate (one renews late and so pushes on expired leases), and two
stall past the ttl on purpose now and then. The checker (``jepsen.check``) then judges the
history against the coordinator's log, final head and snapshot chain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from random import Random

import httpx
import jepsen
import pytest
from jepsen import FAIL, INFO, OK, ClientConfig, Fault, Move, Op, check, load_history, member_name
from test_server_uvicorn import Coordinator, free_port

from peerhost_store.ids import ObjectId
from peerhost_store.objects import DirLeaf, Snapshot, decode
from peerhost_store.sync.client import CoordinatorClient, CoordinatorError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP, SIGKILL")

SEED = int(os.environ.get("PHS_JEPSEN_SEED", "20240613"))
TTL = 1.5
RUN = 30.0  # seconds each client runs
MAX_FAULTS = 16
SKEWS = [  # (offset s, clock rate, chance of stalling past the ttl per step)
    (0.0, 1.0, 0.05),
    (-3600.0, 1.0, 0.1),  # an hour behind
    (90.0, 0.4, 0.0),  # slow clock: believes its lease lasts 2.5 times longer than it does
    (0.7, 1.5, 0.0),  # fast clock: renews early
]
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "reliability"


# -- the checker on hand-made histories ------------------------------------------------------


def op(client: int, kind: str, t0: float, result: str = OK, *, code: str | None = None,
       fencing: int | None = None, ttl: float | None = None, old: str | None = None,
       new: str | None = None) -> Op:
    return Op(client, kind, t0, t0 + 0.1, t0, t0 + 0.1, result, code, fencing, ttl, old, new)


def grant(client: int, t0: float, token: int) -> Op:
    return op(client, "acquire", t0, fencing=token, ttl=TTL)


def move(client: int, t0: float, token: int, old: str | None, new: str,
         result: str = OK, code: str | None = None) -> Op:
    return op(client, "set_head", t0, result, code=code, fencing=token, old=old, new=new)


SAFE = [grant(0, 0.0, 10), move(0, 0.2, 10, None, "a"), op(0, "release", 0.4, fencing=10),
        grant(1, 1.0, 11), move(1, 1.2, 11, "a", "b"),
        move(0, 1.3, 10, "a", "x", FAIL, "fenced")]
SAFE_LOG = [Move("c0", None, "a", 10), Move("c1", "a", "b", 11)]


def violated(ops: list[Op], log: list[Move], chain: list[str] | None = None,
             final: str | None = "b", faults: list[Fault] | None = None) -> set[str]:
    chain = [m.new for m in log] if chain is None else chain
    report = check(ops, faults or [], log, chain, final)
    return {v.split(":")[0] for v in report.violations}


def test_checker_accepts_a_safe_history() -> None:
    report = check(SAFE, [], SAFE_LOG, ["a", "b"], "b")
    assert report.violations == []
    assert report.stats["head_moves_refused"] == {"fenced": 1}
    assert set(report.checks) >= {"chain", "acked_kept", "no_phantom", "tokens", "log_tokens",
                                  "fenced_out"}


def test_checker_catches_two_lands_for_overlapping_leases() -> None:
    # Client 0 still believes in token 10 after client 1 was granted 11, and its move lands.
    ops = [grant(0, 0.0, 10), grant(1, 1.0, 11), move(0, 1.2, 10, None, "a"),
           move(1, 1.4, 11, "a", "b")]
    log = [Move("c0", None, "a", 10), Move("c1", "a", "b", 11)]
    assert violated(ops, log) == {"fenced_out"}


def test_checker_catches_a_lost_acknowledged_head() -> None:
    ops = [grant(0, 0.0, 10), move(0, 0.2, 10, None, "a"), move(0, 0.4, 10, "a", "b")]
    log = [Move("c0", None, "a", 10)]  # b was acknowledged, then lost in a crash
    assert violated(ops, log, final="a") == {"acked_kept"}


def test_checker_catches_a_token_that_does_not_grow() -> None:
    ops = [grant(0, 0.0, 12), grant(1, 1.0, 11)]  # 11 was asked for after 12 was granted
    assert violated(ops, [], final=None) == {"tokens"}
    reused = [grant(0, 0.0, 12), grant(1, 1.0, 12)]
    assert violated(reused, [], final=None) == {"tokens"}


def test_checker_catches_moves_out_of_token_order_and_phantoms() -> None:
    ops = [grant(0, 0.0, 10), grant(1, 0.05, 11), move(1, 0.2, 11, None, "a"),
           move(0, 0.1, 10, "a", "b", INFO, "unavailable"),
           move(1, 0.3, 11, "b", "c", FAIL, "head_moved")]
    log = [Move("c1", None, "a", 11), Move("c0", "a", "b", 10), Move("c1", "b", "c", 11)]
    assert violated(ops, log, final="c") == {"log_tokens", "no_phantom"}


def test_checker_catches_a_broken_chain() -> None:
    log = [Move("c0", None, "a", 10), Move("c1", "x", "b", 11)]
    ops = [*SAFE[:4], move(1, 1.2, 11, "x", "b")]
    assert violated(ops, log) == {"chain"}
    assert violated(SAFE, SAFE_LOG, chain=["b", "a"]) == {"chain"}  # parents disagree with the log


def test_checker_catches_a_stale_move_unless_a_restart_hides_the_expiry() -> None:
    ops = [grant(0, 0.0, 10), move(0, 3.0, 10, None, "a")]  # 2.9 s after a 1.5 s grant
    log = [Move("c0", None, "a", 10)]
    assert violated(ops, log, final="a") == {"stale_refused"}
    restart = Fault("restart", 1.0, 2.0)
    assert violated(ops, log, final="a", faults=[restart]) == set()
    renewed = [*ops, op(0, "renew", 2.0, fencing=10, ttl=TTL)]
    assert violated(renewed, log, final="a") == set()


# -- the real thing ---------------------------------------------------------------------------


def current_holder(owner: CoordinatorClient) -> int | None:
    try:
        lease = owner.lease_status().lease
    except CoordinatorError:
        return None
    return None if lease is None else int(lease.member[1:])


def nemesis(rng: Random, server: Coordinator, procs: list[subprocess.Popen[bytes]],
            owner: CoordinatorClient, until: float) -> list[Fault]:
    """Pause clients past the ttl and restart the coordinator until ``until``."""
    faults: list[Fault] = []
    for i in range(MAX_FAULTS):
        time.sleep(rng.uniform(0.8, 2.0))
        if time.monotonic() >= until:
            break
        if i % 3 == 1:  # pause, restart, pause, pause, restart, ...
            t0 = time.monotonic()
            server.kill()
            time.sleep(rng.uniform(0.1, 0.6))
            server.start()
            faults.append(Fault("restart", t0, time.monotonic()))
            continue
        holder = current_holder(owner) if rng.random() < 0.75 else None
        target = holder if holder is not None else rng.randrange(len(procs))
        proc = procs[target]
        if proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            time.sleep(TTL + rng.uniform(0.5, 1.5))
        finally:
            t1 = time.monotonic()
            proc.send_signal(signal.SIGCONT)
        faults.append(Fault("pause", t0, t1, target))
    return faults


def read_chain(client: CoordinatorClient, head: ObjectId | None, limit: int) -> list[str]:
    """The snapshots from the root to ``head`` by their parents; every object they reach is
    downloaded (and hash-checked by the client) on the way."""
    chain: list[str] = []
    at = head
    for _ in range(limit):
        if at is None:
            break
        [raw] = client.download([at])
        snap = decode(raw)
        assert isinstance(snap, Snapshot)
        [root] = client.download([snap.root])
        leaf = decode(root)
        assert isinstance(leaf, DirLeaf)
        blobs = [e.oid for e in leaf.entries]
        assert len(client.download(blobs)) == len(blobs)
        chain.append(at.hex())
        at = snap.parents[0] if snap.parents else None
    assert at is None, "the chain is longer than the log"
    return chain[::-1]


def test_lease_safety_under_pauses_restarts_and_skew(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = Random(SEED)
    server = Coordinator(tmp_path / "coordinator", free_port())
    server.start()
    procs: list[subprocess.Popen[bytes]] = []
    configs = [ClientConfig(i, str(tmp_path / f"c{i}.jsonl"), SEED + i, RUN, TTL, *skew)
               for i, skew in enumerate(SKEWS)]
    try:
        assert server.admin_token is not None
        url = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=url, timeout=10) as http:
            admin = CoordinatorClient(http, "", server.admin_token)
            owner = CoordinatorClient(http, "s", admin.create_session("s"))
            tokens = [owner.add_member(member_name(c.client)) for c in configs]
            for cfg, token in zip(configs, tokens, strict=True):
                with open(tmp_path / f"c{cfg.client}.err", "wb") as err:
                    procs.append(subprocess.Popen(
                        [sys.executable, jepsen.__file__, url, "s", token, json.dumps(asdict(cfg))],
                        stdout=subprocess.DEVNULL, stderr=err))
            faults = nemesis(rng, server, procs, owner, time.monotonic() + RUN - 3)
            for proc, cfg in zip(procs, configs, strict=True):
                rc = proc.wait(timeout=RUN + 60)
                assert rc == 0, (tmp_path / f"c{cfg.client}.err").read_text()[-2000:]
            # One more crash at the end: whatever was acknowledged must survive it too.
            t0 = time.monotonic()
            server.kill()
            server.start()
            faults.append(Fault("restart", t0, time.monotonic()))
            entries = owner.log(1000)
            assert len(entries) < 1000, "the log endpoint would truncate the history"
            log = [Move.from_log(e) for e in entries]
            head = owner.head().head
            chain = read_chain(owner, head, len(log) + 1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=10)
        server.stop()
    ops = load_history(Path(c.out) for c in configs)
    report = check(ops, faults, log, chain, None if head is None else head.hex())
    summary = {
        "seed": SEED,
        "clients": len(configs),
        "ttl_seconds": TTL,
        "run_seconds": RUN,
        "skewed_clients": sum((c.skew, c.rate) != (0.0, 1.0) for c in configs),
        "client_clocks": [{"client": c.client, "skew": c.skew, "rate": c.rate, "stall": c.stall}
                          for c in configs],
        **report.stats,
        "checks": dict(report.checks),
        "checks_total": sum(report.checks.values()),
        "violations": report.violations[:50],
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lease_jepsen.json").write_text(json.dumps(summary, indent=2) + "\n")
    assert report.violations == [], "\n".join(report.violations[:20])
    # Not vacuous: the run moved the head, fenced someone out and injected both kinds of fault.
    assert report.stats["head_moves_acknowledged"] >= 5
    assert report.stats["grants"] >= 5
    assert report.stats["faults"].get("pause", 0) >= 1
    assert report.stats["faults"].get("restart", 0) >= 2
    assert sum(report.stats["head_moves_refused"].values()) >= 1  # stale pushes were tried
