"""Which snapshots a retention policy keeps, as restic's ``forget`` chooses them. Pure.

Snapshots come newest first (the caller orders them: by ``time``, and snapshots of one second
by their place in history). ``keep_last N`` keeps the N newest. ``keep_hourly N`` keeps, for the N most recent hours that have snapshots, the newest
snapshot of each hour; ``keep_daily`` and ``keep_weekly`` do the same per UTC day and ISO
week. A snapshot any rule keeps is kept. A policy without rules keeps everything.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .ids import ObjectId

__all__ = ["RetentionPolicy", "select_snapshots"]


@dataclass(frozen=True)
class RetentionPolicy:
    """How many snapshots (or hours, days, weeks with snapshots) to keep; None: no such rule."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None

    @property
    def keeps_everything(self) -> bool:
        return all(n is None for n in (self.keep_last, self.keep_hourly, self.keep_daily,
                                       self.keep_weekly))


def _hour(t: int) -> object:
    return t // 3600


def _day(t: int) -> object:
    try:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).date()
    except (OverflowError, ValueError, OSError):  # a time no calendar holds: its own day
        return ("time", t)


def _week(t: int) -> object:
    try:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).isocalendar()[:2]
    except (OverflowError, ValueError, OSError):
        return ("time", t)


def select_snapshots(ordered: Sequence[tuple[ObjectId, int]], policy: RetentionPolicy
                     ) -> set[ObjectId]:
    """The ids of the ``(id, time)`` snapshots, newest first, that ``policy`` keeps."""
    if policy.keeps_everything:
        return {oid for oid, _ in ordered}
    kept = {oid for oid, _ in ordered[: policy.keep_last or 0]}
    rules: list[tuple[int | None, Callable[[int], object]]] = [
        (policy.keep_hourly, _hour), (policy.keep_daily, _day), (policy.keep_weekly, _week)]
    for count, bucket in rules:
        if not count:
            continue
        seen: list[object] = []
        for oid, t in ordered:
            key = bucket(t)
            if key in seen:
                continue
            if len(seen) == count:
                break
            seen.append(key)
            kept.add(oid)
    return kept
