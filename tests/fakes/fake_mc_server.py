"""A stand-in Minecraft server command for the host-loop tests (no Java, no node).

``python fake_mc_server.py --world DIR --port PORT`` listens on 127.0.0.1:PORT (greeting each
connection with a line naming its server folder, then closing it), prints a vanilla-like ``Done (...)!`` line and reads console commands:

* ``stop``: writes ``level.dat`` (a save counter) and exits 0, like a server saving on stop;
* ``save-all [flush]``: writes ``level.dat``, answering as vanilla does (``Saving the game
  (this may take a moment!)``, then ``Saved the game``);
* ``save-off``, ``save-on``: vanilla's answers (``Automatic saving is now disabled``, ...);
* ``write NAME TEXT``: writes ``data/NAME.txt`` (a player changing the world);
* anything else: ``Unknown or incomplete command``.

Like Minecraft it holds ``session.lock`` in the world locked while it runs (``fcntl.lockf``,
as Java's ``FileChannel.tryLock`` does on POSIX; ``msvcrt.locking`` on Windows).

``--ignore-stop`` makes it ignore ``stop`` (to test the kill fallback); ``--mute-saves`` makes
it ignore the save commands silently (a server whose console phs cannot use); ``--start-delay
S`` waits before listening. With ``PEERHOST_FAKE_ENV_DIR`` set it records its environment
(recorded_env.py).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy reads the fakes as the package the tests import them from
    from fakes.recorded_env import record_environment
else:  # run as a script: this file's folder is on sys.path
    from recorded_env import record_environment


def lock_session(world: Path) -> object:
    """Open and lock ``world/session.lock`` as Minecraft does; keep the returned file open."""
    handle = open(world / "session.lock", "wb")  # noqa: SIM115 - held for the whole run
    handle.write("\u2603".encode())
    handle.flush()
    if sys.platform == "win32":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ignore-stop", action="store_true")
    parser.add_argument("--mute-saves", action="store_true")
    parser.add_argument("--start-delay", type=float, default=0.0)
    args = parser.parse_args()
    record_environment("server")
    world: Path = args.world
    world.mkdir(parents=True, exist_ok=True)
    session_lock = lock_session(world)  # noqa: F841 - held until the process exits
    saves = 0

    def save() -> None:
        nonlocal saves
        saves += 1
        (world / "level.dat").write_text(f"saved {saves} times\n")

    print("[Server thread/INFO]: Starting minecraft server version fake", flush=True)
    time.sleep(args.start_delay)
    listener = socket.create_server(("127.0.0.1", args.port))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                conn.sendall(f"fake minecraft server of {world.resolve().parent.name}\n".encode())
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    print('[Server thread/INFO]: Done (0.042s)! For help, type "help"', flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "stop" and not args.ignore_stop:
            print("[Server thread/INFO]: Stopping server", flush=True)
            save()
            print("[Server thread/INFO]: Saving worlds", flush=True)
            return 0
        if words[0] in ("save-all", "save-off", "save-on") and args.mute_saves:
            continue
        if words[0] == "save-all":
            print("[Server thread/INFO]: Saving the game (this may take a moment!)", flush=True)
            save()
            print("[Server thread/INFO]: Saved the game", flush=True)
        elif words[0] in ("save-off", "save-on"):
            state = "disabled" if words[0] == "save-off" else "enabled"
            print(f"[Server thread/INFO]: Automatic saving is now {state}", flush=True)
        elif words[0] == "write" and len(words) >= 3:
            (world / "data").mkdir(exist_ok=True)
            (world / "data" / f"{words[1]}.txt").write_text(" ".join(words[2:]) + "\n")
            print(f"[Server thread/INFO]: wrote {words[1]}", flush=True)
        else:
            print("[Server thread/INFO]: Unknown or incomplete command, see below for error",
                  flush=True)
    return 0  # console closed


if __name__ == "__main__":
    sys.exit(main())
