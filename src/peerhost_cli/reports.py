"""How push, pull and clone results are shown: one line of text, or JSON with ``--json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .common import short
from .output import err, human_bytes, out

if TYPE_CHECKING:
    from peerhost_store.ids import ObjectId
    from peerhost_store.sync.client import CoordinatorClient
    from peerhost_store.sync.remotes import Remote
    from peerhost_store.sync.reports import PullReport, PushReport


def wire_json(client: CoordinatorClient) -> dict[str, int]:
    """What ``client`` put on the wire, for reports."""
    s = client.stats
    return {"requests": s.requests, "bytes_sent": s.sent, "bytes_received": s.received,
            "bytes_total": s.sent + s.received}


def chunk_counts(report: PushReport | PullReport) -> dict[str, int]:
    """How chunk payloads travelled: ``chunks_whole``, ``chunks_delta``, ``chunks_raw``,
    ``delta_bytes`` and ``fallbacks`` (see ``sync.reports.ChunkCounts``)."""
    return report.counts()


def _hex(oid: ObjectId | None) -> str | None:
    return None if oid is None else oid.hex()


def _wire_text(wire: dict[str, int]) -> str:
    return (f"{human_bytes(wire['bytes_total'])} on the wire in {wire['requests']} requests "
            f"({human_bytes(wire['bytes_sent'])} up, {human_bytes(wire['bytes_received'])} down)")


def chunks_text(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    chunks = ", ".join(f"{k.removeprefix('chunks_')} {v}" for k, v in sorted(counts.items())
                       if k.startswith("chunks_"))
    extra = []
    if "delta_bytes" in counts:
        extra.append(f"{human_bytes(counts['delta_bytes'])} of delta batches")
    if counts.get("fallbacks"):
        extra.append(f"{counts['fallbacks']} sent whole after a failed delta")
    return "; chunks: " + ", ".join(filter(None, [chunks, *extra]))


def push_json(remote: Remote, report: PushReport, wire: dict[str, int],
              lease: dict[str, Any] | None) -> dict[str, Any]:
    """``lease``: the one the push ran under; None for a push with nothing to send."""
    return {
        "remote": remote.name, "session": remote.session, "head": report.head.hex(),
        "old_head": _hex(report.old_head), "up_to_date": report.up_to_date,
        "objects_sent": report.objects_sent, "object_bytes": report.object_bytes,
        "objects_new": report.objects_new, "checked": report.checked,
        "chunks": chunk_counts(report), "wire": wire, "lease": lease,
    }


def pull_json(remote: Remote, report: PullReport, wire: dict[str, int]) -> dict[str, Any]:
    restored = report.restored
    return {
        "remote": remote.name, "session": remote.session, "outcome": report.outcome,
        "remote_head": _hex(report.remote), "head": _hex(report.head),
        "safety_snapshot": _hex(report.safety), "objects_received": report.objects_received,
        "object_bytes": report.object_bytes, "chunks": chunk_counts(report),
        "restored": None if restored is None else {
            "written": restored.written, "removed": restored.removed,
            "bytes_written": restored.bytes_written, "warnings": restored.warnings},
        "wire": wire,
    }


def print_push(remote: Remote, report: PushReport, wire: dict[str, int],
               lease: dict[str, Any] | None) -> None:
    where = f"{remote.name} (session {remote.session})"
    if report.up_to_date or lease is None:
        out.line(f"{where} already has {short(report.head)}; nothing to send. {_wire_text(wire)}")
        return
    out.line(f"pushed {short(report.head)} to {where}: {report.objects_sent} objects "
             f"({human_bytes(report.object_bytes)}) sent, {report.objects_new} new there"
             f"{chunks_text(chunk_counts(report))}; {_wire_text(wire)}")
    if lease["temporary"]:
        out.line(f"(took lease {lease['fencing']} as {lease['holder']} for the push and "
                 "released it)")
    if lease["sync_requested"]:
        out.line("someone asked for a sync while this push ran: snapshot and push again")


def print_pull(remote: Remote, report: PullReport, wire: dict[str, int]) -> None:
    for warning in report.restored.warnings if report.restored else []:
        err.line(f"warning: {warning}")
    if report.safety is not None:
        out.line(f"unsnapshotted changes were saved first as snapshot {short(report.safety)}")
    got = (f"{report.objects_received} objects ({human_bytes(report.object_bytes)}) received"
           f"{chunks_text(chunk_counts(report))}")
    text = {
        "empty": f"session {remote.session} has no snapshot yet",
        "up-to-date": f"up to date with {remote.name} at {short(report.head)}; {got}",
        "ahead": (f"local head {short(report.head)} already descends from the session head "
                  f"{short(report.remote)} (phs push publishes it); {got}"),
    }.get(report.outcome)
    if text is None:
        r = report.restored
        text = (f"fast-forward to {short(report.head)}: {got}; "
                + (f"{r.written} files written ({human_bytes(r.bytes_written)}), {r.removed} removed"
                   if r else "world unchanged"))
    out.line(f"{text}; {_wire_text(wire)}")
