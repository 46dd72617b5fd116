"""Functions several test files share: running an ONNX model in ONNX Runtime and through graphdnn's real path
(``load_onnx`` -> ``graphdnn.compile`` -> forward), a value info for an array, a saved file's values, and the
book's DNN. ``tests/`` is on ``sys.path`` (pytest's rootdir conftest), so test files import them as
``from helpers import run_ort``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from graphdnn.converters.onnx_import import load_onnx
from onnx import TensorProto, helper

import graphdnn as gd
from graphdnn.recipes import default_dnn


def run_ort(model: onnx.ModelProto | str | os.PathLike[str] | bytes, feeds: Mapping[str, Any],
            names: Sequence[str] | None = None, *, optimize: bool = True) -> list[Any]:
    """ONNX Runtime's outputs (CPU) for ``model`` (a ``ModelProto``, a path or serialized bytes) on ``feeds``;
    ``names`` picks outputs (default: all). ``optimize=False`` turns ORT's graph optimizations off, so the plain
    kernels compute what the ONNX specification says (its default fuses e.g. DequantizeLinear + MatMul into an
    approximate MatMulNBits)."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    source = os.fspath(source) if isinstance(source, os.PathLike) else source
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    return session.run(None if names is None else list(names), dict(feeds))


def run_graphdnn(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> list[np.ndarray]:
    """graphdnn's outputs for ``model``: imported with ``load_onnx``, compiled on the model's own inputs and
    outputs, run in eval mode without gradients on ``inputs`` (arrays in the model's input order, or a mapping
    in that order). String arrays (``dtype=object``) are passed as they are; outputs come back as numpy arrays."""
    graph = load_onnx(model)
    module = gd.compile(graph, inputs=graph.meta["onnx"]["inputs"], outputs=graph.meta["onnx"]["outputs"]).eval()
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    # (np.ascontiguousarray makes a 0-d array 1-d: reshape it back)
    args = [v if v.dtype == object else torch.from_numpy(np.ascontiguousarray(v)).reshape(v.shape) for v in values]
    with torch.no_grad():
        out = module(*args)
    out = out if isinstance(out, tuple) else (out,)
    return [o.numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in out]


def value_info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    """An ONNX value info with ``value``'s element type (``STRING`` for ``dtype=object``) and shape."""
    elem = TensorProto.STRING if value.dtype == object else helper.np_dtype_to_tensor_dtype(value.dtype)
    return helper.make_tensor_value_info(name, elem, value.shape)


def saved_values(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The values of the graph saved at ``path`` (``graphdnn.load``), by name."""
    return dict(gd.load(Path(path)).values)


def same_tensors(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``a`` and ``b`` hold the same names with equal tensors (dtype, shape and values)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def frozen_book_dnn() -> gd.Graph:
    """The book's DNN (``default_dnn(784, 10, (300, 100, 50))``, seed 0) with ``hidden1`` and ``hidden2`` frozen."""
    torch.manual_seed(0)
    dnn = default_dnn(784, 10, (300, 100, 50))
    gd.freeze(dnn.graph, "hidden[12]")
    return dnn.graph
