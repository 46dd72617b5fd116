"""ONNX's node conformance cases, evaluated directly through graphdnn's op registry.

The ``onnx`` wheel ships the node test generators (``onnx.backend.test.case.node``) but no data
files; ``iter_node_cases()`` rebuilds every case in memory (a single-node model plus input and
expected output arrays). Each case is evaluated *directly through the op registry*: attributes go
through ``graphdnn.converters.onnx_attrs``, static inputs are passed as Python lists, and multi-node cases
(function expansions) run node by node in a tiny dict-based interpreter that exists only here, as a
test tool. ``compare_outputs`` checks results as ONNX's backend runner does; ``graphdnn.converters.onnx_conformance``
runs the same cases through the real importer and compiler.

The full run with a report is ``python benchmarks/onnx_node_cases.py``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from graphdnn.converters.onnx_attrs import node_attributes
from graphdnn.converters.onnx_tensors import _SMALL_BY_NUMPY, array_to_torch, torch_to_array
from onnx import numpy_helper

from graphdnn.ops.registry import lookup
from graphdnn.small_dtypes import decode, is_small
from graphdnn.testing import describe_exception, run_isolated

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-7


# ---------------------------------------------------------------------------------------------
# Loading cases
# ---------------------------------------------------------------------------------------------
@dataclass
class NodeCase:
    """One ONNX node test: a model and its (inputs, expected outputs) data sets."""

    name: str
    model: onnx.ModelProto
    data_sets: list[tuple[list[Any], list[Any]]]
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    op_types: list[str] = field(default_factory=list)

    @property
    def op_type(self) -> str:
        """The op the case is about: the node's type, or the expanded function's name."""
        nodes = self.model.graph.node
        if len(nodes) == 1:
            return nodes[0].op_type
        return "expanded:" + _expanded_name(self.name)

    def opset(self, domain: str = "") -> int:
        for imp in self.model.opset_import:
            if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
                return int(imp.version)
        return 1


def _expanded_name(case_name: str) -> str:
    base = re.sub(r"^test_", "", case_name)
    base = re.sub(r"_expanded.*$", "", base)
    return base


def iter_node_cases(filter_regex: str | None = None) -> Iterator[NodeCase]:
    """Every ONNX node test case (optionally only names matching ``filter_regex``)."""
    from onnx.backend.test.case.node import collect_testcases

    pattern = re.compile(filter_regex) if filter_regex else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    for case in cases:
        if case.kind != "node" or case.model is None:
            continue
        if pattern and not pattern.search(case.name) and not any(
            pattern.search(n.op_type) for n in case.model.graph.node[:1]
        ):
            continue
        yield NodeCase(
            name=case.name,
            model=case.model,
            data_sets=[(list(i), list(o)) for i, o in case.data_sets],
            rtol=case.rtol if case.rtol is not None else DEFAULT_RTOL,
            atol=case.atol if case.atol is not None else DEFAULT_ATOL,
            op_types=[n.op_type for n in case.model.graph.node],
        )


# ---------------------------------------------------------------------------------------------
# numpy <-> torch
# ---------------------------------------------------------------------------------------------
def _ml_dtype_names() -> dict[str, torch.dtype]:
    return {
        "bfloat16": torch.bfloat16,
        "float8_e4m3fn": torch.float8_e4m3fn,
        "float8_e4m3fnuz": torch.float8_e4m3fnuz,
        "float8_e5m2": torch.float8_e5m2,
        "float8_e5m2fnuz": torch.float8_e5m2fnuz,
    }


def as_numpy(value: Any) -> Any:
    """A test-data value as a numpy array (TensorProto and numpy scalars included)."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, np.generic):
        return np.asarray(value)
    return value


def to_torch(value: Any) -> Any:
    """A numpy array (ml_dtypes bfloat16/float8/int4... included) as a torch tensor; a sequence (list) as a
    list of them; None (an empty optional) as None."""
    if isinstance(value, list):
        return [to_torch(v) for v in value]
    value = as_numpy(value)
    if value is None or not isinstance(value, np.ndarray):
        return value
    name = value.dtype.name
    special = _ml_dtype_names()
    if name in _SMALL_BY_NUMPY:  # int4, float4_e2m1fn...: unpacked, one element per byte
        return array_to_torch(value)
    if name in special:
        width = {1: np.uint8, 2: np.uint16}[value.dtype.itemsize]
        raw = torch.from_numpy(np.array(value, order="C", copy=True).view(width))
        return raw.view(special[name])
    if value.dtype == object or value.dtype.kind in "US":  # strings stay numpy arrays of str
        return np.array(value, dtype=object)
    if value.dtype.itemsize == 1 and name not in ("uint8", "int8", "bool"):
        raise NotImplementedError(f"element type {name} is not supported")
    return torch.from_numpy(np.array(value, order="C", copy=True))


def to_numpy(value: Any) -> Any:
    """A torch tensor as numpy (bfloat16/float8/int4... through ml_dtypes)."""
    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    value = value.detach().cpu()
    if is_small(value.dtype):
        return torch_to_array(value)
    for name, dt in _ml_dtype_names().items():
        if value.dtype == dt:
            import ml_dtypes

            width = {1: torch.uint8, 2: torch.uint16}[value.element_size()]
            return value.contiguous().view(width).numpy().view(getattr(ml_dtypes, name))
    return value.resolve_conj().numpy()


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------
def compare_outputs(
    expected: Sequence[Any], actual: Sequence[Any], rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL
) -> str | None:
    """None when ``actual`` matches ``expected`` as ONNX's backend runner checks it (count, shape,
    dtype, then ``assert_allclose``); otherwise a one-line reason."""
    if len(expected) != len(actual):
        return f"expected {len(expected)} outputs, got {len(actual)}"
    for i, (ref, out) in enumerate(zip(expected, actual)):
        reason = compare_value(ref, out, rtol, atol, f"output {i}")
        if reason:
            return reason
    return None


def compare_value(ref: Any, out: Any, rtol: float, atol: float, where: str) -> str | None:
    """``compare_outputs`` for one value: a tensor, a sequence (a list, compared element by element,
    same length) or an empty optional (None, matched only by None)."""
    if ref is None or out is None:
        return None if ref is None and out is None else (
            f"{where}: expected an empty optional, got a value" if ref is None else f"{where}: got None")
    if isinstance(ref, (list, tuple)):
        if not isinstance(out, list):
            return f"{where}: expected a sequence of {len(ref)} tensors, got {type(out).__name__}"
        if len(out) != len(ref):
            return f"{where}: sequence of {len(out)} tensors != expected {len(ref)}"
        for j, (r, o) in enumerate(zip(ref, out)):
            reason = compare_value(r, o, rtol, atol, f"{where}[{j}]")
            if reason:
                return reason
        return None
    if isinstance(out, (list, tuple)):
        return f"{where}: expected a tensor, got a sequence"
    ref = as_numpy(ref)
    out = to_numpy(out)
    if tuple(out.shape) != tuple(ref.shape):
        return f"{where}: shape {tuple(out.shape)} != expected {tuple(ref.shape)}"
    if ref.dtype == object:
        if not np.array_equal(out, ref):
            return f"{where}: string values differ"
        return None
    if out.dtype != ref.dtype:
        return f"{where}: dtype {out.dtype} != expected {ref.dtype}"
    out_rtol = rtol
    if ref.dtype.kind not in "biufc":  # bfloat16 / float8 from ml_dtypes
        if ref.dtype.name == "bfloat16":
            out_rtol = max(rtol, 2**-6)
        out = out.astype(np.float32)
        ref = ref.astype(np.float32)
    try:
        np.testing.assert_allclose(out, ref, rtol=out_rtol, atol=atol)
    except AssertionError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(ln for ln in lines if ln.startswith(("Mismatched", "Max absolute")))
        return f"{where}: values differ ({detail or 'mismatch'})"
    return None


# ---------------------------------------------------------------------------------------------
# Evaluating through the registry (test tool only)
# ---------------------------------------------------------------------------------------------
def _static_value(t: Any) -> Any:
    return decode(t).tolist() if isinstance(t, torch.Tensor) else t


def run_node(node: onnx.NodeProto, inputs: list[Any], opsets: dict[str, int]) -> list[Any]:
    """Evaluate one node through the registry; returns one value per node output."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    opdef = lookup(node.op_type, domain, opsets.get(domain, opsets.get("", 1)))
    attrs = node_attributes(node)
    args = list(inputs)
    for i in opdef.static_inputs:
        if i < len(args) and args[i] is not None:
            args[i] = _static_value(args[i])
    if opdef.uses_training:
        attrs["training"] = False
    n_out = len(node.output)
    if opdef.num_outputs is None:
        attrs["_outputs"] = n_out
    result = opdef.lower(*args, **attrs)
    if opdef.num_outputs == 1:
        result = (result,)
    result = tuple(result)
    if len(result) < n_out:
        raise RuntimeError(f"{node.op_type} returned {len(result)} outputs, node has {n_out}")
    return list(result[:n_out])


def run_model_via_registry(model: onnx.ModelProto, feeds: Sequence[Any]) -> list[Any]:
    """Evaluate a small model's nodes in order (a dict interpreter; test tool only)."""
    graph = model.graph
    opsets = {("" if i.domain == "ai.onnx" else i.domain): int(i.version) for i in model.opset_import}
    env: dict[str, Any] = {}
    for init in graph.initializer:
        env[init.name] = to_torch(numpy_helper.to_array(init))
    real_inputs = [i for i in graph.input if i.name not in env]
    for info, value in zip(real_inputs, feeds):
        env[info.name] = to_torch(value)
    for node in graph.node:
        args = [env[name] if name else None for name in node.input]
        outs = run_node(node, args, opsets)
        for name, value in zip(node.output, outs):
            if name:
                env[name] = value
    return [env[o.name] for o in graph.output]


def run_case(case: NodeCase) -> tuple[str, str]:
    """(status, message) of one case: status is pass, fail or error."""
    try:
        for inputs, expected in case.data_sets:
            actual = run_model_via_registry(case.model, inputs)
            reason = compare_outputs(expected, actual, case.rtol, case.atol)
            if reason:
                return "fail", reason
        return "pass", ""
    except Exception as exc:  # isolate: one bad case never stops the run
        return "error", describe_exception(exc)


# ---------------------------------------------------------------------------------------------
# Isolation: forked workers, per-case alarm, crash recovery
# ---------------------------------------------------------------------------------------------
def run_cases(cases: list[NodeCase], jobs: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Run every case isolated; returns one result dict per case (in input order)."""
    results = run_isolated(len(cases), lambda i: run_case(cases[i]), jobs=jobs, timeout=timeout,
                           setup=lambda: torch.set_num_threads(1))
    return [
        {"name": c.name, "op_type": c.op_type, "status": status, "message": message}
        for c, (status, message, _seconds) in zip(cases, results)
    ]
