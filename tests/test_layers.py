"""The layers hold, read from the source: no import cycle; the library imports neither the
command line nor the coordinator; the coordinator does not import the command line; the play
loop imports no ``cmd_*`` module; nothing outside the LMDB module asks whether a store is one."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("peerhost_store", "peerhost_cli", "peerhost_server")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            parts = list(path.relative_to(SRC).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _top_level_imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Modules of ours that ``module`` imports when it is imported: module-level statements,
    not imports inside functions (lazy on purpose) nor under ``if TYPE_CHECKING``. ``from X
    import y`` names module ``X.y`` when there is one (X itself is then only being loaded,
    as for any submodule), else ``X``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _executed(tree.body):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            subs = [f"{base}.{alias.name}" for alias in node.names]
            yield from (sub for sub in subs if sub in known)
            if not all(sub in known for sub in subs):
                yield base


def _executed(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "TYPE_CHECKING" not in test:
                yield from _executed(node.body)
                yield from _executed(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _executed(node.body)
            for handler in node.handlers:
                yield from _executed(handler.body)
        else:
            yield node


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _top_level_imports(name, path, modules) if m in modules and m != name}
            for name, path in modules.items()}


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt):], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _all_imports(path: Path) -> set[str]:
    """Every module named by any import in the file, lazy ones included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_library_needs_neither_the_cli_nor_the_coordinator() -> None:
    for path in (SRC / "peerhost_store").rglob("*.py"):
        bad = {m for m in _all_imports(path) if m.split(".")[0] in ("peerhost_cli", "peerhost_server")}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_the_coordinator_does_not_import_the_cli() -> None:
    for path in (SRC / "peerhost_server").rglob("*.py"):
        bad = {m for m in _all_imports(path) if m.split(".")[0] == "peerhost_cli"}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_no_cmd_module_is_imported_by_play_or_another_package() -> None:
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("peerhost_cli.") and not name.startswith("peerhost_cli.play") \
                and name != "peerhost_cli.main":
            continue  # the command modules may share helpers; main registers them
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                named = [node.module or ""] + [a.name for a in node.names]
                if name == "peerhost_cli.main":
                    continue
                assert not any(n.rsplit(".", 1)[-1].startswith("cmd_") for n in named), (
                    f"{name} imports a command module: {ast.unparse(node)}")


def test_only_the_lmdb_module_asks_whether_a_store_is_lmdb() -> None:
    for path in SRC.rglob("*.py"):
        if path.name == "_lmdb.py":
            continue
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance":
                assert "LmdbStore" not in ast.unparse(node), (
                    f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
