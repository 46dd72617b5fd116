"""Preprocessing layers that run inside a model: Rescaling, Normalization, Resizing, CenterCrop."""

from __future__ import annotations

import numpy as np
from graphdnn.converters.keras_layers import KerasLayer, translates
from graphdnn.converters.keras_layers.reshape import resize

from graphdnn.graph import Tensor


@translates("Rescaling")
def rescaling(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    y = layer.op("Mul", [x, layer.fconst(layer.cfg.get("scale", 1.0), "scale", x)])
    offset = layer.cfg.get("offset", 0.0)
    return y if not np.any(np.asarray(offset)) else layer.op("Add", [y, layer.fconst(offset, "offset", x)])


def _stat(layer: KerasLayer, key: str, shape: list[int], x: Tensor) -> Tensor:
    """The ``mean``/``variance`` from the config, else the layer's (adapted) weight, broadcastable."""
    value = layer.cfg.get(key)
    if value is not None:
        arr = np.asarray(value, np.float32)
        arr = arr.reshape(shape) if arr.size == int(np.prod(shape)) and arr.ndim else arr
        return layer.fconst(arr, key, x)
    kept = tuple(d for d in shape if d != 1) or (1,)
    var = layer.var(key, tuple(int(d) for d in np.asarray(layer.weights[f"{layer.path}/{key}"]).shape)
                    if layer.has(key) else kept, trainable=False)
    return layer.op("Reshape", [var, layer.const(shape, f"{key}_shape", "int64")])


@translates("Normalization")
def normalization(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """``(x - mean) / max(sqrt(variance), 1e-7)`` (``invert``: ``mean + x * sqrt(variance)``)."""
    x = xs[0]
    rank = len(x.shape)
    axis = layer.cfg.get("axis", -1)
    axes = [] if axis is None else [int(a) % rank for a in (axis if isinstance(axis, list) else [axis])]
    shape = [1] + [int(x.shape[i]) if i in axes else 1 for i in range(1, rank)]
    mean, variance = _stat(layer, "mean", shape, x), _stat(layer, "variance", shape, x)
    if layer.has("count"):
        layer.var("count", tuple(np.asarray(layer.weights[f"{layer.path}/count"]).shape), trainable=False)
    std = layer.op("Sqrt", [variance])
    if layer.cfg.get("invert"):
        return layer.op("Add", [mean, layer.op("Mul", [x, std])])
    std = layer.op("Max", [std, layer.fconst(1e-7, "epsilon", x)])
    return layer.op("Div", [layer.op("Sub", [x, mean]), std])


@translates("Resizing")
def resizing(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    if layer.cfg.get("crop_to_aspect_ratio") or layer.cfg.get("pad_to_aspect_ratio"):
        raise layer.unsupported("Resizing with crop_to_aspect_ratio/pad_to_aspect_ratio")
    if layer.cfg.get("data_format") == "channels_first":
        raise layer.unsupported("Resizing with channels_first")
    h, w = int(layer.cfg["height"]), int(layer.cfg["width"])
    ih, iw = x.shape[1], x.shape[2]
    if ih is None or iw is None:
        raise layer.unsupported("Resizing of dynamic spatial sizes")
    scales = [1.0, float(np.float32(h / ih)), float(np.float32(w / iw)), 1.0]
    if int(np.floor(np.float32(scales[1]) * ih)) != h or int(np.floor(np.float32(scales[2]) * iw)) != w:
        raise layer.unsupported(f"Resizing {ih}x{iw} to {h}x{w} (not representable as float32 scales)")
    return resize(layer, x, scales, str(layer.cfg.get("interpolation", "bilinear")))


@translates("CenterCrop")
def center_crop(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    h, w = int(layer.cfg["height"]), int(layer.cfg["width"])
    axes = [1, 2] if layer.cfg.get("data_format") in (None, "channels_last") else [2, 3]
    ih, iw = x.shape[axes[0]], x.shape[axes[1]]
    if ih is None or iw is None or ih < h or iw < w:
        raise layer.unsupported(f"CenterCrop of a {ih}x{iw} input to {h}x{w} (only crops of static, larger inputs)")
    top, left = (ih - h) // 2, (iw - w) // 2
    return layer.op("Slice", [x, layer.const([top, left], "starts", "int64"),
                              layer.const([top + h, left + w], "ends", "int64"), layer.const(axes, "axes", "int64")])
