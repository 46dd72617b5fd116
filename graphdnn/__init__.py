"""graphdnn: deep networks as named operation graphs, compiled to PyTorch.

Build by name (``layers.dense(X, 300, name="hidden1")``), compile any part to a ``torch.nn.Module``
(``graphdnn.compile``), save weights and graph in one safetensors file (``graphdnn.save``/``load``),
export to ONNX with every name intact (``graphdnn.export_onnx``).

The public names are imported on first use (PEP 562), so ``import graphdnn`` (and ``graphdnn --version``)
does not import torch. ``graphdnn.restore`` and ``graphdnn.freeze`` are functions; their modules are
``graphdnn.restoring`` and ``graphdnn.freezing``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from graphdnn import graph_hooks as _graph_hooks
from graphdnn._version import __version__ as __version__

# The graph IR imports no higher layer: the modules that implement its hooks are loaded on first use.
_graph_hooks.provide(_graph_hooks.OPS, lambda: importlib.import_module("graphdnn.shapes"))
_graph_hooks.provide(_graph_hooks.REGULARIZER, lambda: importlib.import_module("graphdnn.regularizers"))
_graph_hooks.provide(_graph_hooks.TO_JSON, lambda: importlib.import_module("graphdnn.serialize"))
_graph_hooks.provide(_graph_hooks.FROM_JSON, lambda: importlib.import_module("graphdnn.serialize"))
_graph_hooks.provide(_graph_hooks.INITIALIZE, lambda: importlib.import_module("graphdnn.restoring"))

#: public name -> the module that defines it (a module's own name: the module itself).
_PUBLIC = {
    "CompiledGraph": "graphdnn.compiler",
    "compile": "graphdnn.compiler",
    "cache_frozen": "graphdnn.cache",
    "FileFormatError": "graphdnn.errors",
    "GraphDNNError": "graphdnn.errors",
    "GraphError": "graphdnn.errors",
    "InputError": "graphdnn.errors",
    "ResourceLimitError": "graphdnn.errors",
    "RestoreError": "graphdnn.errors",
    "UninitializedError": "graphdnn.errors",
    "UnknownOpError": "graphdnn.errors",
    "freeze": "graphdnn.freezing",
    "trainable_parameters": "graphdnn.freezing",
    "unfreeze": "graphdnn.freezing",
    "Graph": "graphdnn.graph",
    "Op": "graphdnn.graph",
    "Tensor": "graphdnn.graph",
    "get_default_graph": "graphdnn.graph",
    "reset_default_graph": "graphdnn.graph",
    "graph_name": "graphdnn.names",
    "state_key": "graphdnn.names",
    "placeholder": "graphdnn.nn",
    "RestoreReport": "graphdnn.restoring",
    "initialize": "graphdnn.restoring",
    "restore": "graphdnn.restoring",
    "extract_subgraph": "graphdnn.surgery",
    "prune": "graphdnn.surgery",
    "remove_scope": "graphdnn.surgery",
    "rename_scope": "graphdnn.surgery",
    "replace_scope": "graphdnn.surgery",
    "stop_gradient_after": "graphdnn.surgery",
    "make_optimizer": "graphdnn.train.optimizers",
    "load": "graphdnn.loading",
    "save": "graphdnn.loading",
    "export_onnx": "graphdnn.loading",
    "from_torch": "graphdnn.loading",
    "initializers": "graphdnn.initializers",
    "layers": "graphdnn.layers",
    "nn": "graphdnn.nn",
    "regularizers": "graphdnn.regularizers",
}

__all__ = ["CompiledGraph", "RestoreReport", "FileFormatError", "Graph", "GraphDNNError", "GraphError", "InputError",
    "Op", "ResourceLimitError", "RestoreError", "Tensor", "UninitializedError", "UnknownOpError", "cache_frozen",
    "compile", "extract_subgraph", "freeze", "from_torch", "export_onnx", "get_default_graph", "graph_name",
    "initialize", "initializers", "layers", "load", "make_optimizer", "nn", "placeholder", "prune", "regularizers",
    "remove_scope", "rename_scope", "replace_scope", "reset_default_graph", "restore", "save", "state_key",
    "stop_gradient_after", "trainable_parameters", "unfreeze"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        # a submodule not imported yet (``graphdnn.surgery``): imported on first use as well
        if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module == f"{__name__}.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({k for k in globals() if k.startswith("__")} | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time ``__getattr__`` imports these on first use
    from graphdnn import initializers, layers, nn, regularizers
    from graphdnn.cache import cache_frozen
    from graphdnn.compiler import CompiledGraph, compile  # noqa: A004
    from graphdnn.errors import (
        FileFormatError,
        GraphDNNError,
        GraphError,
        InputError,
        ResourceLimitError,
        RestoreError,
        UninitializedError,
        UnknownOpError,
    )
    from graphdnn.freezing import freeze, trainable_parameters, unfreeze
    from graphdnn.graph import Graph, Op, Tensor, get_default_graph, reset_default_graph
    from graphdnn.loading import export_onnx, from_torch, load, save
    from graphdnn.names import graph_name, state_key
    from graphdnn.nn import placeholder
    from graphdnn.restoring import RestoreReport, initialize, restore
    from graphdnn.surgery import (
        extract_subgraph,
        prune,
        remove_scope,
        rename_scope,
        replace_scope,
        stop_gradient_after,
    )
    from graphdnn.train.optimizers import make_optimizer
