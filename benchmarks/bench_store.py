"""Store benchmarks (issue 14, the local side): snapshot, checkout, fixed cost and memory, each
set beside floors and peers measured in the same run.

For each synthesized world size (``peerhost_cli.synth``, the demo extra):

* **cold snapshot** (whole ``phs snapshot`` processes into a fresh store) alternated, round by
  round, with two floors (read every file and blake3 it; the same plus writing every byte to
  one file and fsyncing it) and with ``borg create`` and ``restic backup`` into fresh
  repositories; median of ``--rounds`` rounds. Goals: cold >= 0.7 of the durable floor
  (``floor_durable_s / cold_s``), faster than borg; store size <= borg's repository;
* **no-change snapshot** (whole process; goal < 0.25 s) and **re-snapshot after a play
  session** that changes 1% of the chunks spread over the whole world (``play_session``;
  goal < 10% of the cold median), median of ``--rounds`` sessions with different seeds;
* **checkout** (whole ``phs checkout`` into an empty folder) alternated with ``cp -r``,
  ``cp -r`` followed by an fsync of every file (``sync FILE...``) and ``restic restore``;
  goals: <= 1.3x cp -r + fsync, faster than restic;
* **push, clone, status**: a coordinator on 127.0.0.1 in this process; a full ``phs push``
  and ``phs clone`` (their peak private memory), then ``phs push`` with nothing to send and
  ``phs status`` (whole processes, median; goal < 0.25 s each);
* **peak private memory** (RssAnon, sampled every 10 ms) of snapshot, checkout, push and
  clone at every size: goal flat with world size.

borg and restic come from Debian (``apt-get install borgbackup restic``, done here when they
are missing and apt is there); without them their columns are empty. Nothing in the test suite
needs them. Worlds are cached in ``--cache`` (synthesizing 1 GiB takes minutes).

Run: ``.venv/bin/python benchmarks/bench_store.py [--sizes-mib 256 1024] [--rounds 3]``;
writes ``benchmarks/results/store.json`` and ``store.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PHS = [PYTHON, "-m", "peerhost_cli.main"]
ENV = {**os.environ, "RESTIC_PASSWORD": "bench", "BORG_PASSPHRASE": "",
       "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK":
       "yes"}
ENV.pop("PYTHONDONTWRITEBYTECODE", None)  # a player's install has its .pyc files

READ_HASH = """
import os, sys, time, blake3
sink = open(sys.argv[2], "wb") if len(sys.argv) > 2 else None
for root, dirs, files in os.walk(sys.argv[1]):
    dirs[:] = [d for d in dirs if d != ".peerhost"]
    for f in files:
        with open(os.path.join(root, f), "rb") as h:
            data = h.read()
        blake3.blake3(data).digest()
        if sink:
            sink.write(data)
if sink:
    sink.flush(); os.fsync(sink.fileno())
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Run:
    seconds: float
    private: int  # peak RssAnon, bytes
    out: str


def _peak(pid: int, peak: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return max(peak, int(line.split()[1]) * 1024)
    except OSError:
        pass
    return peak


def run(cmd: list[str], *, cwd: Path | None = None) -> Run:
    """One whole process: wall seconds from start to exit, its peak private memory."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=ENV, cwd=cwd)
        peak = 0
        while proc.poll() is None:
            peak = _peak(proc.pid, peak)
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        text, problem = out.read(), err.read()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {problem[-2000:]}")
    return Run(seconds, peak, text)


@dataclass
class Case:
    """A timed command and the untimed set-up it needs before each run."""

    name: str
    cmd: list[str]
    setup: Callable[[], None] = lambda: None


def alternate(cases: list[Case], rounds: int) -> dict[str, list[Run]]:
    """Run the cases in turn, round after round (A B C A B C ...), so that drift in the
    machine's speed touches each alike; every run is a whole process."""
    runs: dict[str, list[Run]] = {c.name: [] for c in cases}
    for i in range(rounds):
        for case in cases:
            case.setup()
            runs[case.name].append(run(case.cmd))
        log(f"    round {i + 1}: " + ", ".join(f"{c.name} {runs[c.name][-1].seconds:.2f} s"
                                             for c in cases))
    return runs


def median(runs: list[Run]) -> float:
    return round(statistics.median(r.seconds for r in runs), 3)


def peak_mib(runs: list[Run]) -> float:
    return round(max(r.private for r in runs) / 2**20, 1)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ensure_peers() -> dict[str, bool]:
    have = {tool: shutil.which(tool) is not None for tool in ("borg", "restic")}
    if not all(have.values()) and shutil.which("apt-get"):
        log("installing borgbackup and restic from Debian")
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "borgbackup", "restic"], check=False,
                       capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        have = {tool: shutil.which(tool) is not None for tool in ("borg", "restic")}
    return have


def age(world: Path) -> None:
    """Date every file an hour back, like a world last played yesterday (scan.RACY_NS)."""
    old = time.time() - 3600
    for path in [world, *world.rglob("*")]:
        os.utime(path, (old, old))


def fresh(path: Path) -> Callable[[], None]:
    def setup() -> None:
        shutil.rmtree(path, ignore_errors=True)
    return setup


def bench_size(mib: int, master: Path, work: Path, rounds: int,
               peers: dict[str, bool]) -> dict[str, Any]:
    world = work / "world"
    shutil.rmtree(world, ignore_errors=True)
    shutil.copytree(master, world)
    age(world)
    age(master)
    size = du(master)
    row: dict[str, Any] = {"world": f"synth {mib} MiB", "bytes": size}
    sink, borg_repo, restic_repo = work / "sink", work / "borg", work / "restic"

    def phs_fresh() -> None:
        shutil.rmtree(world / ".peerhost", ignore_errors=True)
        run([*PHS, "init", "-C", str(world)])

    def borg_fresh() -> None:
        shutil.rmtree(borg_repo, ignore_errors=True)
        run(["borg", "init", "-e", "none", str(borg_repo)])

    def restic_fresh() -> None:
        shutil.rmtree(restic_repo, ignore_errors=True)
        run(["restic", "-q", "-r", str(restic_repo), "init"])

    log(f"  cold snapshot, {rounds} rounds")
    cases = [Case("floor_read_hash", [PYTHON, "-c", READ_HASH, str(master)]),
             Case("floor_durable", [PYTHON, "-c", READ_HASH, str(master), str(sink)],
                  fresh(sink)),
             Case("phs_cold", [*PHS, "snapshot", "-C", str(world), "-m", "cold", "--json"],
                  phs_fresh)]
    if peers["borg"]:
        borg = f"cd {master} && exec borg create {borg_repo}::a ."
        cases.append(Case("borg_cold", ["sh", "-c", borg], borg_fresh))
    if peers["restic"]:
        cases.append(Case("restic_cold", ["restic", "-q", "-r", str(restic_repo), "backup",
                                          str(master)], restic_fresh))
    cold = alternate(cases, rounds)
    sink.unlink(missing_ok=True)
    for name, runs in cold.items():
        row[f"{name}_s"] = median(runs)
    row["cold_s"] = row.pop("phs_cold_s")
    row["cold_vs_durable_floor"] = round(row["floor_durable_s"] / row["cold_s"], 3)
    row["cold_vs_read_hash_floor"] = round(row["floor_read_hash_s"] / row["cold_s"], 3)
    row["snapshot_private_mib"] = peak_mib(cold["phs_cold"])
    row["store_bytes"] = du(world / ".peerhost")
    if peers["borg"]:
        row["cold_vs_borg"] = round(row["cold_s"] / row["borg_cold_s"], 3)
        row["borg_bytes"] = du(borg_repo)
        row["store_vs_borg"] = round(row["store_bytes"] / row["borg_bytes"], 3)
    if peers["restic"]:
        row["restic_bytes"] = du(restic_repo)

    log("  no-change snapshot and play sessions")
    again = [run([*PHS, "snapshot", "-C", str(world), "-m", "again", "--json"])
             for _ in range(max(rounds, 5))]
    row["nochange_s"] = median(again)
    from peerhost_cli.synth import play_session

    chunks = sum(1 for _ in (world / "region").glob("r.*.mca")) * 1024
    changed = max(1, chunks // 100)
    spread = []
    for seed in range(rounds):
        info = play_session(world, seed=100 + seed, edit_chunks=changed // 5,
                            resave_chunks=changed - changed // 5, near_spawn=None)
        spread.append(run([*PHS, "snapshot", "-C", str(world), "-m", "play", "--json"]))
        row["play_spread_regions"] = len(info.regions)
    row["play_spread_chunks"] = changed
    row["play_spread_s"] = median(spread)
    row["play_spread_vs_cold"] = round(row["play_spread_s"] / row["cold_s"], 3)
    row["play_spread_cached_chunks"] = json.loads(spread[-1].out)["scan"].get("cached_chunks")

    log(f"  checkout, {rounds} rounds")
    out = work / "out"
    cp_fsync = f"cp -r {master} {out} && find {out} -type f -exec sync {{}} +"
    cases = [Case("cp_r", ["cp", "-r", str(master), str(out)], fresh(out)),
             Case("cp_r_fsync", ["sh", "-c", cp_fsync], fresh(out)),
             Case("phs_checkout", [*PHS, "checkout", "-C", str(world), "head", str(out)],
                  fresh(out))]
    if peers["restic"]:
        cases.append(Case("restic_restore", ["restic", "-q", "-r", str(restic_repo), "restore",
                                             "latest", "--target", str(out)], fresh(out)))
    checkout = alternate(cases, rounds)
    shutil.rmtree(out, ignore_errors=True)
    for name, runs in checkout.items():
        row[f"{name}_s"] = median(runs)
    row["checkout_s"] = row.pop("phs_checkout_s")
    row["checkout_vs_cp_fsync"] = round(row["checkout_s"] / row["cp_r_fsync_s"], 3)
    if peers["restic"]:
        row["checkout_vs_restic"] = round(row["checkout_s"] / row["restic_restore_s"], 3)
    row["checkout_private_mib"] = peak_mib(checkout["phs_checkout"])
    row.update(bench_remote(world, work, rounds))
    shutil.rmtree(world, ignore_errors=True)
    shutil.rmtree(borg_repo, ignore_errors=True)
    shutil.rmtree(restic_repo, ignore_errors=True)
    return row


def bench_remote(world: Path, work: Path, rounds: int) -> dict[str, Any]:
    from peerhost_server.background import BackgroundCoordinator
    from peerhost_store.sync.remotes import connect

    log("  push, clone, status")
    config = work / "config"
    ENV["PHS_CONFIG_DIR"] = os.environ["PHS_CONFIG_DIR"] = str(config)
    shutil.rmtree(work / "coordinator", ignore_errors=True)
    with BackgroundCoordinator(work / "coordinator") as coord:
        with connect(coord.url, "", coord.admin_token or "") as admin:
            owner = admin.create_session("bench")
        w = str(world)
        run([*PHS, "remote", "add", "origin", coord.url, "--session", "bench", "--token", owner,
             "-C", w])
        push = run([*PHS, "push", "-C", w, "--json"])
        nothing = [run([*PHS, "push", "-C", w, "--json"]) for _ in range(max(rounds, 5))]
        status = [run([*PHS, "status", "-C", w]) for _ in range(max(rounds, 5))]
        clone_dir = work / "clone"
        shutil.rmtree(clone_dir, ignore_errors=True)
        clone = run([*PHS, "clone", coord.url, "--session", "bench", "--token", owner,
                     str(clone_dir), "--json"])
        shutil.rmtree(clone_dir, ignore_errors=True)
    shutil.rmtree(work / "coordinator", ignore_errors=True)
    return {"push_s": round(push.seconds, 3), "push_private_mib": peak_mib([push]),
            "clone_s": round(clone.seconds, 3), "clone_private_mib": peak_mib([clone]),
            "push_nothing_s": median(nothing), "status_s": median(status)}


COLUMNS = [
    ("world", "world"), ("MB", "bytes"), ("floor read+hash s", "floor_read_hash_s"),
    ("floor durable s", "floor_durable_s"), ("cold s", "cold_s"),
    ("cold/floor", "cold_vs_durable_floor"), ("borg s", "borg_cold_s"),
    ("restic s", "restic_cold_s"), ("store MiB", "store_bytes"), ("borg MiB", "borg_bytes"),
    ("no-change s", "nochange_s"), ("1% spread/cold", "play_spread_vs_cold"),
    ("cp+fsync s", "cp_r_fsync_s"), ("checkout s", "checkout_s"),
    ("checkout/cp+fsync", "checkout_vs_cp_fsync"), ("restic restore s", "restic_restore_s"),
    ("push-nothing s", "push_nothing_s"), ("status s", "status_s"),
    ("private MiB snap/co/push/clone", "memory"),
]


def cell(row: dict[str, Any], key: str) -> str:
    if key == "memory":
        return "/".join(str(row.get(f"{k}_private_mib", "-"))
                        for k in ("snapshot", "checkout", "push", "clone"))
    value = row.get(key)
    if value is None:
        return "-"
    if key == "bytes":
        return f"{value / 1e6:.0f}"
    if key.endswith("_bytes"):
        return f"{value / 2**20:.1f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, k) for _, k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "phs-bench-worlds")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "store.json")
    args = parser.parse_args()
    from peerhost_cli.synth import synthesize_world

    peers = ensure_peers()
    rows = []
    with tempfile.TemporaryDirectory(prefix="phs-bench-", dir=args.workdir) as tmp:
        for mib in args.sizes_mib:
            master = args.cache / f"synth-{mib}"
            if not (master / "level.dat").exists():
                shutil.rmtree(master, ignore_errors=True)
                log(f"synthesizing {mib} MiB into {master}")
                synthesize_world(master, seed=mib, target_bytes=mib << 20)
            log(f"synth {mib} MiB")
            rows.append(bench_size(mib, master, Path(tmp), args.rounds, peers))
    versions = {tool: subprocess.run([tool, "--version" if tool == "borg" else "version"],
                                     capture_output=True, text=True, check=False).stdout.strip()
                for tool, present in peers.items() if present}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": os.uname().nodename, "cores": os.cpu_count(),
                                    "time": int(time.time()), "rounds": args.rounds,
                                    "peers": versions, "rows": rows}, indent=2) + "\n")
    text = table(rows)
    args.out.with_suffix(".md").write_text(
        f"# bench_store ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of "
        f"{args.rounds} alternated rounds, whole processes)\n\n{text}\n")
    print(text)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
