"""kolm's import graph: every module imports, no module reaches into another kolm module's private names, and no
two modules import each other.

The graph is read from the source with ``ast``: every ``import``/``from ... import`` anywhere in a module (at the top
or inside a function, both are edges), relative imports resolved against the module's package. A name imported from
a package counts as an import of the submodule when one exists by that name (``from kolm.eval import harness``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "kolm"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name of a ``from ... import`` in ``module``."""
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported kolm module, name imported from it or None, line) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), str(MODULES[module]))
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "kolm"]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != "kolm":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _owner(name: str) -> str:
    """The kolm module that ``name`` (a module path, maybe of a submodule not yet known) belongs to."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))  # __main__ runs the CLI
def test_module_imports(module):
    importlib.import_module(module)


def test_no_private_imports_across_modules():
    bad = []
    for module, edges in GRAPH.items():
        for target, name, line in edges:
            target = _owner(target)
            private = name is not None and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
            private = private or any(p.startswith("_") and not p.startswith("__") for p in target.split(".")[1:])
            if private and target != module and not _inside(module, target):
                bad.append(f"{MODULES[module].relative_to(ROOT)}:{line}: imports {name or target} from {target}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def _inside(module: str, target: str) -> bool:
    """``target`` is a private submodule of the package ``module`` (a package may use its own private parts)."""
    return MODULES[module].name == "__init__.py" and target.startswith(module + ".")


def test_no_two_module_cycles():
    deps = {m: {_owner(t) for t, _, _ in edges} - {m} for m, edges in GRAPH.items()}
    cycles = sorted({tuple(sorted((a, b))) for a in deps for b in deps[a] if a in deps.get(b, ())})
    assert not cycles, "modules that import each other:\n" + "\n".join(f"{a} <-> {b}" for a, b in cycles)


def test_graph_sees_imports():
    """The parser finds imports at the top, inside functions, relative ones and submodules imported by name."""
    assert any(t == "kolm.config" for t, _, _ in GRAPH["kolm.cli"])
    assert len(MODULES) > 50 and sum(map(len, GRAPH.values())) > 200
