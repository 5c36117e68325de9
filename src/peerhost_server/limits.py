"""What one request, one token, one lease and one session may use (:class:`Limits`), and how
``phs serve --limit`` changes it. Pure: the HTTP edge enforces the request limits
(:mod:`peerhost_server.http_limits`), the domain the rest."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from peerhost_store.bounds import TreeLimits


@dataclass(frozen=True)
class Limits:
    """What one request, one token and one lease may use.

    Attributes:
        max_body_bytes: largest request body (413 beyond; checked on Content-Length and
            again while streaming, so a body without a length cannot exceed it either).
        max_json_bytes: largest JSON request body.
        max_response_bytes: ``objects/get`` answers stop before this many bytes of objects,
            and ``objects/delta/get`` answers before they rebuild this many (always at least
            one object); the client asks again for the rest.
        max_delta_items: items in one delta batch (413 ``too_many_items`` beyond, when the
            request's selection names more; 400 ``bad_delta`` when a batch declares more).
        max_delta_bytes: what one delta batch may decompress to (413 ``delta_too_large``
            when its frame declares more), and what a ``delta/get`` answer's stream may hold.
        max_delta_rebuild: NBT bytes the coordinator decompresses and rebuilds for one
            ``objects/delta`` request; items past it are answered as failed, not rebuilt, so a
            hostile batch cannot buy unbounded work.
        max_pairing_nodes: tree nodes one delta request may load to pair its two trees (413
            ``pairing_too_large`` beyond; the client then sends or fetches those chunks whole).
        max_pairing_chunks: chunk entries one pairing may consider (the same 413).
        body_timeout: seconds to receive a whole request body (408 beyond).
        rate: requests per second per token, refilled continuously.
        burst: requests a token may make at once (the bucket's size).
        min_ttl: shortest lease in seconds.
        max_ttl: longest lease in seconds.
        standby_window: seconds during which only the first standby may take a lease that
            was released or expired.
        max_node_bytes: largest tree node or snapshot an upload may hold (413
            ``node_too_large``); honest nodes hold at most 32 entries, a few KiB. Bounds what
            one node costs every walk that decodes it.
        quota_bytes: what one session may store (LMDB pages of live data; 507
            ``quota_exceeded`` past it).
        min_free_bytes: free disk the coordinator keeps for its own small writes (leases,
            heads): uploads that would leave less are refused with 507 ``disk_full``.
        gc_grace: seconds an uploaded object is kept though no snapshot reaches it yet (a
            push under way, an interrupted one to be resumed).
        gc_interval: seconds between the coordinator's own gc runs over every session (0:
            only when the owner asks, ``POST .../gc``).
        tree: how far a snapshot's tree may expand (every head move is checked against it);
            keep it within the clients' own bounds (the same defaults), or their pulls refuse
            what the coordinator accepted.
    """

    max_body_bytes: int = 64 << 20
    max_json_bytes: int = 64 << 10
    max_response_bytes: int = 32 << 20
    max_delta_items: int = 32768
    max_delta_bytes: int = 64 << 20
    max_delta_rebuild: int = 256 << 20
    max_pairing_nodes: int = 20_000
    max_pairing_chunks: int = 50_000
    body_timeout: float = 60.0
    rate: float = 100.0
    burst: int = 400
    min_ttl: float = 1.0
    max_ttl: float = 3600.0
    standby_window: float = 15.0
    max_node_bytes: int = 1 << 20
    quota_bytes: int = 16 << 30
    min_free_bytes: int = 64 << 20
    gc_grace: float = 24 * 3600.0
    gc_interval: float = 3600.0
    tree: TreeLimits = field(default_factory=TreeLimits)


_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}


def override_limits(limits: Limits, settings: list[str]) -> Limits:
    """``limits`` with ``NAME=VALUE`` settings applied (``phs serve --limit``): any field of
    :class:`Limits`, or ``tree.FIELD`` of its :class:`TreeLimits`; sizes take KiB, MiB, GiB
    or TiB (``quota_bytes=4GiB``).

    Raises:
        ValueError: an unknown name or a value that is not a number of the field's kind.
    """
    tree: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        name = name.strip()
        target, owner, field_name = (tree, limits.tree, name[5:]) if name.startswith("tree.") \
            else (top, limits, name)
        if not sep or field_name == "tree" or field_name not in {f.name for f in fields(owner)}:
            raise ValueError(f"{setting!r}: expected NAME=VALUE with NAME a limit "
                             "(docs/operations.md lists them)")
        target[field_name] = _number(text.strip(), type(getattr(owner, field_name)), setting)
    if tree:
        top["tree"] = replace(limits.tree, **tree)
    return replace(limits, **top)


def _number(text: str, kind: type, setting: str) -> int | float:
    digits = text.rstrip("kKmMgGtTiIbB")
    unit = _UNITS.get(text[len(digits):].lower())
    try:
        value = float(digits) * unit if unit is not None else None
    except ValueError:
        value = None
    if value is None or value < 0 or (kind is int and value != int(value)):
        raise ValueError(f"{setting!r}: not a {'whole ' if kind is int else ''}number")
    return int(value) if kind is int else value
