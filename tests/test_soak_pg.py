"""The small soak (tests/test_soak.py) against three coordinators on one PostgreSQL schema,
their objects in one shared data folder or in one bucket (moto's S3 server), each request sent
to one of them at random, the third one SIGKILLed mid-run and started again: no error but the
retried ones the kill explains, no lost snapshot, stores verify clean. The full version is
``.venv/bin/python benchmarks/soak.py --pg [--s3] --kill-at 40 --seconds 90``."""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
from pgutil import fresh_schema
from s3util import s3_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from soak import SoakConfig, run_soak  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")

RESULTS = ROOT / "benchmarks" / "results" / "reliability"


@pytest.mark.parametrize("objects", ["lmdb", "s3"])
def test_small_soak_three_coordinators_one_killed(tmp_path: Path, objects: str) -> None:
    started = time.monotonic()
    # The first coordinator's --migrate applies the schema.
    with fresh_schema(migrate=False) as url, \
            (s3_server(process=True) if objects == "s3" else nullcontext()) as s3:
        config = SoakConfig(sessions=5, readers=20, seconds=15.0, workers=2, ttl=30.0,
                            push_every=(2.0, 4.0), reader_sleep=(1.0, 2.0),
                            work=tmp_path / "soak", db=url, coordinators=3, kill_at=6.0,
                            restart_after=2.0)
        if s3 is not None:
            config.objects, config.env = f"s3://{s3.new_bucket()}/phs", s3.env
        summary = run_soak(config, progress=False)
    summary["test_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "soak-small-pg.json" if objects == "lmdb" else "soak-small-pg-s3.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2) + "\n")

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
