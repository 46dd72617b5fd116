"""graphdnn: deep networks as named operation graphs, compiled to PyTorch.

Build by name (``layers.dense(X, 300, name="hidden1")``), compile any part to a ``torch.nn.Module``
(``graphdnn.compile``), save weights and graph in one safetensors file (``graphdnn.save``/``load``),
export to ONNX with every name intact (``graphdnn.export_onnx``).
"""

from __future__ import annotations

from typing import Any

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
from graphdnn.freeze import freeze, trainable_parameters, unfreeze
from graphdnn.graph import Graph, Op, Tensor, get_default_graph, reset_default_graph
from graphdnn.names import graph_name, state_key
from graphdnn.nn import placeholder
from graphdnn.restore import RestoreReport, initialize, restore
from graphdnn.surgery import (
    extract_subgraph,
    prune,
    remove_scope,
    rename_scope,
    replace_scope,
    stop_gradient_after,
)
from graphdnn.train.optimizers import make_optimizer

# ``graphdnn.restore`` and ``graphdnn.freeze`` are the functions; reach the modules' other names with
# ``from graphdnn.restore import match_names`` (``import graphdnn.restore as m`` would give the function).
__version__ = "0.1.0"


def save(obj: Any, path: str, **kwargs: Any) -> Any:
    """Save a graph or compiled module (variables + graph) to one ``.safetensors`` file."""
    from graphdnn.checkpoint import save as _save

    return _save(obj, path, **kwargs)


def load(path: str, **kwargs: Any) -> Graph:
    """Load a graph with its values from any supported format (chosen by the file)."""
    from graphdnn.loading import load as _load

    return _load(path, **kwargs)


def export_onnx(obj: Any, path: str, **kwargs: Any) -> Any:
    """Export a graph or compiled module to ONNX, keeping every name."""
    from graphdnn.converters.onnx_export import export_onnx as _export

    return _export(obj, path, **kwargs)


def from_torch(module: Any, example_inputs: Any, dynamic_shapes: Any = None, **kwargs: Any) -> Graph:
    """The graph of a ``torch.nn.Module`` traced by ``torch.export``: its parameters and buffers as variables
    under their state-dict names, op names scoped by module path (``graphdnn.converters.torch_export``)."""
    from graphdnn.converters.torch_export import from_torch as _from_torch

    return _from_torch(module, example_inputs, dynamic_shapes, **kwargs)


__all__ = [
    "CompiledGraph",
    "RestoreReport",
    "FileFormatError",
    "Graph",
    "GraphDNNError",
    "GraphError",
    "InputError",
    "Op",
    "ResourceLimitError",
    "RestoreError",
    "Tensor",
    "UninitializedError",
    "UnknownOpError",
    "cache_frozen",
    "compile",
    "extract_subgraph",
    "freeze",
    "from_torch",
    "export_onnx",
    "get_default_graph",
    "graph_name",
    "initialize",
    "initializers",
    "layers",
    "load",
    "make_optimizer",
    "nn",
    "placeholder",
    "prune",
    "regularizers",
    "remove_scope",
    "rename_scope",
    "replace_scope",
    "reset_default_graph",
    "restore",
    "save",
    "state_key",
    "stop_gradient_after",
    "trainable_parameters",
    "unfreeze",
]
