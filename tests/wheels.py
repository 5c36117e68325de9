"""Which platforms PeerHost installs on from wheels alone, and the CI lock file (constraints.txt).

Used by tests/test_install.py (does every dependency resolve to wheels on every supported
target?) and, as a script, by ``python3 dev.py lock``, which regenerates ``constraints.txt``:

    python3 dev.py lock        # = .venv/bin/python tests/wheels.py lock

It installs ``.[test]`` into a fresh temporary venv without constraints, pins what got installed
(``pip freeze``), then asks pip on which supported targets each pinned version has a wheel and
gives every pin that lacks one somewhere an environment marker naming the targets where it has
one: a pin never forces a source build on a supported platform.

pip runs with this machine's pip configuration switched off (``PIP_CONFIG_FILE`` set to the
null device): no local indexes, find-links or global constraints, only the public index.
Resolution uses ``pip install --dry-run --report``, the resolver of ``pip download`` without
downloading the wheels (the index serves their metadata). pip evaluates the environment markers
of the project's own requirements and of the constraints for the machine it runs on, not for
the target, so those are evaluated here for each target and passed without markers; markers of
transitive dependencies are still pip's (this machine's) to evaluate.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import venv
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
PIP_TIMEOUT = 240  # seconds for one pip resolution; the first one of a target fetches the most


@dataclass(frozen=True)
class Platform:
    """An OS and CPU that players use, as pip tags and as marker values."""

    name: str
    tags: tuple[str, ...]  # pip --platform values: wheels tagged with any of them install there
    sys_platform: str
    platform_system: str
    os_name: str
    machine: str

    def clause(self) -> str:
        return f'sys_platform == "{self.sys_platform}" and platform_machine == "{self.machine}"'


def _manylinux(arch: str) -> tuple[str, ...]:
    # glibc 2.28 (Debian 10, Ubuntu 20.04, RHEL 8) and every older manylinux tag it accepts.
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(28, 16, -1)]
    return (*tags, f"manylinux2014_{arch}")


PLATFORMS = (
    Platform("win_amd64", ("win_amd64",), "win32", "Windows", "nt", "AMD64"),
    Platform("macosx_arm64", ("macosx_11_0_arm64",), "darwin", "Darwin", "posix", "arm64"),
    Platform("macosx_x86_64", ("macosx_11_0_x86_64",), "darwin", "Darwin", "posix", "x86_64"),
    Platform("manylinux_x86_64", _manylinux("x86_64"), "linux", "Linux", "posix", "x86_64"),
    Platform("manylinux_aarch64", _manylinux("aarch64"), "linux", "Linux", "posix", "aarch64"),
)


@dataclass(frozen=True)
class Target:
    """One CPython version on one platform."""

    python: str
    platform: Platform

    @property
    def name(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.platform.name}"

    def environment(self) -> dict[str, str]:
        """The values of PEP 508 environment markers on this target."""
        return {
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "implementation_name": "cpython",
            "implementation_version": f"{self.python}.0",
            "platform_python_implementation": "CPython",
            "sys_platform": self.platform.sys_platform,
            "platform_system": self.platform.platform_system,
            "os_name": self.platform.os_name,
            "platform_machine": self.platform.machine,
            "platform_release": "",
            "platform_version": "",
        }

    def applies(self, requirement: Requirement) -> bool:
        marker = requirement.marker
        return marker is None or marker.evaluate({**self.environment(), "extra": ""})


TARGETS = tuple(Target(python, platform) for python in PYTHONS for platform in PLATFORMS)


#: The extras a player may install (``pip install peerhost[server]`` for ``phs serve``,
#: ``[demo]`` for ``phs demo``, ``[scale]`` for ``phs serve --db postgresql://...`` and
#: ``--objects s3://...``): they must
#: resolve from wheels too. ``test`` is the project's own.
PLAYER_EXTRAS = ("server", "demo", "scale")


def project_requirements(pyproject: Path = ROOT / "pyproject.toml",
                         extras: tuple[str, ...] = PLAYER_EXTRAS) -> list[Requirement]:
    """``[project] dependencies`` of pyproject.toml and those of ``extras``."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def read_constraints(path: Path = CONSTRAINTS) -> list[Requirement]:
    """The pins of a constraints file (comments and blank lines skipped)."""
    lines = (
        line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()
    )
    return [Requirement(line) for line in lines if line]


def unmarked(requirement: Requirement) -> str:
    """The requirement without its marker (already evaluated for the target)."""
    return str(Requirement(str(requirement).split(";", 1)[0]))


@dataclass(frozen=True)
class Resolution:
    """What pip made of one target: ok with the wheels it picked, or the end of its output."""

    target: Target
    ok: bool
    wheels: tuple[str, ...]
    output: str
    seconds: float


def resolve(
    target: Target,
    requirements: Iterable[Requirement],
    constraints: Iterable[Requirement] = (),
    *,
    no_deps: bool = False,
) -> Resolution:
    """Resolve ``requirements`` for ``target`` from wheels only, without installing anything."""
    wanted = [unmarked(r) for r in requirements if target.applies(r)]
    pins = [unmarked(r) for r in constraints if target.applies(r)]
    with tempfile.TemporaryDirectory() as scratch:
        constraint_file = Path(scratch) / "constraints.txt"
        constraint_file.write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
        report = Path(scratch) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--disable-pip-version-check", "--no-input", "--timeout", "30",
            "--only-binary", ":all:", "--implementation", "cp",
            "--python-version", target.python,
            "--abi", f"cp{target.python.replace('.', '')}",
            *(f"--platform={tag}" for tag in target.platform.tags),
            "--target", str(Path(scratch) / "site"), "--report", str(report),
            "-c", str(constraint_file),
            *(["--no-deps"] if no_deps else []),
            *wanted,
        ]  # fmt: skip
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT,
                env=_pip_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Resolution(target, False, (), f"pip took over {PIP_TIMEOUT} s", PIP_TIMEOUT)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            return Resolution(target, False, (), (done.stderr or done.stdout)[-2000:], seconds)
        installed = json.loads(report.read_text(encoding="utf-8"))["install"]
    wheels = tuple(item["download_info"]["url"].rsplit("/", 1)[-1] for item in installed)
    return Resolution(target, True, wheels, "", seconds)


def _pip_env() -> dict[str, str]:
    # This machine's pip configuration (local indexes, find-links, a global constraints file)
    # is not what players have: pip reads no configuration file at all with this.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def index_reachable() -> bool:
    """Whether pip can reach the public package index (one small lookup)."""
    probe = resolve(TARGETS[0], [Requirement("packaging")], no_deps=True)
    return probe.ok


def resolve_all(
    requirements: Sequence[Requirement],
    constraints: Sequence[Requirement] = (),
    targets: Sequence[Target] = TARGETS,
    *,
    workers: int = 5,
) -> list[Resolution]:
    """:func:`resolve` for every target, ``workers`` pip processes at a time."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda t: resolve(t, requirements, constraints), targets))


# --- python3 dev.py lock ----------------------------------------------------------------------

_MISSING = re.compile(r"(?:No matching distribution found for|satisfies the requirement) ([\w.-]+)")


def _frozen_test_environment() -> list[Requirement]:
    """``pip freeze`` of a fresh venv holding ``.[test]`` resolved without constraints."""
    with tempfile.TemporaryDirectory() as scratch:
        venv.EnvBuilder(with_pip=True).create(scratch)
        python = Path(scratch) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"{ROOT}[test]"], check=True
        )
        frozen = subprocess.run(
            [str(python), "-m", "pip", "freeze", "--exclude-editable"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    pins = [Requirement(line) for line in frozen.splitlines() if "==" in line]
    return [pin for pin in pins if pin.name.lower() != "peerhost"]


def _where_wheels_exist(pins: list[Requirement]) -> dict[str, set[Target]]:
    """For each pin, the targets where its exact version has a wheel."""

    def check(target: Target) -> tuple[Target, set[str]]:
        left = list(pins)
        for _ in range(len(pins)):
            result = resolve(target, left, no_deps=True)
            if result.ok:
                break
            found = _MISSING.search(result.output)
            if found is None:
                raise RuntimeError(f"{target.name}: pip failed:\n{result.output}")
            name = Requirement(found.group(1)).name.lower()
            left = [pin for pin in left if pin.name.lower() != name]
        return target, {pin.name.lower() for pin in left}

    where: dict[str, set[Target]] = {pin.name.lower(): set() for pin in pins}
    with ThreadPoolExecutor(5) as pool:
        for target, names in pool.map(check, TARGETS):
            for name in names:
                where[name].add(target)
    return where


def _marker(targets: set[Target]) -> str | None:
    """A marker true on exactly ``targets`` among TARGETS (None: on all of them)."""
    if targets == set(TARGETS):
        return None
    pythons = sorted({t.python for t in targets})
    platforms = [p for p in PLATFORMS if any(t.platform == p for t in targets)]
    if targets == {Target(py, p) for py in pythons for p in platforms}:  # say a product briefly
        parts = []
        if len(pythons) < len(PYTHONS):
            parts.append(" or ".join(f'python_version == "{py}"' for py in pythons))
        if len(platforms) < len(PLATFORMS):
            parts.append(" or ".join(f"({p.clause()})" for p in platforms))
        return " and ".join(f"({part})" for part in parts)
    ordered = sorted(targets, key=TARGETS.index)
    return " or ".join(
        f'(python_version == "{t.python}" and {t.platform.clause()})' for t in ordered
    )


def write_lock(path: Path = CONSTRAINTS) -> None:
    """Regenerate the constraints file (see the module docstring)."""
    pins = _frozen_test_environment()
    where = _where_wheels_exist(pins)
    lines = [
        "# Pins of the test environment, for reproducible CI: dev.py installs with them.",
        "# Generated by `python3 dev.py lock` (tests/wheels.py); do not edit by hand.",
        f"# Resolved on CPython {sys.version.split()[0]} ({sys.platform}). A pin whose version lacks",
        "# wheels on some supported target carries a marker naming the targets where it has them.",
    ]
    for pin in sorted(pins, key=lambda p: p.name.lower()):
        targets = where[pin.name.lower()]
        if not targets:
            lines.append(f"# not pinned, no wheels on any supported target: {pin}")
            continue
        marker = _marker(targets)
        line = f"{pin}; {marker}" if marker else str(pin)
        Requirement(line)  # every pin must parse back
        lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(pins)} pins)")


if __name__ == "__main__":
    if sys.argv[1:] != ["lock"]:
        sys.exit("usage: python tests/wheels.py lock")
    write_lock()
