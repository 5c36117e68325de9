"""NBT benchmark for issue 13: peerhost_store.nbt against amulet-nbt on real changed chunks.

The chunks are every chunk that differs between consecutive versions of the ``*-history``
worlds in ../shared/worlds (what ``phs diff`` classifies), paired by dimension and coordinates.
Measured, best of three: loading the decompressed NBT (ours; amulet-nbt 2.1.8 when installed,
with the same Java string decoder), writing it back (ours), and the whole content-vs-re-save
classification per pair, decompression included (``chunk.classify_change``; amulet-nbt's load
plus the strict tag walk PeerHost used before, when installed, but without the depth scan that
had to run before amulet-nbt saw untrusted bytes: it segfaults on very deep NBT).

Run: ``.venv/bin/python benchmarks/bench_nbt.py [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from peerhost_store import nbt
from peerhost_store.chunk import classify_change, decompress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_nbt import _amulet_classifier, _changed_pairs  # the test's own pairing


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "nbt.json")
    args = parser.parse_args()
    pairs = [(old, new) for _, old, new in _changed_pairs(ROOT.parent / "shared" / "worlds")]
    raws = [decompress(*side) for pair in pairs for side in pair]
    megabytes = sum(map(len, raws)) / 1e6

    def load_all() -> None:
        for raw in raws:  # nothing kept: millions of live objects would make the GC dominate
            nbt.load(raw)

    def dump_all() -> None:
        for raw in raws:
            tree = nbt.load(raw)
            nbt.dump(tree.root, tree.name)

    def classify_all() -> None:
        for pair in pairs:
            classify_change(*pair)

    rows: dict[str, float] = {"nbt.load": best_of(3, load_all)}
    rows["nbt.dump"] = best_of(3, dump_all) - rows["nbt.load"]
    rows["classify_change"] = best_of(3, classify_all)
    reference = _amulet_classifier()
    if reference is not None:
        import amulet_nbt

        from peerhost_store.nbt import decode_java_utf

        def amulet_load() -> None:
            for raw in raws:
                amulet_nbt.load(raw, compressed=False, little_endian=False,
                                string_decoder=decode_java_utf)

        rows["amulet_nbt.load"] = best_of(3, amulet_load)
        def amulet_classify_all() -> None:
            for pair in pairs:
                reference(*pair)

        rows["amulet classify"] = best_of(3, amulet_classify_all)
    table = Table(title=f"{len(pairs)} changed real chunk pairs, {megabytes:.0f} MB of NBT")
    for column in ("what", "total s", "ms per chunk or pair", "MB/s"):
        table.add_column(column, justify="left" if column == "what" else "right")
    results = {}
    for name, seconds in rows.items():
        count = len(pairs) if "classify" in name else len(raws)
        results[name] = {"seconds": seconds, "ms_each": seconds / count * 1e3,
                         "mb_per_s": megabytes / seconds}
        table.add_row(name, f"{seconds:.2f}", f"{seconds / count * 1e3:.3f}",
                      f"{megabytes / seconds:.0f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cores": os.cpu_count(), "pairs": len(pairs),
                                    "chunks": len(raws), "results": results}, indent=2))


if __name__ == "__main__":
    main()
