"""BatchNormalization (any axis, ``center``/``scale`` off), LayerNormalization (incl. ``rms_scaling``),
GroupNormalization and UnitNormalization."""

from __future__ import annotations

from typing import Any

import numpy as np
from graphdnn.converters.keras_layers import KerasLayer, reduce, translates
from graphdnn.converters.keras_layers.core import _l2_normalize

from graphdnn.graph import Tensor


def _axes(layer: KerasLayer, rank: int, default: Any = -1) -> list[int]:
    axis = layer.cfg.get("axis", default)
    return sorted(int(a) % rank for a in (axis if isinstance(axis, list) else [axis]))


def _gamma_beta(layer: KerasLayer, shape: tuple[int, ...], x: Tensor, center: bool, scale: bool
                ) -> tuple[Tensor, Tensor]:
    gamma = layer.var("gamma", shape) if scale else layer.fconst(np.ones(shape, np.float32), "gamma", x)
    beta = layer.var("beta", shape) if center else layer.fconst(np.zeros(shape, np.float32), "beta", x)
    return gamma, beta


@translates("BatchNormalization")
def batch_norm(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    rank = len(x.shape)
    axes = _axes(layer, rank)
    if len(axes) != 1:
        raise layer.unsupported(f"BatchNormalization over several axes {axes}")
    axis = axes[0]
    c = int(x.shape[axis])
    gamma, beta = _gamma_beta(layer, (c,), x, bool(layer.cfg.get("center", True)), bool(layer.cfg.get("scale", True)))
    mean = layer.var("moving_mean", (c,), trainable=False)
    var = layer.var("moving_variance", (c,), trainable=False)
    attrs = {"epsilon": float(layer.cfg.get("epsilon", 1e-3)), "momentum": float(layer.cfg.get("momentum", 0.99))}
    if axis == 1:
        return layer.op("BatchNormalization", [x, gamma, beta, mean, var], attrs)
    perm = [0, axis] + [i for i in range(1, rank) if i != axis]
    inverse = [perm.index(i) for i in range(rank)]
    y = layer.op("BatchNormalization", [layer.op("Transpose", [x], {"perm": perm}, "to_channels_first"), gamma, beta,
                                        mean, var], attrs)
    return layer.op("Transpose", [y], {"perm": inverse}, "to_channels_last")


@translates("LayerNormalization")
def layer_norm(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    rank = len(x.shape)
    axes = _axes(layer, rank)
    shape = tuple(int(x.shape[a]) for a in axes)
    eps = float(layer.cfg.get("epsilon", 1e-3))
    if layer.cfg.get("rms_scaling"):
        ms = reduce(layer, "ReduceMean", layer.op("Mul", [x, x]), axes, True)
        inv = layer.op("Reciprocal", [layer.op("Sqrt", [layer.op("Add", [ms, layer.fconst(eps, "epsilon", x)])])])
        return layer.op("Mul", [layer.op("Mul", [x, inv]), _broadcast(layer, layer.var("gamma", shape), axes, rank)])
    gamma, beta = _gamma_beta(layer, shape, x, bool(layer.cfg.get("center", True)), bool(layer.cfg.get("scale", True)))
    if axes == list(range(axes[0], rank)):
        return layer.op("LayerNormalization", [x, gamma, beta], {"axis": axes[0], "epsilon": eps})
    mean = reduce(layer, "ReduceMean", x, axes, True)
    centered = layer.op("Sub", [x, mean])
    var = reduce(layer, "ReduceMean", layer.op("Mul", [centered, centered]), axes, True)
    y = layer.op("Div", [centered, layer.op("Sqrt", [layer.op("Add", [var, layer.fconst(eps, "epsilon", x)])])])
    y = layer.op("Mul", [y, _broadcast(layer, gamma, axes, rank)])
    return layer.op("Add", [y, _broadcast(layer, beta, axes, rank)])


def _broadcast(layer: KerasLayer, t: Tensor, axes: list[int], rank: int) -> Tensor:
    """``t`` (shaped like the normalized axes) reshaped to broadcast against a rank-``rank`` input."""
    if axes == list(range(rank - len(axes), rank)):
        return t
    shape = [1] * rank
    for a, d in zip(axes, t.shape):
        shape[a] = int(d)
    return layer.op("Reshape", [t, layer.const(shape[1:], "broadcast_shape", "int64")])


@translates("GroupNormalization")
def group_norm(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    rank = len(x.shape)
    if _axes(layer, rank) != [rank - 1]:
        raise layer.unsupported("GroupNormalization over an axis other than the last")
    c, groups = int(x.shape[-1]), int(layer.cfg.get("groups", 32))
    groups = c if groups == -1 else groups
    spatial = [int(d) for d in x.shape[1:-1]]
    eps = float(layer.cfg.get("epsilon", 1e-3))
    g = layer.op("Reshape", [x, layer.const([0, *spatial, groups, c // groups], "grouped_shape", "int64")])
    axes = list(range(1, rank - 1)) + [rank]
    mean = reduce(layer, "ReduceMean", g, axes, True)
    centered = layer.op("Sub", [g, mean])
    var = reduce(layer, "ReduceMean", layer.op("Mul", [centered, centered]), axes, True)
    y = layer.op("Div", [centered, layer.op("Sqrt", [layer.op("Add", [var, layer.fconst(eps, "epsilon", x)])])])
    y = layer.op("Reshape", [y, layer.const([0, *spatial, c], "shape", "int64")])
    gamma, beta = _gamma_beta(layer, (c,), x, bool(layer.cfg.get("center", True)), bool(layer.cfg.get("scale", True)))
    return layer.op("Add", [layer.op("Mul", [y, gamma]), beta])


@translates("UnitNormalization")
def unit_norm(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    axes = _axes(layer, len(xs[0].shape))
    if len(axes) != 1:
        raise layer.unsupported(f"UnitNormalization over several axes {axes}")
    return _l2_normalize(layer, xs[0], axes[0])
