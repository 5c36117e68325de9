"""The dashboard in a real browser (headless Debian chromium, driven by Playwright) against a
real coordinator process on 127.0.0.1, with a real history pushed to it: sign in, see the
host change after a hand-over, open a snapshot's map and check its pixels against the diff,
drag a box and roll that area back, then check the world with the library. Screenshots are
saved in benchmarks/results/dashboard/ (docs/getting-started.md shows some of them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from browser import chromium, shoot
from playwright.sync_api import Page
from pngutil import read_png
from test_area import check_area_rollback
from test_server_uvicorn import Coordinator, free_port
from worldutil import HISTORIES, copy_world, replace_world

from peerhost_server.changemap import COLOURS
from peerhost_store.area import Area
from peerhost_store.diff import ChunkChange
from peerhost_store.repo import Repository
from peerhost_store.sync.client import CoordinatorClient
from peerhost_store.sync.leasing import push_with_lease
from peerhost_store.sync.transfer import pull

WORLD = "aviadbag-1.19-history"


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def close(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return all(abs(x - y) <= 12 for x, y in zip(a, b, strict=True))


def block_at(page: Page, block_x: float, block_z: float) -> tuple[float, float]:
    """Where block ``(x, z)`` is on the page, from the first map's viewBox (blocks)."""
    svg = page.locator("svg.changemap").first
    box = svg.bounding_box()
    assert box is not None
    vx, vz, vw, _ = map(float, (svg.get_attribute("viewBox") or "").split())
    per_block = box["width"] / vw
    return box["x"] + (block_x - vx) * per_block, box["y"] + (block_z - vz) * per_block


def colour(page: Page, chunk: tuple[int, int]) -> tuple[int, int, int]:
    """The colour the map shows at the centre of a chunk: a screenshot's pixel."""
    x, y = block_at(page, chunk[0] * 16 + 8, chunk[1] * 16 + 8)
    shot = page.screenshot(clip={"x": x - 1, "y": y - 1, "width": 3, "height": 3})
    return read_png(shot).pixel(1, 1)


def drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Drag the mouse over the first map from block ``start`` to block ``end``."""
    page.mouse.move(*block_at(page, *start))
    page.mouse.down()
    middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    page.mouse.move(*block_at(page, *middle), steps=3)
    page.mouse.move(*block_at(page, *end), steps=3)
    page.mouse.up()


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[str, dict[str, CoordinatorClient]]]:
    coord = Coordinator(tmp_path / "coordinator", free_port())
    coord.start()
    try:
        url = f"http://127.0.0.1:{coord.port}"
        with httpx.Client(base_url=url, timeout=60) as http:
            assert coord.admin_token is not None
            admin = CoordinatorClient(http, "", coord.admin_token)
            owner = CoordinatorClient(http, "friends", admin.create_session("friends"))
            clients = {"owner": owner, **{m: CoordinatorClient(http, "friends",
                                                               owner.add_member(m))
                                          for m in ("alice", "bob")}}
            yield url, clients
    finally:
        coord.stop()


def test_undo_a_griefer_in_the_browser(
        coordinator: tuple[str, dict[str, CoordinatorClient]],
        real_world: Callable[[str], Path], tmp_path: Path) -> None:
    url, c = coordinator
    source = real_world(WORLD)
    world = copy_world(source / HISTORIES[WORLD][0], tmp_path / "world")
    repo = Repository.init(world)
    repo.check_world = False
    repo.snapshot("the base, before the raid", author="alice")
    for version in HISTORIES[WORLD][1:]:
        replace_world(world, source / version)
        repo.snapshot(f"play ({version})", author="alice")
    push_with_lease(repo, c["alice"], holder="alice-pc")
    head = repo.head()
    assert head is not None
    parent = repo.read_snapshot(head).parents[0]
    changes = [ch for ch in repo.diff(parent, head) if isinstance(ch, ChunkChange)
               and ch.dimension == "minecraft:overworld"]
    region = {(ch.x, ch.z): ch for ch in changes if ch.kind == "region"}
    touched = {(ch.x, ch.z) for ch in changes}
    # A chunk whose blocks changed (content), not touched otherwise by that snapshot's other kinds.
    cx, cz = next(key for key, ch in sorted(region.items()) if ch.change == "content")
    alice_lease = c["alice"].acquire("alice-pc", 120, address="127.0.0.1:25565")

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1000, "height": 1400})
        page.goto(url + "/")
        shoot(page, "01-sign-in")
        page.fill("#token", c["owner"]._token)
        page.click("button[type=submit]")
        page.wait_for_url(url + "/s/friends")
        assert page.inner_text("#holder") == "alice-pc"
        # A hand-over: alice stops hosting, bob takes the lease.
        c["alice"].release(alice_lease.fencing)
        bob_lease = c["bob"].acquire("bob-pc", 120, address="127.0.0.1:25566")
        page.reload()
        assert page.inner_text("#holder") == "bob-pc"
        assert "127.0.0.1:25566" in page.inner_text("main")
        shoot(page, "02-session", full_page=True)

        page.click(f"a[href='/s/friends/snapshots/{head.hex()}']")
        page.locator("svg.changemap").first.wait_for()
        shoot(page, "03-snapshot-map", full_page=True)
        # A rough box around the chunk on the whole map, then zoom to it.
        drag(page, (cx * 16 - 100, cz * 16 - 100), (cx * 16 + 100, cz * 16 + 100))
        page.click("form#area0 button[name=zoom]")
        page.wait_for_url("**zoom=1**")
        page.locator("svg.changemap").first.wait_for()
        assert close(colour(page, (cx, cz)), rgb(COLOURS["content"])), colour(page, (cx, cz))
        quiet = next((x, z) for x in range(cx - 5, cx + 5) for z in range(cz - 5, cz + 5)
                     if (x, z) not in touched)
        assert close(colour(page, quiet), (255, 255, 255)), "an unchanged chunk is not blank"
        # The box: from one chunk before to one chunk after the content chunk.
        drag(page, (cx * 16 - 12, cz * 16 - 12), (cx * 16 + 28, cz * 16 + 28))
        form = page.locator("form#area0")
        corners = [int(form.locator(f"input[name={n}]").input_value())
                   for n in ("x1", "z1", "x2", "z2")]
        area = Area("minecraft:overworld", *corners)
        assert area.chunk_box == (cx - 1, cz - 1, cx + 1, cz + 1), corners
        shoot(page, "04-box-drawn", full_page=True)
        form.locator("button:has-text('Preview')").click()
        page.wait_for_url("**/area?**")
        assert "Rolling back" in page.inner_text("main")
        shoot(page, "05-area-preview", full_page=True)
        page.click("button:has-text('Roll this area back')")
        page.wait_for_selector("p.ok")
        assert "Rolled back area minecraft:overworld" in page.inner_text("main")
        shoot(page, "06-rolled-back")

    # The host (bob) is asked to take it; the world, pulled, has the old chunks in the box.
    assert c["bob"].renew(bob_lease.fencing).sync_requested
    new_head = c["owner"].head().head
    assert new_head is not None and new_head != head
    report = pull(repo, c["owner"])
    assert report.outcome == "fast-forward"
    assert check_area_rollback(repo, head, parent, new_head, area) > 0
    assert not repo.snapshot("after").created
    repo.close()
