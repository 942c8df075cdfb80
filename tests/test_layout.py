"""The shape of the code: imports that flow one way, and modules a newcomer reads in one sitting.

The import graph is read from the source (every `import` statement, at module level or inside a
function), over gentool, gentool.kernels and gentool.plugins.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"gentool": ROOT / "gentool", "gentool.kernels": ROOT / "kernels"}
PACKAGES["gentool.plugins"] = ROOT / "plugins"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
# Functions allowed to be longer, each for a reason: a declarative table or a Triton kernel body,
# whose loads, loop and epilogue share registers and read best in one piece.
LONG_FUNCTIONS: dict[str, str] = {
    "gentool.cli.train.train": "the 25 options of `gentool train`, one line each, then the request",
    "gentool.kernels.triton_convt_gemm._convt_gemm": "a Triton kernel body",
    "gentool.kernels.triton_batch_norm._scale_shift_relu": "a Triton kernel body",
    "gentool.kernels.triton_batch_norm_backward._batch_norm_relu_grad_partials": "a kernel body",
    "gentool.kernels.triton_batch_norm_backward._batch_norm_relu_grad_input": "a kernel body",
}
LONG_MODULES: dict[str, str] = {}


def module_files() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[0] in ("kernels", "plugins") and package == "gentool":
                continue  # links that benches/gpu.sh may leave when it runs from source
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The gentool modules `path` (module `name`) imports, anywhere in it.

    A plugin package imports its torch code inside `build()` only, so that listing plugins loads
    no torch; that deferred import of its own submodule is the plugin API's design, not a circle.
    """
    tree = ast.parse(path.read_text())
    deferred = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
    }
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from package import module` imports the module; `from module import name`, the
            # module.
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name for name in submodules if name in modules] or [node.module]
        else:
            continue
        lazy_own_submodule = path.name == "__init__.py" and id(node) in deferred
        found |= {
            imported
            for imported in names
            if imported in modules and not (lazy_own_submodule and imported.startswith(f"{name}."))
        }
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, as the modules along it, or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        trail.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return [*trail[trail.index(imported) :], imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        state[module] = "done"
        trail.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        for imported in graph.get(module, ()):
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def test_no_import_circle_anywhere():
    cycle = find_cycle(import_graph())
    assert cycle is None, " → ".join(cycle)


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


BELOW_TRAINING = [
    "gentool.generate",
    "gentool.evaluate",
    "gentool.export",
    "gentool.models",
    "gentool.sampling",
]


@pytest.mark.parametrize("module", [*BELOW_TRAINING, "gentool.report", "gentool.checkpoint"])
def test_generation_and_evaluation_sit_below_training(module):
    graph = import_graph()
    training = {name for name in graph if name.startswith("gentool.training")}
    assert not reachable(graph, module) & training


def test_importing_generation_loads_no_training_code():
    probe = (
        "import sys, gentool.generate, gentool.evaluate, gentool.export\n"
        "print(sorted(name for name in sys.modules if name.startswith('gentool.training')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_modules_are_read_in_one_sitting():
    long = {
        name: lines
        for name, path in module_files().items()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert set(long) <= set(LONG_MODULES), long


def test_functions_fit_on_a_screen():
    long = {}
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = lines
    assert set(long) <= set(LONG_FUNCTIONS), {
        name: lines for name, lines in long.items() if name not in LONG_FUNCTIONS
    }
