"""Snapshot names as git reads them: ``head``, ``head~3``, ``head~`` (= ``head~1``), ``head^``
(the first parent), ``head^2`` (the second parent of a merge), ``3fa2c1^^``, and chains such as
``head~2^2~1``.

``~N`` follows the first parent N times; ``^N`` takes the N-th parent (``^0`` is the snapshot
itself). Parsing is pure; :func:`walk` takes the parents through a callable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

from .errors import NotFound
from .ids import ObjectId

__all__ = [
    "MAX_STEPS",
    "Revspec",
    "parse_revspec",
    "walk",
]

_STEP = re.compile(r"([~^])(\d*)")
#: The most steps one name may take: a typo of a hundred carets is refused, not walked.
MAX_STEPS = 10_000


@dataclass(frozen=True)
class Revspec:
    """A parsed name: its base (``head`` or a hex prefix, lower case) and its steps, each
    ``("~", n)`` or ``("^", n)``."""

    base: str
    steps: tuple[tuple[str, int], ...]


def parse_revspec(spec: str) -> Revspec:
    """Split ``spec`` into its base and steps.

    Raises:
        NotFound: the steps are not ``~N``/``^N`` (a name with a typo names no snapshot).
    """
    text = spec.strip().lower()
    cut = min((i for i in (text.find("~"), text.find("^")) if i >= 0), default=len(text))
    base, rest = text[:cut], text[cut:]
    steps: list[tuple[str, int]] = []
    pos = 0
    while pos < len(rest):
        match = _STEP.match(rest, pos)
        if match is None:
            raise NotFound(f"{spec!r}: after the snapshot, expected ~N or ^N (as in head~2, "
                           "head^, head^2)")
        kind, digits = match.groups()
        steps.append((kind, int(digits) if digits else 1))
        pos = match.end()
    if sum(n if kind == "~" else 1 for kind, n in steps) > MAX_STEPS:
        raise NotFound(f"{spec!r}: more than {MAX_STEPS} steps back")
    return Revspec(base, tuple(steps))


def walk(spec: str, start: ObjectId, steps: tuple[tuple[str, int], ...],
         parents: Callable[[ObjectId], tuple[ObjectId, ...]],
         shallow: Collection[ObjectId] = ()) -> ObjectId:
    """Follow ``steps`` from ``start``; ``parents`` gives a snapshot's parents; snapshots in
    ``shallow`` have their parents cut off (``gc --keep-last``).

    Raises:
        NotFound: the history is shorter than the steps, or a snapshot has fewer parents.
    """
    oid = start
    for kind, n in steps:
        if kind == "~":
            for _ in range(n):
                up = () if oid in shallow else parents(oid)
                if not up:
                    raise NotFound(f"{spec}: history is not that long")
                oid = up[0]
        elif n:
            up = () if oid in shallow else parents(oid)
            if len(up) < n:
                have = f"{len(up)} parent" + ("" if len(up) == 1 else "s")
                raise NotFound(f"{spec}: snapshot {oid.hex()[:12]} has {have}, not a ^{n}")
            oid = up[n - 1]
    return oid
