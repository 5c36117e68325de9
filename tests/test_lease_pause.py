"""A host paused (SIGSTOP) past its lease's TTL cannot move the head when it wakes (SIGCONT)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from test_server_uvicorn import Coordinator, free_port

from peerhost_store.ids import hash_bytes
from peerhost_store.objects import (
    DirEntry,
    EntryKind,
    Snapshot,
    encode_blob,
    encode_dir_leaf,
    encode_snapshot,
)
from peerhost_store.sync.client import CoordinatorClient

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP")


def snapshot_objects(message: str) -> tuple[list[bytes], bytes]:
    """A one-file world and its snapshot: (objects, snapshot bytes)."""
    blob = encode_blob(message.encode())
    root = encode_dir_leaf([DirEntry("level.dat", EntryKind.FILE, hash_bytes(blob), len(message))])
    snap = encode_snapshot(Snapshot(hash_bytes(root), (), 0, "t", "h", message, {}))
    return [blob, root, snap], snap


HOLDER = textwrap.dedent("""
    import sys, httpx, time
    from peerhost_store.sync.client import CoordinatorClient, CoordinatorError
    from peerhost_store.ids import hash_bytes
    sys.path.insert(0, sys.argv[4])
    from test_lease_pause import snapshot_objects
    client = CoordinatorClient(httpx.Client(base_url=sys.argv[1], timeout=10), sys.argv[2], sys.argv[3])
    lease = client.acquire("paused-host", 2.0)
    objects, snap = snapshot_objects("from the paused host")
    client.upload(objects)
    print("ready", flush=True)
    sys.stdin.readline()  # the test pauses us here, past the TTL, then wakes us
    try:
        client.set_head(None, hash_bytes(snap), lease.fencing)
        print("moved", flush=True)
    except CoordinatorError as exc:
        print("refused", exc.code, flush=True)
""")


def test_a_paused_holder_cannot_move_the_head_after_waking(tmp_path: Path) -> None:
    coordinator = Coordinator(tmp_path / "coord", free_port())
    coordinator.start()
    try:
        url = f"http://127.0.0.1:{coordinator.port}"
        http = httpx.Client(base_url=url, timeout=10)
        owner = CoordinatorClient(http, "s", CoordinatorClient(http, "", coordinator.admin_token or "").create_session("s"))
        alice = owner.add_member("alice")
        bob = CoordinatorClient(http, "s", owner.add_member("bob"))
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url, "s", alice, str(Path(__file__).parent)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        holder.send_signal(signal.SIGSTOP)
        time.sleep(2.5)  # past the 2 s TTL while the holder is frozen
        lease = bob.acquire("bob-pc", 30.0)
        objects, snap = snapshot_objects("from bob")
        bob.upload(objects)
        bob.set_head(None, hash_bytes(snap), lease.fencing)
        holder.send_signal(signal.SIGCONT)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        answer = holder.stdout.readline().split()
        holder.wait(timeout=30)
        assert answer[:2] in (["refused", "fenced"], ["refused", "lease_lost"]), answer
        assert bob.head().head == hash_bytes(snap)
    finally:
        coordinator.stop()
