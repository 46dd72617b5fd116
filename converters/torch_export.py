"""PyTorch modules as named graphs, through ``torch.export``.

``from_torch(module, example_inputs, dynamic_shapes=None)`` exports ``module`` with ``torch.export.export``
(non-strict) and translates the exported ATen graph into graphdnn ops:

* **variables** are the module's parameters (trainable) and buffers (state) under their state-dict names,
  as graph names (``graphdnn.graph_name``: ``encoder.layer.0.attention.self.query.weight`` ->
  ``encoder/layer/0/attention/self/query/weight``), so a module compiled from the graph has the original
  ``state_dict()`` keys. A tied parameter (GPT-2's ``lm_head.weight`` and ``transformer.wte.weight``) is one
  variable, named by its first state-dict key; the other keys are ``graph.aliases`` of it.
* **op names** carry the module path as scopes, from each FX node's ``meta["nn_module_stack"]``, with a
  list index kept on its container as the legacy ONNX exporter writes it
  (``encoder/layer.0/attention/self/query/MatMul``).
* **ops** are ONNX operators (opset ``OPSET``), one translator per ATen op family in ``TRANSLATORS``
  (``coverage()`` lists them for the README). The graph is taken *before* ``run_decompositions``: the
  export's ATen set keeps ``linear``, ``layer_norm``, ``scaled_dot_product_attention`` and ``gelu`` whole,
  which map onto one or a few ONNX ops each, is stable across torch releases, and is smaller than the
  decomposed core-ATen set (which splits every linear into view/permute/addmm and attention into a dozen
  ops; for GPT-2 the decomposition itself fails in torch 2.13).
* **training**: the module is exported in eval mode; dropout becomes ONNX ``Dropout`` and batch norm
  ``BatchNormalization`` (torch momentum ``m`` is ONNX's ``1 - m``), both following ``.train()``/``.eval()``
  of the compiled module (batch statistics and running-statistic updates in training). What a module
  computes in Python from ``self.training`` (the ``dropout_p`` a Hugging Face attention passes to
  ``scaled_dot_product_attention``) is captured as in eval mode; ``num_batches_tracked`` is kept but not
  counted.

What ``torch.export`` cannot capture: Python control flow that depends on tensor *values* (``if x.sum() > 0``,
``.item()``-driven loops, ``nonzero`` shapes). Such a module raises one ``TorchExportError`` naming the
module; rewrite the branch with ``torch.cond`` or make it static. ATen ops without a translator are
listed all at once, with their module paths, in one ``UnknownOpError``.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from graphdnn.dtypes import dtype_name, onnx_code
from graphdnn.errors import GraphDNNError, UnknownOpError
from graphdnn.graph import Graph, Tensor
from graphdnn.names import graph_name
from graphdnn.restoring import WEIGHT_SOURCES

__all__ = ["OPSET", "TRANSLATORS", "TorchExportError", "coverage", "from_torch", "scope_of"]

#: ONNX opset of the graphs ``from_torch`` builds (``Gelu`` is an ONNX op from opset 20 on).
OPSET = 20


class TorchExportError(GraphDNNError):
    """``torch.export`` could not capture the module (data-dependent control flow and the like)."""


Translator = Callable[["_Context", torch.fx.Node], Any]
#: ATen op family (``aten.linear``) or Python function (``getitem``) -> translator.
TRANSLATORS: dict[str, Translator] = {}


def translates(*names: str) -> Callable[[Translator], Translator]:
    """Register a translator for ATen op families (``"aten.add"`` covers ``add.Tensor``, ``add.Scalar``...)."""

    def wrap(fn: Translator) -> Translator:
        for name in names:
            TRANSLATORS[name] = fn
        return fn

    return wrap


def coverage() -> list[tuple[str, str]]:
    """``(ATen op family, translator)`` for every supported op, sorted: the README's coverage table."""
    return sorted((name, fn.__name__) for name, fn in TRANSLATORS.items())


def scope_of(node: torch.fx.Node) -> str:
    """The op scope of an FX node: its innermost module path with ``/`` between attributes and a list
    index kept on its container (``encoder.layer.0.attention`` -> ``encoder/layer.0/attention``)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    # non-strict export writes paths like "L['self'].encoder" in some versions
    path = path.removeprefix("L['self'].").removeprefix("L__self__")
    parts: list[str] = []
    for seg in (s for s in path.split(".") if s):
        if seg.isdigit() and parts:
            parts[-1] = f"{parts[-1]}.{seg}"
        else:
            parts.append(seg)
    return "/".join(parts)


def _in_place(node: torch.fx.Node) -> bool:
    """An ATen op that writes its first argument (``relu_``, ``add_``)."""
    short = _family(node.target).rsplit(".", 1)[-1]
    return short.endswith("_") and not short.startswith("__") and bool(node.args)


def _family(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return str(target.overloadpacket)
    if isinstance(target, torch._ops.OpOverloadPacket):
        return str(target)
    name = getattr(target, "__name__", str(target))
    return f"operator.{name}" if getattr(operator, name, None) is target else name


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------
def _export(module: torch.nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any) -> Any:
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    label = type(module).__name__
    data_dependent: tuple[type[BaseException], ...] = (GuardOnDataDependentSymNode,)
    with contextlib.suppress(ImportError):
        from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

        data_dependent += (DataDependentOutputException, DynamicOutputShapeException)
    try:
        from torch._dynamo.exc import UserError
    except ImportError:  # pragma: no cover - torch without dynamo
        UserError = RuntimeError  # type: ignore[misc,assignment]  # noqa: N806
    try:
        return torch.export.export(module, args, kwargs, dynamic_shapes=dynamic_shapes, strict=False)
    except (*data_dependent, UserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TorchExportError(
            f"torch.export cannot capture module {label}: its Python control flow depends on tensor values "
            f"({type(exc).__name__}: {first[:300]}). Rewrite the data-dependent branch with torch.cond, or make "
            "it static (decide it from shapes or constructor arguments)") from exc


def from_torch(module: torch.nn.Module, example_inputs: Sequence[Any] | Any, dynamic_shapes: Any = None, *,
               kwargs: dict[str, Any] | None = None, name: str | None = None) -> Graph:
    """The graph of ``module`` traced by ``torch.export`` on ``example_inputs`` (a tuple of positional
    arguments, or one tensor), with parameters and buffers as variables under their state-dict names.

    ``dynamic_shapes`` is passed to ``torch.export.export`` (e.g. ``{"x": {0: torch.export.Dim("batch")}}``);
    a dynamic dim is ``None`` in the placeholder's shape. The module is exported in eval mode and left in
    the mode it was in. Raises ``TorchExportError`` for data-dependent control flow and ``UnknownOpError``
    listing every ATen op without a translator."""
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    was_training = module.training
    module.eval()
    try:
        program = _export(module, args, dict(kwargs or {}), dynamic_shapes)
    finally:
        module.train(was_training)
    return _Context(module, program, name or type(module).__name__).run()


# ------------------------------------------------------------------------------------------------
# Translation
# ------------------------------------------------------------------------------------------------
class _Context:
    """Walks the exported FX graph; ``env`` maps FX node names to Tensors or Python values."""

    def __init__(self, module: torch.nn.Module, program: Any, name: str) -> None:
        self.module, self.program = module, program
        self.g = Graph(name)
        self.g.opset[""] = OPSET
        self.env: dict[str, Any] = {}
        self.node: torch.fx.Node | None = None

    # -- entry ---------------------------------------------------------------------------------
    def run(self) -> Graph:
        gm = self.program.graph_module
        self._check_supported(gm)
        specs = {s.arg.name: s for s in self.program.graph_signature.input_specs if hasattr(s.arg, "name")}
        self._variables(specs)
        outputs: list[Tensor] = []
        for node in gm.graph.nodes:
            self.node = node
            if node.op == "placeholder":
                self._placeholder(node, specs.get(node.name))
            elif node.op == "call_function":
                with self.g.name_scope(scope_of(node)) if scope_of(node) else contextlib.nullcontext():
                    result = TRANSLATORS[_family(node.target)](self, node)
                self.env[node.name] = result
                if _in_place(node) and isinstance(node.args[0], torch.fx.Node):
                    self.env[node.args[0].name] = result  # in-place op: later reads see the new value
            elif node.op == "output":
                outputs = [self.tensor(a) for a in _flat(node.args[0])]
            elif node.op == "get_attr":
                self.env[node.name] = self._constant_attr(gm, node)
        user_outputs = {s.arg.name for s in self.program.graph_signature.output_specs
                        if s.kind.name == "USER_OUTPUT" and hasattr(s.arg, "name")}
        out_nodes = [a for a in _flat(gm.graph.output_node().args[0])]
        outs = [t for t, a in zip(outputs, out_nodes) if not isinstance(a, torch.fx.Node) or a.name in user_outputs]
        inputs = [Tensor(self.g, op.name) for op in self.g.placeholders()]
        self.g.signature = {"inputs": inputs, "outputs": [self._distinct_output(t) for t in outs]}
        self.g.meta["torch_export"] = {"module": type(self.module).__qualname__}
        self.g.meta[WEIGHT_SOURCES] = self.sources
        return self.g

    def _check_supported(self, gm: torch.fx.GraphModule) -> None:
        missing: dict[str, list[str]] = {}
        for node in gm.graph.nodes:
            if node.op == "call_function" and _family(node.target) not in TRANSLATORS:
                missing.setdefault(str(node.target), []).append(scope_of(node) or "<top>")
        if missing:
            listed = "; ".join(f"{op} at {', '.join(sorted(set(paths))[:6])}" for op, paths in sorted(missing.items()))
            raise UnknownOpError(
                f"module {type(self.module).__name__}: {len(missing)} ATen op(s) have no graphdnn translator: "
                f"{listed}. Register one with graphdnn.converters.torch_export.translates, or rewrite those modules")

    def _distinct_output(self, t: Tensor) -> Tensor:
        op = t.op
        if op.is_placeholder or op.is_variable:  # an output that is an input or a weight: give it its own op
            return self.g.add_op("Identity", [t], name=f"output_{len(self.g.nx)}").out()
        return t

    # -- variables and inputs -------------------------------------------------------------------
    def _variables(self, specs: dict[str, Any]) -> None:
        params = dict(self.module.named_parameters(remove_duplicate=False))
        buffers = dict(self.module.named_buffers(remove_duplicate=False))
        state_keys = list(self.module.state_dict(keep_vars=True))
        # tied tensors: every state-dict key holding the same tensor becomes an alias of the first key
        by_id: dict[int, list[str]] = {}
        for key in state_keys:
            value = params.get(key, buffers.get(key))
            if value is not None:
                by_id.setdefault(id(value), []).append(key)
        self.var_of: dict[str, str] = {}
        self.sources: dict[str, list[str]] = {}  # state-dict key -> [variable, layout], for graphdnn.restore
        for key in state_keys:
            value = params.get(key, buffers.get(key))
            if value is None or by_id[id(value)][0] != key:
                continue
            is_param = key in params
            var = self.g.variable(graph_name(key), value=value.detach().clone(), trainable=is_param, scoped=False)
            for other in by_id[id(value)][1:]:
                self.g.aliases[graph_name(other)] = var.name
            for other in by_id[id(value)]:
                self.var_of[other] = var.op_name
                self.sources[other] = [var.op_name, "same"]
        for node_name, spec in specs.items():
            kind = spec.kind.name
            if kind in ("PARAMETER", "BUFFER") and spec.target in self.var_of:
                self.env[node_name] = Tensor(self.g, self.var_of[spec.target])
            elif kind in ("PARAMETER", "BUFFER"):  # a non-persistent buffer: state, not in the state dict
                value = self.module.get_buffer(spec.target) if kind == "BUFFER" else self.module.get_parameter(
                    spec.target)
                var = self.g.variable(graph_name(spec.target), value=value.detach().clone(),
                                      trainable=kind == "PARAMETER", scoped=False)
                self.var_of[spec.target] = var.op_name
                self.env[node_name] = var
            elif kind == "CONSTANT_TENSOR":
                value = self.program.constants[spec.target]
                self.env[node_name] = self.const(value)

    def _placeholder(self, node: torch.fx.Node, spec: Any) -> None:
        if node.name in self.env:
            return
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):  # a Python scalar input was specialized by export
            self.env[node.name] = val
            return
        shape = tuple(d if isinstance(d, int) else None for d in val.shape)
        self.env[node.name] = self.g.placeholder(node.name, shape, dtype_name(val.dtype))

    def _constant_attr(self, gm: torch.fx.GraphModule, node: torch.fx.Node) -> Any:
        value = getattr(gm, str(node.target))
        return self.const(value) if isinstance(value, torch.Tensor) else value

    # -- helpers for translators ----------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[Tensor | None], attrs: dict | None = None,
           num_outputs: int | None = None) -> Any:
        handle = self.g.add_op(op_type, list(inputs), attrs, num_outputs=num_outputs)
        return handle.out() if (num_outputs or 1) == 1 else handle.outputs

    def const(self, value: Any, dtype: torch.dtype | None = None) -> Tensor:
        t = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=dtype)
        t = t.to(dtype) if dtype is not None else t
        if t.numel() > 4096:
            with self.g.name_scope("const"):
                return self.g.variable(f"c{len(self.g.nx)}", value=t.clone(), trainable=False)
        return self.g.constant(t, dtype=dtype_name(t.dtype))

    def tensor(self, arg: Any, dtype: torch.dtype | None = None) -> Tensor:
        """``arg`` (an FX node, a Python number or a list of them) as a graph tensor, cast to ``dtype``."""
        if isinstance(arg, torch.fx.Node):
            value = self.env[arg.name]
            if isinstance(value, Tensor):
                return self.cast(value, dtype) if dtype is not None else value
            arg = value
        if isinstance(arg, Tensor):
            return self.cast(arg, dtype) if dtype is not None else arg
        if isinstance(arg, (list, tuple)) and any(isinstance(a, (torch.fx.Node, Tensor)) for a in arg):
            return self.shape_tensor(arg)
        if isinstance(arg, torch.Tensor):
            return self.const(arg, dtype)
        if dtype is None:
            dtype = torch.float32 if isinstance(arg, float) else torch.bool if isinstance(arg, bool) else torch.int64
        return self.const(arg, dtype)

    def value(self, arg: Any) -> Any:
        """A Python value (a node that is a symbolic int stays a graph tensor)."""
        if isinstance(arg, torch.fx.Node):
            return self.env[arg.name]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        return arg

    def cast(self, t: Tensor, dtype: torch.dtype | None) -> Tensor:
        if dtype is None or t.dtype == dtype_name(dtype):
            return t
        return self.op("Cast", [t], {"to": onnx_code(dtype_name(dtype))})

    def shape_tensor(self, sizes: Sequence[Any]) -> Tensor:
        """A 1-D int64 tensor from ints and symbolic sizes (0-d graph tensors)."""
        values = [self.value(s) for s in sizes]
        if all(isinstance(v, int) for v in values):
            return self.const(torch.tensor(values, dtype=torch.int64))
        parts = []
        for v in values:
            if isinstance(v, Tensor):
                parts.append(self.op("Reshape", [self.cast(v, torch.int64), self.const(torch.tensor([1]))]))
            else:
                parts.append(self.const(torch.tensor([int(v)], dtype=torch.int64)))
        return self.op("Concat", parts, {"axis": 0})

    def out_val(self, node: torch.fx.Node) -> Any:
        return node.meta.get("val")

    def out_dtype(self, node: torch.fx.Node) -> torch.dtype:
        val = self.out_val(node)
        val = val[0] if isinstance(val, (list, tuple)) else val
        return val.dtype

    def rank(self, arg: Any) -> int:
        val = arg.meta["val"] if isinstance(arg, torch.fx.Node) else None
        if val is not None:
            return val.dim()
        return len(self.tensor(arg).shape or ())


def _flat(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flat(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flat(v)
    else:
        yield value


def _arg(node: torch.fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ------------------------------------------------------------------------------------------------
# Translators: linear algebra, convolution, pooling
# ------------------------------------------------------------------------------------------------
@translates("aten.linear")
def linear(cx: _Context, node: torch.fx.Node) -> Tensor:
    """``x @ W.T + b``: one Gemm for a 2-D input, Transpose + MatMul (+ Add) otherwise."""
    x, w, b = cx.tensor(node.args[0]), cx.tensor(node.args[1]), _arg(node, 2, "bias")
    if cx.rank(node.args[0]) == 2:
        return cx.op("Gemm", [x, w] + ([cx.tensor(b)] if b is not None else []), {"transB": 1})
    y = cx.op("MatMul", [x, cx.op("Transpose", [w], {"perm": [1, 0]})])
    return cx.op("Add", [y, cx.tensor(b)]) if b is not None else y


@translates("aten.addmm")
def addmm(cx: _Context, node: torch.fx.Node) -> Tensor:
    bias, a, b = (cx.tensor(v) for v in node.args[:3])
    beta, alpha = float(node.kwargs.get("beta", 1.0)), float(node.kwargs.get("alpha", 1.0))
    return cx.op("Gemm", [a, b, bias], {"alpha": alpha, "beta": beta})


@translates("aten.mm", "aten.bmm", "aten.matmul")
def matmul(cx: _Context, node: torch.fx.Node) -> Tensor:
    return cx.op("MatMul", [cx.tensor(node.args[0]), cx.tensor(node.args[1])])


def _pair(value: Any, n: int) -> list[int]:
    values = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return values * n if len(values) == 1 else values


@translates("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.convolution")
def convolution(cx: _Context, node: torch.fx.Node) -> Tensor:
    """``Conv`` (``convolution`` with ``transposed`` becomes ``ConvTranspose``)."""
    x, w = cx.tensor(node.args[0]), cx.tensor(node.args[1])
    b = _arg(node, 2, "bias")
    n = cx.rank(node.args[1]) - 2
    stride, padding, dilation = (_arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0), _arg(node, 5, "dilation", 1))
    transposed = _family(node.target) == "aten.convolution" and bool(_arg(node, 6, "transposed", False))
    groups = _arg(node, 8, "groups", 1) if _family(node.target) == "aten.convolution" else _arg(node, 6, "groups", 1)
    attrs: dict[str, Any] = {"strides": _pair(stride, n), "dilations": _pair(dilation, n), "group": int(groups)}
    if isinstance(padding, str):
        attrs["auto_pad"] = "SAME_UPPER" if padding == "same" else "VALID"
    else:
        attrs["pads"] = _pair(padding, n) * 2
    if transposed:
        attrs["output_padding"] = _pair(_arg(node, 7, "output_padding", 0), n)
    inputs = [x, w] + ([cx.tensor(b)] if b is not None else [])
    return cx.op("ConvTranspose" if transposed else "Conv", inputs, attrs)


@translates("aten.max_pool2d", "aten.max_pool1d", "aten.max_pool3d")
def max_pool(cx: _Context, node: torch.fx.Node) -> Tensor:
    kernel = list(_arg(node, 1, "kernel_size"))
    n = len(kernel) if len(kernel) > 1 else cx.rank(node.args[0]) - 2
    kernel = _pair(kernel, n)
    stride = _arg(node, 2, "stride", []) or kernel
    attrs = {"kernel_shape": kernel, "strides": _pair(stride, n), "pads": _pair(_arg(node, 3, "padding", 0), n) * 2,
             "dilations": _pair(_arg(node, 4, "dilation", 1), n), "ceil_mode": int(bool(_arg(node, 5, "ceil_mode"))),
             }
    return cx.op("MaxPool", [cx.tensor(node.args[0])], attrs)


@translates("aten.avg_pool2d")
def avg_pool(cx: _Context, node: torch.fx.Node) -> Tensor:
    kernel = _pair(_arg(node, 1, "kernel_size"), 2)
    stride = _arg(node, 2, "stride", []) or kernel
    attrs = {"kernel_shape": kernel, "strides": _pair(stride, 2), "pads": _pair(_arg(node, 3, "padding", 0), 2) * 2,
             "ceil_mode": int(bool(_arg(node, 4, "ceil_mode", False))),
             "count_include_pad": int(bool(_arg(node, 5, "count_include_pad", True)))}
    if _arg(node, 6, "divisor_override") is not None:
        raise GraphDNNError(f"{scope_of(node)}: avg_pool2d with divisor_override has no ONNX equivalent")
    return cx.op("AveragePool", [cx.tensor(node.args[0])], attrs)


@translates("aten.adaptive_avg_pool2d", "aten.adaptive_avg_pool1d")
def adaptive_avg_pool(cx: _Context, node: torch.fx.Node) -> Tensor:
    """``GlobalAveragePool`` for an output of size 1, else ``AveragePool`` when the input divides evenly."""
    x = cx.tensor(node.args[0])
    out = [int(v) for v in _pair(node.args[1], cx.rank(node.args[0]) - 2)]
    if all(v == 1 for v in out):
        return cx.op("GlobalAveragePool", [x])
    spatial = list(node.args[0].meta["val"].shape[2:])
    if not all(isinstance(s, int) and s % o == 0 for s, o in zip(spatial, out)):
        raise GraphDNNError(f"{scope_of(node)}: adaptive average pooling from {spatial} to {out} does not divide "
                            "evenly; ONNX has no adaptive pooling")
    kernel = [s // o for s, o in zip(spatial, out)]
    return cx.op("AveragePool", [x], {"kernel_shape": kernel, "strides": kernel})


# ------------------------------------------------------------------------------------------------
# Normalization, embedding, attention
# ------------------------------------------------------------------------------------------------
def _filled(cx: _Context, size: int, value: float, dtype: torch.dtype) -> Tensor:
    return cx.const(torch.full((size,), value, dtype=dtype))


@translates("aten.batch_norm", "aten._native_batch_norm_legit", "aten._native_batch_norm_legit_no_training")
def batch_norm(cx: _Context, node: torch.fx.Node) -> Any:
    """``BatchNormalization``: statistics follow the compiled module's mode; torch's momentum ``m`` is ``1 - m``."""
    family = _family(node.target)
    x, w, b, mean, var = node.args[:5]
    if family == "aten.batch_norm":
        momentum, eps = node.args[6], node.args[7]
    elif family == "aten._native_batch_norm_legit_no_training":
        momentum, eps = node.args[5], node.args[6]
    else:
        momentum, eps = node.args[6], node.args[7]
    channels = int(node.args[0].meta["val"].shape[1])
    dtype = node.args[0].meta["val"].dtype
    if mean is None or var is None:
        raise GraphDNNError(f"{scope_of(node)}: batch norm without running statistics (track_running_stats=False) "
                            "has no ONNX BatchNormalization equivalent")
    inputs = [cx.tensor(x), cx.tensor(w) if w is not None else _filled(cx, channels, 1.0, dtype),
              cx.tensor(b) if b is not None else _filled(cx, channels, 0.0, dtype), cx.tensor(mean), cx.tensor(var)]
    y = cx.op("BatchNormalization", inputs, {"epsilon": float(eps), "momentum": 1.0 - float(momentum or 0.1)})
    return y if family == "aten.batch_norm" else (y, None, None)


@translates("aten.layer_norm", "aten.native_layer_norm")
def layer_norm(cx: _Context, node: torch.fx.Node) -> Any:
    x, shape = node.args[0], list(node.args[1])
    w, b = _arg(node, 2, "weight"), _arg(node, 3, "bias")
    eps = _arg(node, 4, "eps", 1e-5)
    dtype = x.meta["val"].dtype
    scale = cx.tensor(w) if w is not None else cx.const(torch.ones(shape, dtype=dtype))
    inputs = [cx.tensor(x), scale] + ([cx.tensor(b)] if b is not None else [])
    y = cx.op("LayerNormalization", inputs, {"axis": -len(shape), "epsilon": float(eps)})
    return y if _family(node.target) == "aten.layer_norm" else (y, None, None)


@translates("aten.embedding")
def embedding(cx: _Context, node: torch.fx.Node) -> Tensor:
    return cx.op("Gather", [cx.tensor(node.args[0]), cx.tensor(node.args[1])], {"axis": 0})


@translates("aten.scaled_dot_product_attention")
def scaled_dot_product_attention(cx: _Context, node: torch.fx.Node) -> Tensor:
    """``softmax(Q K^T * scale + mask) V`` as MatMul/Softmax (a boolean mask keeps where true), with a
    ``Dropout`` of ``dropout_p`` when it is not zero."""
    q, k, v = (cx.tensor(a) for a in node.args[:3])
    mask = _arg(node, 3, "attn_mask")
    p = float(_arg(node, 4, "dropout_p", 0.0))
    causal = bool(_arg(node, 5, "is_causal", False))
    scale = _arg(node, 6, "scale")
    if _arg(node, 7, "enable_gqa", False):
        raise GraphDNNError(f"{scope_of(node)}: scaled_dot_product_attention with enable_gqa is not supported")
    qv, kv = node.args[0].meta["val"], node.args[1].meta["val"]
    dtype = qv.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(int(qv.shape[-1]))
    rank = qv.dim()
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    scores = cx.op("MatMul", [q, cx.op("Transpose", [k], {"perm": perm})])
    scores = cx.op("Mul", [scores, cx.const(torch.tensor(float(scale), dtype=dtype))])
    neg = cx.const(torch.tensor(float("-inf"), dtype=dtype))
    zero = cx.const(torch.tensor(0.0, dtype=dtype))
    if causal:
        lq, lk = qv.shape[-2], kv.shape[-2]
        if isinstance(lq, int) and isinstance(lk, int):
            allowed = cx.const(torch.ones(lq, lk, dtype=torch.bool).tril())
        else:  # dynamic lengths: a lower triangle of ones shaped like the scores' last two dims
            size = cx.op("Slice", [cx.op("Shape", [scores]), cx.shape_tensor([-2]), cx.shape_tensor([2**63 - 1])])
            ones = cx.op("Expand", [cx.const(torch.tensor(1.0, dtype=dtype)), size])
            allowed = cx.cast(cx.op("Trilu", [ones, cx.const(torch.tensor(0))], {"upper": 0}), torch.bool)
        scores = cx.op("Where", [allowed, scores, neg])
    if mask is not None:
        m = cx.tensor(mask)
        if mask.meta["val"].dtype == torch.bool:
            scores = cx.op("Where", [m, scores, neg])
        else:
            scores = cx.op("Add", [scores, cx.cast(m, dtype)])
    weights = cx.op("Softmax", [scores], {"axis": -1})
    if mask is not None and mask.meta["val"].dtype == torch.bool:  # a fully masked row: zeros, as torch's math path
        weights = cx.op("Where", [cx.op("IsNaN", [weights]), zero, weights])
    if p > 0:
        weights = cx.op("Dropout", [weights, cx.const(torch.tensor(p, dtype=dtype))])
    return cx.op("MatMul", [weights, v])


@translates("aten.dropout", "aten.native_dropout", "aten.feature_dropout", "aten.alpha_dropout")
def dropout(cx: _Context, node: torch.fx.Node) -> Any:
    """ONNX ``Dropout`` with the module's ratio; active when the compiled module trains."""
    p = float(_arg(node, 1, "p", 0.5))
    x = cx.tensor(node.args[0])
    y = x if p == 0 else cx.op("Dropout", [x, cx.const(torch.tensor(p, dtype=node.args[0].meta["val"].dtype))])
    return (y, None) if _family(node.target) == "aten.native_dropout" else y


# ------------------------------------------------------------------------------------------------
# Activations and element-wise math
# ------------------------------------------------------------------------------------------------
_UNARY = {
    "aten.relu": "Relu", "aten.relu_": "Relu", "aten.tanh": "Tanh", "aten.tanh_": "Tanh", "aten.sigmoid": "Sigmoid",
    "aten.exp": "Exp", "aten.sqrt": "Sqrt", "aten.neg": "Neg", "aten.abs": "Abs", "aten.log": "Log",
    "aten.erf": "Erf", "aten.sin": "Sin", "aten.cos": "Cos", "aten.reciprocal": "Reciprocal",
    "aten.logical_not": "Not", "aten.floor": "Floor", "aten.ceil": "Ceil", "aten.sign": "Sign",
}


@translates(*_UNARY)
def unary(cx: _Context, node: torch.fx.Node) -> Tensor:
    op_type = _UNARY[_family(node.target)]
    x = cx.tensor(node.args[0])
    if op_type == "Not" and x.dtype != "bool":
        x = cx.cast(x, torch.bool)
    return cx.op(op_type, [x])


@translates("aten.rsqrt")
def rsqrt(cx: _Context, node: torch.fx.Node) -> Tensor:
    return cx.op("Reciprocal", [cx.op("Sqrt", [cx.tensor(node.args[0], cx.out_dtype(node))])])


@translates("aten.gelu", "aten.gelu_")
def gelu(cx: _Context, node: torch.fx.Node) -> Tensor:
    """ONNX ``Gelu`` with ``approximate`` ("none" or "tanh"), as torch's."""
    return cx.op("Gelu", [cx.tensor(node.args[0])], {"approximate": str(node.kwargs.get("approximate", "none"))})


@translates("aten.silu", "aten.silu_")
def silu(cx: _Context, node: torch.fx.Node) -> Tensor:
    x = cx.tensor(node.args[0])
    return cx.op("Mul", [x, cx.op("Sigmoid", [x])])


@translates("aten.softmax", "aten._softmax", "aten.log_softmax", "aten._log_softmax")
def softmax(cx: _Context, node: torch.fx.Node) -> Tensor:
    op_type = "LogSoftmax" if "log" in _family(node.target) else "Softmax"
    x = cx.tensor(node.args[0], cx.out_dtype(node))
    return cx.op(op_type, [x], {"axis": int(node.args[1])})


_BINARY = {"aten.add": "Add", "aten.add_": "Add", "aten.sub": "Sub", "aten.sub_": "Sub", "aten.rsub": "Sub",
           "aten.mul": "Mul", "aten.mul_": "Mul", "aten.div": "Div", "aten.div_": "Div", "aten.pow": "Pow",
           "aten.maximum": "Max", "aten.minimum": "Min", "aten.fmod": "Mod", "aten.remainder": "Mod"}
_COMPARE = {"aten.eq": "Equal", "aten.ne": "Equal", "aten.lt": "Less", "aten.le": "LessOrEqual",
            "aten.gt": "Greater", "aten.ge": "GreaterOrEqual"}
_LOGICAL = {"aten.__and__": "And", "aten.bitwise_and": "And", "aten.logical_and": "And", "aten.__or__": "Or",
            "aten.bitwise_or": "Or", "aten.logical_or": "Or", "aten.logical_xor": "Xor", "aten.bitwise_xor": "Xor"}


def _operand_dtype(node: torch.fx.Node) -> torch.dtype:
    """The dtype torch computes a binary op in (type promotion of tensors and Python numbers)."""
    vals = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in node.args[:2]]
    vals = [v for v in vals if isinstance(v, (torch.Tensor, int, float, bool))]
    return torch.result_type(*vals) if len(vals) == 2 else vals[0].dtype


@translates(*_BINARY)
def binary(cx: _Context, node: torch.fx.Node) -> Tensor:
    """Add/Sub/Mul/Div/Pow... in torch's promoted dtype (``alpha`` scales the second operand, ``rsub``
    swaps them, ``div`` with ``rounding_mode`` floors or truncates)."""
    family = _family(node.target)
    dtype = cx.out_dtype(node) if family != "aten.pow" else _operand_dtype(node)
    if family == "aten.div" and node.kwargs.get("rounding_mode") is None and not dtype.is_floating_point:
        dtype = torch.float32
    a_arg, b_arg = node.args[0], node.args[1]
    if family == "aten.pow" and not isinstance(a_arg, torch.fx.Node):  # pow.Scalar: number ** tensor
        a = cx.tensor(a_arg, dtype)
    else:
        a = cx.tensor(a_arg, dtype)
    b = cx.tensor(b_arg, dtype)
    alpha = node.kwargs.get("alpha", 1)
    if alpha != 1:
        b = cx.op("Mul", [b, cx.const(torch.tensor(alpha, dtype=dtype))])
    if family == "aten.rsub":
        a, b = b, a
    out = cx.op(_BINARY[family], [a, b], {"fmod": 1} if family == "aten.fmod" else None)
    mode = node.kwargs.get("rounding_mode")
    if family == "aten.div" and mode == "floor":
        out = cx.op("Floor", [out]) if dtype.is_floating_point else out
    elif family == "aten.div" and mode == "trunc" and dtype.is_floating_point:
        out = cx.op("Mul", [cx.op("Sign", [out]), cx.op("Floor", [cx.op("Abs", [out])])])
    return cx.cast(out, cx.out_dtype(node))


@translates(*_COMPARE)
def compare(cx: _Context, node: torch.fx.Node) -> Tensor:
    dtype = _operand_dtype(node)
    a, b = cx.tensor(node.args[0], dtype), cx.tensor(node.args[1], dtype)
    family = _family(node.target)
    out = cx.op(_COMPARE[family], [a, b])
    return cx.op("Not", [out]) if family == "aten.ne" else out


@translates(*_LOGICAL)
def logical(cx: _Context, node: torch.fx.Node) -> Tensor:
    if cx.out_dtype(node) != torch.bool:
        raise GraphDNNError(f"{scope_of(node)}: bitwise {node.target} on integers is not supported (booleans only)")
    a, b = cx.tensor(node.args[0], torch.bool), cx.tensor(node.args[1], torch.bool)
    return cx.op(_LOGICAL[_family(node.target)], [a, b])


@translates("aten.where")
def where(cx: _Context, node: torch.fx.Node) -> Tensor:
    dtype = cx.out_dtype(node)
    cond = cx.tensor(node.args[0], torch.bool)
    return cx.op("Where", [cond, cx.tensor(node.args[1], dtype), cx.tensor(node.args[2], dtype)])


@translates("aten.masked_fill", "aten.masked_fill_")
def masked_fill(cx: _Context, node: torch.fx.Node) -> Tensor:
    dtype = cx.out_dtype(node)
    x, mask = cx.tensor(node.args[0], dtype), cx.tensor(node.args[1], torch.bool)
    return cx.op("Where", [mask, cx.tensor(node.args[2], dtype), x])


# ------------------------------------------------------------------------------------------------
# Shapes and views
# ------------------------------------------------------------------------------------------------
@translates("aten.view", "aten.reshape", "aten._unsafe_view")
def reshape(cx: _Context, node: torch.fx.Node) -> Tensor:
    return cx.op("Reshape", [cx.tensor(node.args[0]), cx.shape_tensor(list(node.args[1]))])


@translates("aten.flatten")
def flatten(cx: _Context, node: torch.fx.Node) -> Tensor:
    rank = cx.rank(node.args[0])
    start, end = _axis(int(_arg(node, 1, "start_dim", 0)), rank), _axis(int(_arg(node, 2, "end_dim", -1)), rank)
    x = cx.tensor(node.args[0])
    if start == 1 and end == rank - 1:
        return cx.op("Flatten", [x], {"axis": 1})
    sizes: list[Any] = []
    shape = cx.op("Shape", [x])
    for d in range(rank):
        if start <= d <= end:
            if d == start:
                sizes.append(-1)
        else:
            sizes.append(cx.op("Gather", [shape, cx.const(torch.tensor(d))], {"axis": 0}))
    return cx.op("Reshape", [x, cx.shape_tensor(sizes)])


@translates("aten.permute")
def permute(cx: _Context, node: torch.fx.Node) -> Tensor:
    rank = cx.rank(node.args[0])
    return cx.op("Transpose", [cx.tensor(node.args[0])], {"perm": [_axis(int(d), rank) for d in node.args[1]]})


@translates("aten.transpose", "aten.t", "aten.numpy_T")
def transpose(cx: _Context, node: torch.fx.Node) -> Tensor:
    rank = cx.rank(node.args[0])
    perm = list(range(rank))
    if _family(node.target) == "aten.transpose":
        a, b = _axis(int(node.args[1]), rank), _axis(int(node.args[2]), rank)
    else:
        a, b = 0, max(rank - 1, 0)
    perm[a], perm[b] = perm[b], perm[a]
    return cx.op("Transpose", [cx.tensor(node.args[0])], {"perm": perm})


@translates("aten.expand", "aten.expand_as", "aten.broadcast_to")
def expand(cx: _Context, node: torch.fx.Node) -> Tensor:
    x = cx.tensor(node.args[0])
    if _family(node.target) == "aten.expand_as":
        return cx.op("Expand", [x, cx.op("Shape", [cx.tensor(node.args[1])])])
    sizes = list(node.args[1])
    in_shape = list(node.args[0].meta["val"].shape)
    offset = len(sizes) - len(in_shape)
    fixed: list[Any] = []
    for i, s in enumerate(sizes):
        if isinstance(s, int) and s == -1:  # keep the input's size (1 stays 1 under Expand's broadcasting)
            fixed.append(1 if not isinstance(in_shape[i - offset], int) else in_shape[i - offset])
        else:
            fixed.append(s)
    return cx.op("Expand", [x, cx.shape_tensor(fixed)])


@translates("aten.slice")
def slice_(cx: _Context, node: torch.fx.Node) -> Tensor:
    dim = int(_arg(node, 1, "dim", 0))
    start, end, step = _arg(node, 2, "start"), _arg(node, 3, "end"), _arg(node, 4, "step", 1)
    start = 0 if start is None else start
    end = 2**63 - 1 if end is None else end
    if isinstance(end, int) and end > 2**62:
        end = 2**63 - 1
    inputs = [cx.tensor(node.args[0]), cx.shape_tensor([start]), cx.shape_tensor([end]),
              cx.shape_tensor([dim]), cx.shape_tensor([step])]
    return cx.op("Slice", inputs)


@translates("aten.select")
def select(cx: _Context, node: torch.fx.Node) -> Tensor:
    index = cx.tensor(node.args[2], torch.int64)
    return cx.op("Gather", [cx.tensor(node.args[0]), index], {"axis": int(node.args[1])})


@translates("aten.unsqueeze", "aten.unsqueeze_")
def unsqueeze(cx: _Context, node: torch.fx.Node) -> Tensor:
    return cx.op("Unsqueeze", [cx.tensor(node.args[0]), cx.shape_tensor([int(node.args[1])])])


@translates("aten.squeeze", "aten.squeeze_")
def squeeze(cx: _Context, node: torch.fx.Node) -> Tensor:
    x = cx.tensor(node.args[0])
    val = node.args[0].meta["val"]
    dims = node.args[1] if len(node.args) > 1 else None
    dims = list(range(val.dim())) if dims is None else ([dims] if isinstance(dims, int) else list(dims))
    dims = [_axis(int(d), val.dim()) for d in dims]
    dims = [d for d in dims if isinstance(val.shape[d], int) and val.shape[d] == 1]  # torch ignores others
    return cx.op("Squeeze", [x, cx.shape_tensor(dims)]) if dims else x


@translates("aten.cat", "aten.concat")
def cat(cx: _Context, node: torch.fx.Node) -> Tensor:
    dtype = cx.out_dtype(node)
    parts = [cx.tensor(a, dtype) for a in node.args[0]]
    return cx.op("Concat", parts, {"axis": int(_arg(node, 1, "dim", 0))})


@translates("aten.stack")
def stack(cx: _Context, node: torch.fx.Node) -> Tensor:
    dim = int(_arg(node, 1, "dim", 0))
    rank = cx.rank(node.args[0][0]) + 1
    axes = cx.shape_tensor([_axis(dim, rank)])
    parts = [cx.op("Unsqueeze", [cx.tensor(a, cx.out_dtype(node)), axes]) for a in node.args[0]]
    return cx.op("Concat", parts, {"axis": _axis(dim, rank)})


@translates("aten.split", "aten.split_with_sizes", "aten.chunk", "aten.unbind")
def split(cx: _Context, node: torch.fx.Node) -> list[Tensor]:
    family = _family(node.target)
    pieces = [p.shape for p in node.meta["val"]]
    dim = int(_arg(node, 2 if family != "aten.unbind" else 1, "dim", 0))
    rank = cx.rank(node.args[0])
    dim = _axis(dim, rank)
    sizes = [int(s[dim]) if family != "aten.unbind" else 1 for s in pieces]
    outs = cx.op("Split", [cx.tensor(node.args[0]), cx.shape_tensor(sizes)], {"axis": dim}, num_outputs=len(sizes))
    outs = outs if isinstance(outs, list) else [outs]
    if family == "aten.unbind":
        axes = cx.shape_tensor([dim])
        outs = [cx.op("Squeeze", [o, axes]) for o in outs]
    return outs


@translates("operator.getitem")
def getitem(cx: _Context, node: torch.fx.Node) -> Any:
    """An element of a tuple an op returned (``split``, ``native_layer_norm``...)."""
    return cx.value(node.args[0])[node.args[1]]


_PASS = ("aten.contiguous", "aten.clone", "aten.alias", "aten.detach", "aten.lift_fresh_copy", "aten.view_as",
         "aten.copy", "aten.dropout_")


@translates(*_PASS)
def identity(cx: _Context, node: torch.fx.Node) -> Any:
    """Copies and aliases: the value itself (no op)."""
    if _family(node.target) == "aten.copy":  # copy(dst, src): src's values in dst's dtype
        return cx.tensor(node.args[1], cx.out_dtype(node))
    if _family(node.target) == "aten.view_as":
        return cx.op("Reshape", [cx.tensor(node.args[0]), cx.op("Shape", [cx.tensor(node.args[1])])])
    return cx.tensor(node.args[0])


@translates("aten.to", "aten._to_copy", "aten.type_as")
def to(cx: _Context, node: torch.fx.Node) -> Tensor:
    """A dtype conversion (``Cast``) when the dtype changes; devices and layouts are ignored."""
    return cx.tensor(node.args[0], cx.out_dtype(node))


@translates("aten._assert_tensor_metadata", "aten._assert_scalar", "aten.sym_constrain_range_for_size",
            "aten._assert_async", "aten.sym_constrain_range")
def assertion(cx: _Context, node: torch.fx.Node) -> None:
    """Export-time checks: nothing to compute."""
    return None


# ------------------------------------------------------------------------------------------------
# Creation
# ------------------------------------------------------------------------------------------------
def _static_shape(val: torch.Tensor) -> list[int] | None:
    dims = list(val.shape)
    return [int(d) for d in dims] if all(isinstance(d, int) for d in dims) else None


@translates("aten.arange")
def arange(cx: _Context, node: torch.fx.Node) -> Tensor:
    """A constant when the bounds are known, else ``Range``."""
    values = [cx.value(a) for a in node.args]
    dtype = cx.out_dtype(node)
    if all(isinstance(v, (int, float)) for v in values):
        return cx.const(torch.arange(*values, dtype=dtype))
    start, end, step = (0, values[0], 1) if len(values) == 1 else (values + [1])[:3]
    return cx.op("Range", [cx.tensor(start, dtype), cx.tensor(end, dtype), cx.tensor(step, dtype)])


def _fill(cx: _Context, node: torch.fx.Node, value: Any, shape_arg: Any = None, like: Any = None) -> Tensor:
    val = cx.out_val(node)
    shape = _static_shape(val)
    if shape is not None:
        return cx.const(torch.full(shape, value, dtype=val.dtype))
    scalar = cx.const(torch.tensor(value, dtype=val.dtype))
    target = cx.op("Shape", [cx.tensor(like)]) if like is not None else cx.shape_tensor(list(shape_arg))
    return cx.op("Expand", [scalar, target])


@translates("aten.full", "aten.new_full")
def full(cx: _Context, node: torch.fx.Node) -> Tensor:
    if _family(node.target) == "aten.new_full":
        return _fill(cx, node, node.args[2], shape_arg=node.args[1])
    return _fill(cx, node, node.args[1], shape_arg=node.args[0])


@translates("aten.zeros", "aten.ones", "aten.new_zeros", "aten.new_ones", "aten.zeros_like", "aten.ones_like",
            "aten.full_like", "aten.empty_like", "aten.new_empty", "aten.empty")
def filled(cx: _Context, node: torch.fx.Node) -> Tensor:
    family = _family(node.target)
    value = 1 if "ones" in family else node.args[1] if family == "aten.full_like" else 0
    if family.endswith("_like"):
        return _fill(cx, node, value, like=node.args[0])
    shape_arg = node.args[1] if family.startswith("aten.new_") else node.args[0]
    return _fill(cx, node, value, shape_arg=shape_arg)


@translates("aten.scalar_tensor")
def scalar_tensor(cx: _Context, node: torch.fx.Node) -> Tensor:
    return cx.const(torch.tensor(node.args[0], dtype=cx.out_dtype(node)))


@translates("aten.tril", "aten.triu")
def trilu(cx: _Context, node: torch.fx.Node) -> Tensor:
    k = int(_arg(node, 1, "diagonal", 0))
    return cx.op("Trilu", [cx.tensor(node.args[0]), cx.const(torch.tensor(k))],
                 {"upper": int(_family(node.target) == "aten.triu")})


# ------------------------------------------------------------------------------------------------
# Reductions and indexing
# ------------------------------------------------------------------------------------------------
_REDUCE = {"aten.mean": "ReduceMean", "aten.sum": "ReduceSum", "aten.amax": "ReduceMax", "aten.amin": "ReduceMin",
           "aten.any": "ReduceMax", "aten.all": "ReduceMin"}


@translates(*_REDUCE)
def reduce(cx: _Context, node: torch.fx.Node) -> Tensor:
    family = _family(node.target)
    rank = cx.rank(node.args[0])
    dims = _arg(node, 1, "dim")
    dims = list(range(rank)) if dims is None or dims == [] else ([dims] if isinstance(dims, int) else list(dims))
    keep = bool(_arg(node, 2, "keepdim", False))
    out_dtype = cx.out_dtype(node)
    x = cx.tensor(node.args[0])
    boolean = family in ("aten.any", "aten.all")
    x = cx.cast(x, torch.int32 if boolean else out_dtype)
    y = cx.op(_REDUCE[family], [x, cx.shape_tensor([_axis(int(d), rank) for d in dims])], {"keepdims": int(keep)})
    return cx.cast(y, out_dtype)


@translates("aten.cumsum")
def cumsum(cx: _Context, node: torch.fx.Node) -> Tensor:
    x = cx.tensor(node.args[0], cx.out_dtype(node))
    return cx.op("CumSum", [x, cx.const(torch.tensor(int(node.args[1])))])


@translates("aten.diff")
def diff(cx: _Context, node: torch.fx.Node) -> Tensor:
    """``x[1:] - x[:-1]`` along ``dim`` after ``prepend``/``append`` (n = 1)."""
    if int(_arg(node, 1, "n", 1)) != 1:
        raise GraphDNNError(f"{scope_of(node)}: diff with n > 1 is not supported")
    dim = _axis(int(_arg(node, 2, "dim", -1)), cx.rank(node.args[0]))
    dtype = cx.out_dtype(node)
    parts = [cx.tensor(a, dtype) for a in (_arg(node, 3, "prepend"), node.args[0], _arg(node, 4, "append"))
             if a is not None]
    x = cx.op("Concat", parts, {"axis": dim}) if len(parts) > 1 else parts[0]
    big = 2**63 - 1
    hi = cx.op("Slice", [x, cx.shape_tensor([1]), cx.shape_tensor([big]), cx.shape_tensor([dim])])
    lo = cx.op("Slice", [x, cx.shape_tensor([0]), cx.shape_tensor([-1]), cx.shape_tensor([dim])])
    if dtype == torch.bool:
        return cx.op("Xor", [hi, lo])
    return cx.op("Sub", [hi, lo])


@translates("aten.gather")
def gather(cx: _Context, node: torch.fx.Node) -> Tensor:
    rank = cx.rank(node.args[0])
    return cx.op("GatherElements", [cx.tensor(node.args[0]), cx.tensor(node.args[2], torch.int64)],
                 {"axis": _axis(int(node.args[1]), rank)})


@translates("aten.index_select")
def index_select(cx: _Context, node: torch.fx.Node) -> Tensor:
    return cx.op("Gather", [cx.tensor(node.args[0]), cx.tensor(node.args[2], torch.int64)],
                 {"axis": int(node.args[1])})


@translates("aten.index")
def index(cx: _Context, node: torch.fx.Node) -> Tensor:
    """Advanced indexing ``x[i0, i1, ...]``: one index tensor is a ``Gather``; index tensors on the leading
    dims, broadcast together, are a ``GatherND``."""
    x = cx.tensor(node.args[0])
    indices = list(node.args[1])
    used = [i for i, a in enumerate(indices) if a is not None]
    if any(a.meta["val"].dtype == torch.bool for a in indices if a is not None):
        raise GraphDNNError(f"{scope_of(node)}: boolean-mask indexing has a data-dependent shape; use torch.where")
    if len(used) == 1:
        return cx.op("Gather", [x, cx.tensor(indices[used[0]], torch.int64)], {"axis": used[0]})
    if used != list(range(len(used))):
        raise GraphDNNError(f"{scope_of(node)}: index tensors must be on the leading dims (got positions {used})")
    index_tensors = [cx.tensor(indices[i], torch.int64) for i in used]
    zero = cx.const(torch.tensor(0, dtype=torch.int64))
    broadcast = index_tensors[0]
    for t in index_tensors[1:]:  # the broadcast shape of the indices, symbolic dims included
        broadcast = cx.op("Add", [cx.op("Mul", [broadcast, zero]), cx.op("Mul", [t, zero])])
    target = cx.op("Shape", [broadcast])
    minus1 = cx.shape_tensor([-1])
    parts = [cx.op("Unsqueeze", [cx.op("Expand", [t, target]), minus1]) for t in index_tensors]
    return cx.op("GatherND", [x, cx.op("Concat", parts, {"axis": -1})])


# ------------------------------------------------------------------------------------------------
# Symbolic sizes (dynamic shapes)
# ------------------------------------------------------------------------------------------------
@translates("aten.sym_size", "aten.sym_numel")
def sym_size(cx: _Context, node: torch.fx.Node) -> Tensor:
    """A dynamic size as a 0-d int64 tensor (``Shape`` + ``Gather``)."""
    shape = cx.op("Shape", [cx.tensor(node.args[0])])
    if _family(node.target) == "aten.sym_numel":
        return cx.op("ReduceProd", [shape], {"keepdims": 0})
    return cx.op("Gather", [shape, cx.const(torch.tensor(int(node.args[1])))], {"axis": 0})


_SYM = {"operator.add": "Add", "operator.sub": "Sub", "operator.mul": "Mul", "operator.floordiv": "Div"}


@translates(*_SYM)
def sym_arith(cx: _Context, node: torch.fx.Node) -> Any:
    """Arithmetic on symbolic sizes (int64; ``//`` of non-negative sizes is ONNX's integer ``Div``)."""
    a, b = cx.value(node.args[0]), cx.value(node.args[1])
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        return getattr(operator, _family(node.target).split(".", 1)[1])(a, b)
    return cx.op(_SYM[_family(node.target)], [cx.tensor(a, torch.int64), cx.tensor(b, torch.int64)])


