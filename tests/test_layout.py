"""The package layout: imports only go downwards (engine < original < attribution < analysis, io <
apps), there are no import cycles between modules, and the old flat module names still import."""

import ast
import importlib
import os
import pathlib
import subprocess
import sys

import pytest

import interprettensor as it

ROOT = os.path.dirname(it.__file__)
#: layers of the architecture, bottom first; a module may import its own layer or lower ones
LAYERS = {"engine": 0, "original": 1, "attribution": 2, "analysis": 3, "io": 3, "pretrained": 1, "apps": 4}
#: order inside the engine: each module imports only earlier ones (a dotted name orders a package's
#: modules, the package's own name its ``__init__``, which re-exports them)
ENGINE = ["errors", "dtypes", "backend._concrete", "backend._tensorflow", "backend._jax", "backend._torch", "backend", "rule_algebra", "rule_registry", "linear", "rules", "operation_rules", "handlers", "expand", "graph.model", "graph.canonical",
          "graph.analyses", "graph.statistics", "graph.trace", "graph.checkpoint", "graph.interpret", "graph", "composites", "precision", "targets",
          "forward_check", "explainer", "conditions"]
#: io may not import analysis (analysis builds on io's runs); the exceptions: deprecated aliases of
#: modules that moved from io to analysis
IO_IMPORTS_ANALYSIS = {"interprettensor.io.virelay"}


def _modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                name = "interprettensor" + ("" if rel == "__init__" else "." + rel.removesuffix(".__init__"))
                out[name] = path
    return out


def _imports(name: str, path: str) -> set[str]:
    """Absolute names of the package's modules that ``name`` imports (anywhere in the file)."""
    tree = ast.parse(open(path).read())
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("interprettensor"):
                found.add(mod)
                for alias in node.names:  # ``from . import handlers``: a module
                    found.add(f"{mod}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("interprettensor"))
    return found


def _resolve(mod: str, known: dict) -> str | None:
    while mod and mod not in known:
        mod = mod.rsplit(".", 1)[0] if "." in mod else ""
    return mod or None


def _layer(name: str) -> tuple[int, int] | None:
    parts = name.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    inner = -1
    if parts[1] == "engine":  # the longest dotted name in ENGINE that the module is or lies in
        inner = next((ENGINE.index(".".join(parts[2:n])) for n in range(len(parts), 2, -1)
                      if ".".join(parts[2:n]) in ENGINE), -1)
    return LAYERS[parts[1]], inner


def test_imports_only_go_downwards():
    known = _modules()
    upward = []
    for name, path in known.items():
        if name == "interprettensor" or name == "interprettensor.__main__":
            continue  # the package's lazy names and ``python -m`` reach every layer on purpose
        here = _layer(name)
        for imp in _imports(name, path):
            target = _resolve(imp, known)
            if target is None or target == "interprettensor" or target == name:
                continue
            there = _layer(target)
            if here is None or there is None:
                continue
            if there[0] > here[0] or (there[0] == here[0] == 0 and here[1] >= 0 and there[1] > here[1]):
                upward.append(f"{name} imports {target}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_io_does_not_import_analysis():
    known = _modules()
    found = []
    for name, path in known.items():
        if not name.startswith("interprettensor.io.") or name in IO_IMPORTS_ANALYSIS:
            continue
        for imp in _imports(name, path):
            target = _resolve(imp, known)
            if target is not None and (target == "interprettensor.analysis"
                                       or target.startswith("interprettensor.analysis.")):
                found.append(f"{name} imports {target}")
    assert not found, "io imports analysis:\n" + "\n".join(sorted(set(found)))
    assert all(n in known for n in IO_IMPORTS_ANALYSIS), "an exception that no longer exists: drop it"


def test_engine_order_names_every_engine_module():
    """Each engine module (and each module of an engine package) has its place in ENGINE."""
    unplaced = [n for n in _modules() if n.startswith("interprettensor.engine.") and _layer(n)[1] < 0]
    assert not unplaced, "engine modules missing from ENGINE:\n" + "\n".join(sorted(unplaced))

def test_no_import_cycles():
    known = _modules()
    graph = {n: {t for t in (_resolve(i, known) for i in _imports(n, p))
                 if t and t != n and t != "interprettensor"} for n, p in known.items()}
    # a package's __init__ that re-exports its submodules is not a cycle with them
    for n in graph:
        graph[n] = {t for t in graph[n] if not t.startswith(n + ".") and not n.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for t in graph.get(n, ()):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]) if t in stack else f"{n} -> {t}")
            elif t not in state:
                visit(t, stack + [t])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("old,new", sorted(it._MOVED.items()))
def test_old_module_names_still_import(old, new):
    assert importlib.import_module(f"interprettensor.{old}") is importlib.import_module(f"interprettensor.{new}")
    assert getattr(it, old) is importlib.import_module(f"interprettensor.{new}")


def test_old_from_imports_work_in_a_fresh_process():
    code = ("from interprettensor.explain import Explainer, lrp\n"
            "from interprettensor.stream import explain_dataset\n"
            "from interprettensor.handlers import LinearHandler, register_handler\n"
            "from interprettensor.core import linear_relevance\n"
            "from interprettensor.layers import Linear\n"
            "from interprettensor.cli import main\n"
            "import interprettensor.evaluate as ev\n"
            "print('OK', Explainer.__module__, ev.__name__)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "OK interprettensor.engine.explainer interprettensor.analysis.evaluate" in p.stdout


def test_backend_specific_code_lives_in_the_backend_modules():
    """The engine speaks keras.ops: TensorFlow, JAX and PyTorch are named only in engine/backend's
    modules (issue 20); io/ and apps/ import TensorFlow only inside the functions that need it."""
    import re

    frameworks = re.compile(r"^\s*(import|from)\s+(tensorflow|jax|torch)\b|\btf\.[a-z_]+\(", re.M)
    offenders = []
    src = pathlib.Path(ROOT)
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if rel.startswith("engine/backend/_"):
            continue
        text = path.read_text()
        code = re.sub(r'"""(?:.|\n)*?"""', "", text)  # docstrings may name TensorFlow's functions
        if rel.startswith("engine/") and frameworks.search(code):
            offenders.append(rel)
        elif re.search(r"^(import|from)\s+(tensorflow|jax|torch)\b", code, re.M):  # module-level elsewhere
            offenders.append(rel)
    assert offenders == []
