"""Lease renewals against one embedded coordinator and against three on PostgreSQL, same run.

``python benchmarks/bench_scale.py [--clients 32] [--seconds 5]``: ``clients`` clients, each
with a session, a token, a lease and a keep-alive connection of its own, renew as fast as
they are answered (closed loop) for ``seconds``, from ``benchmarks/loadgen.py``:

* against one coordinator on the embedded LMDB backend (``lmdb:``, the default);
* against three coordinator processes sharing one PostgreSQL (``--db postgresql://...``, the
  server of the tests: ``PHS_TEST_POSTGRES``, a schema of its own, dropped afterwards), the
  clients spread over them round-robin, one load generator per coordinator started at the
  same instant.

The table shows renewals per second and latency (p50, p99, from when each call was sent) of
each, and their ratio: what the shared database costs per renewal and what three processes
gain. Every renewal on PostgreSQL is a transaction (the expiry is stored, judged on the
database's clock), where the embedded backend answers it from memory without a write, so the
embedded coordinator is expected to win on one machine; the point of the second deployment is
failover and several machines, and this measures its price. Results: table on stdout, JSON in
``benchmarks/results/scale_leases.json``.

``--world-mib N`` (0: skip) adds a push and a clone of a synthesized world of about N MiB
(default 64) in the same run: one embedded coordinator, then three coordinators on PostgreSQL
with the objects in S3 (moto's server, a process of its own on 127.0.0.1, a bucket of its
own): pushed through the first, cloned through the last (any coordinator serves what another
stored). moto is a test double, not an S3 engine (about 130 PUT/s here, each handled in
Python); objects are packed, one PUT per upload request and one ranged GET per run of wanted
objects, so a 1 GiB push is about 70 PUTs. JSON in ``benchmarks/results/scale_transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx
from pgutil import fresh_schema, unreachable

from peerhost_cli import synth
from peerhost_store.repo import Repository
from peerhost_store.sync.client import CoordinatorClient
from peerhost_store.sync.transfer import pull, push

PYTHON = sys.executable
LOADGEN = ROOT / "benchmarks" / "loadgen.py"
RESULTS = ROOT / "benchmarks" / "results" / "scale_leases.json"
TRANSFER_RESULTS = ROOT / "benchmarks" / "results" / "scale_transfer.json"
MiB = 1 << 20
NO_RATE_LIMIT = ["--limit", "rate=1000000", "--limit", "burst=1000000"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m peerhost_server`` on a free port (``db`` its backends' URL)."""

    def __init__(self, data: Path, db: str, objects: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "peerhost_server", "--data", str(data), "--port", str(self.port),
             "--db", db, *(objects or []), *NO_RATE_LIMIT],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=None if env is None else {**os.environ, **env})
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        self.admin_token = first.rsplit(" ", 1)[1].strip() if first.startswith("admin") else None
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"the coordinator did not come up on {self.url}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def leases(servers: list[Server], clients: int) -> list[list[Any]]:
    """``clients`` sessions with a lease each: [session, owner token, fencing]."""
    admin_token = servers[0].admin_token
    assert admin_token is not None
    out: list[list[Any]] = []
    with httpx.Client(base_url=servers[0].url, timeout=30) as http:
        admin = CoordinatorClient(http, "", admin_token)
        for i in range(clients):
            name = f"lease{i}"
            owner = CoordinatorClient(http, name, admin.create_session(name))
            out.append([name, owner._token, owner.acquire(f"host{i}", 600).fencing])
    return out


def renew(servers: list[Server], clients: list[list[Any]], seconds: float,
          work: Path) -> dict[str, Any]:
    """Every client renewing for ``seconds``, spread over ``servers``; one loadgen each."""
    procs = []
    for i, server in enumerate(servers):
        config = {"out": str(work / f"loadgen{i}.json"), "host": "127.0.0.1",
                  "port": server.port, "call": "renew", "clients": clients[i::len(servers)],
                  "rate_per_client": None, "seconds": seconds}
        procs.append(subprocess.Popen([PYTHON, str(LOADGEN), json.dumps(config)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a load generator did not get ready")
    begin = time.monotonic() + 0.3
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{begin!r}\n")
        proc.stdin.flush()
    for proc in procs:
        proc.communicate(timeout=2 * seconds + 60)
    results = [json.loads((work / f"loadgen{i}.json").read_text()) for i in range(len(procs))]
    served = sorted(x for r in results for row in r["service"] for x in row)
    elapsed = max(r["elapsed"] for r in results)

    def pct(q: float) -> float | None:
        return round(served[min(len(served) - 1, int(q * len(served)))] * 1000, 2) if served \
            else None

    return {"coordinators": len(servers), "clients": len(clients), "seconds": round(elapsed, 2),
            "renewals": len(served), "per_s": round(len(served) / elapsed, 1) if elapsed else 0,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "errors": sum(len(r["errors"]) for r in results),
            "rate_limited": sum(sum(r["limited"]) for r in results)}


def transfer(servers: list[Server], repo: Repository, work: Path,
             name: str) -> dict[str, Any]:
    """Push ``repo``'s head to a new session through ``servers[0]``, then clone it into an
    empty folder through ``servers[-1]``: seconds, MiB/s of world, requests."""
    admin_token = servers[0].admin_token
    assert admin_token is not None
    world = sum(p.stat().st_size for p in repo.world.rglob("*")
                if p.is_file() and ".peerhost" not in p.parts)
    with httpx.Client(base_url=servers[0].url, timeout=300) as http:
        admin = CoordinatorClient(http, "", admin_token)
        owner = CoordinatorClient(http, name, admin.create_session(name))
        lease = owner.acquire("bench", 600)
        t0 = time.perf_counter()
        pushed = push(repo, owner, fencing=lease.fencing)
        push_s = time.perf_counter() - t0
        owner.release(lease.fencing)
        push_requests = owner.stats.requests
        token = owner._token
    target = work / f"clone-{name}"
    target.mkdir()
    with httpx.Client(base_url=servers[-1].url, timeout=300) as http, \
            Repository.init(target) as clone:
        reader = CoordinatorClient(http, name, token)
        t0 = time.perf_counter()
        pulled = pull(clone, reader)
        clone_s = time.perf_counter() - t0
        if pulled.head != pushed.head or clone.scan().root != repo.read_snapshot(pushed.head).root:
            raise RuntimeError(f"{name}: the clone is not the pushed snapshot")
        clone_requests = reader.stats.requests
    return {"coordinators": len(servers), "world_mib": round(world / MiB, 1),
            "objects": pushed.objects_sent,
            "push_s": round(push_s, 2), "push_mib_s": round(world / MiB / push_s, 1),
            "push_requests": push_requests,
            "clone_s": round(clone_s, 2), "clone_mib_s": round(world / MiB / clone_s, 1),
            "clone_requests": clone_requests}


def transfers(world_mib: int, work: Path) -> dict[str, Any]:
    """The push/clone table: one embedded coordinator, three on PostgreSQL + S3 (moto)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from s3util import S3Process

    world = work / "world"
    synth.synthesize_world(world, seed=20261207, target_bytes=world_mib * MiB, dimensions=False)
    rows: list[dict[str, Any]] = []
    with Repository.init(world) as repo:
        repo.snapshot("bench")
        embedded = Server(work / "embedded-transfer", "lmdb:")
        try:
            rows.append({"deployment": "embedded (LMDB), 1 process",
                         **transfer([embedded], repo, work, "embedded")})
        finally:
            embedded.stop()
        s3 = S3Process()
        s3.start()
        try:
            bucket = s3.new_bucket()
            with fresh_schema() as url:
                servers = [Server(work / "pg-transfer", url,
                                  ["--objects", f"s3://{bucket}/bench"], s3.env)
                           for _ in range(3)]
                try:
                    rows.append({"deployment": "PostgreSQL + S3 (moto), 3 processes",
                                 **transfer(servers, repo, work, "scaled")})
                finally:
                    for server in servers:
                        server.stop()
        finally:
            s3.stop()
    base, scaled = rows
    ratio = {"push_s": round(scaled["push_s"] / base["push_s"], 2),
             "clone_s": round(scaled["clone_s"] / base["clone_s"], 2)}
    print(f"{'deployment':<36} {'MiB':>6} {'objects':>7} {'push s':>7} {'MiB/s':>6} "
          f"{'clone s':>7} {'MiB/s':>6}")
    for row in rows:
        print(f"{row['deployment']:<36} {row['world_mib']:>6} {row['objects']:>7} "
              f"{row['push_s']:>7} {row['push_mib_s']:>6} {row['clone_s']:>7} "
              f"{row['clone_mib_s']:>6}")
    print(f"PostgreSQL + S3 / embedded: {ratio['push_s']}x the push time, {ratio['clone_s']}x "
          "the clone time (three processes and moto on the same 2 cores)")
    summary = {"rows": rows, "ratio": ratio, "loadavg_1min": round(os.getloadavg()[0], 2),
               "cores": os.cpu_count()}
    TRANSFER_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    TRANSFER_RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--world-mib", type=int, default=64,
                        help="push/clone a synthesized world of about this size (0: skip)")
    parser.add_argument("--no-leases", action="store_true", help="skip the renewal table")
    args = parser.parse_args()
    why = unreachable()
    if why is not None:
        print(f"skipped: {why}")
        return 1
    if args.world_mib > 0:
        with tempfile.TemporaryDirectory(prefix="bench-scale-transfer-") as scratch:
            transfers(args.world_mib, Path(scratch))
    if args.no_leases:
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        work = Path(scratch)
        embedded = Server(work / "embedded", "lmdb:")
        try:
            rows.append({"deployment": "embedded (LMDB), 1 process",
                         **renew([embedded], leases([embedded], args.clients), args.seconds,
                                 work)})
        finally:
            embedded.stop()
        with fresh_schema() as url:
            servers = [Server(work / "pg", url) for _ in range(3)]
            try:
                rows.append({"deployment": "PostgreSQL, 3 processes",
                             **renew(servers, leases(servers, args.clients), args.seconds,
                                     work)})
            finally:
                for server in servers:
                    server.stop()
    base, scaled = rows
    ratio = {"per_s": round(scaled["per_s"] / base["per_s"], 2) if base["per_s"] else None,
             "p99": round(scaled["p99_ms"] / base["p99_ms"], 2)
             if base["p99_ms"] and scaled["p99_ms"] else None}
    print(f"{'deployment':<30} {'renewals/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for row in rows:
        print(f"{row['deployment']:<30} {row['per_s']:>10} {row['p50_ms']!s:>8} "
              f"{row['p99_ms']!s:>8} {row['errors']:>6}")
    print(f"PostgreSQL / embedded: {ratio['per_s']}x the renewals per second, "
          f"{ratio['p99']}x the p99 (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "ratio": ratio,
                                   "loadavg_1min": round(os.getloadavg()[0], 2),
                                   "cores": os.cpu_count()}, indent=2) + "\n")
    return 0 if all(row["errors"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
