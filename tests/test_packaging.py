"""What each package pulls in: the library needs none of the coordinator's, the demo's or the
command line's dependencies, and a command whose extra is missing says how to install it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = {"starlette", "uvicorn", "uvloop", "httptools", "prometheus_client", "peerhost_server",
          "boto3", "botocore"}
DEMO = {"numpy"}
CLI = {"rich", "rcon", "peerhost_cli"}

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [sys.argv[1]] + [m.name for m in pkgutil.walk_packages(package.__path__, sys.argv[1] + ".")]
for name in names:
    if name != "peerhost_store.testing":  # the contract suite, for tests: it imports pytest
        importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""


def _import_all(package: str) -> tuple[list[str], set[str]]:
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL, package], capture_output=True,
                          text=True, check=True, timeout=120)
    answer = json.loads(done.stdout)
    return answer["modules"], {name.split(".")[0] for name in answer["loaded"]} | {
        name for name in answer["loaded"] if "." in name}


def test_the_library_imports_nothing_of_the_server_the_demo_or_the_cli() -> None:
    modules, loaded = _import_all("peerhost_store")
    assert "peerhost_store.sync.remotes" in modules and "peerhost_store.store" in modules
    assert not loaded & (SERVER | DEMO | {"rcon", "peerhost_cli", "amulet_nbt", "pytest"})
    # rich is the CLI's; httpx imports it for its own command line when it is installed (with
    # click and pygments), which the library cannot prevent: nothing of ours asks for it.
    assert "rich" not in loaded or "httpx._main" in loaded


def test_the_cli_imports_nothing_of_the_server_or_the_demo() -> None:
    _, loaded = _import_all("peerhost_cli")
    assert "peerhost_cli.synth" in loaded  # walked, so numpy comes in through the synthesizer
    done = subprocess.run([sys.executable, "-c", ("import sys, json, peerhost_cli.main; "
                                                  "print(json.dumps(sorted(sys.modules)))")],
                          capture_output=True, text=True, check=True, timeout=120)
    assert not {n.split(".")[0] for n in json.loads(done.stdout)} & (SERVER | DEMO)


@pytest.mark.parametrize(("argv", "blocked", "extra"), [
    (["serve", "--data", "{tmp}/coord", "--bind", "127.0.0.1:1"], "starlette", "server"),
    (["demo", "--keep", "{tmp}/demo"], "numpy", "demo"),
    (["serve", "--data", "{tmp}/coord", "--bind", "127.0.0.1:1", "--objects", "s3://b/p"],
     "boto3", "scale"),
])
def test_a_missing_extra_is_one_line_naming_the_install(
    tmp_path: Path, argv: list[str], blocked: str, extra: str
) -> None:
    script = ("import sys; sys.modules[sys.argv[1]] = None\n"  # as if it were not installed
              "from peerhost_cli.main import main; sys.exit(main(sys.argv[2:]))")
    args = [a.format(tmp=tmp_path) for a in argv]
    done = subprocess.run([sys.executable, "-c", script, blocked, *args], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'peerhost[{extra}]'" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
