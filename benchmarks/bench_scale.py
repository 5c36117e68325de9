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

from peerhost_store.sync.client import CoordinatorClient

PYTHON = sys.executable
LOADGEN = ROOT / "benchmarks" / "loadgen.py"
RESULTS = ROOT / "benchmarks" / "results" / "scale_leases.json"
NO_RATE_LIMIT = ["--limit", "rate=1000000", "--limit", "burst=1000000"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m peerhost_server`` on a free port (``db`` its backends' URL)."""

    def __init__(self, data: Path, db: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "peerhost_server", "--data", str(data), "--port", str(self.port),
             "--db", db, *NO_RATE_LIMIT],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    why = unreachable()
    if why is not None:
        print(f"skipped: {why}")
        return 1
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
