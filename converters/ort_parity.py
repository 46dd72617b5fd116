"""ONNX Runtime parity of graphdnn's ONNX export with ``torch.onnx.export`` of the same handwritten module.

Models (``KINDS``): the book's 784-300-100-10 MLP with ReLU, and with batch norm + ELU (inference form),
built as a graph and as a ``torch.nn`` module holding the same weights (``build``); ``export_pair`` exports
both, the module with the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``).

``structural_check`` compares the graphs ORT actually runs (default optimization level, saved through
``SessionOptions.optimized_model_filepath``) node by node: op type, domain and attributes (schema defaults
filled in), ignoring ``IGNORED_ATTRIBUTES`` (graphdnn keeps kernels [in, out], torch [out, in]).
``python benchmarks/onnx_inference.py`` also times the sessions.
"""

from __future__ import annotations

import functools
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import onnx
import onnx.defs
import onnxruntime as ort
import torch
import torch.nn as tnn
import torch.nn.functional as F
from graphdnn.converters.onnx_export import export_onnx

from graphdnn import layers, nn
from graphdnn.graph import Graph

__all__ = ["IGNORED_ATTRIBUTES", "KINDS", "Handwritten", "build", "export_pair", "optimized_ops", "ort_session",
           "structural_check"]

KINDS = ("relu", "bn_elu")
IGNORED_ATTRIBUTES = ("transA", "transB")


def build(kind: str) -> tuple[Graph, Any, tnn.Module]:
    """The graphdnn graph, its logits and the equivalent handwritten torch module (eval mode)."""
    torch.manual_seed(0)
    g = Graph(f"book_{kind}")
    X = g.placeholder("X", (None, 784))
    bn = partial(layers.batch_normalization, momentum=0.9)
    with g.name_scope("dnn"):
        if kind == "relu":
            h = layers.dense(X, 300, activation=nn.relu, name="hidden1")
            h = layers.dense(h, 100, activation=nn.relu, name="hidden2")
        else:
            h = nn.elu(bn(layers.dense(X, 300, name="hidden1"), name="bn1"))
            h = nn.elu(bn(layers.dense(h, 100, name="hidden2"), name="bn2"))
        logits = layers.dense(h, 10, name="outputs")
    for v in g.variables():
        if "moving" in v.name:
            g.set_value(v.name, torch.rand(v.attrs["shape"]) + 0.5)
    return g, logits, Handwritten(g, kind).eval()


class Handwritten(tnn.Module):
    """The same MLP written with torch.nn, holding copies of the graph's weights."""

    def __init__(self, g: Graph, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.fc = tnn.ModuleList(tnn.Linear(i, o) for i, o in ((784, 300), (300, 100), (100, 10)))
        self.bn = tnn.ModuleList(tnn.BatchNorm1d(c, eps=1e-3) for c in (300, 100))
        with torch.no_grad():
            for fc, scope in zip(self.fc, ("hidden1", "hidden2", "outputs")):
                fc.weight.copy_(g.values[f"{scope}/kernel"].T)
                fc.bias.copy_(g.values[f"{scope}/bias"])
            if kind != "relu":
                for b, scope in zip(self.bn, ("bn1", "bn2")):
                    b.weight.copy_(g.values[f"{scope}/gamma"])
                    b.bias.copy_(g.values[f"{scope}/beta"])
                    b.running_mean.copy_(g.values[f"{scope}/moving_mean"])
                    b.running_var.copy_(g.values[f"{scope}/moving_variance"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(2):
            x = self.fc[i](x)
            x = F.relu(x) if self.kind == "relu" else F.elu(self.bn[i](x))
        return self.fc[2](x)


def export_pair(kind: str, workdir: str | Path) -> tuple[Path, Path, tnn.Module]:
    """Export ``kind`` with graphdnn and with ``torch.onnx.export``; return both paths and the torch module."""
    g, logits, ref = build(kind)
    ours = Path(workdir) / f"{kind}_graphdnn.onnx"
    base = Path(workdir) / f"{kind}_torch.onnx"
    export_onnx(g, str(ours), outputs=[logits])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ref, (torch.zeros(1, 784),), str(base), input_names=["X"], output_names=["logits"],
                          dynamic_axes={"X": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return ours, base, ref


def ort_session(path: str | Path, threads: int, optimized_path: str | Path | None = None) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads that do not spin; ``optimized_path`` saves the graph ORT runs."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # no spin-waiting: idle ORT threads would otherwise steal the CPU from the run timed next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
        opts.log_severity_level = 3  # the "hardware specific optimizations" warning is expected here
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@functools.cache
def _ort_contrib_defaults() -> dict[tuple[str, str], dict[str, Any]]:
    """Attribute defaults of ORT's non-ONNX-domain ops (e.g. com.microsoft FusedGemm), latest version."""
    out: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    try:
        schemas = ort.capi.onnxruntime_pybind11_state.get_all_operator_schema()
    except AttributeError:  # minimal builds: no schemas, compare the explicit attributes only
        return {}
    for schema in schemas:
        if schema.domain in ("", "ai.onnx"):
            continue
        defaults = {}
        for name, attr in schema.attributes.items():
            raw = getattr(attr, "_default_value", b"")
            if raw:
                proto = onnx.AttributeProto.FromString(raw)
                if proto.type != onnx.AttributeProto.UNDEFINED:
                    defaults[name] = _jsonable(onnx.helper.get_attribute_value(proto))
        key = (schema.name, schema.domain)
        if key not in out or out[key][0] < schema.since_version:
            out[key] = (schema.since_version, defaults)
    return {k: v for k, (_, v) in out.items()}


def _schema_defaults(op_type: str, domain: str, opset: int) -> dict[str, Any]:
    """Attribute defaults from the op's schema (ONNX's, or ORT's for its own domains)."""
    if domain in ("", "ai.onnx"):
        try:
            schema = onnx.defs.get_schema(op_type, opset, "")
        except onnx.defs.SchemaError:
            return {}
        return {name: _jsonable(onnx.helper.get_attribute_value(a.default_value))
                for name, a in schema.attributes.items() if a.default_value.type != onnx.AttributeProto.UNDEFINED}
    return dict(_ort_contrib_defaults().get((op_type, domain), {}))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value).tolist()
    if isinstance(value, (int, float, str)):
        return value
    return repr(value)


def optimized_ops(path: str | Path, optimized_path: str | Path, threads: int = 1) -> list[dict[str, Any]]:
    """The nodes of the graph ORT runs for ``path`` (default optimization level), in order: op type, domain and
    attributes with the schema defaults filled in, so explicit and implicit defaults compare equal."""
    ort_session(path, threads, optimized_path)
    model = onnx.load(str(optimized_path))
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    ops = []
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        attrs = _schema_defaults(node.op_type, domain, opsets.get(domain, 1))
        attrs.update({a.name: _jsonable(onnx.helper.get_attribute_value(a)) for a in node.attribute})
        ops.append({"op_type": node.op_type, "domain": domain, "attrs": dict(sorted(attrs.items()))})
    return ops


def structural_check(ours: str | Path, base: str | Path, workdir: str | Path, threads: int = 1) -> dict[str, Any]:
    """Compare the optimized ORT graphs of graphdnn's and torch's exports, ignoring ``IGNORED_ATTRIBUTES``."""
    ops_ours = optimized_ops(ours, Path(workdir) / f"{Path(ours).stem}.optimized.onnx", threads)
    ops_base = optimized_ops(base, Path(workdir) / f"{Path(base).stem}.optimized.onnx", threads)

    def key(ops: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
        return [(op["op_type"], op["domain"], {k: v for k, v in op["attrs"].items() if k not in IGNORED_ATTRIBUTES})
                for op in ops]

    identical = key(ops_ours) == key(ops_base)
    return {"optimized_graphs_identical": identical, "ignored_attributes": list(IGNORED_ATTRIBUTES),
            "graphdnn": ops_ours, "torch_export": ops_base}
