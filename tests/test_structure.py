"""The shape of the package: no import cycles, and the registries light enough that --help needs no torch."""

import ast
import subprocess
import sys
from pathlib import Path

import grokrun

PACKAGE = Path(grokrun.__file__).parent


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """grokrun module -> the grokrun modules it imports, from every import statement in it (those inside
    functions and under TYPE_CHECKING included) and every string naming one (a registry's importlib target)."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1 parents
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                # "from grokrun.tasks import base" imports the module grokrun.tasks.base
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                targets = [node.value]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [])
            if found:
                return found
    return None


def test_no_module_imports_a_module_that_imports_it_back():
    graph = import_graph()
    assert {"grokrun.config", "grokrun.tasks", "grokrun.tasks.modular", "grokrun.engine"} <= set(graph)
    assert "grokrun.tasks.base" in graph["grokrun.tasks.modular"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    # the shape of the cycle grokrun once had: config asked the task registry to validate, while each task
    # module imported its options from config
    pkg = tmp_path / "grokrun"
    (pkg / "tasks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def validate():\n    from grokrun.tasks import task_module\n")
    (pkg / "tasks" / "__init__.py").write_text('TASKS = {"modular": "grokrun.tasks.modular"}\n')
    (pkg / "tasks" / "modular.py").write_text("from grokrun.config import validate\n")
    assert find_cycle(import_graph(pkg)) == ["grokrun.config", "grokrun.tasks", "grokrun.tasks.modular",
                                             "grokrun.config"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None


def test_the_cli_and_every_registry_load_without_torch():
    """Every task module, filter and optimizer is read to make the flags: none of them may import torch."""
    code = ("import sys\nimport grokrun.cli, grokrun.flags\nfrom grokrun.tasks import TASKS, task\n"
            "[task(name) for name in TASKS]\n"
            "heavy = [m for m in ('torch', 'torch_geometric', 'torchvision', 'grokrun.models') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_module_is_over_350_lines_and_no_function_over_60():
    """One concept a file, read top to bottom (a table of contents in a docstring is the sign to split)."""
    import ast

    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 350:
            long_modules.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert not long_modules and not long_functions, (long_modules, long_functions)
