"""A small soak (``benchmarks/soak.py`` with 5 sessions, 20 readers, 15 s): no error, no lost
snapshot, the coordinator's memory bounded. The full soak (50 sessions, 200 readers, 180 s) is
``.venv/bin/python benchmarks/soak.py``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from soak import SoakConfig, run_soak  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")

RESULTS = ROOT / "benchmarks" / "results" / "reliability"
MiB = 1 << 20


def test_small_soak(tmp_path: Path) -> None:
    started = time.monotonic()
    config = SoakConfig(sessions=5, readers=20, seconds=15.0, workers=2, ttl=30.0,
                        push_every=(2.0, 4.0), reader_sleep=(1.0, 2.0), work=tmp_path / "soak")
    summary = run_soak(config, progress=False)
    summary["test_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak-small.json").write_text(json.dumps(summary, indent=2) + "\n")

    kinds = summary["kinds"]
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["stuck_threads"] == 0
    assert kinds["push"]["ops"] >= 5 and kinds["pull"]["ops"] >= 40, kinds
    assert kinds["acquire"]["ops"] == config.sessions  # never lost, never taken again
    verify = summary["verify"]
    assert verify["problems"] == []
    assert verify["lost_from_log"] == verify["lost_from_chain"] == 0
    assert verify["acknowledged"] == config.sessions + kinds["push"]["ops"]
    assert verify["reader_heads_unknown"] == 0
    # Memory: sampled throughout, and bounded (a short run still warms up, so no flatness
    # figure here: its heap may not grow past a generous bound).
    memory = summary["memory"]
    assert memory["samples"] >= 10
    anon = memory["RssAnon"]
    assert anon["max_mib"] < max(3 * anon["first_mib"], anon["first_mib"] + 200), anon
    assert summary["server_side"]["statuses"].get("500", 0) == 0
    assert time.monotonic() - started < 40
