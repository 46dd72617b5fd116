"""Dense, EinsumDense, Embedding, activations and activation layers, dropout and noise, merge layers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from graphdnn.converters.keras_layers import KerasLayer, reduce, translates

from graphdnn.graph import Tensor, ValueInfo
from graphdnn.ops.registry import GRAPHDNN_DOMAIN

_SIMPLE = {"relu": "Relu", "elu": "Elu", "selu": "Selu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
           "softsign": "Softsign", "exponential": "Exp", "hard_silu": "HardSwish", "hard_swish": "HardSwish",
           "celu": "Celu"}
#: The built-in activation names ``Activation`` / ``activation=`` imports.
ACTIVATIONS = sorted(set(_SIMPLE) | {"linear", "softmax", "log_softmax", "leaky_relu", "swish", "silu", "relu6",
                                     "hard_sigmoid", "gelu", "mish", "hard_tanh", "log_sigmoid", "tanh_shrink"})


def activation(layer: KerasLayer, x: Tensor, fn: Any) -> Tensor:
    """Apply a Keras activation given as its config (``"relu"`` or a serialized function)."""
    cfg: dict[str, Any] = {}
    name = fn
    if isinstance(fn, dict):  # a serialized function: {"class_name": "function", "config": "relu" | {...}}
        inner = fn.get("config")
        cfg = inner if isinstance(inner, dict) else {}
        name = inner if isinstance(inner, str) else cfg.get("name") or fn.get("class_name")
    name = str(name or "linear").lower()
    if name in ("linear", "none"):
        return x
    if name in _SIMPLE:
        return layer.op(_SIMPLE[name], [x])
    if name in ("softmax", "log_softmax"):
        return layer.op("Softmax" if name == "softmax" else "LogSoftmax", [x], {"axis": -1})
    if name == "leaky_relu":
        return layer.op("LeakyRelu", [x], {"alpha": 0.2})
    if name in ("swish", "silu"):
        return layer.op("Mul", [x, layer.op("Sigmoid", [x])], name="swish")
    if name == "relu6":
        return clip(layer, x, 0.0, 6.0, "Relu6")
    if name == "hard_tanh":
        return clip(layer, x, -1.0, 1.0, "hard_tanh")
    if name == "hard_sigmoid":
        return layer.op("HardSigmoid", [x], {"alpha": 1.0 / 6.0, "beta": 0.5})
    if name == "log_sigmoid":
        return layer.op("Neg", [layer.op("Softplus", [layer.op("Neg", [x])])], name="log_sigmoid")
    if name == "tanh_shrink":
        return layer.op("Sub", [x, layer.op("Tanh", [x])], name="tanh_shrink")
    if name == "mish":
        return layer.op("Mul", [x, layer.op("Tanh", [layer.op("Softplus", [x])])], name="mish")
    if name == "gelu":
        return gelu(layer, x, bool(cfg.get("approximate", False)))
    raise layer.unsupported(f"activation {name!r}")


def gelu(layer: KerasLayer, x: Tensor, approximate: bool) -> Tensor:
    """GELU from elementary ops: exact ``0.5x(1 + erf(x/sqrt 2))`` or the tanh approximation."""
    half = layer.op("Mul", [x, layer.fconst(0.5, "half", x)])
    if approximate:
        cube = layer.op("Mul", [layer.op("Mul", [x, x]), x])
        inner = layer.op("Add", [x, layer.op("Mul", [cube, layer.fconst(0.044715, "c", x)])])
        t = layer.op("Tanh", [layer.op("Mul", [inner, layer.fconst(math.sqrt(2 / math.pi), "sqrt_2_pi", x)])])
    else:
        t = layer.op("Erf", [layer.op("Mul", [x, layer.fconst(1 / math.sqrt(2), "inv_sqrt2", x)])])
    return layer.op("Mul", [half, layer.op("Add", [t, layer.fconst(1.0, "one", x)])], name="gelu")


def clip(layer: KerasLayer, x: Tensor, lo: float, hi: float, name: str = "Clip") -> Tensor:
    return layer.op("Clip", [x, layer.fconst(lo, "min", x), layer.fconst(hi, "max", x)], name=name)


def bias_add(layer: KerasLayer, y: Tensor, bias: Tensor) -> Tensor:
    return layer.op("Add", [y, bias], name="BiasAdd")


@translates("Dense")
def dense(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x, units = xs[0], int(layer.cfg["units"])
    y = layer.op("MatMul", [x, layer.var("kernel", (int(x.shape[-1]), units), "io")])
    if layer.cfg.get("use_bias", True):
        y = bias_add(layer, y, layer.var("bias", (units,)))
    return activation(layer, y, layer.cfg.get("activation"))


@translates("EinsumDense")
def einsum_dense(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    equation = str(layer.cfg["equation"])
    kernel = np.asarray(layer.weights[f"{layer.path}/kernel"]) if layer.has("kernel") else None
    if kernel is None:
        raise layer.unsupported("an EinsumDense without its kernel")
    y = layer.op("Einsum", [xs[0], layer.var("kernel", tuple(kernel.shape))], {"equation": equation})
    if layer.has("bias"):
        y = bias_add(layer, y, layer.var("bias", tuple(np.asarray(layer.weights[f"{layer.path}/bias"]).shape)))
    return activation(layer, y, layer.cfg.get("activation"))


@translates("Embedding")
def embedding(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    table = layer.var("embeddings", (int(layer.cfg["input_dim"]), int(layer.cfg["output_dim"])))
    ids = layer.op("Cast", [xs[0]], {"to": 7}, "ids")  # int64
    if layer.cfg.get("mask_zero"):  # Keras's mask: the ids that are not 0
        layer.out_masks = [layer.op("Not", [layer.op("Equal", [ids, layer.const(0, "zero", "int64")])], name="mask")]
    return layer.op("Gather", [table, ids], {"axis": 0}, "embedding_lookup")


@translates("Activation")
def activation_layer(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    return activation(layer, xs[0], layer.cfg.get("activation"))


@translates("ReLU")
def relu(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    cfg, x = layer.cfg, xs[0]
    slope, threshold, hi = float(cfg.get("negative_slope") or 0), float(cfg.get("threshold") or 0), cfg.get("max_value")
    if slope or threshold:
        shifted = layer.op("Sub", [x, layer.fconst(threshold, "threshold", x)])
        low = layer.op("Mul", [shifted, layer.fconst(slope, "negative_slope", x)])
        cond = layer.op("GreaterOrEqual", [x, layer.fconst(threshold, "threshold", x)])
        y = layer.op("Where", [cond, x, low])
        return y if hi is None else layer.op("Min", [y, layer.fconst(float(hi), "max_value", x)])
    return layer.op("Relu", [x]) if hi is None else clip(layer, x, 0.0, float(hi), "Relu6")


@translates("LeakyReLU")
def leaky_relu(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    slope = layer.cfg.get("negative_slope", layer.cfg.get("alpha", 0.3))
    return layer.op("LeakyRelu", [xs[0]], {"alpha": float(slope)})


@translates("ELU")
def elu(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    return layer.op("Elu", [xs[0]], {"alpha": float(layer.cfg.get("alpha", 1.0))})


@translates("PReLU")
def prelu(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    shape = [int(d) for d in xs[0].shape[1:]]
    for axis in layer.cfg.get("shared_axes") or []:
        shape[int(axis) - 1] = 1
    return layer.op("PRelu", [xs[0], layer.var("alpha", tuple(shape))])


@translates("Softmax")
def softmax(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    axis = layer.cfg.get("axis", -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            raise layer.unsupported(f"Softmax over several axes {axis}")
        axis = axis[0]
    return layer.op("Softmax", [xs[0]], {"axis": int(axis)})


@translates("Dropout")
def dropout(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """Identity at inference, ONNX Dropout (inverted dropout) in training, as Keras."""
    return layer.op("Dropout", [xs[0], layer.fconst(float(layer.cfg.get("rate", 0.5)), "rate", xs[0])])


@translates("AlphaDropout")
def alpha_dropout(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """Identity at inference; in training Keras's SELU-preserving formula: a kept entry becomes ``a x + b``, a
    dropped one ``a alpha' + b`` (alpha' = -scale * alpha of SELU, ``a = ((1-p)(1 + p alpha'^2))^-1/2``,
    ``b = -a alpha' p``), which is PyTorch's ``alpha_dropout``."""
    if layer.cfg.get("noise_shape") is not None:
        raise layer.unsupported("an AlphaDropout with a noise_shape")
    return layer.op("AlphaDropout", [xs[0]], {"ratio": float(layer.cfg.get("rate", 0.5))}, domain=GRAPHDNN_DOMAIN)


@translates("GaussianNoise")
def gaussian_noise(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """Identity at inference, ``x + N(0, stddev)`` in training."""
    return layer.op("GaussianNoise", [xs[0]], {"stddev": float(layer.cfg.get("stddev", 0.0))}, domain=GRAPHDNN_DOMAIN)


@translates("GaussianDropout")
def gaussian_dropout(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """Identity at inference, ``x * N(1, sqrt(rate / (1 - rate)))`` in training."""
    return layer.op("GaussianDropout", [xs[0]], {"ratio": float(layer.cfg.get("rate", 0.5))}, domain=GRAPHDNN_DOMAIN)


@translates("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
def spatial_dropout(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """Identity at inference; in training whole channels are dropped (the rest scaled by ``1 / (1 - rate)``):
    ONNX Dropout on ones of Keras's noise shape (batch, 1, ..., channels), times the input."""
    x = xs[0]
    rank = len(x.shape)
    first = layer.cls != "SpatialDropout1D" and layer.cfg.get("data_format") == "channels_first"
    keep = [0, 1] if first else [0, rank - 1]  # the axes the noise varies along
    dims = layer.op("Shape", [x])
    ones = layer.const(np.ones(rank, np.int64), "ones", "int64")
    axes = np.zeros(rank, bool)
    axes[keep] = True
    noise_shape = layer.op("Where", [layer.const(axes, "noise_axes", "bool"), dims, ones], name="noise_shape")
    info = ValueInfo(tuple(d if i in keep else 1 for i, d in enumerate(x.shape)), x.dtype)
    mask = layer.g.add_op("ConstantOfShape", [noise_shape], {"value": {"dtype": str(x.dtype or "float32"),
                          "shape": [1], "data": [1.0]}}, None, default_name="noise_ones", outputs=[info]).out()
    rate = float(layer.cfg.get("rate", 0.5))
    kept = layer.op("Dropout", [mask, layer.fconst(rate, "rate", x)], name="channel_mask")
    return layer.op("Mul", [x, kept], name="spatial_dropout")


@translates("ActivityRegularization", "Identity")
def identity(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """Layers that are the identity when imported (an activity regularizer adds to the loss only)."""
    return layer.op("Identity", [xs[0]])


@translates("Masking")
def masking(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """Keras's ``Masking``: a step whose features all equal ``mask_value`` is masked (its mask is False) and
    set to 0."""
    x = xs[0]
    differs = layer.op("Not", [layer.op("Equal", [x, layer.fconst(float(layer.cfg.get("mask_value", 0.0)),
                                                                    "mask_value", x)])])
    keep = layer.op("Cast", [reduce(layer, "ReduceMax", layer.op("Cast", [differs], {"to": 1}), [-1], True, "any")],
                    {"to": 9}, "keep")
    layer.out_masks = [layer.op("Squeeze", [keep, layer.const([-1], "last_axis", "int64")], name="mask")]
    return layer.op("Where", [keep, x, layer.fconst(0.0, "zero", x)], name="masked")


_LOGIC = {"NotEqual": "Equal", "Equal": "Equal", "LogicalAnd": "And", "LogicalOr": "Or", "LogicalNot": "Not"}


@translates(*_LOGIC)
def logic(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """The ``keras.ops`` comparisons and logic that Keras 3 writes into a functional model to compute masks
    (``not_equal(ids, 0)`` for ``Embedding(mask_zero=True)``, ``logical_or`` of merged masks)."""
    if len(xs) != (1 if layer.cls == "LogicalNot" else 2):
        raise layer.unsupported(f"{layer.cls} of {len(xs)} tensors")
    if layer.cls in ("NotEqual", "Equal") and xs[0].dtype != xs[1].dtype:
        xs = [xs[0], layer.op("CastLike", [xs[1], xs[0]], name="operand_cast")]
    y = layer.op(_LOGIC[layer.cls], xs)
    return layer.op("Not", [y]) if layer.cls == "NotEqual" else y


@translates("Any", "All")
def any_all(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """``keras.ops.any``/``all`` over ``axis`` (Keras 3 writes ``any(not_equal(x, v), axis=-1)`` for
    ``Masking``)."""
    x = xs[0]
    axis = layer.cfg.get("axis")
    axes = list(range(len(x.shape))) if axis is None else [int(a) for a in (axis if isinstance(axis, list)
                                                                            else [axis])]
    as_int = layer.op("Cast", [x], {"to": 6}, "as_int")
    y = reduce(layer, "ReduceMax" if layer.cls == "Any" else "ReduceMin", as_int, axes,
               bool(layer.cfg.get("keepdims", False)))
    return layer.op("Cast", [y], {"to": 9}, "as_bool")


@translates("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def merge(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """Elementwise merges, broadcasting as Keras does (a squeeze-excite ``(N, 1, 1, C)`` gate)."""
    op = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Maximum": "Max", "Minimum": "Min",
          "Average": "Add"}[layer.cls]
    y = xs[0]
    for x in xs[1:]:
        y = layer.op(op, [y, x])
    if layer.cls == "Average":
        y = layer.op("Div", [y, layer.fconst(float(len(xs)), "count", y)], name="Average")
    return y


@translates("Concatenate")
def concatenate(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    return layer.op("Concat", xs, {"axis": int(layer.cfg.get("axis", -1))})


@translates("Dot")
def dot(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """Keras's batched dot product over ``axes`` (Einsum), inputs L2-normalized with ``normalize``."""
    a, b = xs
    axes = layer.cfg.get("axes", -1)
    axes = [axes, axes] if isinstance(axes, int) else list(axes)
    ra, rb = len(a.shape), len(b.shape)
    axes = [axes[0] % ra, axes[1] % rb]
    if layer.cfg.get("normalize"):
        a, b = (_l2_normalize(layer, t, ax) for t, ax in ((a, axes[0]), (b, axes[1])))
    letters = "bcdefghijklmnopqrstuvwxyz"
    sa = ["a"] + [letters[i] for i in range(ra - 1)]
    sb = ["a"] + [letters[ra - 1 + i] for i in range(rb - 1)]
    sb[axes[1]] = sa[axes[0]]
    out = [c for i, c in enumerate(sa) if i != axes[0]] + [c for i, c in enumerate(sb) if i not in (0, axes[1])]
    y = layer.op("Einsum", [a, b], {"equation": f"{''.join(sa)},{''.join(sb)}->{''.join(out)}"})
    if len(out) == 1:
        y = layer.op("Unsqueeze", [y, layer.const([1], "axes", "int64")])
    return y


def _l2_normalize(layer: KerasLayer, x: Tensor, axis: int) -> Tensor:
    sq = reduce(layer, "ReduceSum", layer.op("Mul", [x, x]), [axis], True)
    norm = layer.op("Sqrt", [layer.op("Max", [sq, layer.fconst(1e-12, "epsilon", x)])])
    return layer.op("Div", [x, norm], name="l2_normalize")


_TF_OPS = {"__operators__.add": "Add", "math.add": "Add", "math.multiply": "Mul", "math.subtract": "Sub",
           "__operators__.sub": "Sub", "math.truediv": "Div"}


@translates("TFOpLambda")
def tf_op_lambda(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """tf_keras's wrapper of a TF function in a functional model: the binary arithmetic ones
    (``x + y`` is ``tf.__operators__.add`` with ``y`` by keyword)."""
    fn = str(layer.cfg.get("function"))
    y = layer.kwargs.get("y")
    if fn not in _TF_OPS or len(xs) + isinstance(y, Tensor) != 2:
        raise layer.unsupported(f"TFOpLambda {fn!r} (imported: {', '.join(sorted(_TF_OPS))} of two tensors)")
    return layer.op(_TF_OPS[fn], [xs[0], xs[1] if len(xs) > 1 else y])
