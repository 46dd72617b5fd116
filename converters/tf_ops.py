"""TensorFlow op -> ONNX-vocabulary graph ops, one small translator per TF op type (used by ``tf_import``).

A translator gets a ``Node`` view (the TF node, its resolved inputs, the target graph) and adds ops
to the graph. The op that produces the TF node's output keeps the TF name (``dnn/hidden1/Relu``);
helper ops get the TF name plus a ``/_suffix`` (``conv1/Conv2D/_to_nchw``). NHWC data stays NHWC
between ops: convolutions, pooling and fused batch norm transpose to NCHW and back inside. TF
kernels keep their TF layout (``[in, out]``, ``HWIO``); a ``Transpose`` op feeds ``Conv`` its OIHW view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from graphdnn.converters.tf_control import FUNCTIONAL_TRANSLATORS

from graphdnn.dtypes import onnx_code
from graphdnn.errors import GraphError
from graphdnn.graph import ValueInfo
from graphdnn.ops.registry import GRAPHDNN_DOMAIN

if TYPE_CHECKING:
    from graphdnn.converters.tf_import import Node


def f32(value: Any) -> float:
    """A float32 attribute as the decimal TF printed (``0.001``, not ``0.0010000000474974513``)."""
    return float(f"{float(value):.7g}")

Translator = Callable[["Node"], list[str]]
TO_NCHW, TO_NHWC, HWIO_TO_OIHW = [0, 3, 1, 2], [0, 2, 3, 1], [3, 2, 0, 1]

_UNARY = {
    "Relu": "Relu", "Elu": "Elu", "Selu": "Selu", "Tanh": "Tanh", "Sigmoid": "Sigmoid", "Softplus": "Softplus",
    "Softsign": "Softsign", "Exp": "Exp", "Log": "Log", "Sqrt": "Sqrt", "Abs": "Abs", "Neg": "Neg",
    "Floor": "Floor", "Ceil": "Ceil", "Round": "Round", "Sign": "Sign", "Erf": "Erf", "Reciprocal": "Reciprocal",
    "Inv": "Reciprocal", "LogicalNot": "Not", "Identity": "Identity", "Snapshot": "Identity",
    "PreventGradient": "Identity", "Sin": "Sin", "Cos": "Cos", "Tan": "Tan", "Asin": "Asin", "Acos": "Acos",
    "Atan": "Atan", "Sinh": "Sinh", "Cosh": "Cosh", "Asinh": "Asinh", "Acosh": "Acosh", "Atanh": "Atanh",
    "IsNan": "IsNaN", "IsInf": "IsInf",
}
_BINARY = {
    "Add": "Add", "AddV2": "Add", "Sub": "Sub", "Mul": "Mul", "RealDiv": "Div", "Div": "Div", "Maximum": "Max",
    "Minimum": "Min", "Pow": "Pow", "Equal": "Equal", "Greater": "Greater", "Less": "Less",
    "LessEqual": "LessOrEqual", "LogicalAnd": "And", "LogicalOr": "Or",
}
_REDUCE = {"Mean": ("ReduceMean", 18), "Sum": ("ReduceSum", 13), "Max": ("ReduceMax", 18),
           "Min": ("ReduceMin", 18), "Prod": ("ReduceProd", 18)}


def _unary(n: Node) -> list[str]:
    return [n.add(_UNARY[n.op], [n.x(0)])]


def _binary(n: Node) -> list[str]:
    return [n.add(_BINARY[n.op], [n.x(0), n.x(1)])]


def _add_n(n: Node) -> list[str]:
    return [n.add("Sum", [n.x(i) for i in range(len(n.inputs))])]


def _erfc(n: Node) -> list[str]:
    x = n.x(0)
    return [n.add("Sub", [n.const(1.0, "one", n.dtype(x)), n.add("Erf", [x], name=n.sub("erf"))])]


def _rsqrt(n: Node) -> list[str]:
    return [n.add("Reciprocal", [n.add("Sqrt", [n.x(0)], name=n.sub("Sqrt"))])]


def _square(n: Node) -> list[str]:
    return [n.add("Mul", [n.x(0), n.x(0)])]


def _squared_difference(n: Node) -> list[str]:
    d = n.add("Sub", [n.x(0), n.x(1)], name=n.sub("diff"))
    return [n.add("Mul", [d, d])]


def _relu6(n: Node) -> list[str]:
    dt = n.dtype(n.x(0))
    return [n.add("Clip", [n.x(0), n.const(0.0, "min", dt), n.const(6.0, "max", dt)])]


def _leaky_relu(n: Node) -> list[str]:
    return [n.add("LeakyRelu", [n.x(0)], {"alpha": float(n.attr("alpha", 0.2))})]


def _softmax(n: Node) -> list[str]:
    return [n.add(n.op, [n.x(0)], {"axis": -1})]


def _stop_gradient(n: Node) -> list[str]:
    return [n.add("StopGradient", [n.x(0)], domain=GRAPHDNN_DOMAIN)]


def _cast(n: Node) -> list[str]:
    return [n.add("Cast", [n.x(0)], {"to": onnx_code(n.tf_dtype("DstT"))})]


def _shape(n: Node) -> list[str]:
    out = n.tf_dtype("out_type", "int32")
    if out == "int64":
        return [n.add("Shape", [n.x(0)])]
    shape = n.add("Shape", [n.x(0)], name=n.sub("Shape"))
    return [n.add("Cast", [shape], {"to": onnx_code(out)})]


def _matmul(n: Node) -> list[str]:
    ta, tb = bool(n.attr("transpose_a", False)), bool(n.attr("transpose_b", False))
    if ta or tb:
        return [n.add("Gemm", [n.x(0), n.x(1)], {"transA": int(ta), "transB": int(tb)})]
    return [n.add("MatMul", [n.x(0), n.x(1)])]


def _batch_matmul(n: Node) -> list[str]:
    ins = []
    for i, key in ((0, "adj_x"), (1, "adj_y")):
        x = n.x(i)
        if n.attr(key, False):
            rank = n.rank(x)
            perm = list(range(rank - 2)) + [rank - 1, rank - 2]
            x = n.add("Transpose", [x], {"perm": perm}, name=n.sub(f"adjoint_{i}"))
        ins.append(x)
    return [n.add("MatMul", ins)]


def _nchw(n: Node) -> bool:
    return str(n.attr("data_format", "NHWC")).startswith("NC")


def _bias_add(n: Node) -> list[str]:
    x, b = n.x(0), n.x(1)
    rank = n.rank(x)
    if _nchw(n) and rank > 2:
        b = n.add("Reshape", [b, n.ints([-1] + [1] * (rank - 2), "bias_shape")], name=n.sub("bias_nchw"))
    return [n.add("Add", [x, b])]


def _spatial(values: Any, nchw: bool, default: int = 1) -> list[int]:
    v = [int(i) for i in (values or [default] * 4)]
    return v[2:] if nchw else v[1:3]


def _padding(n: Node) -> dict[str, Any]:
    pad = n.attr("padding", "VALID")
    pad = pad.decode() if isinstance(pad, bytes) else str(pad)
    if pad == "SAME":
        return {"auto_pad": "SAME_UPPER"}
    if pad == "VALID":
        return {"auto_pad": "VALID"}
    if pad == "EXPLICIT":
        p = [int(i) for i in n.attr("explicit_paddings", [])]
        pairs = [p[4:6], p[6:8]] if _nchw(n) else [p[2:4], p[4:6]]
        return {"pads": [pairs[0][0], pairs[1][0], pairs[0][1], pairs[1][1]]}
    raise GraphError(f"TF op {n.name!r}: unsupported padding {pad!r}")


def _in_nchw(n: Node, x: str) -> str:
    return x if _nchw(n) else n.add("Transpose", [x], {"perm": TO_NCHW}, name=n.sub("to_nchw"))


def _out(n: Node, y_name: str, build: Callable[[str], str]) -> list[str]:
    """Run ``build(output_name)`` in NCHW; for NHWC the final Transpose carries the TF name."""
    if _nchw(n):
        return [build(n.name)]
    return [n.add("Transpose", [build(n.sub(y_name))], {"perm": TO_NHWC})]


def _conv2d(n: Node) -> list[str]:
    x = _in_nchw(n, n.x(0))
    w = n.add("Transpose", [n.x(1)], {"perm": HWIO_TO_OIHW}, name=n.sub("filter_oihw"))
    nchw = _nchw(n)
    attrs = {"strides": _spatial(n.attr("strides"), nchw), "dilations": _spatial(n.attr("dilations"), nchw),
             **_padding(n)}
    return _out(n, "conv_nchw", lambda name: n.add("Conv", [x, w], attrs, name=name))


def _depthwise(n: Node) -> list[str]:
    x = _in_nchw(n, n.x(0))
    kh, kw, c, m = n.shape(n.x(1))
    flat = n.add("Reshape", [n.x(1), n.ints([kh, kw, 1, c * m], "filter_shape")], name=n.sub("filter_flat"))
    w = n.add("Transpose", [flat], {"perm": HWIO_TO_OIHW}, name=n.sub("filter_oihw"))
    nchw = _nchw(n)
    attrs = {"strides": _spatial(n.attr("strides"), nchw), "dilations": _spatial(n.attr("dilations"), nchw),
             "group": int(c), **_padding(n)}
    return _out(n, "conv_nchw", lambda name: n.add("Conv", [x, w], attrs, name=name))


def _pool(n: Node) -> list[str]:
    x = _in_nchw(n, n.x(0))
    nchw = _nchw(n)
    attrs = {"kernel_shape": _spatial(n.attr("ksize"), nchw), "strides": _spatial(n.attr("strides"), nchw),
             **_padding(n)}
    op = "MaxPool" if n.op == "MaxPool" else "AveragePool"
    if op == "AveragePool":
        attrs["count_include_pad"] = 0
    return _out(n, "pool_nchw", lambda name: n.add(op, [x], attrs, name=name))


def _fused_batch_norm(n: Node) -> list[str]:
    x = n.x(0)
    nhwc = n.rank(x) == 4 and not _nchw(n)
    if nhwc:
        x = n.add("Transpose", [x], {"perm": TO_NCHW}, name=n.sub("to_nchw"))
    attrs = {"epsilon": f32(n.attr("epsilon", 1e-4)), "momentum": n.momentum()}
    ins = [x, n.x(1), n.x(2), n.x(3), n.x(4)]
    if nhwc:
        y = n.add("BatchNormalization", ins, attrs, name=n.sub("bn_nchw"))
        return [n.add("Transpose", [y], {"perm": TO_NHWC})]
    return [n.add("BatchNormalization", ins, attrs)]


def _axes_op(n: Node, onnx_op: str, input_since: int, x: str, axes: list[int] | None, attrs: dict,
             name: str | None = None) -> str:
    """An op whose ``axes`` moved from an attribute to an input at ``input_since``."""
    ins = [x]
    if axes is not None:
        if n.opset >= input_since:
            suffix = "axes" if name is None or name == n.name else name.rsplit("/_", 1)[-1] + "_axes"
            ins.append(n.ints(axes, suffix))
        else:
            attrs = {**attrs, "axes": axes}
    return n.add(onnx_op, ins, attrs, name=name)


def _reduce(n: Node) -> list[str]:
    onnx_op, since = _REDUCE[n.op]
    axes = n.static_ints(1)
    keep = int(bool(n.attr("keep_dims", False)))
    if axes == []:
        return [n.add("Identity", [n.x(0)])]
    return [_axes_op(n, onnx_op, since, n.x(0), axes, {"keepdims": keep})]


def _squeeze(n: Node) -> list[str]:
    dims = [int(d) for d in (n.attr("squeeze_dims", None) or n.attr("axis", None) or [])]
    return [_axes_op(n, "Squeeze", 13, n.x(0), dims or None, {})]


def _expand_dims(n: Node) -> list[str]:
    return [_axes_op(n, "Unsqueeze", 13, n.x(0), n.static_ints(1), {})]


def _reshape(n: Node) -> list[str]:
    shape = n.static_ints(1, required=False)
    if shape is not None:
        attrs = {"allowzero": 1} if 0 in shape and n.opset >= 14 else {}
        return [n.add("Reshape", [n.x(0), n.ints(shape, "shape")], attrs)]
    dyn = n.add("Cast", [n.x(1)], {"to": onnx_code("int64")}, name=n.sub("shape"))
    return [n.add("Reshape", [n.x(0), dyn])]


def _transpose(n: Node) -> list[str]:
    return [n.add("Transpose", [n.x(0)], {"perm": n.static_ints(1)})]


def _concat(n: Node) -> list[str]:
    count = int(n.attr("N", len(n.inputs) - 1))
    axis = n.static_ints(count)
    return [n.add("Concat", [n.x(i) for i in range(count)], {"axis": int(np.ravel(axis)[0])})]


def _pad(n: Node) -> list[str]:
    p = np.asarray(n.static_ints(1)).reshape(-1, 2)
    pads = n.ints([int(v) for v in p[:, 0]] + [int(v) for v in p[:, 1]], "pads")
    return [n.add("Pad", [n.x(0), pads])]


def _tile(n: Node) -> list[str]:
    return [n.add("Tile", [n.x(0), n.ints(n.static_ints(1), "multiples")])]


def _argmax(n: Node) -> list[str]:
    axis = int(np.ravel(n.static_ints(1))[0])
    out = n.tf_dtype("output_type", "int64")
    if out == "int64":
        return [n.add("ArgMax", [n.x(0)], {"axis": axis, "keepdims": 0})]
    best = n.add("ArgMax", [n.x(0)], {"axis": axis, "keepdims": 0}, name=n.sub("ArgMax"))
    return [n.add("Cast", [best], {"to": onnx_code(out)})]


def _sparse_xent(n: Node) -> list[str]:
    labels = n.x(1)
    if n.dtype(labels) != "int64":
        labels = n.add("Cast", [labels], {"to": onnx_code("int64")}, name=n.sub("labels"))
    return [n.add("SoftmaxCrossEntropyLoss", [n.x(0), labels], {"reduction": "none"})]


def _in_top_k(n: Node) -> list[str]:
    k = int(n.attr("k", 0)) if n.op == "InTopK" else int(np.ravel(n.static_ints(2))[0])
    if k != 1:
        raise GraphError(f"TF op {n.name!r}: in_top_k with k={k}; graphdnn imports k=1 only")
    best = n.add("ArgMax", [n.x(0)], {"axis": -1, "keepdims": 0}, name=n.sub("ArgMax"))
    target = n.x(1)
    if n.dtype(target) != "int64":
        target = n.add("Cast", [target], {"to": onnx_code("int64")}, name=n.sub("targets"))
    return [n.add("Equal", [best, target])]


def _all_any(n: Node) -> list[str]:
    """``reduce_all``/``reduce_any`` as ReduceMin/ReduceMax over the values cast to int32."""
    axes = n.static_ints(1)
    keep = int(bool(n.attr("keep_dims", False)))
    as_int = n.add("Cast", [n.x(0)], {"to": onnx_code("int32")}, name=n.sub("int"))
    reduced = _axes_op(n, "ReduceMin" if n.op == "All" else "ReduceMax", 18, as_int, axes or None,
                       {"keepdims": keep}, name=n.sub("reduce"))
    return [n.add("Cast", [reduced], {"to": onnx_code("bool")})]


def _greater_equal(n: Node) -> list[str]:
    """``x >= y``; ``tf.nn.dropout``'s keep mask ``random_uniform(shape) >= rate`` becomes an ONNX ``Dropout`` of
    ones: all true in ``model.eval()`` (the default ``keep_prob`` of 1), TF's random mask in ``model.train()``."""
    source = n.producer(0)
    if source.op != "RandomUniform":
        return [n.add("GreaterOrEqual", [n.x(0), n.x(1)])]
    shape = n.add("Cast", [n.input_of(source, 0)], {"to": onnx_code("int64")}, name=n.sub("shape"))
    ones = n.add("Expand", [n.const(np.asarray(1.0, np.float32), "one", "float32"), shape], name=n.sub("ones"))
    rate = n.x(1)
    if n.dtype(rate) != "float32":
        rate = n.add("Cast", [rate], {"to": onnx_code("float32")}, name=n.sub("rate"))
    declared = source.attrs.get("_output_shapes")
    dims = getattr(declared[0], "dims", None) if isinstance(declared, list) and declared else None
    info = ValueInfo(None if dims is None else tuple(dims), "float32")
    kept = n.graph.add_op("Dropout", [ones, rate], {}, n.sub("dropout"), outputs=[info], scoped=False).out().name
    return [n.add("Cast", [kept], {"to": onnx_code("bool")})]


# ------------------------------------------------------------------------------------------ tf.math & tf.nn
def _one(n: Node, x: str) -> str:
    return n.const(np.asarray(1), "one", n.dtype(x))


def _log1p(n: Node) -> list[str]:
    return [n.add("Log", [n.add("Add", [n.x(0), _one(n, n.x(0))], name=n.sub("plus_one"))])]


def _expm1(n: Node) -> list[str]:
    return [n.add("Sub", [n.add("Exp", [n.x(0)], name=n.sub("exp")), _one(n, n.x(0))])]


def _not_equal(n: Node) -> list[str]:
    return [n.add("Not", [n.add("Equal", [n.x(0), n.x(1)], name=n.sub("equal"))])]


def _floor_div(n: Node) -> list[str]:
    if n.dtype(n.x(0)) not in ("float16", "float32", "float64", "bfloat16"):
        raise GraphError(f"TF op {n.name!r} (FloorDiv): integer floor division is not supported")
    return [n.add("Floor", [n.add("Div", [n.x(0), n.x(1)], name=n.sub("div"))])]


def _floor_mod(n: Node) -> list[str]:
    """``x - floor(x / y) * y``: the sign of ``y``, as TF (ONNX ``Mod`` with ``fmod=0`` is integer-only)."""
    x, y = n.x(0), n.x(1)
    if n.dtype(x) not in ("float16", "float32", "float64", "bfloat16"):
        return [n.add("Mod", [x, y], {"fmod": 0})]
    q = n.add("Floor", [n.add("Div", [x, y], name=n.sub("div"))], name=n.sub("floor"))
    return [n.add("Sub", [x, n.add("Mul", [q, y], name=n.sub("times"))])]


def _div_no_nan(n: Node) -> list[str]:
    x, y = n.x(0), n.x(1)
    zero = n.const(np.asarray(0), "zero", n.dtype(x))
    is_zero = n.add("Equal", [y, zero], name=n.sub("is_zero"))
    safe = n.add("Where", [is_zero, _one(n, x), y], name=n.sub("safe"))
    return [n.add("Where", [is_zero, zero, n.add("Div", [x, safe], name=n.sub("div"))])]


def _clip_by_value(n: Node) -> list[str]:
    low = n.add("Max", [n.x(0), n.x(1)], name=n.sub("max"))
    return [n.add("Min", [low, n.x(2)])]


def _l2_loss(n: Node) -> list[str]:
    """``sum(x ** 2) / 2``."""
    x = n.x(0)
    total = n.add("ReduceSum", [n.add("Mul", [x, x], name=n.sub("square"))], {"keepdims": 0}, name=n.sub("sum"))
    return [n.add("Mul", [total, n.const(np.asarray(0.5), "half", n.dtype(x))])]


def _softmax_xent(n: Node) -> list[str]:
    """Dense-label cross entropy: ``-sum(labels * log_softmax(logits), -1)``; output 1 (the gradient) is not
    imported."""
    logp = n.add("LogSoftmax", [n.x(0)], {"axis": -1}, name=n.sub("log_softmax"))
    prod = n.add("Mul", [n.x(1), logp], name=n.sub("weighted"))
    total = _axes_op(n, "ReduceSum", 13, prod, [-1], {"keepdims": 0}, name=n.sub("sum"))
    return [n.add("Neg", [total])]


def _argmin(n: Node) -> list[str]:
    axis = _axis(n, 1)
    out = n.tf_dtype("output_type", "int64")
    if out == "int64":
        return [n.add("ArgMin", [n.x(0)], {"axis": axis, "keepdims": 0})]
    best = n.add("ArgMin", [n.x(0)], {"axis": axis, "keepdims": 0}, name=n.sub("ArgMin"))
    return [n.add("Cast", [best], {"to": onnx_code(out)})]


def _gather(n: Node) -> list[str]:
    return [n.add("Gather", [n.x(0), n.x(1)], {"axis": 0})]


def _gather_nd(n: Node) -> list[str]:
    indices = n.x(1)
    if n.dtype(indices) != "int64":
        indices = n.add("Cast", [indices], {"to": onnx_code("int64")}, name=n.sub("indices"))
    return [n.add("GatherND", [n.x(0), indices])]


def _broadcast_to(n: Node) -> list[str]:
    shape = n.add("Cast", [n.x(1)], {"to": onnx_code("int64")}, name=n.sub("shape"))
    return [n.add("Expand", [n.x(0), shape])]


def _reverse(n: Node) -> list[str]:
    axes = n.static_ints(1)
    if not axes:
        return [n.add("Identity", [n.x(0)])]
    count = len(axes)
    return [n.add("Slice", [n.x(0), n.ints([-1] * count, "starts"), n.ints([_INT64_MIN] * count, "ends"),
                            n.ints(axes, "axes"), n.ints([-1] * count, "steps")])]


def _reverse_sequence(n: Node) -> list[str]:
    lengths = n.x(1)
    if n.dtype(lengths) != "int64":
        lengths = n.add("Cast", [lengths], {"to": onnx_code("int64")}, name=n.sub("lengths"))
    batch, time = int(n.attr("batch_dim", 0)), int(n.attr("seq_dim"))
    if sorted((batch, time)) != [0, 1]:
        raise GraphError(f"TF op {n.name!r} (ReverseSequence): batch and time must be axes 0 and 1")
    return [n.add("ReverseSequence", [n.x(0), lengths], {"batch_axis": batch, "time_axis": time})]


def _pad_v2(n: Node) -> list[str]:
    p = np.asarray(n.static_ints(1)).reshape(-1, 2)
    pads = n.ints([int(v) for v in p[:, 0]] + [int(v) for v in p[:, 1]], "pads")
    if n.op == "MirrorPad":
        mode = str(n.attr("mode", "REFLECT"))
        if mode != "REFLECT":
            raise GraphError(f"TF op {n.name!r} (MirrorPad): mode {mode!r}; ONNX pads with REFLECT only")
        return [n.add("Pad", [n.x(0), pads], {"mode": "reflect"})]
    return [n.add("Pad", [n.x(0), pads, n.x(2)])]


def _size(n: Node) -> list[str]:
    size = n.add("Size", [n.x(0)], name=n.sub("size"))
    return [n.add("Cast", [size], {"to": onnx_code(n.tf_dtype("out_type", "int32"))})]


def _rank(n: Node) -> list[str]:
    return [n.add("Identity", [n.const(np.asarray(n.rank(n.x(0)), np.int32), "rank", "int32")])]


def _identity_n(n: Node) -> list[str]:
    return [n.add("Identity", [n.x(i)], name=n.name if i == 0 else n.sub(f"output_{i}")) for i in range(len(n.inputs))
            if not n.inputs[i].startswith("^")]


def _lrn(n: Node) -> list[str]:
    """``tf.nn.lrn`` (NHWC, a window of ``2 * depth_radius + 1`` channels) as ONNX LRN (alpha per window)."""
    size = 2 * int(n.attr("depth_radius", 5)) + 1
    attrs = {"size": size, "alpha": f32(n.attr("alpha", 1.0)) * size, "beta": f32(n.attr("beta", 0.5)),
             "bias": f32(n.attr("bias", 1.0))}
    x = n.add("Transpose", [n.x(0)], {"perm": TO_NCHW}, name=n.sub("to_nchw"))
    y = n.add("LRN", [x], attrs, name=n.sub("lrn_nchw"))
    return [n.add("Transpose", [y], {"perm": TO_NHWC})]


# ------------------------------------------------------------------------------ gathers, stacking, splits
_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)


def _outputs(n: Node, op_type: str, inputs: list[str | None], attrs: dict[str, Any], count: int,
             name: str | None = None) -> list[str]:
    """A multi-output op; returns its output tensor names."""
    handle = n.graph.add_op(op_type, inputs, attrs, name or n.name, num_outputs=count, scoped=False)
    return [handle.out(i).name for i in range(count)]


def _axis(n: Node, i: int) -> int:
    return int(np.ravel(n.static_ints(i))[0])


def _gather_v2(n: Node) -> list[str]:
    if int(n.attr("batch_dims", 0)):
        raise GraphError(f"TF op {n.name!r} ({n.op}): batch_dims={n.attr('batch_dims')} is not supported")
    return [n.add("Gather", [n.x(0), n.x(1)], {"axis": _axis(n, 2)})]


def _resource_gather(n: Node) -> list[str]:
    if int(n.attr("batch_dims", 0)):
        raise GraphError(f"TF op {n.name!r} ({n.op}): batch_dims={n.attr('batch_dims')} is not supported")
    return [n.add("Gather", [n.x(0), n.x(1)], {"axis": 0})]


def _pack(n: Node) -> list[str]:
    count = int(n.attr("N", len(n.inputs)))
    axis = int(n.attr("axis", 0))
    if axis < 0:
        axis += n.rank(n.x(0)) + 1
    parts = [_axes_op(n, "Unsqueeze", 13, n.x(i), [axis], {}, name=n.sub(f"unsqueeze_{i}")) for i in range(count)]
    return [n.add("Concat", parts, {"axis": axis})]


def _unpack(n: Node) -> list[str]:
    count = int(n.attr("num"))
    axis = int(n.attr("axis", 0))
    parts = _outputs(n, "Split", [n.x(0)], {"axis": axis}, count, name=n.sub("split")) if count > 1 else [n.x(0)]
    return [_axes_op(n, "Squeeze", 13, p, [axis], {}, name=n.name if i == 0 else n.sub(f"output_{i}"))
            for i, p in enumerate(parts)]


def _split(n: Node) -> list[str]:
    count = int(n.attr("num_split"))
    axis = _axis(n, 0)
    return _outputs(n, "Split", [n.x(1)], {"axis": axis}, count) if count > 1 else [n.add("Identity", [n.x(1)])]


def _split_v(n: Node) -> list[str]:
    sizes, axis = n.static_ints(1), _axis(n, 2)
    if -1 in sizes:
        dim = n.shape(n.x(0))[axis]
        if dim is None:
            raise GraphError(f"TF op {n.name!r} (SplitV): a size of -1 along an axis of unknown length")
        sizes[sizes.index(-1)] = dim - (sum(sizes) + 1)
    if len(sizes) == 1:
        return [n.add("Identity", [n.x(0)])]
    return _outputs(n, "Split", [n.x(0), n.ints(sizes, "sizes")], {"axis": axis}, len(sizes))


def _fill(n: Node) -> list[str]:
    dims = n.add("Cast", [n.x(0)], {"to": onnx_code("int64")}, name=n.sub("dims"))
    return [n.add("Expand", [n.x(1), dims])]


def _like(n: Node) -> list[str]:
    x = n.x(0)
    value = n.const(np.asarray(0 if n.op == "ZerosLike" else 1), "value", n.dtype(x))
    return [n.add("Expand", [value, n.add("Shape", [x], name=n.sub("shape"))])]


def _range(n: Node) -> list[str]:
    return [n.add("Range", [n.x(0), n.x(1), n.x(2)])]


# ------------------------------------------------------------------------------------------ slicing
def _bits(mask: int, count: int) -> list[bool]:
    return [bool(mask >> j & 1) for j in range(count)]


def _strided_slice(n: Node) -> list[str]:
    """TF's begin/end/strides with all five masks -> ONNX Slice, Squeeze (shrink), Unsqueeze (new axes)."""
    begin, end, strides = n.static_ints(1), n.static_ints(2), n.static_ints(3)
    x = n.x(0)
    rank = n.rank(x)
    k = len(begin)
    masks = {m: _bits(int(n.attr(f"{m}_mask", 0)), k) for m in ("begin", "end", "ellipsis", "new_axis",
                                                                    "shrink_axis")}
    if sum(masks["ellipsis"]) > 1:
        raise GraphError(f"TF op {n.name!r} (StridedSlice): more than one ellipsis")
    real = sum(1 for j in range(k) if not masks["ellipsis"][j] and not masks["new_axis"][j])
    starts, ends, axes, steps, shrink, tokens = [], [], [], [], [], []
    ax = 0
    for j in range(k):
        if masks["ellipsis"][j]:
            span = rank - real
            tokens += ["keep"] * span
            ax += span
            continue
        if masks["new_axis"][j]:
            tokens.append("new")
            continue
        b, e, s = begin[j], end[j], strides[j]
        if s == 0:
            raise GraphError(f"TF op {n.name!r} (StridedSlice): stride 0")
        if masks["shrink_axis"][j]:
            starts.append(b), ends.append(_INT64_MAX if b == -1 else b + 1), axes.append(ax), steps.append(1)
            shrink.append(ax)
            tokens.append("shrink")
        else:
            if masks["begin"][j]:
                b = 0 if s > 0 else _INT64_MAX
            if masks["end"][j]:
                e = _INT64_MAX if s > 0 else _INT64_MIN
            if not (b == 0 and e == _INT64_MAX and s == 1):
                starts.append(b), ends.append(e), axes.append(ax), steps.append(s)
            tokens.append("keep")
        ax += 1
    tokens += ["keep"] * (rank - ax)
    y = x
    new = [i for i, t in enumerate(t for t in tokens if t != "shrink") if t == "new"]
    last = "slice" if not shrink and not new else ("squeeze" if not new else "unsqueeze")
    if axes:
        y = n.add("Slice", [y, n.ints(starts, "starts"), n.ints(ends, "ends"), n.ints(axes, "slice_axes"),
                            n.ints(steps, "steps")], name=n.name if last == "slice" else n.sub("slice"))
    if shrink:
        y = _axes_op(n, "Squeeze", 13, y, shrink, {}, name=n.name if last == "squeeze" else n.sub("squeeze"))
    if new:
        y = _axes_op(n, "Unsqueeze", 13, y, new, {}, name=n.name)
    if y == x:
        y = n.add("Identity", [x])
    return [y]


def _slice(n: Node) -> list[str]:
    begin, size = n.static_ints(1), n.static_ints(2)
    ends = [_INT64_MAX if s == -1 else b + s for b, s in zip(begin, size)]
    return [n.add("Slice", [n.x(0), n.ints(begin, "starts"), n.ints(ends, "ends"),
                            n.ints(list(range(len(begin))), "axes")])]


# ------------------------------------------------------------------------------------ selection & co.
def _one_hot(n: Node) -> list[str]:
    depth = n.ints([_axis(n, 1)], "depth")
    shape = n.ints([1], "one")
    off = n.add("Reshape", [n.x(3), shape], name=n.sub("off"))
    on = n.add("Reshape", [n.x(2), shape], name=n.sub("on"))
    values = n.add("Concat", [off, on], {"axis": 0}, name=n.sub("values"))
    indices = n.x(0)
    if n.dtype(indices) != "int64":  # ONNX Runtime's OneHot kernels take int64 indices
        indices = n.add("Cast", [indices], {"to": onnx_code("int64")}, name=n.sub("indices"))
    return [n.add("OneHot", [indices, depth, values], {"axis": int(n.attr("axis", -1))})]


def _select(n: Node) -> list[str]:
    cond, a, b = n.x(0), n.x(1), n.x(2)
    if n.op == "Select" and n.rank(cond) == 1 and n.rank(a) > 1:  # a vector condition picks rows
        cond = n.add("Reshape", [cond, n.ints([-1] + [1] * (n.rank(a) - 1), "rows_shape")], name=n.sub("rows"))
    return [n.add("Where", [cond, a, b])]


def _where(n: Node) -> list[str]:
    if len(n.inputs) == 3:
        return _select(n)
    x = n.x(0)
    if n.dtype(x) != "bool":
        x = n.add("Cast", [x], {"to": onnx_code("bool")}, name=n.sub("bool"))
    return [n.add("Transpose", [n.add("NonZero", [x], name=n.sub("nonzero"))], {"perm": [1, 0]})]


def _cumsum(n: Node) -> list[str]:
    attrs = {"exclusive": int(bool(n.attr("exclusive", False))), "reverse": int(bool(n.attr("reverse", False)))}
    return [n.add("CumSum", [n.x(0), n.ints([_axis(n, 1)], "axis")], attrs)]


def _top_k(n: Node) -> list[str]:
    k = [_axis(n, 1)] if n.op == "TopKV2" else [int(n.attr("k"))]
    values, indices = _outputs(n, "TopK", [n.x(0), n.ints(k, "k")], {"axis": -1, "largest": 1, "sorted": 1}, 2,
                               name=n.sub("top_k"))
    out = n.tf_dtype("index_type", "int32")
    return [n.add("Identity", [values]), n.add("Cast", [indices], {"to": onnx_code(out)}, name=n.sub("indices"))]


def _einsum(n: Node) -> list[str]:
    return [n.add("Einsum", [n.x(i) for i in range(int(n.attr("N", len(n.inputs))))],
                  {"equation": str(n.attr("equation"))})]


# ------------------------------------------------------------------------------------- images
def _conv2d_backprop_input(n: Node) -> list[str]:
    """``conv2d_transpose``: ONNX ConvTranspose with the pads TF's SAME/VALID/EXPLICIT imply."""
    nchw = _nchw(n)
    x = _in_nchw(n, n.x(2))
    kh, kw, _, _ = n.shape(n.x(1))
    w = n.add("Transpose", [n.x(1)], {"perm": HWIO_TO_OIHW}, name=n.sub("filter_iohw"))
    strides, dilations = _spatial(n.attr("strides"), nchw), _spatial(n.attr("dilations"), nchw)
    in_shape = n.shape(n.x(2))
    spatial_in = list(in_shape[2:] if nchw else in_shape[1:3])
    sizes = n.static_ints(0, required=False)
    declared = n.attr("_output_shapes")
    if sizes is None and isinstance(declared, list) and declared and getattr(declared[0], "dims", None):
        sizes = [-1 if d is None else d for d in declared[0].dims]  # TF's own static output shape
        if -1 in (sizes[2:] if nchw else sizes[1:3]):
            sizes = None
    pad = _padding(n)
    out_sizes = []
    for i, (k, s, d, size_in) in enumerate(zip((kh, kw), strides, dilations, spatial_in)):
        k_eff = (k - 1) * d + 1
        if sizes is not None:
            out_sizes.append(sizes[2 + i] if nchw else sizes[1 + i])
        elif size_in is None:
            raise GraphError(f"TF op {n.name!r} (Conv2DBackpropInput): unknown spatial size")
        elif pad.get("auto_pad") == "SAME_UPPER":
            out_sizes.append(size_in * s)
        else:
            out_sizes.append((size_in - 1) * s + k_eff)
    if None in spatial_in:
        raise GraphError(f"TF op {n.name!r} (Conv2DBackpropInput): unknown spatial size of the input")
    pads_begin, pads_end, extra = [], [], []
    for i, (k, s, d, size_in) in enumerate(zip((kh, kw), strides, dilations, spatial_in)):
        k_eff = (k - 1) * d + 1
        out = out_sizes[i]
        if "pads" in pad:
            before, after = pad["pads"][i], pad["pads"][i + 2]
        elif pad.get("auto_pad") == "SAME_UPPER":
            total = max((size_in - 1) * s + k_eff - out, 0)
            before, after = total // 2, total - total // 2
        else:
            before, after = 0, 0
        full = (size_in - 1) * s + k_eff - before - after
        if out < full:
            after += full - out
            full = out
        pads_begin.append(before), pads_end.append(after), extra.append(out - full)
    attrs = {"strides": strides, "dilations": dilations, "pads": pads_begin + pads_end, "output_padding": extra,
             "kernel_shape": [kh, kw]}
    return _out(n, "deconv_nchw", lambda name: n.add("ConvTranspose", [x, w], attrs, name=name))


def _resize(n: Node) -> list[str]:
    """TF's resize kernels as ONNX Resize (NHWC -> NCHW inside); the coordinate mode follows TF's flags."""
    size = n.static_ints(1)
    x = n.x(0)
    h, w = n.shape(x)[1:3]
    if h is None or w is None:
        raise GraphError(f"TF op {n.name!r} ({n.op}): the input's height and width must be known")
    align, half = bool(n.attr("align_corners", False)), bool(n.attr("half_pixel_centers", False))
    nearest = n.op == "ResizeNearestNeighbor"
    if align:
        ctm, rounding = "align_corners", "round_prefer_ceil"
    elif half:
        ctm, rounding = "half_pixel", "round_prefer_ceil"
    else:
        ctm, rounding = "asymmetric", "floor"
    attrs = {"mode": "nearest" if nearest else "linear", "coordinate_transformation_mode": ctm}
    if nearest:
        attrs["nearest_mode"] = rounding
    scales = n.const(np.array([1.0, 1.0, size[0] / h, size[1] / w], np.float32), "scales", "float32")
    nchw = n.add("Transpose", [x], {"perm": TO_NCHW}, name=n.sub("to_nchw"))
    y = n.add("Resize", [nchw, None, scales], attrs, name=n.sub("resize_nchw"))
    return [n.add("Transpose", [y], {"perm": TO_NHWC})]


# ------------------------------------------------------------------------- TensorArrays (dynamic_rnn)
# An array is its stacked tensor: the translators read the data inputs and never the handle (see tf_control).
def _tensor_array_scatter(n: Node) -> list[str]:
    """The array unstacked from a tensor is that tensor (indices are ``range(n)``, as ``unstack`` writes)."""
    return [n.x(2)]


def _tensor_array_read(n: Node) -> list[str]:
    return [n.add("Gather", [n.x(2), n.x(1)], {"axis": 0})]


def _tensor_array_write(n: Node) -> list[str]:
    """Inside a loop: the value written this iteration (the Loop stacks it as a scan output)."""
    return [n.add("Identity", [n.x(2)])]


def _tensor_array_size(n: Node) -> list[str]:
    shape = n.add("Shape", [n.x(1)], name=n.sub("shape"))
    first = n.add("Gather", [shape, n.const(np.asarray(0, np.int64), "zero", "int64")], {"axis": 0},
                  name=n.sub("size"))
    return [n.add("Cast", [first], {"to": onnx_code("int32")})]


TRANSLATORS: dict[str, Translator] = {
    **{op: _unary for op in _UNARY},
    **{op: _binary for op in _BINARY},
    **{op: _reduce for op in _REDUCE},
    "Erfc": _erfc,
    "AddN": _add_n, "Rsqrt": _rsqrt, "Square": _square, "SquaredDifference": _squared_difference, "Relu6": _relu6,
    "LeakyRelu": _leaky_relu, "Softmax": _softmax, "LogSoftmax": _softmax, "StopGradient": _stop_gradient,
    "Cast": _cast, "Shape": _shape, "MatMul": _matmul, "BatchMatMul": _batch_matmul,
    "BatchMatMulV2": _batch_matmul, "BiasAdd": _bias_add, "Conv2D": _conv2d, "DepthwiseConv2dNative": _depthwise,
    "MaxPool": _pool, "AvgPool": _pool, "FusedBatchNorm": _fused_batch_norm, "FusedBatchNormV2": _fused_batch_norm,
    "FusedBatchNormV3": _fused_batch_norm, "Squeeze": _squeeze, "ExpandDims": _expand_dims, "Reshape": _reshape,
    "Transpose": _transpose, "ConcatV2": _concat, "Pad": _pad, "Tile": _tile, "ArgMax": _argmax,
    "SparseSoftmaxCrossEntropyWithLogits": _sparse_xent, "InTopK": _in_top_k, "InTopKV2": _in_top_k,
    "GatherV2": _gather_v2, "ResourceGather": _resource_gather, "Pack": _pack, "Unpack": _unpack, "Split": _split,
    "SplitV": _split_v, "Fill": _fill, "ZerosLike": _like, "OnesLike": _like, "Range": _range,
    "StridedSlice": _strided_slice, "Slice": _slice, "OneHot": _one_hot, "Select": _select, "SelectV2": _select,
    "Where": _where, "Cumsum": _cumsum, "TopKV2": _top_k, "TopK": _top_k, "Einsum": _einsum,
    "Conv2DBackpropInput": _conv2d_backprop_input, "ResizeBilinear": _resize, "ResizeNearestNeighbor": _resize,
    "TensorArrayScatterV3": _tensor_array_scatter, "TensorArrayReadV3": _tensor_array_read,
    "TensorArrayWriteV3": _tensor_array_write, "TensorArrayGatherV3": _tensor_array_read,
    "TensorArraySizeV3": _tensor_array_size, "All": _all_any, "Any": _all_any,
    "Log1p": _log1p, "Expm1": _expm1, "NotEqual": _not_equal, "FloorDiv": _floor_div, "FloorMod": _floor_mod,
    "DivNoNan": _div_no_nan, "ClipByValue": _clip_by_value, "L2Loss": _l2_loss,
    "SoftmaxCrossEntropyWithLogits": _softmax_xent, "ArgMin": _argmin, "Gather": _gather, "GatherNd": _gather_nd,
    "BroadcastTo": _broadcast_to, "ReverseV2": _reverse, "ReverseSequence": _reverse_sequence, "PadV2": _pad_v2,
    "MirrorPad": _pad_v2, "Size": _size, "Rank": _rank, "IdentityN": _identity_n, "LRN": _lrn,
    "GreaterEqual": _greater_equal,
    **FUNCTIONAL_TRANSLATORS,  # TF2 While/If (SavedModel function bodies) and TensorLists
}

#: Input positions that a translator reads as constants (shapes, axes), not as graph tensors.
STATIC_INPUTS: dict[str, tuple[int, ...]] = {
    **{op: (1,) for op in _REDUCE}, "ExpandDims": (1,), "Transpose": (1,), "Pad": (1,), "Tile": (1,),
    "ArgMax": (1,), "InTopKV2": (2,), "ArgMin": (1,), "ReverseV2": (1,), "PadV2": (1,), "MirrorPad": (1,),
    "Cumsum": (1,), "TopKV2": (1,), "OneHot": (1,), "Slice": (1, 2), "StridedSlice": (1, 2, 3), "SplitV": (1, 2),
    "Split": (0,), "GatherV2": (2,), "ResizeBilinear": (1,), "ResizeNearestNeighbor": (1,), "All": (1,), "Any": (1,),
}


def supported_ops() -> list[str]:
    """Every TF op type the importers read, sorted: the translators here (TF2 ``While``/``If`` and TensorLists
    from SavedModel functions included) plus the control flow, leaves and pass-through ops that ``tf_import``
    handles itself (for the README's coverage table)."""
    from graphdnn.converters.tf_import import HANDLED_OPS

    return sorted(set(TRANSLATORS) | set(HANDLED_OPS))
