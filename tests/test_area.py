"""Area and player restore and rollback (peerhost_store.area, Repository.restore/rollback with
``only``), and the chunk-level log of an area: on crafted worlds and on the real histories in
../shared/worlds. A rollback's tree must be what a scan of the restored world gives (invariant 5),
chunks outside the box must keep their payload ids, chunks inside must be the old ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from worldfs_helpers import make_world
from worldutil import HISTORIES, copy_world, replace_world

from peerhost_store.area import (
    Area,
    AreaError,
    GraftRefused,
    Player,
    dimension_folders,
    lookup_paths,
    player_from_usercache,
)
from peerhost_store.diff import ChunkChange
from peerhost_store.ids import ObjectId, hash_bytes
from peerhost_store.objects import ChunkEntry, EntryKind, Snapshot, encode_snapshot
from peerhost_store.region import ChunkRecord, chunk_coords, region_coords, write_region
from peerhost_store.repo import NothingToRollBack, Repository
from peerhost_store.store import Update
from peerhost_store.tree import iter_region, iter_tree
from peerhost_store.worldfs import region_place
from peerhost_store.writer import ObjectWriter

Chunks = dict[tuple[str, int], ChunkEntry]


def all_chunks(repo: Repository, root: ObjectId) -> Chunks:
    out: Chunks = {}
    for path, entry in iter_tree(repo.store.objects, root):
        if entry.kind is EntryKind.REGION:
            for chunk in iter_region(repo.store.objects, entry.oid):
                out[path, chunk.slot] = chunk
    return out


def plain_files(repo: Repository, root: ObjectId) -> dict[str, ObjectId]:
    return {path: e.oid for path, e in iter_tree(repo.store.objects, root)
            if e.kind is EntryKind.FILE}


def inside(area: Area, path: str, slot: int) -> bool:
    folder, _, name = path.rpartition("/")
    place, coords = region_place(folder), region_coords(name)
    if place is None or coords is None or place.dimension != area.dimension:
        return False
    return area.contains_chunk(*chunk_coords(*coords, slot))


def check_area_rollback(repo: Repository, before: ObjectId, source: ObjectId,
                        after: ObjectId, area: Area) -> int:
    """Chunks in the box are ``source``'s, the rest ``before``'s; files are ``before``'s.
    Returns how many chunks the box took from ``source``."""
    old, new, result = (all_chunks(repo, repo.read_snapshot(s).root)
                        for s in (before, source, after))
    taken = 0
    for key in old.keys() | new.keys() | result.keys():
        want = new.get(key) if inside(area, *key) else old.get(key)
        assert result.get(key) == want, key
        taken += inside(area, *key) and new.get(key) != old.get(key)
    assert plain_files(repo, repo.read_snapshot(after).root) == \
        plain_files(repo, repo.read_snapshot(before).root)
    return taken


# -- the parts ---------------------------------------------------------------------------------


def test_an_area_covers_the_chunks_it_overlaps_in_every_folder_of_its_dimension() -> None:
    area = Area.parse("-17,5:16,20")  # corners in blocks: chunks -2..1 by 0..1
    assert area.chunk_box == (-2, 0, 1, 1)
    files = area.region_files()
    assert set(files) == {f"{base}{kind}/r.{rx}.0.mca"
                          for base in ("", "dimensions/minecraft/overworld/")
                          for kind in ("entities", "poi", "region") for rx in (-1, 0)}
    assert files["region/r.-1.0.mca"] == {30, 31, 62, 63}
    assert files["region/r.0.0.mca"] == {0, 1, 32, 33}
    assert Area.parse("5,5:-5,-5", "nether") == Area("minecraft:the_nether", -5, -5, 5, 5)
    assert dimension_folders("minecraft:the_end") == ["DIM1", "dimensions/minecraft/the_end"]
    assert dimension_folders("mymod:deep/mine") == ["dimensions/mymod/deep/mine"]
    assert dimension_folders("DIM7") == ["DIM7"]
    assert Area.from_json(area.to_json()) == area
    for box, dimension in [("1,2,3", "overworld"), ("a,b:c,d", "overworld"),
                           ("0,0:1,1", "Over World"), ("0,0:40000000,1", "overworld"),
                           ("0,0:20000,20000", "overworld")]:
        with pytest.raises(AreaError):
            Area.parse(box, dimension)
    with pytest.raises(AreaError):
        Area.from_json({"dimension": "overworld", "x1": 0, "z1": 0, "x2": "9", "z2": 0})


def test_a_player_is_found_by_uuid_or_in_the_usercache() -> None:
    uuid = "069a79f4-44e9-4726-a5be-fca90e38aaf5"
    assert Player.parse(uuid.replace("-", "").upper()) == Player(uuid)
    cache = json.dumps([{"name": "Notch", "uuid": uuid, "expiresOn": "x"}]).encode()
    assert player_from_usercache("notch", cache) == Player(uuid)
    assert player_from_usercache("jeb_", cache) is None
    assert player_from_usercache("notch", b"{not json") is None
    with pytest.raises(AreaError):
        Player.parse("Notch")


# -- a crafted world ---------------------------------------------------------------------------


def payload(tag: str) -> bytes:
    import zlib

    return zlib.compress(b"\x0a\x00\x00\x08\x00\x03tag" + len(tag).to_bytes(2, "big")
                         + tag.encode() + b"\x00")


def write_chunks(path: Path, chunks: dict[int, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(write_region([ChunkRecord(slot, 2, payload(tag), 1000 + slot, False)
                                   for slot, tag in sorted(chunks.items())])[0])


@pytest.fixture
def world(tmp_path: Path) -> Repository:
    world = make_world(tmp_path / "w")
    (world / "session.lock").unlink()
    write_chunks(world / "region" / "r.0.0.mca", dict.fromkeys(range(0, 1024, 3), "old"))
    write_chunks(world / "region" / "r.-1.0.mca", {31: "old", 63: "old"})
    write_chunks(world / "entities" / "r.0.0.mca", {0: "cow", 33: "pig"})
    (world / "playerdata" / f"{UUID}.dat").write_bytes(b"old inventory")
    (world / "stats").mkdir()
    (world / "stats" / f"{UUID}.json").write_text("{}")
    repo = Repository.init(world)
    return repo


UUID = "069a79f4-44e9-4726-a5be-fca90e38aaf5"


def grief(world: Path) -> None:
    write_chunks(world / "region" / "r.0.0.mca", dict.fromkeys(range(0, 1024, 2), "griefed"))
    write_chunks(world / "region" / "r.-1.0.mca", {31: "griefed"})
    write_chunks(world / "entities" / "r.0.0.mca", {1: "zombie"})
    write_chunks(world / "region" / "r.0.1.mca", {0: "new"})
    (world / "playerdata" / f"{UUID}.dat").write_bytes(b"emptied")
    (world / "level.dat").write_bytes(b"changed level")


def test_area_rollback_takes_the_box_from_the_old_snapshot_and_keeps_the_rest(
        world: Repository) -> None:
    old = world.snapshot("before").oid
    grief(world.world)
    griefed = world.snapshot("grief").oid
    area = Area.parse("-16,0:31,31")  # chunks -1..1 by 0..1, across two region files
    result = world.rollback(old, only=area)
    assert world.read_snapshot(result.oid).parents == (griefed,)
    assert world.read_snapshot(result.oid).message == (
        f"rollback of {area.describe()} to {old.hex()[:12]}")
    assert check_area_rollback(world, griefed, old, result.oid, area) > 0
    # The restored world snapshots to the rollback's tree (invariant 5): nothing changed.
    again = world.snapshot("after")
    assert not again.created and again.oid == result.oid
    # Undo: a rollback to the head before it.
    undo = world.rollback(result.previous or griefed, only=area)
    assert world.read_snapshot(undo.oid).root == world.read_snapshot(griefed).root
    with pytest.raises(NothingToRollBack):
        world.rollback(griefed, only=area)


def test_area_restore_keeps_unsnapshotted_play_outside_the_box(world: Repository) -> None:
    old = world.snapshot("before").oid
    grief(world.world)
    head = world.snapshot("grief").oid
    (world.world / "level.dat").write_bytes(b"play after the grief")
    area = Area.parse("0,0:15,15")
    safety, _ = world.restore(old, only=area)
    assert safety is not None and world.head() == safety  # the play was kept first
    assert world.read_snapshot(safety).parents == (head,)
    assert (world.world / "level.dat").read_bytes() == b"play after the grief"
    live = world.snapshot("look", allow_empty=False)
    assert live.created
    check_area_rollback(world, safety, old, live.oid, area)


def test_an_area_rollback_writes_the_nodes_of_the_area_only(world: Repository) -> None:
    old = world.snapshot("before").oid
    grief(world.world)
    head = world.snapshot("grief").oid
    area = Area.parse("0,0:0,0")  # one chunk
    writer = ObjectWriter(world.store)
    Area.graft(area, world.store.objects, writer.add, world.read_snapshot(head).root,
               world.read_snapshot(old).root)
    # In region/r.0.0.mca a leaf and its two index nodes, and the region folder; in
    # entities/r.0.0.mca (two chunks: its root is a leaf) that leaf and the entities folder;
    # the root. Nothing else of either tree.
    assert len(writer.take()) == 7


def test_player_restore_takes_that_players_files_only(world: Repository) -> None:
    old = world.snapshot("before").oid
    grief(world.world)
    world.snapshot("grief")
    player = Player.parse(UUID)
    world.restore(old, only=player)
    assert (world.world / "playerdata" / f"{UUID}.dat").read_bytes() == b"old inventory"
    assert (world.world / "level.dat").read_bytes() == b"changed level"
    (world.world / "server.properties").write_text("")
    assert world.find_player(UUID) == player
    with pytest.raises(AreaError, match="usercache"):
        world.find_player("Notch")


def test_a_damaged_region_in_the_box_is_refused_before_anything_moves(world: Repository) -> None:
    old = world.snapshot("before").oid
    damaged = world.world / "region" / "r.0.0.mca"
    data = bytearray(damaged.read_bytes())
    data[4 * 5: 4 * 5 + 4] = b"\xff\xff\xff\x01"  # slot 5 points past the end of the file
    damaged.write_bytes(bytes(data))
    write_chunks(world.world / "region" / "r.-1.0.mca", {31: "griefed"})
    head = world.snapshot("damage").oid
    with pytest.raises(GraftRefused, match=r"r\.0\.0\.mca"):
        world.rollback(old, only=Area.parse("0,0:100,100"))
    assert world.head() == head and world.pending_restore() is None
    # Outside that file the same box shape works.
    world.rollback(old, only=Area.parse("-16,0:-1,15"))


def test_the_area_log_names_the_snapshots_that_changed_the_box(world: Repository) -> None:
    first = world.snapshot("built the house").oid
    (world.world / "level.dat").write_bytes(b"elsewhere")
    world.snapshot("played elsewhere")
    grief(world.world)
    griefed = world.snapshot("grief", author="mallory").oid
    area = Area.parse("0,0:15,15")
    rows = list(world.area_log(area))
    assert [oid for oid, _, _ in rows] == [griefed, first]
    changes = rows[0][2]
    assert all(isinstance(c, ChunkChange) and (c.x, c.z) == (0, 0) for c in changes)
    assert {(c.kind, c.status, c.change) for c in changes} == {
        ("region", "modified", "content"), ("entities", "removed", None)}
    assert rows[0][1].author == "mallory"
    assert {c.status for c in rows[1][2]} == {"added"}  # the first snapshot made it


# -- the real histories ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HISTORIES))
def test_area_rollback_on_a_real_history(name: str, real_world: Callable[[str], Path],
                                         tmp_path: Path) -> None:
    source = real_world(name)
    world = copy_world(source / HISTORIES[name][0], tmp_path / "world")
    with Repository.init(world) as repo:
        repo.check_world = False
        snaps = [repo.snapshot(HISTORIES[name][0]).oid]
        for version in HISTORIES[name][1:]:
            replace_world(world, source / version)
            snaps.append(repo.snapshot(version).oid)
        head = snaps[-1]
        changes = [c for c in repo.diff(snaps[0], head) if isinstance(c, ChunkChange)
                   and c.kind == "region"]
        pick = next((c for c in changes if c.change == "content"), changes[0])
        # A 3x3-chunk box around a changed chunk.
        area = Area(pick.dimension, pick.x * 16 - 16, pick.z * 16 - 16, pick.x * 16 + 31,
                    pick.z * 16 + 31)
        result = repo.rollback(snaps[0], only=area)
        assert check_area_rollback(repo, head, snaps[0], result.oid, area) > 0
        again = repo.snapshot("re-snapshot")
        assert not again.created, "the restored world is not the rollback's tree"
        assert repo.verify().ok
        # The area's log names the snapshot that changed the picked chunk.
        log = list(repo.area_log(area))
        assert log[0][0] == result.oid
        assert any(any((c.x, c.z) == (pick.x, pick.z) for c in ch) for _, _, ch in log[1:])


def test_region_lookups_read_one_path(world: Repository) -> None:
    root = world.snapshot("x").snapshot.root
    found = lookup_paths(world.store.objects, root, ["region/r.0.0.mca", "region/nope.mca",
                                                      "nope/r.0.0.mca", "level.dat/x"])
    assert set(found) == {"region/r.0.0.mca"}


# -- the commands ------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from peerhost_cli.main import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_phs_log_rollback_and_restore_by_area_and_player(
        world: Repository, capsys: pytest.CaptureFixture[str]) -> None:
    old = world.snapshot("built the house").oid
    grief(world.world)
    world.snapshot("grief", author="mallory")
    author = world.read_snapshot(old).author
    world.close()  # phs opens the store itself
    w = str(world.world)
    code, out, err = run(capsys, "log", "-C", w, "--area", "0,0:15,15", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert code == 0 and [r["author"] for r in rows] == ["mallory", author]
    assert {(c["x"], c["z"]) for c in rows[0]["changes"]} == {(0, 0)}
    code, out, _ = run(capsys, "log", "-C", w, "--area", "0,0:15,15")
    assert code == 0 and "mallory" in out and "1 content" in out and "grief" in out
    code, out, _ = run(capsys, "rollback", old.hex()[:12], "-C", w, "--area", "15,15:0,0",
                       "--json")
    assert code == 0 and json.loads(out)["only"] == "area minecraft:overworld 0,0:15,15"
    code, out, _ = run(capsys, "restore", old.hex()[:12], "-C", w, "--player", UUID)
    assert code == 0 and f"player {UUID}" in out
    assert (world.world / "playerdata" / f"{UUID}.dat").read_bytes() == b"old inventory"
    assert (world.world / "level.dat").read_bytes() == b"changed level"
    for args, expected in [(("--area", "1,2"), 2), (("--area", "0,0:1,1", "--player", UUID), 2),
                           (("--dimension", "nether"), 2), (("--player", "Notch"), 2)]:
        code, _, err = run(capsys, "restore", old.hex()[:12], "-C", w, *args)
        assert code == expected and err.count("\n") == 1, (args, err)
    code, _, err = run(capsys, "rollback", old.hex()[:12], "-C", w, "--player", UUID,
                       "--remote")
    assert code == 2 and "--player" in err


# -- on the coordinator ------------------------------------------------------------------------


def test_an_area_rollback_on_the_coordinator_is_pulled_and_asks_the_host_to_sync(
        world: Repository, tmp_path: Path) -> None:
    from test_sync_support import running

    from peerhost_store.sync.client import CoordinatorError, Forbidden
    from peerhost_store.sync.leasing import push_with_lease
    from peerhost_store.sync.transfer import pull

    old = world.snapshot("before").oid
    grief(world.world)
    griefed = world.snapshot("grief").oid
    area = Area.parse("-16,0:31,31")
    with running(tmp_path / "c") as server:
        owner = server.client("s1", server.admin.create_session("s1"))
        alice = server.client("s1", owner.add_member("alice"))
        push_with_lease(world, alice, holder="alice-pc")
        with pytest.raises(Forbidden):  # a member needs the lease's fencing token
            alice.rollback(old, area=area)
        lease = alice.acquire("alice-pc", 30)  # alice hosts
        head = owner.rollback(old, area=area)  # the owner needs no lease
        assert alice.renew(lease.fencing).sync_requested, "the host was not told"
        entry = owner.log()[-1]
        assert entry["kind"] == "rollback" and entry["area"] == area.to_json()
        # The host takes it: a fast-forward pull, whose world is the area rollback.
        report = pull(world, alice)
        assert report.outcome == "fast-forward" and world.head() == head
        check_area_rollback(world, griefed, old, head, area)
        assert not world.snapshot("after the pull").created
        # Refusals: a box that reads wrong, and one where nothing differs.
        for body, status, code in [
                ({"target": old.hex(), "area": {"dimension": "overworld", "x1": 0}}, 400,
                 "bad_request"),
                ({"target": old.hex(), "area": area.to_json()}, 409, "nothing_to_roll_back")]:
            with pytest.raises(CoordinatorError) as refused:
                owner._json("POST", owner._path("rollback"), body)
            assert (refused.value.status, refused.value.code) == (status, code)


def test_take_changes_keeps_play_here_and_takes_the_rollback_on_top(world: Repository) -> None:
    old = world.snapshot("before").oid
    grief(world.world)
    base = world.snapshot("grief").oid  # the last push
    area = Area.parse("0,0:15,15")
    # The coordinator rolled the area back on top of it...
    writer = ObjectWriter(world.store)
    rolled = area.graft(world.store.objects, writer.add, world.read_snapshot(base).root,
                        world.read_snapshot(old).root)
    snap = encode_snapshot(Snapshot(rolled, (base,), 1, "owner", "coordinator", "rollback", {}))
    world.store.apply(Update(hashed=writer.take(), objects=[snap]))
    theirs = hash_bytes(snap)
    # ...while the host kept playing, inside the box and outside it.
    write_chunks(world.world / "region" / "r.0.0.mca", {0: "host", 1: "host", 40: "host"})
    (world.world / "level.dat").write_bytes(b"the host's play")
    result = world.take_changes(theirs, base)
    new = world.read_snapshot(result.oid)
    assert new.parents == (result.safety, theirs)
    chunks = all_chunks(world, new.root)
    ours = all_chunks(world, world.read_snapshot(result.safety or base).root)
    rolled_chunks = all_chunks(world, rolled)
    assert chunks["region/r.0.0.mca", 0] == rolled_chunks["region/r.0.0.mca", 0]  # theirs won
    assert chunks["region/r.0.0.mca", 40] == ours["region/r.0.0.mca", 40]  # play kept
    assert chunks["region/r.0.0.mca", 1] == ours["region/r.0.0.mca", 1]
    assert (world.world / "level.dat").read_bytes() == b"the host's play"
    assert not world.snapshot("after").created
