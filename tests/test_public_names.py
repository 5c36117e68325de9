"""Every public module of the library declares ``__all__``, it names exactly the module's own
public definitions, and docs/api.md lists the same names (httpx checks its exports alike)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import peerhost_store

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
#: Type variables and other module-level helpers that are not API.
NOT_API = {"T", "R", "P"}


def _modules() -> list[str]:
    names = ["peerhost_store"]
    names += [m.name for m in pkgutil.walk_packages(peerhost_store.__path__, "peerhost_store.")]
    return [n for n in names if not n.rsplit(".", 1)[-1].startswith("_")]


def _documented() -> dict[str, list[str]]:
    text = API_DOC.read_text(encoding="utf-8")
    out: dict[str, list[str]] = {}
    for block in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        module = re.match(r"`([\w.]+)`", block)
        names = re.search(r"^Names: (.*)$", block, flags=re.MULTILINE)
        assert module and names, f"docs/api.md: a section without its module or names: {block[:60]!r}"
        out[module.group(1)] = re.findall(r"`(\w+)`", names.group(1))
    return out


def _defined(module: str) -> set[str]:
    """The public names the module itself defines (not imports)."""
    path = importlib.import_module(module).__file__
    assert path is not None
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")} - NOT_API


@pytest.mark.parametrize("module", _modules())
def test_all_names_what_the_module_defines_and_the_docs_say(module: str) -> None:
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    defined = _defined(module)
    if exported is None:
        assert not defined, f"{module} defines {sorted(defined)} but has no __all__"
        return
    assert len(exported) == len(set(exported)), f"{module}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it lacks: {missing}"
    unlisted = defined - set(exported)
    assert not unlisted, f"{module} defines public names outside __all__: {sorted(unlisted)}"
    assert sorted(_documented().get(module, [])) == sorted(exported), (
        f"docs/api.md and {module}.__all__ disagree")


def test_the_docs_name_no_module_that_is_gone() -> None:
    assert set(_documented()) <= set(_modules())
