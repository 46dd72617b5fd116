"""Reshape, Flatten, Permute, RepeatVector, ZeroPadding/Cropping/UpSampling 1D/2D/3D."""

from __future__ import annotations

from typing import Any

import numpy as np
from graphdnn.converters.keras_layers import KerasLayer, channels_last, translates

from graphdnn.graph import Tensor


@translates("Reshape")
def reshape(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    shape = [0] + [int(d) for d in layer.cfg["target_shape"]]
    return layer.op("Reshape", [xs[0], layer.const(shape, "shape", "int64")])


@translates("Flatten")
def flatten(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    rank = len(x.shape)
    if not channels_last(layer) and rank > 2:
        x = layer.op("Transpose", [x], {"perm": [0] + list(range(2, rank)) + [1]}, "to_channels_last")
    return layer.op("Flatten", [x], {"axis": 1})


@translates("Permute")
def permute(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    return layer.op("Transpose", [xs[0]], {"perm": [0] + [int(d) for d in layer.cfg["dims"]]})


@translates("RepeatVector")
def repeat_vector(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    y = layer.op("Unsqueeze", [xs[0], layer.const([1], "axes", "int64")])
    return layer.op("Tile", [y, layer.const([1, int(layer.cfg["n"]), 1], "repeats", "int64")])


def _pairs(value: Any, n: int) -> list[tuple[int, int]]:
    """Keras's padding/cropping spec (int, per-axis int, or per-axis pairs) as ``n`` (begin, end) pairs."""
    if isinstance(value, (int, float)):
        return [(int(value), int(value))] * n
    value = list(value)
    if n == 1 and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return [(int(value[0]), int(value[1]))]
    return [(int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1])) for v in value]


def _spatial_axes(layer: KerasLayer, rank: int) -> list[int]:
    return list(range(1, rank - 1)) if channels_last(layer) else list(range(2, rank))


@translates("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def zero_padding(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    rank = len(x.shape)
    axes = _spatial_axes(layer, rank) if layer.cls != "ZeroPadding1D" else [1]
    pairs = _pairs(layer.cfg.get("padding", 1), len(axes))
    begins, ends = [0] * rank, [0] * rank
    for a, (b, e) in zip(axes, pairs):
        begins[a], ends[a] = b, e
    return layer.op("Pad", [x, layer.const(begins + ends, "pads", "int64")], {"mode": "constant"})


@translates("Cropping1D", "Cropping2D", "Cropping3D")
def cropping(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    rank = len(x.shape)
    axes = _spatial_axes(layer, rank) if layer.cls != "Cropping1D" else [1]
    pairs = _pairs(layer.cfg.get("cropping", 1), len(axes))
    starts = [b for b, _ in pairs]
    ends = [int(x.shape[a]) - e if x.shape[a] is not None else (-e if e else np.iinfo(np.int64).max)
            for a, (_, e) in zip(axes, pairs)]
    return layer.op("Slice", [x, layer.const(starts, "starts", "int64"), layer.const(ends, "ends", "int64"),
                              layer.const(axes, "axes", "int64")])


@translates("UpSampling1D", "UpSampling2D", "UpSampling3D")
def upsampling(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    rank = len(x.shape)
    axes = _spatial_axes(layer, rank) if layer.cls != "UpSampling1D" else [1]
    sizes = layer.cfg.get("size", 2)
    sizes = [int(sizes)] * len(axes) if isinstance(sizes, (int, float)) else [int(s) for s in sizes]
    scales = [1.0] * rank
    for a, s in zip(axes, sizes):
        scales[a] = float(s)
    return resize(layer, x, scales, str(layer.cfg.get("interpolation", "nearest")))


def resize(layer: KerasLayer, x: Tensor, scales: list[float] | None, interpolation: str,
           sizes: list[int] | None = None) -> Tensor:
    """ONNX Resize matching ``tf.image.resize`` (half-pixel centers; integer nearest upsampling repeats)."""
    if interpolation == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                 "nearest_mode": "round_prefer_ceil"}
    elif interpolation == "bilinear":
        attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    else:
        raise layer.unsupported(f"interpolation {interpolation!r}")
    if sizes is not None:
        return layer.op("Resize", [x, None, None, layer.const(sizes, "sizes", "int64")], attrs)
    return layer.op("Resize", [x, None, layer.const(np.asarray(scales, np.float32), "scales", "float32")], attrs)
