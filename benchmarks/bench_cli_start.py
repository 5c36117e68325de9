"""How long ``phs`` takes as a whole process: ``phs --help``, ``phs log``, ``phs status``,
``phs push`` with nothing to send and a ``phs snapshot`` of an unchanged world (issue 13:
``--help`` and ``status`` under 0.3 s; issue 14: status, push and snapshot under 0.25 s on a
1 GiB world: ``--synth-mib 1024``).

``status`` runs against a coordinator served in this process on 127.0.0.1, in a copy of a real
world (``--world``, default aviadbag-1.18.2-initial from ../shared/worlds) that was snapshotted
and pushed, so it does what a player's ``phs status`` does: read the remote, ask the
coordinator, look at the live world through the stat cache. ``--synth-mib N`` synthesizes a
world of about N MiB instead. Each command runs ``--runs`` times
after one warm-up; the median wall time is printed (and written to results/cli_start.json).

``--src DIR`` puts another source tree first on ``PYTHONPATH`` (e.g. an exported older commit:
``git archive COMMIT src | tar -x -C /tmp/base``), to compare before and after on one machine.
Whole-process figures from outside are also easy to take with farm-bench or hyperfine:
``farm-bench -n 20 -- .venv/bin/phs status -C WORLD``.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORLDS = ROOT.parent / "shared" / "worlds"


def run_phs(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "peerhost_cli.main", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"phs {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--world", type=Path, default=WORLDS / "aviadbag-1.18.2-initial")
    parser.add_argument("--synth-mib", type=int, default=0,
                        help="synthesize a world of about this many MiB instead of --world")
    parser.add_argument("--src", type=Path, default=None,
                        help="a source tree to run instead of this checkout's src/")
    args = parser.parse_args()
    from peerhost_server.background import BackgroundCoordinator

    # A player's install has its .pyc files (pip compiles them); without them every run
    # compiles phs's sources again (~40 ms), which is not what a player waits for.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="phs-bench-start-") as tmp:
        env["PHS_CONFIG_DIR"] = os.environ["PHS_CONFIG_DIR"] = str(Path(tmp) / "config")
        world = Path(tmp) / "world"
        if args.synth_mib:
            from peerhost_cli import synth

            synth.synthesize_world(world, seed=20261207, target_bytes=args.synth_mib << 20,
                                   dimensions=False)
        else:
            shutil.copytree(args.world, world, ignore=shutil.ignore_patterns(".peerhost"))
        old = time.time() - 3600  # past the stat cache's 2 s racy window
        for path in world.rglob("*"):
            os.utime(path, (old, old))
        with BackgroundCoordinator(Path(tmp) / "coordinator") as coord:
            from peerhost_store.sync.remotes import connect

            with connect(coord.url, "", coord.admin_token or "") as admin:
                owner = admin.create_session("bench")
            w = str(world)
            if args.src is not None:
                env["PYTHONPATH"] = str(args.src.resolve())
            # Set up by the code measured: an older phs may not read a newer one's snapshots.
            for argv in (["init", "-C", w], ["snapshot", "-C", w, "--json"],
                         ["remote", "add", "origin", coord.url, "--session", "bench",
                          "--token", owner, "-C", w],
                         ["push", "-C", w, "--json"]):
                run_phs(argv, env)
            if hasattr(os, "sync"):  # the world just written: no writeback under the timings
                os.sync()
            results = {}
            for name, argv in (("--help", ["--help"]), ("log", ["log", "-C", w, "-n", "5"]),
                               ("status", ["status", "-C", w]),
                               ("push", ["push", "-C", w]),  # nothing to send
                               ("snapshot", ["snapshot", "-C", w])):  # nothing changed
                run_phs(argv, env)  # warm-up: page cache, .pyc files
                times = [run_phs(argv, env) for _ in range(args.runs)]
                results[name] = {"median": statistics.median(times), "min": min(times),
                                 "max": max(times), "runs": len(times)}
                print(f"phs {name:8} median {results[name]['median'] * 1000:6.0f} ms  "
                      f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}, "
                      f"{len(times)} runs)", flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli_start.json").write_text(json.dumps(
        {"src": str(args.src or ROOT / "src"),
         "world": f"synthesized {args.synth_mib} MiB" if args.synth_mib else str(args.world),
         "results": results},
        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
