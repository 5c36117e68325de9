"""Lease safety, Jepsen style, with three coordinators sharing one PostgreSQL and one bucket.

The clients and the checker of tests/test_lease_jepsen.py, but every request goes to one of
three coordinator processes (``--db postgresql://... --objects s3://...``: one schema, one
bucket of moto's S3 server, each coordinator a data folder of its own) chosen at random. The
nemesis, seeded, pauses clients past the lease ttl, SIGKILLs a coordinator and restarts it
while the others serve, cuts the database off from every coordinator for a moment (a TCP
proxy between them and PostgreSQL, closed and reopened: what a restart of PostgreSQL does to
its clients, without restarting the server other tests share), and takes the bucket away.
Lease expiry lives in the database, so no fault hides an expired lease: the checker's
``stale_refused`` rule holds through every fault. One chain of head moves, strictly growing
tokens, nothing acknowledged lost.
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
from jepsen import ClientConfig, Fault, Move, check, load_history, member_name
from pgutil import fresh_schema, server_address, via
from s3util import S3Server, s3_server
from tcpproxy import Proxy
from test_lease_jepsen import RESULTS, SKEWS, TTL, current_holder, read_chain
from test_server_uvicorn import Coordinator, free_port

from peerhost_store.sync.client import CoordinatorClient

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP, SIGKILL")

SEED = int(os.environ.get("PHS_JEPSEN_SEED", "20240613"))
RUN = 20.0  # seconds each client runs
MAX_FAULTS = 14
COORDINATORS = 3


class PgCoordinator(Coordinator):
    """A coordinator process on PostgreSQL ``db``, its objects in the bucket ``objects`` of
    ``s3`` (the data folder ``data`` then holds only its lock and logs), or in ``data``."""

    def __init__(self, data: Path, port: int, db: str, s3: S3Server | None = None,
                 objects: str | None = None) -> None:
        super().__init__(data, port, None if s3 is None else s3.env)
        self.db, self.objects = db, objects

    def command(self) -> list[str]:
        bucket = [] if self.objects is None else ["--objects", self.objects]
        return [*super().command(), "--db", self.db, *bucket]


def nemesis(rng: Random, servers: list[PgCoordinator], proxy: Proxy, s3: S3Server,
            procs: list[subprocess.Popen[bytes]], owner: CoordinatorClient,
            until: float) -> list[Fault]:
    """Until ``until``: kill a coordinator, cut the database off, pause a client, take the
    bucket away, ..."""
    faults: list[Fault] = []
    for i in range(MAX_FAULTS):
        time.sleep(rng.uniform(0.5, 1.5))
        if time.monotonic() >= until:
            break
        if i % 4 == 3:  # the bucket unreachable (moto's data stays in this process)
            t0 = time.monotonic()
            s3.stop()
            time.sleep(rng.uniform(0.3, 1.2))
            s3.start()
            faults.append(Fault("bucket_down", t0, time.monotonic()))
        elif i % 3 == 0:  # kill -9 one coordinator; the others go on serving
            which = rng.randrange(len(servers))
            t0 = time.monotonic()
            servers[which].kill()
            time.sleep(rng.uniform(0.1, 0.8))
            servers[which].start()
            faults.append(Fault("kill", t0, time.monotonic(), which))
        elif i % 3 == 1:  # the database away from every coordinator
            t0 = time.monotonic()
            proxy.down()
            time.sleep(rng.uniform(0.3, 1.2))
            proxy.up()
            faults.append(Fault("db_down", t0, time.monotonic()))
        else:  # pause a client past the ttl, mostly the current holder
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


def test_lease_safety_with_three_coordinators_on_postgres(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = Random(SEED)
    procs: list[subprocess.Popen[bytes]] = []
    configs = [ClientConfig(i, str(tmp_path / f"c{i}.jsonl"), SEED + i, RUN, TTL, *skew)
               for i, skew in enumerate(SKEWS)]
    with fresh_schema() as url, s3_server() as s3:
        proxy = Proxy(server_address())
        db = via(url, proxy.port)
        bucket = s3.new_bucket()
        servers = [PgCoordinator(tmp_path / f"coordinator{i}", free_port(), db, s3,
                                 f"s3://{bucket}/phs") for i in range(COORDINATORS)]
        try:
            for server in servers:
                server.start()
            admin_token = servers[0].admin_token  # the first start made it; the others found it
            assert admin_token is not None and all(s.admin_token is None for s in servers[1:])
            urls = [f"http://127.0.0.1:{s.port}" for s in servers]
            with httpx.Client(base_url=urls[1], timeout=10) as http:
                admin = CoordinatorClient(http, "", admin_token)
                owner = CoordinatorClient(http, "s", admin.create_session("s"))
                tokens = [owner.add_member(member_name(c.client)) for c in configs]
                for cfg, token in zip(configs, tokens, strict=True):
                    with open(tmp_path / f"c{cfg.client}.err", "wb") as err:
                        procs.append(subprocess.Popen(
                            [sys.executable, jepsen.__file__, ",".join(urls), "s", token,
                             json.dumps(asdict(cfg))], stdout=subprocess.DEVNULL, stderr=err))
                faults = nemesis(rng, servers, proxy, s3, procs, owner,
                                 time.monotonic() + RUN - 3)
                for proc, cfg in zip(procs, configs, strict=True):
                    rc = proc.wait(timeout=RUN + 60)
                    assert rc == 0, (tmp_path / f"c{cfg.client}.err").read_text()[-2000:]
                # Every coordinator killed at the end: what was acknowledged must survive.
                t0 = time.monotonic()
                for server in servers:
                    server.kill()
                servers[2].start()
                faults.append(Fault("kill", t0, time.monotonic(), 2))
            with httpx.Client(base_url=urls[2], timeout=10) as http:
                owner = CoordinatorClient(http, "s", owner._token)
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
            for server in servers:
                server.stop()
            proxy.close()
    ops = load_history(Path(c.out) for c in configs)
    report = check(ops, faults, log, chain, None if head is None else head.hex())
    summary = {
        "seed": SEED,
        "coordinators": COORDINATORS,
        "clients": len(configs),
        "ttl_seconds": TTL,
        "run_seconds": RUN,
        **report.stats,
        "checks": dict(report.checks),
        "checks_total": sum(report.checks.values()),
        "violations": report.violations[:50],
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lease_jepsen_postgres.json").write_text(json.dumps(summary, indent=2) + "\n")
    assert report.violations == [], "\n".join(report.violations[:20])
    # Not vacuous: the head moved, someone was fenced out, every kind of fault happened.
    assert report.stats["head_moves_acknowledged"] >= 5
    assert report.stats["grants"] >= 5
    assert report.stats["faults"].get("pause", 0) >= 1
    assert report.stats["faults"].get("kill", 0) >= 2
    assert report.stats["faults"].get("db_down", 0) >= 1
    assert report.stats["faults"].get("bucket_down", 0) >= 1
    assert sum(report.stats["head_moves_refused"].values()) >= 1
    assert report.checks["stale_refused"] >= 1  # expiry judged through every fault
