"""A stand-in ``java`` for the documentation walkthrough (tests/test_docs_walkthrough.py): run
as ``java [-Xmx2G ...] -jar server.jar [nogui]`` in a server folder, it runs the fake Minecraft
server (fake_mc_server.py) on the world and port that folder's ``server.properties`` names
(``level-name``, default ``world``; ``server-port``, default 25565), as the real server would.
``java -version`` prints a version line. Nothing else is accepted."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def properties(folder: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = (folder / "server.properties").read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


def main(argv: list[str]) -> int:
    if argv[:1] == ["-version"]:
        print('openjdk version "21" (fake, for tests)', file=sys.stderr)
        return 0
    if "-jar" not in argv or argv.index("-jar") + 1 >= len(argv):
        print("fake java: only 'java [options] -jar FILE [nogui]' is supported", file=sys.stderr)
        return 1
    jar = Path(argv[argv.index("-jar") + 1])
    if not jar.is_file():
        print(f"Error: Unable to access jarfile {jar}", file=sys.stderr)
        return 1
    props = properties(Path.cwd())
    world, port = props.get("level-name", "world"), props.get("server-port", "25565")
    os.execv(sys.executable, [sys.executable, str(HERE / "fake_mc_server.py"), "--world", world,
                              "--port", port])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
