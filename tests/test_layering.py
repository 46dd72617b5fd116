"""The package's layers import one way: ir <- ops <- compile <- train; the file-format converters build on the
core and the core never reaches them by import (only through the ``graphdnn.formats`` registry); the command
line may use everything.

Every module's imports are read with ``ast``: module level, inside functions, and ``importlib.import_module``
calls with a literal name (imports under ``if TYPE_CHECKING:`` do not run and are left out)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The layers, lowest first. A module may import its own layer and the layers before it, nothing later.
ORDER = ("ir", "ops", "compile", "train", "converters", "cli")

#: Module -> layer: the longest matching prefix wins (``graphdnn.ops.registry`` is in ``graphdnn.ops``). A new
#: module of the package needs its line here.
LAYER_OF = {
    # ir: the graph itself and what it is made of (names, dtypes, errors, value initializers)
    "graphdnn._version": "ir",
    "graphdnn.errors": "ir",
    "graphdnn.names": "ir",
    "graphdnn.dtypes": "ir",
    "graphdnn.small_dtypes": "ir",
    "graphdnn.suggest": "ir",
    "graphdnn.atomic": "ir",
    "graphdnn.bulk": "ir",
    "graphdnn.budget": "ir",
    "graphdnn.graph": "ir",
    "graphdnn.graph_hooks": "ir",  # where the layers above plug into the graph (operator set, JSON form...)
    "graphdnn.opset": "ir",
    "graphdnn.initializers": "ir",
    "graphdnn.subgraphs": "ir",  # control-flow bodies: graphs held in an op's attributes
    # ops: the operator set, shape inference and the graph-building functions made of ops
    "graphdnn.ops": "ops",
    "graphdnn.shapes": "ops",
    "graphdnn.nn": "ops",
    "graphdnn.layers": "ops",
    "graphdnn.regularizers": "ops",
    "graphdnn.gate_order": "ops",
    # compile: graphs to modules, and what works on graphs and modules (files, restore, surgery, pictures)
    "graphdnn.compiler": "compile",
    "graphdnn.fusion": "compile",
    "graphdnn.serialize": "compile",
    "graphdnn.checkpoint": "compile",
    "graphdnn.formats": "compile",
    "graphdnn.loading": "compile",
    "graphdnn.restoring": "compile",
    "graphdnn.freezing": "compile",
    "graphdnn.surgery": "compile",
    "graphdnn.runtime": "compile",
    "graphdnn.summary": "compile",
    "graphdnn.draw": "compile",
    "graphdnn.raster": "compile",
    "graphdnn.module_slots": "compile",
    "graphdnn.data": "compile",
    "graphdnn.testing": "compile",
    # train: fitting, optimizers, and what builds on them
    "graphdnn.train": "train",
    "graphdnn.recipes": "train",
    "graphdnn.cache": "train",
    # converters: file formats, on top of the core
    "graphdnn.converters": "converters",
    # the command line and the package's facade (``graphdnn.load`` etc. re-export from every layer)
    "graphdnn": "cli",
    "graphdnn.__main__": "cli",
    "graphdnn.cli": "cli",
    "graphdnn.commands": "cli",
}

#: Upward imports that remain, each one edge ``importer -> imported`` (both modules). The list may only
#: shrink: a new upward import fails the test, and so does an entry here that no longer exists.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "converters":  # installed as graphdnn.converters (package-dir mapping)
        parts = ["graphdnn", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for folder in ("graphdnn", "converters") for p in sorted((ROOT / folder).rglob("*.py"))}


def layer(module: str) -> str:
    """The layer of ``module`` (its longest prefix in ``LAYER_OF``; the facade ``graphdnn`` itself is no prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        if ".".join(parts[:n]) in LAYER_OF:
            return LAYER_OF[".".join(parts[:n])]
    if module in LAYER_OF:
        return LAYER_OF[module]
    raise KeyError(f"{module} has no layer: add it (or its package) to LAYER_OF in {Path(__file__).name}")


def _resolve(name: str) -> str:
    """The first-party module ``name`` means (``graphdnn.x.y`` may name an attribute of ``graphdnn.x``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(module: str) -> set[str]:
    """The first-party modules ``module`` imports anywhere in its code."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) in ("importlib.import_module", "import_module")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return {_resolve(n) for n in found if n == "graphdnn" or n.startswith("graphdnn.")} - {module}


EDGES = {(m, t) for m in MODULES for t in imports_of(m)}


def test_every_module_has_a_layer() -> None:
    missing = []
    for module in MODULES:
        try:
            assert layer(module) in ORDER
        except KeyError:
            missing.append(module)
    assert not missing, f"modules without a layer (add them to LAYER_OF): {missing}"


def test_the_core_imports_no_converter() -> None:
    wrong = sorted(f"{m} -> {t}" for m, t in EDGES
                   if layer(m) not in ("converters", "cli") and layer(t) == "converters")
    assert not wrong, "the core reaches the converters only through graphdnn.formats:\n" + "\n".join(wrong)


def test_imports_follow_the_layers() -> None:
    upward = {(m, t) for m, t in EDGES if ORDER.index(layer(t)) > ORDER.index(layer(m))}
    new = sorted(f"{m} ({layer(m)}) -> {t} ({layer(t)})" for m, t in upward - KNOWN_UPWARD)
    assert not new, "imports against the layers (ir <- ops <- compile <- train <- converters <- cli):\n" + "\n".join(
        new)
    stale = sorted(f"{m} -> {t}" for m, t in KNOWN_UPWARD - upward)
    assert not stale, "no longer imported: remove from KNOWN_UPWARD:\n" + "\n".join(stale)


def test_no_cycle_between_layers() -> None:
    layers = nx.DiGraph()
    layers.add_nodes_from(ORDER)
    layers.add_edges_from((layer(m), layer(t)) for m, t in EDGES - KNOWN_UPWARD if layer(m) != layer(t))
    cycles = list(nx.simple_cycles(layers))
    assert not cycles, f"layers importing each other: {cycles}"


def test_the_layer_checks_see_imports_inside_functions(tmp_path: Path) -> None:
    # the checks rest on imports_of: it must see function-level imports and import_module literals
    assert "graphdnn.graph_hooks" in imports_of("graphdnn.graph")  # ``from graphdnn import graph_hooks``
    assert "graphdnn.suggest" in imports_of("graphdnn.graph")  # inside Graph.get_operation
    assert "graphdnn.shapes" in imports_of("graphdnn")  # ``importlib.import_module("graphdnn.shapes")``
    assert "graphdnn.graph" not in imports_of("graphdnn")  # only under TYPE_CHECKING in the facade


@pytest.mark.parametrize("statement", ["import graphdnn; graphdnn.__version__",
                                       "import graphdnn.formats as f; f.formats(); f.sniff(sys.executable)"])
def test_import_graphdnn_loads_neither_torch_nor_a_converter(statement: str) -> None:
    code = (f"import sys\n{statement}\n"
            "print(sorted(m for m in sys.modules if m in ('torch', 'onnx', 'h5py') "
            "or m.startswith('graphdnn.converters.') and m != 'graphdnn.converters.formats'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_graph_loads_the_layers_it_builds_with_on_first_use() -> None:
    # the IR imports no higher layer: the operator set, the regularizer ops, the JSON form and the initializing
    # of variables are installed into it (graphdnn.graph_hooks) by their modules, loaded when first needed
    code = ("import sys\n"
            "from graphdnn.graph import Graph\n"
            "upper = ('graphdnn.shapes', 'graphdnn.ops.registry', 'graphdnn.regularizers', 'graphdnn.serialize')\n"
            "print(sorted(m for m in upper if m in sys.modules))\n"
            "g = Graph()\n"
            "x = g.placeholder('x', (None, 3))\n"
            "y = g.add_op('Relu', [x]).out()\n"
            "print(y.shape, y.dtype, sorted(m for m in upper if m in sys.modules))\n"
            "w = g.variable('w', (3, 2), regularizer={'type': 'l1_l2', 'l1': 0.5, 'l2': 0.0})\n"
            "print(g.get_collection('regularization_losses'))\n"
            "print(Graph.from_json(g.to_json()).get_tensor('Relu:0').shape)\n"
            "drawn = Graph.from_json(g.to_json(), initialize=True).values\n"
            "print(sorted(drawn), tuple(drawn['w'].shape))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.splitlines() == [
        "[]",
        "(None, 3) float32 ['graphdnn.ops.registry', 'graphdnn.shapes']",
        "['w/Regularizer/l1:0']",
        "(None, 3)",
        "['w'] (3, 2)",
    ]
