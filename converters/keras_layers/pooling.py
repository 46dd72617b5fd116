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
    keepdims = bool(layer.cfg.get("keepdims", False))
    mask = layer.mask(0)
    if mask is not None and op == "ReduceMean" and rank == 3:  # Keras: the mean over the unmasked steps
        if mask.dtype != "bool":
            mask = layer.op("Cast", [mask], {"to": 9}, "mask_as_bool")
        m = layer.op("Unsqueeze", [mask, layer.const([2 if channels_last(layer) else 1], "axes", "int64")])
        x = layer.op("Where", [m, xs[0], layer.fconst(0.0, "zero", xs[0])], name="masked")
        total = reduce(layer, "ReduceSum", x, axes, keepdims, "masked_sum")
        count = reduce(layer, "ReduceSum", layer.op("CastLike", [m, xs[0]]), axes, keepdims, "unmasked_steps")
        return layer.op("Div", [total, count], name="masked_mean")
    return reduce(layer, op, xs[0], axes, keepdims)
