"""The dashboard without a browser (in-process, starlette's TestClient): the change map's SVG
against the diff, what a member and the owner see and may do, an area rollback posted from a
preview, and the refusals shown as pages. tests/test_auth_matrix.py holds its security matrix;
tests/test_dashboard_browser.py drives it in Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_area import check_area_rollback, grief, write_chunks
from test_auth_matrix import Browser
from test_sync_support import Server, running
from worldfs_helpers import make_world

from peerhost_server.changemap import COLOURS, chunk_states, frame_of, render_svg
from peerhost_store.area import Area
from peerhost_store.diff import ChunkChange
from peerhost_store.ids import ObjectId
from peerhost_store.repo import Repository
from peerhost_store.sync.leasing import push_with_lease
from peerhost_store.sync.transfer import pull


def change(x: int, z: int, status: str, kind: str = "region", how: str | None = None
           ) -> ChunkChange:
    return ChunkChange("region/r.0.0.mca", "minecraft:overworld", kind, x, z,
                       status, how)  # type: ignore[arg-type]


def test_the_map_draws_each_chunk_where_it_is_in_its_colour() -> None:
    changes = [change(0, 0, "modified", how="content"), change(0, 0, "modified", "entities",
                                                               "resave"),
               change(1, 0, "modified", how="resave"), change(2, 0, "modified", how="resave"),
               change(-3, 5, "added"), change(7, -2, "removed"), change(4, 4, "modified")]
    states = chunk_states(changes)["minecraft:overworld"]
    assert states == {(0, 0): "content", (1, 0): "resave", (2, 0): "resave",
                      (-3, 5): "added", (7, -2): "removed", (4, 4): "unknown"}
    svg = render_svg(states, title="t <&>")
    rects = re.findall(r'<rect x="(-?\d+)" y="(-?\d+)" width="(\d+)" height="16" '
                       r'fill="(#[0-9a-f]{6})">', svg)
    # One rectangle per run of equal chunks in a row: (1,0) and (2,0) are one.
    assert sorted(rects) == sorted([("0", "0", "16", COLOURS["content"]),
                                    ("16", "0", "32", COLOURS["resave"]),
                                    ("-48", "80", "16", COLOURS["added"]),
                                    ("112", "-32", "16", COLOURS["removed"]),
                                    ("64", "64", "16", COLOURS["unknown"])])
    assert "t &lt;&amp;&gt;" in svg and "<&>" not in svg
    frame = frame_of(states)
    assert frame.x0 <= -48 and frame.x1 >= 128 and frame.z0 <= -32 and frame.z1 >= 96
    assert ">0</text>" in svg  # block coordinates on the axes
    far = render_svg({(40, 0): "content", (0, 0): "content"}, title="x")
    assert 'x1="512"' in far  # a region boundary (r.0 | r.1) is drawn


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[Server, Repository, dict[str, ObjectId], Any]]:
    world = make_world(tmp_path / "w")
    (world / "session.lock").unlink()
    write_chunks(world / "region" / "r.0.0.mca", dict.fromkeys(range(0, 1024, 3), "old"))
    write_chunks(world / "entities" / "r.0.0.mca", {0: "cow", 33: "pig"})
    repo = Repository.init(world)
    snaps = {"house": repo.snapshot("built the house", author="alice").oid}
    grief(world)
    snaps["grief"] = repo.snapshot("grief", author="mallory").oid
    with running(tmp_path / "c") as server:
        owner = server.client("s1", server.admin.create_session("s1"))
        tokens = {"owner": owner._token, "alice": owner.add_member("alice")}
        push_with_lease(repo, server.client("s1", tokens["alice"]), holder="alice-pc")
        yield server, repo, snaps, tokens
    repo.close()


def test_member_and_owner_pages(session: tuple[Server, Repository, dict[str, ObjectId], Any]
                                ) -> None:
    server, repo, snaps, tokens = session
    seen: list[Any] = []
    member, owner = Browser(server.http.app, seen), Browser(server.http.app, seen)
    member.sign_in(tokens["alice"])
    owner.sign_in(tokens["owner"])
    page = member.get("/s/s1").text
    assert "mallory" in page and "grief" in page and "Nobody hosts now" in page
    assert "content" in page and "Roll back to this" not in page and "Invite" not in page
    assert "Roll back to this" in owner.get("/s/s1").text
    grief_page = member.get(f"/s/s1/snapshots/{snaps['grief'].hex()}").text
    assert "minecraft:overworld" in grief_page and 'class="changemap" data-form="area0"' in \
        grief_page and "script nonce=" in grief_page
    svg = member.get(f"/s/s1/snapshots/{snaps['grief'].hex()}/map.svg",
                     dimension="minecraft:overworld")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert f'<rect x="0" y="0" width="16" height="16" fill="{COLOURS["content"]}">' in svg.text
    preview = f"/s/s1/snapshots/{snaps['grief'].hex()}/area"
    box = {"dimension": "minecraft:overworld", "x1": "0", "z1": "0", "x2": "31", "z2": "15"}
    text = member.get(preview, **box).text
    assert "Only the owner can roll an area back" in text and "Ask the host to sync" in text
    text = owner.get(preview, **box).text
    assert "Roll this area back" in text and "content" in text
    # Nothing to roll back in an empty corner; a box that does not read.
    assert "Nothing in this box differs" in owner.get(preview, **{**box, "x1": "5000",
                                                                  "x2": "5010"}).text
    assert owner.get(preview, **{**box, "x1": "east"}).status_code == 400
    assert owner.get("/s/s1/snapshots/" + "ab" * 32).status_code == 404
    # The owner rolls the area back from the preview's form.
    area = Area.parse("0,0:31,15")
    r = owner.post("/s/s1/rollback", {"csrf": owner.csrf, "target": snaps["house"].hex(),
                                      **{k: str(v) for k, v in area.to_json().items()}})
    assert r.status_code == 200 and "Rolled back area minecraft:overworld 0,0:31,15" in r.text
    again = owner.post("/s/s1/rollback", {"csrf": owner.csrf, "target": snaps["house"].hex(),
                                          **{k: str(v) for k, v in area.to_json().items()}})
    assert again.status_code == 409 and "nothing to roll back" in again.text
    pull(repo, server.client("s1", tokens["alice"]))
    head = repo.head()
    assert head is not None
    check_area_rollback(repo, snaps["grief"], snaps["house"], head, area)
    # Nobody hosts: asking for a sync says so.
    assert "nobody hosts" in member.post("/s/s1/sync", {"csrf": member.csrf}).text
