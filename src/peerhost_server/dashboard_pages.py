"""The dashboard's HTML: small, server-rendered pages (no framework, nothing fetched from
elsewhere; one inline script draws the box on a map and fills the area form, and every form
works without it). Pure: values in, text out; every value from a session is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from peerhost_store.area import Area
from peerhost_store.diff import ChunkChange, FileChange
from peerhost_store.ids import ObjectId
from peerhost_store.objects import Snapshot

from .changemap import COLOURS, LABELS, PRIORITY, state_of

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 1rem 3rem;
 line-height:1.4;color:#111}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:baseline;border-bottom:1px solid
 #ccc;margin-bottom:1rem}
header h1{font-size:1.3rem;margin:.6rem 0}
h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{text-align:left;padding:.25rem .4rem;border-bottom:1px solid #e4e4e4;vertical-align:top}
code{background:#f2f2f2;padding:0 .2rem;word-break:break-all}
.note{color:#555;font-size:.9rem}
.ok{background:#e8f5e9;border:1px solid #9c9;padding:.5rem}
.err{background:#fdecea;border:1px solid #d99;padding:.5rem}
form.inline{display:inline}
button{font:inherit;padding:.2rem .6rem;cursor:pointer}
.map{max-width:100%;overflow-x:auto}
.map svg{max-width:100%;height:auto;touch-action:none;cursor:crosshair}
.legend span{display:inline-block;margin-right:.8rem}
.legend i{display:inline-block;width:.9rem;height:.9rem;margin-right:.25rem;vertical-align:middle;
 border:1px solid #888}
fieldset{border:1px solid #ccc;margin:.6rem 0}
input[type=number]{width:7rem}
main>h2:first-child{margin-top:0}
""" + "".join(f".k-{state}{{background:{colour}}}" for state, colour in COLOURS.items())

#: The box on a map: pointer events (mouse and touch) turn into block coordinates through the
#: SVG's own transform, and fill the area form below it.
SCRIPT = """
for (const svg of document.querySelectorAll('svg.changemap[data-form]')) {
  const form = document.getElementById(svg.dataset.form);
  const sel = svg.querySelector('rect.selection');
  let start = null;
  const at = (e) => {
    const p = svg.createSVGPoint(); p.x = e.clientX; p.y = e.clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  };
  const show = (a, b) => {
    const x = Math.min(a.x, b.x), z = Math.min(a.y, b.y);
    sel.setAttribute('x', x); sel.setAttribute('y', z);
    sel.setAttribute('width', Math.abs(a.x - b.x)); sel.setAttribute('height', Math.abs(a.y - b.y));
    sel.setAttribute('visibility', 'visible');
    form.x1.value = Math.floor(x); form.z1.value = Math.floor(z);
    form.x2.value = Math.floor(Math.max(a.x, b.x)); form.z2.value = Math.floor(Math.max(a.y, b.y));
  };
  svg.addEventListener('pointerdown', (e) => {
    start = at(e); svg.setPointerCapture(e.pointerId); e.preventDefault();
  });
  svg.addEventListener('pointermove', (e) => { if (start) show(start, at(e)); });
  svg.addEventListener('pointerup', (e) => { if (start) { show(start, at(e)); start = null; } });
}
"""


@dataclass(frozen=True)
class Viewer:
    """Who looks at a page: their session, member name, role, and the form token."""

    session: str
    member: str
    role: str
    csrf: str

    @property
    def owner(self) -> bool:
        return self.role == "owner"


def layout(title: str, body: str, *, nonce: str, viewer: Viewer | None = None,
           script: bool = False) -> str:
    """A whole page."""
    who = ""
    if viewer is not None:
        as_who = "the owner" if viewer.owner else f"member {escape(viewer.member)}"
        who = (f'<span>session <a href="/s/{escape(viewer.session)}">'
               f'<b>{escape(viewer.session)}</b></a> · signed in as {as_who}</span>'
               f'<form class="inline" method="post" action="/signout">{csrf_field(viewer)}'
               f'<button type="submit">Sign out</button></form>')
    js = f'<script nonce="{nonce}">{SCRIPT}</script>' if script else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,">'
            f'<title>{escape(title)} · PeerHost</title><style nonce="{nonce}">{STYLE}</style>'
            f'</head><body><header><h1>PeerHost</h1>{who}</header><main>'
            f'<h2>{escape(title)}</h2>{body}</main>{js}</body></html>')


def csrf_field(viewer: Viewer) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(viewer.csrf)}">'


def post_button(viewer: Viewer, action: str, label: str, fields: dict[str, str] | None = None
                ) -> str:
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                     for k, v in (fields or {}).items())
    return (f'<form class="inline" method="post" action="{escape(action)}">{csrf_field(viewer)}'
            f'{hidden}<button type="submit">{escape(label)}</button></form>')


def short(oid: ObjectId | str) -> str:
    return (oid if isinstance(oid, str) else oid.hex())[:12]


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# -- pages -----------------------------------------------------------------------------------


def signin_page(csrf: str, *, nonce: str, problem: str | None = None) -> str:
    error = f'<p class="err" role="alert">{escape(problem)}</p>' if problem else ""
    body = (f"{error}<p>Sign in with your session token (the owner's, or the one the owner "
            "gave you). It is sent once, in this form; the page keeps only a session cookie.</p>"
            f'<form method="post" action="/signin"><input type="hidden" name="csrf" '
            f'value="{escape(csrf)}"><p><label for="token">Token</label><br>'
            '<input id="token" name="token" type="password" autocomplete="off" required '
            'size="60"></p><p><button type="submit">Sign in</button></p></form>')
    return layout("Sign in", body, nonce=nonce)


def message_page(title: str, text: str, *, nonce: str, viewer: Viewer | None = None,
                 ok: bool = False, extra: str = "") -> str:
    kind = "ok" if ok else "err"
    back = (f'<p><a href="/s/{escape(viewer.session)}">Back to the session</a></p>'
            if viewer else '<p><a href="/">Sign in</a></p>')
    return layout(title, f'<p class="{kind}" role="{"status" if ok else "alert"}">'
                         f'{escape(text)}</p>{extra}{back}', nonce=nonce, viewer=viewer)


@dataclass(frozen=True)
class Counts:
    """A snapshot's changes in numbers."""

    content: int = 0
    resave: int = 0
    added: int = 0
    removed: int = 0
    unknown: int = 0
    files: int = 0

    @classmethod
    def of(cls, chunks: Iterable[ChunkChange], files: int) -> Counts:
        n = dict.fromkeys(PRIORITY, 0)
        for change in chunks:
            n[state_of(change)] += 1
        return cls(n["content"], n["resave"], n["added"], n["removed"], n["unknown"], files)

    def text(self) -> str:
        parts = [f"{getattr(self, k)} {label}" for k, label in (
            ("content", "content"), ("resave", "re-saved"), ("added", "added"),
            ("removed", "removed"), ("unknown", "unclassified")) if getattr(self, k)]
        if self.files:
            parts.append(f"{self.files} files")
        return ", ".join(parts) or "nothing"


@dataclass(frozen=True)
class Overview:
    """What the session page shows."""

    members: Sequence[str]
    lease: dict[str, Any]
    head: ObjectId | None
    head_snapshot: Snapshot | None
    timeline: Sequence[tuple[ObjectId, Snapshot, Counts | None]]
    storage: dict[str, Any]


def session_page(v: Viewer, o: Overview, *, nonce: str) -> str:
    base = f"/s/{escape(v.session)}"
    parts = [_hosting(v, o), _timeline(v, o, base), _storage(v, o, base)]
    if v.owner:
        parts.append(_members(v, o, base))
    return layout(f"Session {v.session}", "".join(parts), nonce=nonce, viewer=v)


def _hosting(v: Viewer, o: Overview) -> str:
    lease = o.lease.get("lease")
    base = f"/s/{escape(v.session)}"
    if lease is None:
        host = "<p>Nobody hosts now. Start hosting with <code>phs host</code>.</p>"
    else:
        game = lease.get("game") if isinstance(lease.get("game"), dict) else {}
        address = lease.get("address")
        join = (f"<p>Join address: <code>{escape(str(address))}</code> (Minecraft: Multiplayer → "
                f"Direct Connection), or run <code>phs join</code>.</p>" if address else
                "<p>No join address published yet.</p>")
        host = (f'<p>Hosted by <b id="holder">{escape(str(lease["holder"]))}</b> (member '
                f'{escape(str(lease["member"]))}), lease {float(lease["expires_in"]):.0f} s left '
                f'(renewed while it hosts).</p>{join}')
        if game.get("version"):
            host += f"<p>Minecraft {escape(str(game['version']))}</p>"
    standby = o.lease.get("standby") or []
    host += ("<p>Standby: " + ", ".join(escape(str(s)) for s in standby) + "</p>") if standby \
        else ""
    if o.head_snapshot is not None and o.head_snapshot.game:
        g = o.head_snapshot.game
        mods: object = g.get("mods") or []
        host += (f'<p class="note">World: Minecraft {escape(str(g.get("version", "?")))}'
                 + (f", {len(mods)} mods" if isinstance(mods, list) and mods else "")
                 + "</p>")
    actions = post_button(v, f"{base}/sync", "Ask the host to sync now") if lease else ""
    if v.owner and (lease or standby):
        actions += " " + post_button(v, f"{base}/release", "Force-release the lease")
    return f"<section><h2>Hosting</h2>{host}<p>{actions}</p></section>"


def _timeline(v: Viewer, o: Overview, base: str) -> str:
    if not o.timeline:
        return "<section><h2>Snapshots</h2><p>No snapshots yet.</p></section>"
    rows = []
    for oid, snap, counts in o.timeline:
        label = short(oid) + (" (head)" if oid == o.head else "")
        action = ""
        if v.owner and oid != o.head:
            action = post_button(v, f"{base}/rollback", "Roll back to this", {"target": oid.hex()})
        size = snap.summary.get("bytes")
        rows.append(
            f'<tr><td><a href="{base}/snapshots/{oid.hex()}">{escape(label)}</a></td>'
            f"<td>{when(snap.time)}</td><td>{escape(snap.author)}@{escape(snap.host)}</td>"
            f"<td>{escape(snap.message)}</td>"
            f"<td>{escape(counts.text()) if counts else '…'}</td>"
            f"<td>{human_bytes(size) if size is not None else ''}</td><td>{action}</td></tr>")
    return ('<section><h2>Snapshots</h2><table><thead><tr><th scope="col">snapshot</th>'
            '<th scope="col">when</th><th scope="col">who</th><th scope="col">message</th>'
            '<th scope="col">chunks changed</th><th scope="col">world size</th>'
            '<th scope="col"></th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
            '<p class="note">Open a snapshot to see where it changed the world, and to roll '
            "back or inspect an area.</p></section>")


def _storage(v: Viewer, o: Overview, base: str) -> str:
    s = o.storage
    policy = s.get("policy") or {}
    text = (f"<p>Stored: {human_bytes(int(s.get('usage', 0)))} of "
            f"{human_bytes(int(s.get('quota', 0)))}.</p>")
    kept = ", ".join(f"{k.removeprefix('keep_')} {val}" for k, val in policy.items() if val)
    text += f"<p>Retention: {escape(kept) if kept else 'all history is kept'}.</p>"
    if v.owner:
        fields = "".join(
            f'<label>{name.removeprefix("keep_")} <input type="number" min="1" max="100000" '
            f'name="{name}" value="{policy.get(name) or ""}"></label> '
            for name in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly"))
        text += (f'<form method="post" action="{base}/retention">{csrf_field(v)}<fieldset>'
                 f"<legend>Retention (empty keeps all; applied by the next gc)</legend>{fields}"
                 '<button type="submit">Save</button></fieldset></form>')
    return f"<section><h2>Storage</h2>{text}</section>"


def _members(v: Viewer, o: Overview, base: str) -> str:
    rows = "".join(
        f"<tr><td>{escape(m)}</td><td>"
        + post_button(v, f"{base}/members/{escape(m)}/revoke", "Revoke") + "</td></tr>"
        for m in o.members)
    table = (f'<table><tbody>{rows}</tbody></table>' if rows else "<p>No members yet.</p>")
    invite = (f'<form method="post" action="{base}/members">{csrf_field(v)}'
              '<label for="name">Invite a member</label> <input id="name" name="name" required '
              'pattern="[A-Za-z0-9][A-Za-z0-9_-]{0,63}"> <button type="submit">Invite</button>'
              "</form>")
    return f"<section><h2>Members</h2>{table}{invite}</section>"


def invited_page(v: Viewer, name: str, token: str, url: str, *, nonce: str) -> str:
    """The new member's token, shown this once (the page is not cached)."""
    body = (f'<p class="ok" role="status">{escape(name)} is a member now. Give them this '
            "command (it holds their token, shown only this once; keep it private):</p>"
            f"<p><code>phs remote add origin {escape(url)} --session {escape(v.session)} "
            f"--token {escape(token)} -C world</code></p>"
            f'<p><a href="/s/{escape(v.session)}">Back to the session</a></p>')
    return layout("Member invited", body, nonce=nonce, viewer=v)


# -- a snapshot and its map -----------------------------------------------------------------------


def legend() -> str:
    return '<p class="legend">' + "".join(
        f'<span><i class="k-{s}"></i>{escape(LABELS[s])}</span>'
        for s in PRIORITY) + "</p>"


def snapshot_page(v: Viewer, oid: ObjectId, snap: Snapshot, has_parent: bool,
                  maps: Sequence[tuple[str, str, Counts]], files: Sequence[FileChange],
                  classified: bool, *, nonce: str, box: Area | None = None) -> str:
    """``maps``: per dimension, its SVG and counts; ``box``: the area zoomed to."""
    base = f"/s/{escape(v.session)}"
    head = (f"<p>{when(snap.time)} by {escape(snap.author)}@{escape(snap.host)}: "
            f"“{escape(snap.message)}”. ")
    if snap.parents:
        head += ("Changes from its parent " + ", ".join(
            f'<a href="{base}/snapshots/{p.hex()}">{short(p)}</a>' for p in snap.parents[:1])
            + ".</p>")
    else:
        head += "The first snapshot: everything is added.</p>"
    if not classified:
        head += ('<p class="note">Too many chunks changed to tell content from re-saves: '
                 "they show as not classified.</p>")
    sections = []
    for i, (dimension, svg, counts) in enumerate(maps):
        form_id = f"area{i}"
        tagged = svg.replace('class="changemap"', f'class="changemap" data-form="{form_id}"', 1)
        sections.append(
            f"<section><h2>{escape(dimension)}: {escape(counts.text())}</h2>"
            f'<div class="map">{tagged}</div>{legend()}'
            + area_form(base, oid, dimension, form_id, has_parent,
                        box if box is not None and box.dimension == dimension else None)
            + "</section>")
    if not maps:
        sections.append("<p>No chunk changed in this snapshot.</p>")
    if files:
        rows = "".join(f"<tr><td><code>{escape(f.path)}</code></td><td>{escape(f.status)}</td>"
                       "</tr>" for f in files[:200])
        more = f"<p class='note'>and {len(files) - 200} more</p>" if len(files) > 200 else ""
        sections.append(f"<section><h2>Files</h2><table><tbody>{rows}</tbody></table>{more}"
                        "</section>")
    return layout(f"Snapshot {short(oid)}", head + "".join(sections), nonce=nonce, viewer=v,
                  script=bool(maps))


def area_form(base: str, oid: ObjectId, dimension: str, form_id: str, has_parent: bool,
              box: Area | None = None) -> str:
    values = box.to_json() if box is not None else {}
    fields = "".join(
        f'<label>{n} <input type="number" name="{n}" required min="-30000000" max="30000000"'
        + (f' value="{values[n]}"' if n in values else "") + "></label> "
        for n in ("x1", "z1", "x2", "z2"))
    before = ('<label><input type="radio" name="to" value="parent" checked> the world before '
              "this snapshot</label> ") if has_parent else ""
    this = (f'<label><input type="radio" name="to" value="this"'
            f'{"" if has_parent else " checked"}> the world in this snapshot</label>')
    return (f'<form id="{form_id}" method="get" action="{base}/snapshots/{oid.hex()}/area">'
            f'<fieldset><legend>An area (drag a box on the map, or type block coordinates)'
            f'</legend><input type="hidden" name="dimension" value="{escape(dimension)}">'
            f'{fields}<button type="submit" formaction="{base}/snapshots/{oid.hex()}" '
            'name="zoom" value="1">Zoom to the box</button><br>'
            f"Compare the head with {before}{this} "
            '<button type="submit">Preview</button></fieldset></form>')


def area_page(v: Viewer, snapshot: ObjectId, target: ObjectId, area: Area,
              changes: Sequence[ChunkChange], svg: str, *, nonce: str) -> str:
    base = f"/s/{escape(v.session)}"
    counts = Counts.of(changes, 0)
    text = (f"<p>Rolling back <b>{escape(area.describe())}</b> (chunks {area.chunk_box[0]},"
            f"{area.chunk_box[1]} to {area.chunk_box[2]},{area.chunk_box[3]}) to snapshot "
            f'<a href="{base}/snapshots/{target.hex()}">{short(target)}</a> would change, in '
            f"the head's world: <b>{escape(counts.text())}</b>. Everything outside the box "
            "stays as it is.</p>")
    text += f'<div class="map">{svg}</div>{legend()}'
    fields = {"target": target.hex(), **{k: str(x) for k, x in area.to_json().items()}}
    if not changes:
        text += "<p>Nothing in this box differs: there is nothing to roll back.</p>"
    elif v.owner:
        text += ("<p>" + post_button(v, f"{base}/rollback", "Roll this area back", fields)
                 + ' <span class="note">(a new snapshot on top of the head; history is kept, '
                 "so it can be undone; whoever hosts is asked to take it)</span></p>")
    else:
        text += ("<p>Only the owner can roll an area back. You can ask the host to sync "
                 "first, so the newest play is in the session: "
                 + post_button(v, f"{base}/sync", "Ask the host to sync now") + "</p>")
    text += f'<p><a href="{base}/snapshots/{snapshot.hex()}">Back to the snapshot</a></p>'
    return layout("Area rollback: preview", text, nonce=nonce, viewer=v)
