"""The small soak (tests/test_soak.py) against three coordinators on one PostgreSQL schema,
their objects in one shared data folder, each request sent to one of them at random, the
third one SIGKILLed mid-run and started again: no error but the retried ones the kill
explains, no lost snapshot, stores verify clean. The full version is
``.venv/bin/python benchmarks/soak.py --pg --kill-at 40 --seconds 90``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from pgutil import fresh_schema

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from soak import SoakConfig, run_soak  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")

RESULTS = ROOT / "benchmarks" / "results" / "reliability"


def test_small_soak_three_coordinators_one_killed(tmp_path: Path) -> None:
    started = time.monotonic()
    with fresh_schema(migrate=False) as url:  # the first coordinator's --migrate applies it
        config = SoakConfig(sessions=5, readers=20, seconds=15.0, workers=2, ttl=30.0,
                            push_every=(2.0, 4.0), reader_sleep=(1.0, 2.0),
                            work=tmp_path / "soak", db=url, coordinators=3, kill_at=6.0,
                            restart_after=2.0)
        summary = run_soak(config, progress=False)
    summary["test_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak-small-pg.json").write_text(json.dumps(summary, indent=2) + "\n")

    kinds, faults = summary["kinds"], summary["faults"]
    assert summary["errors"] == 0, (summary["error_samples"], faults)
    assert summary["stuck_threads"] == 0
    # The kill happened, the coordinator came back, and requests met it down.
    assert faults["nemesis_error"] is None
    assert faults["killed_at_s"] is not None and faults["restarted_after_s"] is not None
    assert faults["broken_unexplained"] == 0
    assert faults["rerouted"] >= 1, faults  # clients did meet the killed coordinator
    assert kinds["push"]["ops"] >= 5 and kinds["pull"]["ops"] >= 40, kinds
    assert kinds["acquire"]["ops"] == config.sessions  # never lost, never taken again
    verify = summary["verify"]
    assert verify["problems"] == []
    assert verify["lost_from_log"] == verify["lost_from_chain"] == 0
    assert verify["acknowledged"] == config.sessions + kinds["push"]["ops"]
    assert verify["reader_heads_unknown"] == 0
    assert summary["server_side"]["statuses"].get("500", 0) == 0
    assert time.monotonic() - started < 60
