#!/usr/bin/env python3
"""Set-up and entry points for a fresh checkout: ``python3 dev.py demo`` and ``python3 dev.py test``.

Creates (or reuses) ``.venv`` beside this file, installs the project into it when
``pyproject.toml`` or ``constraints.txt`` changed since the last install (pinned by
``constraints.txt``, so CI installs what was tested), then runs the demo or the test suite (after
``npm ci`` in ``e2e/node`` when its lock changed: the end-to-end tests' Minecraft server and bot).
``test`` first runs ruff and mypy (configured in pyproject.toml) and stops on their findings.
``python3 dev.py lock`` regenerates ``constraints.txt`` from a fresh resolution (tests/wheels.py).
Only the standard library is used here, so it runs on any Python >= 3.11 (Windows: ``py dev.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".peerhost-installed"
CONSTRAINTS = ROOT / "constraints.txt"
#: The pip of .venv. Newer pips read a wheel's metadata from the index (PEP 658) instead of
#: downloading the wheel: tests/test_install.py's 20 resolutions take half the CPU.
PIP = "pip==26.3"


def venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    if sys.version_info < (3, 11):
        sys.exit(f"PeerHost needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    python = venv_python()
    if not python.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    inputs = (ROOT / "pyproject.toml").read_bytes() + CONSTRAINTS.read_bytes() + PIP.encode()
    wanted = hashlib.sha256(inputs).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        print("installing peerhost and its dependencies into .venv", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", PIP], check=True)
        subprocess.run(install_command(python), check=True)
        STAMP.write_text(wanted)
    return python


def install_command(python: Path) -> list[str]:
    """pip installing the project (editable) with its test extra, pinned by constraints.txt."""
    return [str(python), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS),
            "-e", f"{ROOT}[test]"]


def ensure_node_packages() -> None:
    """``npm ci`` in e2e/node when its lock changed: the real Minecraft server and bot of the
    end-to-end tests. Without npm those tests skip (and fail under CI, which must have it)."""
    folder = ROOT / "e2e" / "node"
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: the end-to-end Minecraft tests will be skipped", flush=True)
        return
    stamp = folder / "node_modules" / ".peerhost-installed"
    wanted = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return
    print("installing the end-to-end node packages (npm ci in e2e/node)", flush=True)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                   check=True)
    stamp.write_text(wanted)


def ensure_tmux() -> None:
    """tmux for the terminal tests (tests/test_cli_tmux.py drives phs host, join and push in
    it). Under CI=true they fail without it, so it is installed there from Debian's archive
    (apt-get, as root or through sudo); elsewhere they skip without it."""
    if shutil.which("tmux") is not None or os.environ.get("CI") != "true":
        return
    apt = shutil.which("apt-get")
    if apt is None:
        print("tmux not found and no apt-get to install it: the terminal tests will fail",
              flush=True)
        return
    sudo = [] if not hasattr(os, "geteuid") or os.geteuid() == 0 else ["sudo"]
    print("installing tmux (apt-get) for the terminal tests", flush=True)
    subprocess.run([*sudo, apt, "update", "-qq"], check=True)
    subprocess.run([*sudo, apt, "install", "-y", "-qq", "--no-install-recommends", "tmux"],
                   check=True)


#: What ``python3 dev.py test`` checks before the suite: fast (seconds, mypy's cache in
#: .mypy_cache included), so a finding fails the run before 15 minutes of tests.
LINTERS = (
    ("ruff", "check", "src", "tests", "benchmarks", "dev.py"),
    ("mypy",),  # pyproject.toml [tool.mypy] files: src, tests, benchmarks, dev.py
)


def lint(python: Path) -> bool:
    """Run every linter (each prints its findings); whether all of them passed."""
    failed = []
    for tool, *args in LINTERS:
        print(f"{tool} {' '.join(args)}".strip(), flush=True)
        done = subprocess.run([str(python), "-m", tool, *args], cwd=ROOT, check=False)
        if done.returncode != 0:
            failed.append(tool)
    if failed:
        print(f"{' and '.join(failed)} found problems (above): not running the tests",
              flush=True)
    return not failed
def ensure_chromium() -> None:
    """Debian's chromium for the dashboard's browser tests (tests/test_dashboard_browser.py
    drives it through Playwright; Playwright's own browser download is not used). Installed
    from Debian's archive when missing, under CI=true or as root (apt-get); elsewhere the
    browser tests skip without it, saying so."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    apt = shutil.which("apt-get")
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if apt is None or not (root or os.environ.get("CI") == "true"):
        print("chromium not found: the dashboard's browser tests will be skipped (install "
              "Debian's chromium package to run them)", flush=True)
        return
    sudo = [] if root else ["sudo"]
    print("installing chromium (apt-get) for the dashboard's browser tests", flush=True)
    subprocess.run([*sudo, apt, "update", "-qq"], check=True)
    subprocess.run([*sudo, apt, "install", "-y", "-qq", "--no-install-recommends", "chromium"],
                   check=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "phs", "lock"):
        print("usage: python3 dev.py demo [phs demo options] | test [pytest options] | phs ARGS"
              " | lock")
        return 2
    python = ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "lock":
        cmd = [str(python), str(ROOT / "tests" / "wheels.py"), "lock"]
    elif command == "test":
        if not lint(python):
            return 1
        ensure_node_packages()
        ensure_tmux()
        ensure_chromium()
        cmd = [str(python), "-m", "pytest", *rest]
    elif command == "demo":
        cmd = [str(python), "-m", "peerhost_cli.main", "demo", *rest]
    else:
        cmd = [str(python), "-m", "peerhost_cli.main", *rest]
    # pytest exits 5 when it collected no tests; that propagates as a failure.
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
