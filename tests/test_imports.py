"""The import graph of genlab, read from the source (ast; function-local imports included): lower
modules never import upper ones, model families never import the trainer, figures or CLI, and
there is no import cycle at module level. Also: listing models or parsing the command line
imports no model family (the registry loads them on first use)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import genlab

ROOT = Path(genlab.__file__).parent
#: Modules below the models: the protocol and what it stands on, data, shared maths, metrics.
LOWER = ("protocol", "registry", "config", "data", "nn", "distributions", "metrics", "checkpoint")
#: What they must never import (the families and everything that drives them).
UPPER = ("models", "train", "viz", "cli", "evaluate", "compare", "encode")
#: What a model family must never import.
ABOVE_MODELS = ("train", "viz", "cli", "evaluate", "compare", "encode")


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def _resolve(mod: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The genlab modules an import statement in ``mod`` names (``from . import x``: the
    submodule x if there is one, else the package)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "genlab" or a.name.startswith("genlab.")]
    if node.level == 0:
        if not (node.module == "genlab" or (node.module or "").startswith("genlab.")):
            return []
        base = node.module
    else:
        pkg = mod if _is_package(mod) else mod.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{node.module}" if node.module else pkg
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(mod: str) -> list[tuple[str, bool]]:
    """(imported genlab module, imported at module level?) for every import statement in ``mod``,
    with the packages it passes through (importing genlab.data.spec runs genlab/data/__init__)."""
    tree = ast.parse(MODULES[mod].read_text(), str(MODULES[mod]))
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _resolve(mod, child):
                    parts = target.split(".")
                    for i in range(2, len(parts) + 1):  # genlab.a, genlab.a.b, ...: not the root
                        step = ".".join(parts[:i])
                        if step in MODULES and not mod.startswith(step + ".") and step != mod:
                            out.append((step, module_level))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only, never executed
            else:
                visit(child, module_level)  # class bodies, if/try/with at module level run on import

    visit(tree, True)
    return out


GRAPH = {mod: _imports(mod) for mod in MODULES}


def _within(mod: str, names: tuple[str, ...]) -> bool:
    return any(mod == f"genlab.{n}" or mod.startswith(f"genlab.{n}.") for n in names)


def test_the_graph_sees_the_known_imports():
    # a sanity check of the parser: direct, relative, function-local and package imports
    assert ("genlab.protocol", True) in GRAPH["genlab.registry"]
    assert ("genlab.data.spec", True) in GRAPH["genlab.protocol"] and ("genlab.data", True) in GRAPH["genlab.protocol"]
    assert ("genlab.models.flows.base", True) in GRAPH["genlab.models.flows.maf"]
    assert any(t == "genlab.train" and not top for t, top in GRAPH["genlab.cli"])


@pytest.mark.parametrize("mod", [m for m in MODULES if _within(m, LOWER)])
def test_lower_modules_never_import_upper_ones(mod):
    bad = sorted({t for t, _ in GRAPH[mod] if _within(t, UPPER)})
    assert not bad, f"{mod} imports {', '.join(bad)}"


@pytest.mark.parametrize("mod", [m for m in MODULES if _within(m, ("models",))])
def test_model_families_never_import_the_trainer_figures_or_cli(mod):
    bad = sorted({t for t, _ in GRAPH[mod] if _within(t, ABOVE_MODELS)})
    assert not bad, f"{mod} imports {', '.join(bad)}"


def test_no_import_cycle_at_module_level():
    edges = {m: sorted({t for t, top in GRAPH[m] if top}) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state and (cycle := dfs(t)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in MODULES:
        if m not in state:
            cycle = dfs(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_listing_models_and_parsing_the_command_line_import_no_family():
    code = (
        "import sys, genlab, genlab.cli\n"
        "from genlab.registry import model_names\n"
        "assert 'vae' in model_names()\n"
        "genlab.cli.build_parser()\n"
        "loaded = [m for m in sys.modules if m.startswith('genlab.models.')]\n"
        "assert not loaded, loaded\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
