"""Store benchmarks for issue 2: cold, no-change and play-session snapshots, checkout, RSS, size.

Each figure is measured in this run against a physical limit or a peer measured in the same run:

* cold snapshot throughput vs. "read every byte of the world and blake3 it" (target >= 1/3);
* no-change re-snapshot (target < 0.3 s at 1 GiB) and re-snapshot after a play session that
  changes 1% of chunks (target < 10% of the cold time);
* checkout time vs. ``cp -r`` of the same world (target <= 2x);
* peak RSS of the snapshot process (target < 300 MiB at 1 GiB, not growing with world size);
* store size after the cold snapshot vs. the world's size on disk.

Worlds are synthesized (deterministic), or real ones from ../shared/worlds with ``--real``.
Run: ``.venv/bin/python benchmarks/bench_store.py [--sizes-mib 256 1024] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from peerhost_cli.synth import play_session, synthesize_world

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
REAL = ROOT.parent / "shared" / "worlds"


PEAKS: dict[str, int] = {}


def _sample(pid: int, peaks: dict[str, int]) -> None:
    """Track the largest private (RssAnon) and file-backed (RssFile) resident sizes."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key = line.split(":")[0]
                if key in ("RssAnon", "RssFile"):
                    peaks[key] = max(peaks.get(key, 0), int(line.split()[1]) * 1024)
    except OSError:
        pass


def run(cmd: list[str], **kw: Any) -> tuple[float, int, str]:
    """Run a command; return (wall seconds, peak RSS in bytes, stdout).

    Peak RssAnon and RssFile (sampled every 10 ms) are left in PEAKS: RSS counts the pages of
    LMDB's memory map that were read, which are page cache (shared, reclaimable), so private
    memory is reported beside it.
    """
    PEAKS.clear()
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True, **kw)
        while proc.poll() is None:
            _sample(proc.pid, PEAKS)
            time.sleep(0.01)
        wall = time.perf_counter() - started
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed: {err}")
    rss = max(PEAKS.get("RssAnon", 0) + PEAKS.get("RssFile", 0), 0)
    return wall, rss, out


def phs(*args: str) -> tuple[float, int, dict[str, Any]]:
    wall, rss, out = run([PYTHON, "-m", "peerhost_cli.main", *args, "--json"])
    return wall, rss, json.loads(out)


LIMIT = """
import sys, os, time, blake3
t = time.perf_counter(); n = 0
sink = open(sys.argv[2], "wb") if len(sys.argv) > 2 else None
for root, dirs, files in os.walk(sys.argv[1]):
    dirs[:] = [d for d in dirs if d != ".peerhost"]
    for f in files:
        with open(os.path.join(root, f), "rb") as h:
            data = h.read()
        blake3.blake3(data).digest(); n += len(data)
        if sink:
            sink.write(data)
if sink:
    sink.flush(); os.fsync(sink.fileno())
print(time.perf_counter() - t, n)
"""


def physical_limit(world: Path, sink: Path | None = None) -> tuple[float, int]:
    """Best of 3: read every byte and blake3 it (and, with ``sink``, also write it durably)."""
    best = None
    for _ in range(3):
        _, _, out = run([PYTHON, "-c", LIMIT, str(world)] + ([str(sink)] if sink else []))
        if sink:
            sink.unlink()
        seconds, size = out.split()
        best = min(best or float(seconds), float(seconds))
    return best or 0.0, int(size)


def age(world: Path) -> None:
    """Date every file an hour back, like a world last played yesterday (see scan.RACY_NS)."""
    old = time.time() - 3600
    for path in world.rglob("*"):
        os.utime(path, (old, old))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_world(name: str, world: Path, work: Path, chunks: int | None) -> dict[str, Any]:
    age(world)
    limit_s, size = physical_limit(world)
    write_limit_s, _ = physical_limit(world, work / "sink")
    phs("init", "-C", str(world))
    cold_wall, cold_rss, cold = phs("snapshot", "-C", str(world), "-m", "cold")
    cold_anon = PEAKS.get("RssAnon", 0)
    store_bytes = du(world / ".peerhost")
    nochange_wall, _, nochange = phs("snapshot", "-C", str(world), "-m", "again")
    row: dict[str, Any] = {
        "world": name,
        "bytes": size,
        "limit_s": round(limit_s, 3),
        "limit_mb_s": round(size / limit_s / 1e6, 1),
        "cold_s": cold["seconds"],
        "cold_wall_s": round(cold_wall, 3),
        "cold_mb_s": round(size / cold["seconds"] / 1e6, 1),
        "cold_vs_limit": round(limit_s / cold["seconds"], 3),
        "write_limit_s": round(write_limit_s, 3),
        "cold_vs_write_limit": round(write_limit_s / cold["seconds"], 3),
        "peak_rss_mib": round(cold_rss / 2**20, 1),
        "peak_private_mib": round(cold_anon / 2**20, 1),
        "store_bytes": store_bytes,
        "store_vs_world": round(store_bytes / size, 3),
        "nochange_s": nochange["seconds"],
        "nochange_wall_s": round(nochange_wall, 3),
    }
    if chunks:
        # 1% of the chunks change: a fifth edited, the rest only re-saved. "near" puts them in
        # the 4 regions around spawn, where a session's players are; "spread" draws them over
        # the whole world, so nearly every region file changes (the worst case).
        changed = max(1, chunks // 100)
        for label, near in (("near", 4), ("spread", None)):
            info = play_session(world, seed=7 if near else 8, edit_chunks=changed // 5,
                                resave_chunks=changed - changed // 5, near_spawn=near)
            _, _, play = phs("snapshot", "-C", str(world), "-m", f"play {label}")
            row.update({
                f"play_{label}_changed_chunks": len(info.edited) + len(info.resaved),
                f"play_{label}_regions_touched": len(info.regions),
                f"play_{label}_s": play["seconds"],
                f"play_{label}_vs_cold": round(play["seconds"] / cold["seconds"], 3),
                f"play_{label}_new_bytes": play["new_bytes"],
            })
    checkout_wall, checkout_rss, _ = phs("checkout", "-C", str(world), "head", str(work / "checkout"))
    checkout_anon = PEAKS.get("RssAnon", 0)
    # cp -r of the checked-out world: the same bytes checkout wrote, without the store.
    cp_wall, _, _ = run(["cp", "-r", str(work / "checkout"), str(work / "cp")])
    row.update({
        "checkout_wall_s": round(checkout_wall, 3),
        "checkout_rss_mib": round(checkout_rss / 2**20, 1),
        "checkout_private_mib": round(checkout_anon / 2**20, 1),
        "cp_r_s": round(cp_wall, 3),
        "checkout_vs_cp": round(checkout_wall / cp_wall, 2),
    })
    shutil.rmtree(work / "checkout")
    shutil.rmtree(work / "cp")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--real", action="store_true", help="also run on every world in ../shared/worlds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "store.json")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="phs-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        for mib in args.sizes_mib:
            world = work / f"synth-{mib}"
            started = time.perf_counter()
            info = synthesize_world(world, seed=mib, target_bytes=mib << 20)
            print(f"synthesized {mib} MiB in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            rows.append(bench_world(f"synth {mib} MiB", world, work, info.chunks))
            shutil.rmtree(world)
        if args.real and REAL.is_dir():
            for src in sorted(p for p in REAL.iterdir() if p.is_dir()):
                world = work / src.name
                shutil.copytree(src, world)
                for p in world.rglob("*"):
                    p.chmod(p.stat().st_mode | 0o200)
                rows.append(bench_world(src.name, world, work, None))
                shutil.rmtree(world)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": os.uname().nodename, "cores": os.cpu_count(),
                                    "time": int(time.time()), "rows": rows}, indent=2))
    table = Table("world", "MB", "limit MB/s", "cold MB/s", "cold/limit", "cold/write-limit",
                  "no-change s", "1% near/cold", "1% spread/cold", "checkout/cp", "RSS MiB",
                  "private MiB", "store/world")
    for r in rows:
        table.add_row(r["world"], f"{r['bytes'] / 1e6:.0f}", str(r["limit_mb_s"]), str(r["cold_mb_s"]),
                      str(r["cold_vs_limit"]), str(r["cold_vs_write_limit"]), f"{r['nochange_s']:.3f}",
                      str(r.get("play_near_vs_cold", "-")), str(r.get("play_spread_vs_cold", "-")),
                      str(r["checkout_vs_cp"]), str(r["peak_rss_mib"]), str(r["peak_private_mib"]),
                      str(r["store_vs_world"]))
    Console(width=200).print(table)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
