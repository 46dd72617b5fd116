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

from graphdnn.dtypes import onnx_code
from graphdnn.errors import GraphError
from graphdnn.ops.registry import GRAPHDNN_DOMAIN

if TYPE_CHECKING:
    from converters.tf_import import Node


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
    "PreventGradient": "Identity", "Sin": "Sin", "Cos": "Cos",
}
_BINARY = {
    "Add": "Add", "AddV2": "Add", "Sub": "Sub", "Mul": "Mul", "RealDiv": "Div", "Div": "Div", "Maximum": "Max",
    "Minimum": "Min", "Pow": "Pow", "Equal": "Equal", "Greater": "Greater", "Less": "Less",
    "GreaterEqual": "GreaterOrEqual", "LessEqual": "LessOrEqual", "LogicalAnd": "And", "LogicalOr": "Or",
}
_REDUCE = {"Mean": ("ReduceMean", 18), "Sum": ("ReduceSum", 13), "Max": ("ReduceMax", 18),
           "Min": ("ReduceMin", 18), "Prod": ("ReduceProd", 18)}


def _unary(n: Node) -> list[str]:
    return [n.add(_UNARY[n.op], [n.x(0)])]


def _binary(n: Node) -> list[str]:
    return [n.add(_BINARY[n.op], [n.x(0), n.x(1)])]


def _add_n(n: Node) -> list[str]:
    return [n.add("Sum", [n.x(i) for i in range(len(n.inputs))])]


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


def _axes_op(n: Node, onnx_op: str, input_since: int, x: str, axes: list[int] | None, attrs: dict) -> str:
    """An op whose ``axes`` moved from an attribute to an input at ``input_since``."""
    ins = [x]
    if axes is not None:
        if n.opset >= input_since:
            ins.append(n.ints(axes, "axes"))
        else:
            attrs = {**attrs, "axes": axes}
    return n.add(onnx_op, ins, attrs)


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


TRANSLATORS: dict[str, Translator] = {
    **{op: _unary for op in _UNARY},
    **{op: _binary for op in _BINARY},
    **{op: _reduce for op in _REDUCE},
    "AddN": _add_n, "Rsqrt": _rsqrt, "Square": _square, "SquaredDifference": _squared_difference, "Relu6": _relu6,
    "LeakyRelu": _leaky_relu, "Softmax": _softmax, "LogSoftmax": _softmax, "StopGradient": _stop_gradient,
    "Cast": _cast, "Shape": _shape, "MatMul": _matmul, "BatchMatMul": _batch_matmul,
    "BatchMatMulV2": _batch_matmul, "BiasAdd": _bias_add, "Conv2D": _conv2d, "DepthwiseConv2dNative": _depthwise,
    "MaxPool": _pool, "AvgPool": _pool, "FusedBatchNorm": _fused_batch_norm, "FusedBatchNormV2": _fused_batch_norm,
    "FusedBatchNormV3": _fused_batch_norm, "Squeeze": _squeeze, "ExpandDims": _expand_dims, "Reshape": _reshape,
    "Transpose": _transpose, "ConcatV2": _concat, "Pad": _pad, "Tile": _tile, "ArgMax": _argmax,
    "SparseSoftmaxCrossEntropyWithLogits": _sparse_xent, "InTopK": _in_top_k, "InTopKV2": _in_top_k,
}

#: Input positions that a translator reads as constants (shapes, axes), not as graph tensors.
STATIC_INPUTS: dict[str, tuple[int, ...]] = {
    **{op: (1,) for op in _REDUCE}, "ExpandDims": (1,), "Transpose": (1,), "Pad": (1,), "Tile": (1,),
    "ArgMax": (1,), "InTopKV2": (2,),
}
