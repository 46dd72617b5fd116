"""Pooling 1D/2D/3D (max, average; ``same`` padding excludes the padded cells as TF does) and global
pooling (``keepdims``)."""

from __future__ import annotations

from graphdnn.converters.keras_layers import (
    KerasLayer,
    channels_last,
    from_channels_first,
    reduce,
    to_channels_first,
    translates,
    tuple_n,
)
from graphdnn.converters.keras_layers.conv import conv_attrs

from graphdnn.graph import Tensor

_POOLS = [f"{kind}{dim}D" for kind in ("MaxPooling", "AveragePooling", "MaxPool", "AvgPool") for dim in (1, 2, 3)]
_GLOBAL = [f"Global{kind}Pooling{dim}D" for kind in ("Max", "Average") for dim in (1, 2, 3)] + [
    f"Global{kind}Pool{dim}D" for kind in ("Max", "Avg") for dim in (1, 2, 3)]


@translates(*_POOLS)
def pool(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    n = int(layer.cls[-2])
    size = tuple_n(layer.cfg.get("pool_size", 2), n)
    strides = tuple_n(layer.cfg.get("strides") or size, n)
    attrs = conv_attrs(layer, xs[0], n, size, strides, [1] * n, layer.cfg.get("padding", "valid"))
    del attrs["dilations"]
    op = "MaxPool" if layer.cls.startswith("Max") else "AveragePool"
    if op == "AveragePool":
        attrs["count_include_pad"] = 0
    return from_channels_first(layer, layer.op(op, [to_channels_first(layer, xs[0])], attrs))


@translates(*_GLOBAL)
def global_pool(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    rank = len(xs[0].shape)
    axes = list(range(1, rank - 1)) if channels_last(layer) else list(range(2, rank))
    op = "ReduceMax" if "Max" in layer.cls else "ReduceMean"
    return reduce(layer, op, xs[0], axes, bool(layer.cfg.get("keepdims", False)))
