"""The history graph of ``phs log --graph``, drawn as ``git log --graph`` draws it::

    *   reconcile (two parents)
    |\\
    | * the session's play
    * | this world's play
    |/
    * the snapshot both started from

Pure: it takes the snapshots in display order with their parents and returns one graph cell
per line; a line without a snapshot (``None``) only connects lanes.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

__all__ = ["graph", "topological"]

K = TypeVar("K", bound=Hashable)


def topological(rows: Sequence[tuple[K, Sequence[K]]]) -> list[tuple[K, Sequence[K]]]:
    """``rows`` (newest first by time) reordered so that no snapshot comes before one of its
    children: times have 1 s resolution and friends' clocks differ, so time order alone may
    put a parent first. Otherwise the order is kept."""
    waiting = {key: 0 for key, _ in rows}  # children not yet placed, per snapshot
    for _, parents in rows:
        for parent in parents:
            if parent in waiting:
                waiting[parent] += 1
    order: list[tuple[K, Sequence[K]]] = []
    pending = list(rows)
    while pending:
        i = next((i for i, (key, _) in enumerate(pending) if waiting[key] == 0), 0)
        key, parents = pending.pop(i)  # (0 on a cycle, which snapshot ids cannot form)
        order.append((key, parents))
        for parent in parents:
            if parent in waiting:
                waiting[parent] -= 1
    return order


def graph(rows: Sequence[tuple[K, Sequence[K]]]) -> list[tuple[str, K | None]]:
    """``(cell, key)`` per line for snapshots ``rows`` (``(key, parents)``, children before
    parents: :func:`topological`): ``key`` is the snapshot drawn on that line (``*``), None
    for a connecting line."""
    lanes: list[K] = []  # the snapshot each lane leads to next
    lines: list[tuple[str, K | None]] = []
    for key, parents in rows:
        if key not in lanes:
            lanes.append(key)
        col = lanes.index(key)
        joins = [i for i, lane in enumerate(lanes) if lane == key and i != col]
        if joins:  # branches that meet here: draw them coming in, then drop their lanes
            lines.append((_join(len(lanes), joins), None))
            for i in reversed(joins):
                del lanes[i]
        lines.append((_cells({2 * i: "*" if i == col else "|" for i in range(len(lanes))}), key))
        if not parents:
            del lanes[col]
            continue
        lanes[col] = parents[0]
        extra = list(parents[1:])
        if extra:  # a merge: its other parents get lanes right of it
            before = len(lanes)
            lanes[col + 1:col + 1] = extra
            lines.append((_split(before, col, len(extra)), None))
    return lines


def _cells(marks: dict[int, str]) -> str:
    """A line with ``marks`` at their positions: lanes at even columns, the lines that bend
    between two lanes at the odd column between them."""
    width = max(marks) + 1 if marks else 0
    return "".join(marks.get(i, " ") for i in range(width))


def _join(width: int, joins: list[int]) -> str:
    """Lanes from ``joins[0]`` on bend left (``/``): the joining ones into the lane the
    snapshot is on, the others to close the gap."""
    first = joins[0]
    return _cells({2 * i if i < first else 2 * i - 1: "|" if i < first else "/"
                   for i in range(width)})


def _split(width: int, col: int, extra: int) -> str:
    """Lane ``col`` opens ``extra`` lanes to its right (``\\``); the lanes after it move right."""
    marks = {2 * i: "|" for i in range(col + 1)}
    marks.update({2 * j - 1: "\\" for j in range(col + 1, width + extra)})
    return _cells(marks)
