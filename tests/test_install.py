"""What a player installs: wheels on every supported target, version, licence, entry points."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import wheels
from packaging.utils import canonicalize_name

import peerhost_cli
import peerhost_server
import peerhost_store
from peerhost_cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


# --- wheels everywhere ------------------------------------------------------------------------


@pytest.mark.slow
def test_dependencies_and_pins_resolve_from_wheels_on_every_target() -> None:
    # One pip resolution per target (CPython 3.11-3.14 x Windows, macOS arm64/x86-64, Linux
    # x86-64/aarch64), five at a time: the project's dependencies with the constraints file's
    # pins applied, plus every pin itself, so a pin of a test-only package is checked too.
    if not wheels.index_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail("the package index is unreachable: CI must check the wheels")
        pytest.skip("the package index is unreachable")
    pins = wheels.read_constraints()
    results = wheels.resolve_all(wheels.project_requirements() + pins, pins)
    failed = {r.target.name: r.output for r in results if not r.ok}
    assert not failed, "\n\n".join(f"{name}:\n{output}" for name, output in failed.items())
    for result in results:
        assert result.wheels and all(name.endswith(".whl") for name in result.wheels)
        print(f"{result.target.name}: ok, {len(result.wheels)} wheels, {result.seconds:.1f} s")


def test_targets_cover_the_supported_pythons_and_platforms() -> None:
    assert wheels.PYTHONS == ("3.11", "3.12", "3.13", "3.14")
    assert {p.name for p in wheels.PLATFORMS} == {
        "win_amd64", "macosx_arm64", "macosx_x86_64", "manylinux_x86_64", "manylinux_aarch64"
    }  # fmt: skip
    assert len(wheels.TARGETS) == 20
    classifiers = PYPROJECT["classifiers"]
    for python in wheels.PYTHONS:
        assert f"Programming Language :: Python :: {python}" in classifiers
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "3.11 to 3.14" in readme
    assert all(word in readme for word in ("Windows", "macOS", "Linux", "aarch64"))


def test_markers_are_evaluated_for_each_target() -> None:
    uvloop = next(r for r in wheels.project_requirements() if r.name == "uvloop")
    on = {t.name for t in wheels.TARGETS if t.applies(uvloop)}
    assert on == {t.name for t in wheels.TARGETS if not t.name.endswith("win_amd64")}
    from packaging.requirements import Requirement

    only_old = Requirement('x==1; python_version < "3.13" and sys_platform == "darwin"')
    assert [t.name for t in wheels.TARGETS if t.applies(only_old)] == [
        "cp311-macosx_arm64", "cp311-macosx_x86_64", "cp312-macosx_arm64", "cp312-macosx_x86_64"
    ]  # fmt: skip
    assert wheels.unmarked(only_old) == "x==1"


def test_no_dependency_needs_a_compiler_where_players_are() -> None:
    # amulet-nbt has no Linux wheels and none for 3.13+, and holds numpy below 2.0, which has
    # no 3.13 wheels: it may only be a test dependency.
    requirements = {r.name: r for r in wheels.project_requirements()}
    assert "amulet-nbt" not in requirements
    assert requirements["numpy"].specifier.contains("2.3")


def test_lock_file_is_used_by_dev_py_and_marks_what_lacks_wheels() -> None:
    dev = _dev_module()
    command = dev.install_command(Path("python"))
    assert command[command.index("-c") + 1] == str(ROOT / "constraints.txt")
    pins = {pin.name: pin for pin in wheels.read_constraints()}
    assert {"pytest", "hypothesis", "blake3", "numpy", "httpx"} <= set(pins)
    assert all(str(pin.specifier).startswith("==") for pin in pins.values())
    # amulet-nbt 2.1.8 has wheels for Windows and macOS on 3.11 and 3.12 only
    amulet = pins["amulet-nbt"]
    assert amulet.marker is not None
    assert {t.name for t in wheels.TARGETS if t.applies(amulet)} == {
        f"cp3{minor}-{platform}"
        for minor in (11, 12)
        for platform in ("win_amd64", "macosx_arm64", "macosx_x86_64")
    }


def test_every_direct_requirement_is_pinned() -> None:
    # The lock pins the whole test environment; a dependency added by hand to pyproject.toml
    # (and not to the lock) would install whatever version is newest that day.
    extras = tuple(PYPROJECT["optional-dependencies"])
    wanted = {canonicalize_name(r.name) for r in wheels.project_requirements(extras=extras)}
    pinned = {canonicalize_name(pin.name) for pin in wheels.read_constraints()}
    assert wanted - {"peerhost"} - pinned == set()


def _dev_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    return dev


@pytest.mark.parametrize("failing", [None, "ruff", "mypy"])
def test_the_test_command_runs_ruff_and_mypy_first_and_stops_on_their_findings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], failing: str | None
) -> None:
    dev = _dev_module()
    ran: list[str] = []

    def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert command[:2] == ["python", "-m"] and kwargs["cwd"] == ROOT
        ran.append(command[2])
        return subprocess.CompletedProcess(command, int(command[2] == failing))

    monkeypatch.setattr(dev, "ensure_venv", lambda: Path("python"))
    monkeypatch.setattr(dev, "ensure_node_packages", lambda: None)
    monkeypatch.setattr(dev, "ensure_tmux", lambda: None)
    monkeypatch.setattr(dev.subprocess, "run", run)
    code = dev.main(["test", "-q"])
    if failing is None:
        assert (code, ran) == (0, ["ruff", "mypy", "pytest"])
    else:  # both always run, so one run shows every finding; the suite does not
        assert (code, ran) == (1, ["ruff", "mypy"])
        assert f"{failing} found problems" in capsys.readouterr().out


# --- version, licence, URLs, entry points -----------------------------------------------------


def test_one_version_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    version = PYPROJECT["version"]
    assert importlib.metadata.version("peerhost") == version
    assert peerhost_store.__version__ == peerhost_cli.__version__ == version
    assert peerhost_server.__version__ == version
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"phs {version} (Python {sys.version.split()[0]}")
    with pytest.raises(AttributeError):
        peerhost_store.__nonexistent__  # noqa: B018


def python_m_peerhost_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "peerhost_cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_python_m_peerhost_cli_is_phs() -> None:
    shown = python_m_peerhost_cli("--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: phs ")
    assert "--version" in shown.stdout and "exit codes:" in shown.stdout
    version = python_m_peerhost_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith(f"phs {PYPROJECT['version']} ")
    assert python_m_peerhost_cli("frobnicate").returncode == 2


def test_licence_and_project_urls() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n") and "PeerHost contributors" in text
    assert PYPROJECT["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in PYPROJECT["classifiers"]
    urls = PYPROJECT["urls"]
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    metadata = importlib.metadata.metadata("peerhost")
    assert any(
        line.startswith("Source, https://") for line in metadata.get_all("Project-URL") or []
    )
