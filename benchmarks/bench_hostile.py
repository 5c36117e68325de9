"""Benchmark: a hostile member against a real coordinator process, and honest members meanwhile.

A coordinator runs as its own process (``python -m peerhost_server`` on 127.0.0.1). Session
``honest``: alice pushes a real world and then, from a separate process, renews her lease and
pushes a small change every few renewals, timing every request. Mallory, a member of
``honest`` and holder of the lease of session ``evil``, attacks:

1. **DAG bomb**: a snapshot of 1,048,576 paths of a 40 KB file (40 GB to write) stored as
   ~80 KB of objects, pushed to ``evil`` (set_head; issue 11 item 6);
2. **region bomb**: 10,000 region files sharing one full region map (40 GB);
3. **pairing attack** in ``honest``: ``objects/delta`` naming alice's head tree and the DAG
   bomb, then a region bomb whose entries under-declare their chunks (it passes the shape
   check, so only the per-request budget stops it), and ``objects/delta/get`` naming the
   bomb (item 7).

It reports, for the coordinator process (``/proc``): its peak RSS during the attacks above
its RSS before them (``VmHWM`` after resetting it through ``clear_refs``) and the CPU seconds
it spent; for each attack the answer and the slowest answer time; and the honest requests'
p50/p99 before and during the attacks. Goal: bounded, under 200 MiB extra, each attack
answered in under 1 s.

Run: ``.venv/bin/python benchmarks/bench_hostile.py [--rounds N] [--world PATH]``.
Writes ``benchmarks/results/hostile.json`` and ``benchmarks/results/hostile.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the hostile trees the tests use
sys.path.insert(0, str(ROOT / "benchmarks"))

from hostile_trees import Collect, dag_bomb, region_bomb, snapshot_of
from soak import Server

from peerhost_store.ids import ObjectId
from peerhost_store.repo import Repository
from peerhost_store.sync.client import CoordinatorClient, CoordinatorError
from peerhost_store.sync.protocol import DeltaRequest
from peerhost_store.sync.transfer import push

RESULTS = ROOT / "benchmarks" / "results"
WORLD = ROOT.parent / "shared" / "worlds" / "aviadbag-1.19-history" / "3195128"
MIB = 1 << 20


# -- the coordinator process -------------------------------------------------------------------


def reading(server: Server) -> dict[str, int]:
    """The coordinator's VmRSS, VmHWM and CPU milliseconds (it must be running)."""
    memory = server.memory()
    assert memory is not None, "the coordinator died"
    return memory


def reset_peak(server: Server) -> None:
    """Make VmHWM start again from VmRSS (Linux: ``clear_refs`` 5)."""
    Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")


# -- honest members ----------------------------------------------------------------------------


def honest_load(url: str, token: str, world: str, fencing: int, stop_at: float,
                out: str) -> None:
    """Renew alice's lease every 50 ms and push a small change every 10th round, until
    ``stop_at``; write ``[(time, kind, seconds, ok)]`` to ``out``."""
    records = []
    with httpx.Client(base_url=url, timeout=60) as http, Repository.open(Path(world)) as repo:
        alice = CoordinatorClient(http, "honest", token)
        n = 0
        while time.time() < stop_at:
            n += 1
            started = time.perf_counter()
            try:
                alice.renew(fencing)
                ok = True
            except CoordinatorError:
                ok = False
            records.append((time.time(), "renew", time.perf_counter() - started, ok))
            if n % 10 == 0:
                (repo.world / "data").mkdir(exist_ok=True)
                (repo.world / "data" / f"note-{n}.dat").write_bytes(b"a small change %d" % n)
                repo.snapshot(f"round {n}")
                started = time.perf_counter()
                try:
                    push(repo, alice, fencing=fencing)
                    ok = True
                except CoordinatorError:
                    ok = False
                records.append((time.time(), "push", time.perf_counter() - started, ok))
            time.sleep(0.05)
    Path(out).write_text(json.dumps(records))


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"count": len(values), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(p99 * 1000, 1)}


# -- the attacks -------------------------------------------------------------------------------


def timed(fn: Any) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        fn()
        answer = "200 accepted"
    except CoordinatorError as exc:
        answer = f"{exc.status} {exc.code}"
    return time.perf_counter() - started, answer


def attacks(mallory: CoordinatorClient, evil: CoordinatorClient,
            head_tree: ObjectId, rounds: int) -> list[dict[str, Any]]:
    rows = []
    dag = Collect()
    dag_root = dag_bomb(dag, levels=4, fanout=32, file_bytes=40_000)
    regions = Collect()
    region_root = region_bomb(regions, regions=10_000)
    fencing = evil.acquire("mallory-pc", 3600).fencing
    for name, objects, root in (("DAG bomb (1,048,576 paths, 40 GB)", dag, dag_root),
                                ("region bomb (10,000 regions, 40 GB)", regions, region_root)):
        snap = snapshot_of(objects, root, None)
        evil.upload(list(objects.objects.values()))
        times, answers = [], set()
        for _ in range(rounds):
            seconds, answer = timed(lambda s=snap: evil.set_head(None, s, fencing))
            times.append(seconds)
            answers.add(answer)
        rows.append({"attack": f"push {name} as the head", "stored_bytes": objects.stored_bytes,
                     "requests": rounds, "answer": ", ".join(sorted(answers)),
                     "max_seconds": round(max(times), 3),
                     "median_seconds": round(statistics.median(times), 3)})
    mallory.upload(list(dag.objects.values()))
    # A new tree per request: a refused pairing is remembered, so repeating one costs nothing.
    liars = [Collect() for _ in range(rounds)]
    liar_roots = [region_bomb(liar, regions=10_000, declared=1, seed=i + 1)
                  for i, liar in enumerate(liars)]
    for liar in liars:
        mallory.upload(list(liar.objects.values()))
    for name, objects, request_of in (
        ("objects/delta: pair the head's tree with the DAG bomb", dag,
         lambda i: mallory.upload_delta(b"x", DeltaRequest(head_tree, dag_root, ((0, 1),)))),
        (("objects/delta: pair it with a region bomb that under-declares its chunks (a new "
          "one each time)"), liars[0],
         lambda i: mallory.upload_delta(b"x", DeltaRequest(head_tree, liar_roots[i],
                                                           ((0, 1),)))),
        ("objects/delta/get: the DAG bomb as target", dag,
         lambda i: mallory.download_delta(DeltaRequest(head_tree, dag_root, ((0, 1),)))),
    ):
        times, answers = [], set()
        for i in range(rounds):
            seconds, answer = timed(lambda r=request_of, i=i: r(i))
            times.append(seconds)
            answers.add(answer)
        rows.append({"attack": name, "stored_bytes": objects.stored_bytes, "requests": rounds,
                     "answer": ", ".join(sorted(answers)), "max_seconds": round(max(times), 3),
                     "median_seconds": round(statistics.median(times), 3)})
    return rows


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="requests per attack")
    parser.add_argument("--world", type=Path, default=WORLD, help="the honest world")
    parser.add_argument("--baseline", type=float, default=5.0,
                        help="seconds of honest load before the attacks")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="phs-bench-hostile-") as tmp:
        work = Path(tmp)
        coord = Server(work / "coordinator", work / "coordinator.log")
        try:
            result = run(coord, work, args)
        finally:
            coord.stop()
    write(result, console)


def run(coord: Server, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    with httpx.Client(base_url=coord.url, timeout=120) as http:
        admin = CoordinatorClient(http, "", coord.admin_token)
        owner = CoordinatorClient(http, "honest", admin.create_session("honest"))
        alice_token = owner.add_member("alice")
        mallory = CoordinatorClient(http, "honest", owner.add_member("mallory"))
        evil_owner = CoordinatorClient(http, "evil", admin.create_session("evil"))
        evil = CoordinatorClient(http, "evil", evil_owner.add_member("mallory"))
        world = work / "alice"
        shutil.copytree(args.world, world)
        with Repository.init(world) as repo:
            repo.snapshot("v1")
            alice = CoordinatorClient(http, "honest", alice_token)
            fencing = alice.acquire("alice-pc", 3600).fencing
            push(repo, alice, fencing=fencing)
            head = repo.head()
            assert head is not None
            head_tree = repo.read_snapshot(head).root
        phases: dict[str, dict[str, Any]] = {}
        records = work / "honest.json"
        # The honest member runs in its own process for the whole run; the attacks start
        # after a baseline and take what they take.
        start = time.time()
        attack_budget = 120.0
        load = multiprocessing.get_context("spawn").Process(
            target=honest_load, args=(coord.url, alice_token, str(world), fencing,
                                      start + args.baseline + attack_budget, str(records)))
        load.start()
        time.sleep(args.baseline)
        reset_peak(coord)
        before = reading(coord)
        attack_start = time.time()
        rows = attacks(mallory, evil, head_tree, args.rounds)
        attack_end = time.time()
        after = reading(coord)
        cpu = (after["cpu_ms"] - before["cpu_ms"]) / 1000
        load.join(timeout=attack_budget + args.baseline + 120)
        honest = json.loads(records.read_text()) if records.exists() else []
        for phase, lo, hi in (("before the attacks", start, attack_start),
                              ("during the attacks", attack_start, attack_end)):
            phases[phase] = {kind: percentiles([s for t, k, s, ok in honest
                                                if k == kind and lo <= t < hi])
                             for kind in ("renew", "push")}
            phases[phase]["errors"] = sum(1 for t, _, _, ok in honest if lo <= t < hi and not ok)
    return {
        "file": "benchmarks/bench_hostile.py",
        "world": str(args.world),
        "rounds": args.rounds,
        "coordinator": {
            "rss_before_mib": round(before["VmRSS"] / MIB, 1),
            "peak_rss_during_mib": round(after["VmHWM"] / MIB, 1),
            "peak_extra_mib": round((after["VmHWM"] - before["VmRSS"]) / MIB, 1),
            "cpu_seconds_during_attacks": round(cpu, 2),
            "attack_wall_seconds": round(attack_end - attack_start, 2),
        },
        "attacks": rows,
        "honest": phases,
    }


def write(result: dict[str, Any], console: Console) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile.json").write_text(json.dumps(result, indent=2) + "\n")
    c = result["coordinator"]
    lines = ["| attack | stored | requests | answer | median s | max s |",
             "|---|---|---|---|---|---|"]
    table = Table("attack", "stored", "requests", "answer", "median s", "max s")
    for row in result["attacks"]:
        cells = [row["attack"], f"{row['stored_bytes']:,} B", str(row["requests"]),
                 row["answer"], str(row["median_seconds"]), str(row["max_seconds"])]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    summary = (f"coordinator: RSS {c['rss_before_mib']} MiB before, peak "
               f"{c['peak_rss_during_mib']} MiB during (+{c['peak_extra_mib']} MiB), "
               f"{c['cpu_seconds_during_attacks']} CPU s over {c['attack_wall_seconds']} s "
               "of attacks")
    lines += ["", summary, "",
              "| honest requests | renew p50/p99 ms | push p50/p99 ms | errors |",
              "|---|---|---|---|"]
    for phase, data in result["honest"].items():
        lines.append(f"| {phase} | {data['renew']['p50_ms']}/{data['renew']['p99_ms']} "
                     f"({data['renew']['count']}) | {data['push']['p50_ms']}/"
                     f"{data['push']['p99_ms']} ({data['push']['count']}) | {data['errors']} |")
    (RESULTS / "hostile.md").write_text("\n".join(lines) + "\n")
    console.print(table)
    for line in lines[len(result["attacks"]) + 2:]:
        console.print(line, markup=False)


if __name__ == "__main__":
    main()
