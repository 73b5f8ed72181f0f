"""The package's shape: one `moai` namespace, layers that import one way, private modules kept private.

Every import is read from the source (function-level ones included, since a lazy import is still a
dependency), so this holds whatever a test happens to import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"moai": "moai", "mix_instructions": "moai.mix_instructions", "scorer": "moai.scorer"}
FOLDERS |= {"nodes": "moai.nodes", "graphs": "moai.graphs"}
LAYERS = ("moai.mix_instructions", "moai.scorer", "moai.nodes", "moai.graphs")
"""Lowest first; anything else under `moai` is the surface, above them all."""
FOUNDATION = "moai.errors"
"""Imports nothing of the project, so every layer may import it."""
BARE = ("graphs", "nodes", "scorer", "mix_instructions")


def modules() -> dict[str, Path]:
    """Return every module of the package by its dotted name."""
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def imports(path: Path, name: str) -> Iterator[str]:
    """Yield the dotted names a module imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def layer(module: str) -> int:
    """Return a module's layer: 0 for the foundation, 1.. for the layers, above them for the surface."""
    if module == FOUNDATION:
        return 0
    for i, prefix in enumerate(LAYERS, 1):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return len(LAYERS) + 1


MODULES = modules()


def project_imports(name: str) -> set[str]:
    """Return the project's modules that `name` imports."""
    return {target for target in imports(MODULES[name], name) if target in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_layer_above_it(name: str) -> None:
    upward = sorted(t for t in project_imports(name) if layer(t) > layer(name))
    assert not upward, f"{name} (layer {layer(name)}) imports {upward}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_another_packages_private_module(name: str) -> None:
    own = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    leaks = sorted(
        t for t in project_imports(name) if t.rpartition(".")[2].startswith("_") and t.rpartition(".")[0] != own
    )
    assert not leaks, f"{name} imports private modules of other packages: {leaks}"


def test_the_foundation_imports_nothing_of_the_project() -> None:
    assert project_imports(FOUNDATION) <= {"moai"}


def test_no_import_cycle_between_modules() -> None:
    # A package's __init__ re-exports its submodules: an edge into a package means its __init__ runs, but
    # a submodule importing its own package's names is how re-exports work, so only module -> module
    # edges that are not `package -> its own submodule` count.
    graph = {
        name: {
            t
            for t in project_imports(name)
            if t != name and not t.startswith(name + ".") and not name.startswith(t + ".")
        }
        for name in MODULES
    }
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name)


def python_files() -> list[Path]:
    """Return the project's own Python files: the package, tests and benchmarks."""
    return [
        path
        for path in sorted(ROOT.rglob("*.py"))
        if not {".venv", ".git", "build"} & set(path.relative_to(ROOT).parts)
    ]


def test_everything_imports_the_moai_namespace_never_the_bare_folders() -> None:
    bare = []
    for path in python_files():
        for target in imports(path, "__main__"):
            if target.split(".")[0] in BARE:
                bare.append(f"{path.relative_to(ROOT)}: {target}")
    assert not bare, "import moai.<package>, not the bare folder name:\n" + "\n".join(bare)


def test_no_file_edits_sys_path() -> None:
    edits = [str(p.relative_to(ROOT)) for p in python_files() if "sys.path.insert" in p.read_text()]
    edits = [e for e in edits if e != "tests/unit/test_layers.py"]
    assert not edits, f"these files edit sys.path: {edits}"


def test_test_files_have_unique_basenames() -> None:
    # pytest imports test files by basename (rootdir import mode): two files of one name collide.
    names = [p.name for p in sorted((ROOT / "tests").rglob("test_*.py"))]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
