"""The phs command line: JSON output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from worldfs_helpers import make_world, refuse_writes_to

from peerhost_cli.main import main


def phs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_workflow_with_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = make_world(tmp_path / "w")
    w = str(world)
    assert phs(capsys, "init", "-C", w)[0] == 0
    code, out, _ = phs(capsys, "snapshot", "-C", w, "-m", "first", "--json")
    first = json.loads(out)
    assert code == 0 and first["created"] and len(first["id"]) == 64 and len(first["root"]) == 64
    (world / "level.dat").write_bytes(b"changed")
    code, out, _ = phs(capsys, "diff", "-C", w, "--json")
    assert code == 0
    assert json.loads(out)["changes"] == [
        {"type": "file", "path": "level.dat", "status": "modified", "kind": "file",
         "old_size": 24, "new_size": 7}
    ]
    second = json.loads(phs(capsys, "snapshot", "-C", w, "-m", "second", "--json")[1])
    log = json.loads(phs(capsys, "log", "-C", w, "--json")[1])
    assert [s["message"] for s in log] == ["second", "first"]
    stat = json.loads(phs(capsys, "diff", "-C", w, first["id"][:8], second["id"][:8], "--stat", "--json")[1])
    assert stat == {"totals": {"files_modified": 1}, "changes": []}
    code, out, _ = phs(capsys, "checkout", "-C", w, "head~1", str(tmp_path / "co"), "--json")
    assert code == 0 and json.loads(out)["written"] == 1
    rollback = json.loads(phs(capsys, "rollback", "-C", w, "head~1", "--json")[1])
    assert rollback["safety_snapshot"] is None and (world / "level.dat").read_bytes() != b"changed"
    restore = json.loads(phs(capsys, "restore", "-C", w, second["id"], "--json")[1])
    assert restore["written"] == 1 and (world / "level.dat").read_bytes() == b"changed"
    assert json.loads(phs(capsys, "verify", "-C", w, "--json")[1])["ok"] is True
    gc = json.loads(phs(capsys, "gc", "-C", w, "--keep-last", "1", "--json")[1])
    assert gc["kept_snapshots"] == 1
    code, out, _ = phs(capsys, "log", "-C", w)
    assert code == 0 and "rollback to" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["log"], 3, "no PeerHost store"),
        (["diff", "nothex"], 3, "not a snapshot id"),
        (["diff", "head~5"], 3, "history is not that long"),
        (["checkout", "head", "{world}"], 1, "not an empty folder"),
    ],
)
def test_errors_are_one_line_with_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    world = make_world(tmp_path / "w")
    if args != ["log"]:
        phs(capsys, "init", "-C", str(world))
        phs(capsys, "snapshot", "-C", str(world))
    got, _, err = phs(capsys, *[a.format(world=world) for a in args], "-C", str(world))
    assert got == code
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_usage_errors_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "peerhost_cli.main", "frobnicate"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2


def test_verify_exit_code_on_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = make_world(tmp_path / "w")
    phs(capsys, "init", "-C", str(world))
    phs(capsys, "snapshot", "-C", str(world))
    from peerhost_store.repo import Repository
    from peerhost_store.store import Update

    with Repository.open(world) as repo:
        root = repo.read_snapshot(repo.resolve("head")).root
        repo.store.apply(Update(delete_objects=[root]))
    code, _, err = phs(capsys, "verify", "-C", str(world))
    assert code == 4 and "missing object" in err


def test_a_failed_rollback_says_what_failed_and_both_ways_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path / "w")
    w = str(world)
    phs(capsys, "init", "-C", w)
    first = json.loads(phs(capsys, "snapshot", "-C", w, "--json")[1])["id"]
    (world / "level.dat").write_bytes(b"v2")
    before = json.loads(phs(capsys, "snapshot", "-C", w, "--json")[1])["id"]
    refuse_writes_to(monkeypatch, "level.dat")
    code, _, err = phs(capsys, "rollback", "-C", w, "head~1")
    monkeypatch.undo()
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "Permission denied" in err and str(world / "level.dat") in err, err
    assert f"phs rollback {first[:12]}" in err and "phs restore --abort" in err, err
    (world / "level.dat").write_bytes(b"played after the failed rollback")
    code, out, err = phs(capsys, "snapshot", "-C", w, "--json")
    assert code == 0 and json.loads(out)["created"], "the play is snapshotted"
    assert err.count("\n") == 1 and "was not finished" in err and "phs restore --abort" in err, err
    assert (world / "level.dat").read_bytes() == b"played after the failed rollback"
    code, out, err = phs(capsys, "restore", "-C", w, "--abort", "--json")
    assert code == 0 and json.loads(out)["head"] == json.loads(out)["kept"], out
    assert (world / "level.dat").read_bytes() == b"played after the failed rollback"
    code, _, err = phs(capsys, "restore", "-C", w, "--abort")
    assert code == 3 and "no interrupted restore" in err
    assert before in {e["id"] for e in json.loads(phs(capsys, "log", "-C", w, "--json")[1])}


def test_the_undo_hint_of_a_rollback_undoes_it(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    world = make_world(tmp_path / "w")
    w = str(world)
    phs(capsys, "init", "-C", w)
    phs(capsys, "snapshot", "-C", w)
    (world / "level.dat").write_bytes(b"v2")
    phs(capsys, "snapshot", "-C", w)
    code, out, _ = phs(capsys, "rollback", "-C", w, "head~1")
    assert code == 0 and (world / "level.dat").read_bytes() != b"v2"
    hint = out.split("undo with: ", 1)[1].split(")", 1)[0].split()
    assert hint[:2] == ["phs", "rollback"], out
    assert phs(capsys, "rollback", "-C", w, hint[2])[0] == 0
    assert (world / "level.dat").read_bytes() == b"v2", f"{' '.join(hint)} did not undo it"


def test_gc_dry_run_and_sizes_in_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    world = make_world(tmp_path / "w")
    w = str(world)
    phs(capsys, "init", "-C", w)
    for i in range(3):
        (world / "big.dat").write_bytes(os.urandom(1 << 20))
        phs(capsys, "snapshot", "-C", w, "-m", f"v{i}")
    data = world / ".peerhost" / "store" / "data.mdb"
    size = data.stat().st_size
    code, out, _ = phs(capsys, "gc", "-C", w, "--keep-last", "1", "--dry-run")
    assert code == 0 and "gc (dry run): kept 1 snapshots" in out and "would delete" in out
    assert f"store file: {size:,} bytes; nothing was changed" in out
    dry = json.loads(phs(capsys, "gc", "-C", w, "--keep-last", "1", "--dry-run", "--json")[1])
    assert dry["dry_run"] and dry["deleted_bytes"] > 2 << 20 and data.stat().st_size == size
    assert len(json.loads(phs(capsys, "log", "-C", w, "--json")[1])) == 3
    code, out, _ = phs(capsys, "gc", "-C", w, "--keep-last", "1")
    assert code == 0 and f"({dry['deleted_bytes']:,} bytes)" in out
    assert f"store file: {size:,} -> {data.stat().st_size:,} bytes (compacted)" in out
    assert data.stat().st_size < size - (2 << 20)
    assert json.loads(phs(capsys, "verify", "-C", w, "--json")[1])["ok"] is True
