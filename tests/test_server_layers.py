"""The coordinator's layers, read from its source: routes over a domain over backend
protocols, with no import cycle, no HTTP in the domain, no LMDB outside its backend module,
and every domain error given a status at the edge and documented."""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import pytest

import peerhost_server
import peerhost_store
from peerhost_server.backends import open_backends
from peerhost_server.backends.lmdb import LmdbBackends
from peerhost_server.domain import errors
from peerhost_server.errors import STATUS, status_of
from peerhost_server.limits import Limits
from peerhost_store.ids import ObjectId

SRC = Path(str(peerhost_server.__file__)).parent.parent
DOCS = Path(__file__).parent.parent / "docs" / "protocol.md"
HTTP = ("starlette", "uvicorn", "anyio", "httpx")


def _modules() -> dict[str, Path]:
    out = {}
    for package in (peerhost_server, peerhost_store):
        root = Path(str(package.__file__)).parent
        for path in root.rglob("*.py"):
            parts = path.relative_to(SRC).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The modules ``name`` imports (first-party resolved to modules, others by top name)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from .domain import errors` names a module
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return out


GRAPH = {name: {m for m in _imports(name) if m in MODULES} for name in MODULES}


def _closure(start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(GRAPH[name])
    return seen


def _server(prefix: str) -> list[str]:
    return sorted(n for n in MODULES if n == prefix or n.startswith(prefix + "."))


def test_the_domain_and_the_backends_import_no_http() -> None:
    for start in _server("peerhost_server.domain") + _server("peerhost_server.backends"):
        for name in _closure(start):
            third_party = {m.split(".")[0] for m in _imports(name) if m not in MODULES}
            assert not third_party & set(HTTP), f"{start} reaches {name}, which imports HTTP"


def test_the_domain_imports_neither_routes_nor_backends() -> None:
    allowed = {"peerhost_server.auth", "peerhost_server.leases", "peerhost_server.limits"}
    for start in _server("peerhost_server.domain"):
        server = {n for n in _closure(start) if n.startswith("peerhost_server")}
        outside = server - set(_server("peerhost_server.domain")) - allowed - {"peerhost_server"}
        assert not outside, f"{start} reaches {sorted(outside)}"


def test_lmdb_is_named_only_in_its_backend_module() -> None:
    for name in _server("peerhost_server"):
        if name == "peerhost_server.backends.lmdb":
            continue
        text = MODULES[name].read_text()
        assert "LmdbStore" not in text and "import lmdb" not in text, name


def test_no_import_cycle_in_the_coordinator() -> None:
    server = {n: {m for m in GRAPH[n] if m.startswith("peerhost_server")}
              for n in _server("peerhost_server")}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name):], name]))
        if name in done:
            return
        for dep in sorted(server[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(server):
        visit(name, [])


def _domain_errors() -> list[type[errors.DomainError]]:
    found, stack = [], [errors.DomainError]
    while stack:
        kind = stack.pop()
        found.append(kind)
        stack.extend(kind.__subclasses__())
    return [k for k in found if k is not errors.DomainError]


def test_every_domain_error_has_a_status_and_is_documented_with_it() -> None:
    docs = DOCS.read_text().splitlines()
    for kind in _domain_errors():
        status = STATUS.get(kind) or next(STATUS[k] for k in kind.__mro__ if k in STATUS)
        codes = (["lease_held", "lease_reserved", "lease_lost"] if kind is errors.LeaseRefused
                 else [kind.code])
        for code in codes:
            statuses = {int(m.group(1)) for line in docs for m in
                        re.finditer(rf"(\d{{3}})[^\d]*?`{code}`", line)}
            assert status in statuses, f"{kind.__name__}: {status} `{code}` not in protocol.md"


def test_a_domain_error_answers_with_its_status() -> None:
    assert status_of(errors.NotFastForward(ObjectId(b"\0" * 32), ObjectId(b"\1" * 32))) == 409
    assert status_of(errors.DiskFull(0)) == 507


def test_backends_are_chosen_by_url_scheme(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known: lmdb, postgres, postgresql"):
        open_backends(tmp_path, clock=time.monotonic, limits=Limits(), url="mysql://x/y")
    backends = open_backends(tmp_path, clock=time.monotonic, limits=Limits())
    try:
        assert isinstance(backends, LmdbBackends)
    finally:
        backends.close()
