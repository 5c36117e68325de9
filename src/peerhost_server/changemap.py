"""The map of a snapshot's changes: chunks coloured by what changed, drawn as SVG from the tree
diff's chunk changes (so its cost is the change's, not the world's), with block coordinates on
the axes and the region grid. Pure: chunk changes in, text out.

The SVG's user units are blocks (x to the right, z down, as the game's map shows them), so a
chunk ``(cx, cz)`` is the square ``cx*16, cz*16`` of side 16; ``data-x0``, ``data-z0`` and
``data-scale`` (pixels per block) let a page (or a test) turn a pixel into a block.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

from peerhost_store.area import Area
from peerhost_store.diff import ChunkChange

#: How each kind of change is drawn; the legend says it in words too (colour alone is not
#: enough for everyone).
COLOURS = {
    "content": "#d62728",  # red: blocks, entities or points of interest changed
    "added": "#2ca02c",  # green: a chunk generated or restored
    "removed": "#1f77b4",  # blue: a chunk deleted
    "unknown": "#9467bd",  # purple: changed, not classified
    "resave": "#c7c7c7",  # grey: saved again, nothing in it changed
}
LABELS = {"content": "content changed", "added": "added", "removed": "removed",
          "unknown": "changed (not classified)", "resave": "re-saved only"}
#: When one chunk has several changes (its blocks, its entities), the first of these wins.
PRIORITY = ("content", "removed", "added", "unknown", "resave")
BACKGROUND = "#ffffff"
GRID = "#444444"
WIDTH = 720  # pixels


def state_of(change: ChunkChange) -> str:
    """``content``, ``added``, ``removed``, ``unknown`` or ``resave``."""
    if change.status != "modified":
        return change.status
    return change.change or "unknown"


def chunk_states(changes: Iterable[ChunkChange]) -> dict[str, dict[tuple[int, int], str]]:
    """Per dimension, each changed chunk ``(cx, cz)`` with the state it is drawn in."""
    rank = {state: i for i, state in enumerate(PRIORITY)}
    out: dict[str, dict[tuple[int, int], str]] = {}
    for change in changes:
        chunks = out.setdefault(change.dimension, {})
        state, key = state_of(change), (change.x, change.z)
        if key not in chunks or rank[state] < rank[chunks[key]]:
            chunks[key] = state
    return out


@dataclass(frozen=True)
class Frame:
    """The blocks a map shows: ``x0..x1`` by ``z0..z1`` (multiples of 16), and its margin
    (for the axis labels), in blocks."""

    x0: int
    z0: int
    x1: int
    z1: int
    margin: float

    @property
    def view(self) -> tuple[float, float, float, float]:
        # Room for the labels left and above, and for the last ones' overhang right and below.
        return (self.x0 - self.margin, self.z0 - self.margin,
                self.x1 - self.x0 + self.margin * 1.3, self.z1 - self.z0 + self.margin * 1.3)

    @property
    def scale(self) -> float:
        """Pixels per block."""
        return WIDTH / self.view[2]


def frame_of(chunks: Iterable[tuple[int, int]], box: Area | None = None) -> Frame:
    """A frame around every chunk (and the box), two chunks of room around, at least 16
    chunks wide and tall."""
    xs, zs = [], []
    for cx, cz in chunks:
        xs.append(cx)
        zs.append(cz)
    if box is not None:
        cx1, cz1, cx2, cz2 = box.chunk_box
        xs += [cx1, cx2]
        zs += [cz1, cz2]
    if not xs:
        xs, zs = [0], [0]
    lo_x, hi_x, lo_z, hi_z = min(xs) - 2, max(xs) + 3, min(zs) - 2, max(zs) + 3
    side = max(16, hi_x - lo_x, hi_z - lo_z)
    # Square: a box drawn on it keeps its shape, and a phone fits it to the screen's width.
    lo_x -= (side - (hi_x - lo_x)) // 2
    lo_z -= (side - (hi_z - lo_z)) // 2
    return Frame(lo_x * 16, lo_z * 16, (lo_x + side) * 16, (lo_z + side) * 16, side * 16 * 0.12)


def _step(span: int) -> int:
    """A tick step in blocks (a power of two, at least a chunk) giving 4 to 8 ticks."""
    step = 16
    while span / step > 8:
        step *= 2
    return step


def _runs(chunks: dict[tuple[int, int], str]) -> list[tuple[int, int, int, str]]:
    """Rows of same-state chunks as ``(cx, cz, length, state)``: one rectangle each."""
    out: list[tuple[int, int, int, str]] = []
    for (cx, cz), state in sorted(chunks.items(), key=lambda item: (item[0][1], item[0][0])):
        if out and out[-1][1] == cz and out[-1][0] + out[-1][2] == cx and out[-1][3] == state:
            x, z, n, s = out[-1]
            out[-1] = (x, z, n + 1, s)
        else:
            out.append((cx, cz, 1, state))
    return out


def render_svg(chunks: dict[tuple[int, int], str], *, title: str, box: Area | None = None,
               frame: Frame | None = None) -> str:
    """The map of ``chunks`` (``(cx, cz) -> state``) as an SVG document; ``box`` is drawn as
    a dashed outline (an area being previewed)."""
    f = frame or frame_of(chunks, box)
    vx, vz, vw, vh = f.view
    font = f.margin * 0.26
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" class="changemap" role="img" '
         f'viewBox="{vx:g} {vz:g} {vw:g} {vh:g}" width="{WIDTH}" height="{WIDTH * vh / vw:.0f}" '
         f'data-x0="{vx:g}" data-z0="{vz:g}" data-scale="{f.scale:.6g}" '
         f'aria-label="{escape(title)}" preserveAspectRatio="xMinYMin meet">'),
        f"<title>{escape(title)}</title>",
        (f'<rect x="{f.x0}" y="{f.z0}" width="{f.x1 - f.x0}" height="{f.z1 - f.z0}" '
         f'fill="{BACKGROUND}" stroke="{GRID}" stroke-width="{f.margin * 0.02:g}"/>'),
    ]
    # Chunks outside the frame (a zoomed map) stay out of the margins.
    clip = "frame-" + hashlib.blake2b(title.encode(), digest_size=6).hexdigest()
    parts.append(f'<clipPath id="{clip}"><rect x="{f.x0}" y="{f.z0}" width="{f.x1 - f.x0}" '
                 f'height="{f.z1 - f.z0}"/></clipPath><g clip-path="url(#{clip})">')
    for cx, cz, n, state in _runs(chunks):
        parts.append(f'<rect x="{cx * 16}" y="{cz * 16}" width="{n * 16}" height="16" '
                     f'fill="{COLOURS[state]}"><title>{LABELS[state]}</title></rect>')
    parts.append("</g>")
    parts += _grid(f, font)
    if box is not None:  # the chunks it covers, which is what a rollback takes
        cx1, cz1, cx2, cz2 = box.chunk_box
        parts.append(f'<rect class="box" x="{cx1 * 16}" y="{cz1 * 16}" '
                     f'width="{(cx2 - cx1 + 1) * 16}" height="{(cz2 - cz1 + 1) * 16}" '
                     'fill="none" stroke="#000" '
                     f'stroke-width="{f.margin * 0.05:g}" stroke-dasharray="{f.margin * 0.2:g}"/>')
    parts.append('<rect class="selection" x="0" y="0" width="0" height="0" fill="#000" '
                 f'fill-opacity="0.15" stroke="#000" stroke-width="{f.margin * 0.04:g}" '
                 'visibility="hidden"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def _grid(f: Frame, font: float) -> list[str]:
    """Region boundaries (every 512 blocks) and the axes' block coordinates."""
    thin = f.margin * 0.012
    style = f'stroke="{GRID}" stroke-width="{thin * 3:g}" stroke-dasharray="{thin * 12:g}"/>'
    out = [f'<line x1="{x}" y1="{f.z0}" x2="{x}" y2="{f.z1}" {style}'
           for x in range(math.ceil(f.x0 / 512) * 512, f.x1 + 1, 512)]
    out += [f'<line x1="{f.x0}" y1="{z}" x2="{f.x1}" y2="{z}" {style}'
            for z in range(math.ceil(f.z0 / 512) * 512, f.z1 + 1, 512)]
    step = _step(f.x1 - f.x0)
    style = f'font-size="{font:g}" font-family="sans-serif" fill="#222"'
    for x in range(math.ceil(f.x0 / step) * step, f.x1 + 1, step):
        out.append(f'<line x1="{x}" y1="{f.z0 - f.margin * 0.15:g}" x2="{x}" y2="{f.z0}" '
                   f'stroke="{GRID}" stroke-width="{thin:g}"/>')
        out.append(f'<text x="{x}" y="{f.z0 - f.margin * 0.25:g}" text-anchor="middle" '
                   f'{style}>{x}</text>')
    for z in range(math.ceil(f.z0 / step) * step, f.z1 + 1, step):
        out.append(f'<line x1="{f.x0 - f.margin * 0.15:g}" y1="{z}" x2="{f.x0}" y2="{z}" '
                   f'stroke="{GRID}" stroke-width="{thin:g}"/>')
        out.append(f'<text x="{f.x0 - f.margin * 0.2:g}" y="{z}" text-anchor="end" '
                   f'dominant-baseline="middle" {style}>{z}</text>')
    out.append(f'<text x="{f.x1:g}" y="{f.z0 - f.margin * 0.7:g}" text-anchor="end" '
               f'font-size="{font * 0.8:g}" font-family="sans-serif" fill="#555">'
               "block x →, z ↓; dashed lines: region files</text>")
    return out
