"""Delta batch sizes on the real play-session histories (``../shared/worlds/*-history``).

For each pair of consecutive versions, every chunk that changed is paired with its previous
version by (dimension, kind, chunk x, chunk z), never by path, so the 26.1 move of ``region/``
to ``dimensions/minecraft/overworld/region/`` still pairs. The changed chunks become one batch
(``make_item`` + ``encode_batch``): deltas where ``make_delta`` accepts the pair, the NBT or
the payload otherwise, all in one zstd frame. Every item is decoded and applied back and must
give the exact blob id.

Columns (KiB): the changed payloads as stored; one zstd frame per chunk (level 19, the old NBT
as a raw-content dictionary; no dictionary for a new chunk), as FACTS.md measured; our batch
with ids in it, and for a receiver that supplies the ids (``want``); FACTS.md's git thin pack
and best peer; and, with ``--measure-git``, git thin pack measured here
(``git bundle create x HEAD~1..HEAD`` after committing version A then B, every file hashed).

FACTS.md's small peer figures (rsync and git around 5 to 30 KiB) most likely left out region
files that changed without changing size: the files of all versions carry the same mtime (to
the second), so git's stat cache takes such a file for unchanged (reproduced here with
``shutil.copytree``) and rsync's quick check would skip it too. ``--measure-git`` drops git's
index before each commit so that every file is hashed.

Run: ``.venv/bin/python benchmarks/delta_sizes.py [--measure-git] [--level 19]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from peerhost_store.chunk import ChunkDecodeError, decompress
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import encode_blob
from peerhost_store.region import chunk_coords, parse_region, region_coords
from peerhost_store.sync.delta import (
    BASED_KINDS,
    DEFAULT_LEVEL,
    DeltaItem,
    apply_delta,
    decode_batch,
    encode_batch,
    make_item,
)
from peerhost_store.worldfs import region_place

WORLDS = Path(__file__).resolve().parents[2] / "shared" / "worlds"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from worldutil import HISTORIES

# FACTS.md (2026-11-30), KiB: git thin pack, and the best of rsync, git, restic and borg.
FACTS_GIT = [571, 21, 624, 761, 354, 869, 10, 1108, 5, 2962, 25, 9, 262]
FACTS_BEST = [571, 21, 624, 761, 354, 869, 10, 1108, 5, 2962, 25, 9, 8]

Key = tuple[str, str, int, int]  # dimension, kind (region/entities/poi), chunk x, chunk z
Chunk = tuple[int, bytes]  # compression, payload


def load_chunks(world: Path) -> dict[Key, Chunk]:
    """Every chunk of every region-format file of a world folder, by place and coordinates."""
    chunks: dict[Key, Chunk] = {}
    for folder, _dirs, files in os.walk(world):
        rel = Path(folder).relative_to(world).as_posix()
        place = region_place("" if rel == "." else rel)
        if place is None:
            continue
        for name in sorted(files):
            coords = region_coords(name)
            if coords is None:
                continue

            def external(
                slot: int, rx: int = coords[0], rz: int = coords[1], here: str = folder
            ) -> bytes | None:
                path = Path(here, "c.{}.{}.mcc".format(*chunk_coords(rx, rz, slot)))
                return path.read_bytes() if path.is_file() else None

            parsed = parse_region(Path(folder, name).read_bytes(), external)
            for record in parsed.chunks:
                x, z = chunk_coords(*coords, record.slot)
                chunks[(place.dimension, place.kind, x, z)] = (record.compression,
                                                               bytes(record.payload))
    return chunks


@dataclass
class PairResult:
    name: str
    changed: int = 0
    payload: int = 0
    per_chunk_zstd: int = 0
    batch_with_ids: int = 0
    batch_for_want: int = 0
    kinds: dict[int, int] = field(default_factory=dict)
    make_s: float = 0.0
    encode_s: float = 0.0
    apply_s: float = 0.0


def per_chunk_zstd(base: Chunk | None, new: Chunk) -> int:
    """One zstd frame for one chunk, level 19, the old NBT as a raw-content dictionary
    (an undecodable chunk counts its payload as is)."""
    try:
        new_raw = decompress(*new)
    except ChunkDecodeError:
        return len(new[1])
    base_raw = None
    if base is not None:
        with contextlib.suppress(ChunkDecodeError):
            base_raw = decompress(*base)
    if base_raw is None:
        return len(zstandard.ZstdCompressor(level=19).compress(new_raw))
    dictionary = zstandard.ZstdCompressionDict(base_raw, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return len(zstandard.ZstdCompressor(level=19, dict_data=dictionary).compress(new_raw))


def measure_pair(old: dict[Key, Chunk], new: dict[Key, Chunk], name: str, level: int) -> PairResult:
    result = PairResult(name)
    # Sorted keys put each region's chunks together, neighbours next to each other.
    changed = [key for key in sorted(new) if old.get(key) != new[key]]
    bases: list[Chunk | None] = [old.get(key) for key in changed]
    started = time.perf_counter()
    items: list[DeltaItem] = []
    for key, base in zip(changed, bases, strict=True):
        compression, payload = new[key]
        base_id = hash_bytes(encode_blob(base[1])) if base else None
        items.append(
            make_item(
                payload,
                compression,
                base_id=base_id,
                base_payload=base[1] if base else None,
                base_compression=base[0] if base else None,
            )
        )
    result.make_s = time.perf_counter() - started
    started = time.perf_counter()
    with_ids = encode_batch(items, level=level)
    want = [(item.new_id, item.base_id) for item in items]
    for_want = encode_batch(items, want=want, level=level)
    result.encode_s = time.perf_counter() - started
    started = time.perf_counter()
    check_round_trip(with_ids, None, items, bases, new, changed)
    check_round_trip(for_want, want, items, bases, new, changed)
    result.apply_s = (time.perf_counter() - started) / 2
    result.changed = len(changed)
    result.payload = sum(len(new[key][1]) for key in changed)
    result.per_chunk_zstd = sum(
        per_chunk_zstd(base, new[key]) for key, base in zip(changed, bases, strict=True)
    )
    result.batch_with_ids = len(with_ids)
    result.batch_for_want = len(for_want)
    for item in items:
        result.kinds[item.kind] = result.kinds.get(item.kind, 0) + 1
    return result


def check_round_trip(
    data: bytes,
    want: list[tuple[ObjectId, ObjectId | None]] | None,
    items: list[DeltaItem],
    bases: list[Chunk | None],
    new: dict[Key, Chunk],
    changed: list[Key],
) -> None:
    decoded = decode_batch(data, max_items=len(items), max_bytes=1 << 30, want=want)
    if decoded != items:
        raise RuntimeError("decode_batch did not give the items back")
    for item, base, key in zip(decoded, bases, changed, strict=True):
        blob = apply_delta(
            base[1] if base else None, item, base_compression=base[0] if base else None
        )
        if blob != encode_blob(new[key][1]) or hash_bytes(blob) != item.new_id:
            raise RuntimeError(f"chunk {key} did not round-trip")


def measure_git(world_a: Path, world_b: Path) -> int:
    """Size of ``git bundle create x HEAD~1..HEAD`` (a thin pack) after committing A then B."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "b",
            "GIT_AUTHOR_EMAIL": "b@b",
            "GIT_COMMITTER_NAME": "b",
            "GIT_COMMITTER_EMAIL": "b@b",
        }

        def git(*args: str) -> None:
            subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

        git("init", "-q", ".")
        for message, source in (("a", world_a), ("b", world_b)):
            shutil.rmtree(repo / "w", ignore_errors=True)
            shutil.copytree(source, repo / "w")
            # The versions' files share their mtimes and often their sizes, so git's stat cache
            # would take a changed region file for unchanged (as rsync's quick check does):
            # drop the index so that every file is hashed.
            (repo / ".git" / "index").unlink(missing_ok=True)
            git("add", "-A")
            git("commit", "-qm", message)
        git("bundle", "create", "x", "HEAD~1..HEAD")
        return (repo / "x").stat().st_size


def kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, help="zstd level of a batch")
    parser.add_argument("--measure-git", action="store_true", help="also measure git thin packs")
    args = parser.parse_args()
    if not WORLDS.is_dir():
        print(f"real worlds missing: {WORLDS}", file=sys.stderr)
        return 1
    rows: list[tuple[PairResult, int, int, int | None]] = []
    index = 0
    for history, versions in HISTORIES.items():
        loaded = {v: load_chunks(WORLDS / history / v) for v in versions}
        for a, b in itertools.pairwise(versions):
            name = f"{history.split('-')[0]} {a}->{b}"
            result = measure_pair(loaded[a], loaded[b], name, args.level)
            git = None
            if args.measure_git:
                git = measure_git(WORLDS / history / a, WORLDS / history / b)
            rows.append((result, FACTS_GIT[index], FACTS_BEST[index], git))
            index += 1
            print(
                f"  {name}: kinds {result.kinds}, make_item {result.make_s:.1f} s, "
                f"encode_batch x2 {result.encode_s:.1f} s, decode+apply {result.apply_s:.2f} s",
                file=sys.stderr,
            )
    print_table(rows, args.measure_git)
    return 0


def print_table(rows: list[tuple[PairResult, int, int, int | None]], with_git: bool) -> None:
    head = ["pair", "changed chunks", "as deltas", "changed payload", "zstd per chunk"]
    head += ["batch with ids", "batch for want", "FACTS git", "FACTS best peer"]
    head += ["git measured"] if with_git else []
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    sums = dict.fromkeys(["payload", "zstd", "ids", "want", "facts_git", "facts_best", "git"], 0)
    changed = deltas = beat_facts = beat_git = 0
    for result, facts_git, facts_best, git in rows:
        cells = [result.name, str(result.changed), str(sum(result.kinds.get(k, 0) for k in BASED_KINDS))]
        cells += [kib(result.payload), kib(result.per_chunk_zstd)]
        cells += [kib(result.batch_with_ids), kib(result.batch_for_want)]
        cells += [f"{facts_git:,}", f"{facts_best:,}"] + ([kib(git or 0)] if with_git else [])
        print("| " + " | ".join(cells) + " |")
        changed += result.changed
        deltas += sum(result.kinds.get(k, 0) for k in BASED_KINDS)
        beat_facts += result.batch_for_want < facts_best * 1024
        beat_git += git is not None and result.batch_for_want < git
        for key, value in zip(
            sums,
            [result.payload, result.per_chunk_zstd, result.batch_with_ids, result.batch_for_want,
             facts_git * 1024, facts_best * 1024, git or 0],
            strict=True,
        ):
            sums[key] += value
    cells = ["total", f"{changed:,}", f"{deltas:,}"]
    cells += [kib(sums[key]) for key in ("payload", "zstd", "ids", "want")]
    cells += [f"{sums['facts_git'] // 1024:,}", f"{sums['facts_best'] // 1024:,}"]
    cells += [kib(sums["git"])] if with_git else []
    print("| " + " | ".join(cells) + " |")
    print()
    print(f"batch for want below FACTS best peer on {beat_facts} of {len(rows)} pairs")
    for label, total in (("FACTS git", sums["facts_git"]), ("measured git", sums["git"])):
        if total:
            print(
                f"total vs {label}: batch for want {sums['want'] / total:.1%}, "
                f"batch with ids {sums['ids'] / total:.1%}"
            )
    if with_git:
        print(f"batch for want below measured git on {beat_git} of {len(rows)} pairs")


if __name__ == "__main__":
    raise SystemExit(main())
