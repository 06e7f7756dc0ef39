"""The package's shape, read from its source with `ast` (no model, nothing imported): no import
cycle, no two modules sharing a name, a session that holds run state only, and no top-level module
that serves a single other module. Each rule is also run over a small planted tree, so a checker
that stopped seeing violations would fail here.

Imports under `if TYPE_CHECKING:` are left out: they never run, and annotations may name a type
from a layer above without making the layers depend on each other at run time. Imports inside
functions count: they run when the function does, and a lazy import is still a dependency."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_slm"
SESSION_LIMIT = 150
# Top-level modules one other module alone imports, kept at the top with a reason.
SINGLE_USER = {
    "fixtures": "the plugin's fixtures, one per item kind: the plugin's own helper, kept apart to stay short",
}
# Modules named alike on purpose: each backend implements the same interface under its own package.
PER_BACKEND = {"backend", "quantize"}


def modules(root: Path) -> dict[str, Path]:
    """Every module and package of the tree under `root`, by dotted name (a package by its __init__)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if "data" in parts:  # shipped task data, not the package's code
            continue
        dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[dotted] = path
    return found


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The tree's nodes, less the bodies of `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's own modules that `name` imports, relative and absolute imports alike."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None. A package and the modules under it are
    not a cycle (`a/__init__` importing `a.b` which imports `a` is Python's ordinary package import)."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(edges.get(name, ())):
            if target.startswith(name + ".") or name.startswith(target + "."):
                continue
            if found := visit(target, [*path, name]):
                return found
        done.add(name)
        return None

    for name in sorted(edges):
        if found := visit(name, []):
            return found
    return None


def shared_names(root: Path) -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for name in modules(root):
        if "." in name and name.rpartition(".")[2] not in PER_BACKEND:
            by_name.setdefault(name.rpartition(".")[2], []).append(name)
    return {last: names for last, names in by_name.items() if len(names) > 1}


def single_users(root: Path, edges: dict[str, set[str]]) -> dict[str, str]:
    """Top-level modules (not packages) imported by exactly one other module of the package."""
    found = {}
    for name, path in modules(root).items():
        parts = name.split(".")
        if len(parts) != 2 or path.name.startswith("__"):
            continue
        users = {user for user, targets in edges.items() if name in targets}
        if len(users) == 1:
            found[parts[1]] = users.pop()
    return found


def session_problems(root: Path, edges: dict[str, set[str]]) -> list[str]:
    """Why the run's state holder is more than state: too long, or importing a backend."""
    problems = []
    if (lines := len((root / "session.py").read_text(encoding="utf-8").splitlines())) >= SESSION_LIMIT:
        problems.append(f"session.py has {lines} lines (limit {SESSION_LIMIT})")
    top = root.name
    problems += [f"session imports {m}" for m in sorted(edges[f"{top}.session"]) if m.startswith(f"{top}.backends")]
    return problems


def test_the_package_has_no_import_cycle() -> None:
    assert cycle(graph(PACKAGE)) is None


def test_no_two_modules_of_the_package_share_a_name() -> None:
    assert shared_names(PACKAGE) == {}


def test_the_session_holds_run_state_only() -> None:
    assert session_problems(PACKAGE, graph(PACKAGE)) == []


def test_no_top_level_module_serves_a_single_other_module() -> None:
    found = single_users(PACKAGE, graph(PACKAGE))
    assert {name: user for name, user in found.items() if name not in SINGLE_USER} == {}
    assert set(SINGLE_USER) <= set(found)  # an entry no longer needed goes


def test_each_rule_finds_a_planted_violation(tmp_path: Path) -> None:
    root = tmp_path / "planted"
    files = {
        "__init__.py": "",
        "session.py": "from .backends import kind\n" + "x = 1\n" * SESSION_LIMIT,
        "backends/__init__.py": "",
        "backends/kind.py": "",
        "helper.py": "",
        "first.py": "from . import helper\nfrom .second import thing\n",
        "second.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .session import x\n"
        "def thing() -> None:\n    from planted.first import helper\n",
        "measure/__init__.py": "",
        "measure/kind.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    edges = graph(root)
    assert cycle(edges) == ["planted.first", "planted.second", "planted.first"]
    assert "planted.session" not in edges["planted.second"]  # TYPE_CHECKING only: not a dependency
    assert shared_names(root) == {"kind": ["planted.backends.kind", "planted.measure.kind"]}
    assert session_problems(root, edges) == [
        f"session.py has {SESSION_LIMIT + 1} lines (limit {SESSION_LIMIT})",
        "session imports planted.backends",
        "session imports planted.backends.kind",
    ]
    assert single_users(root, edges) == {
        "helper": "planted.first",
        "first": "planted.second",
        "second": "planted.first",
    }
