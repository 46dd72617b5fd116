"""Convolutions: Conv1D/2D/3D, their Transpose forms, DepthwiseConv1D/2D, SeparableConv1D/2D.

Kernels stay in Keras's layout (``(*k, in, out)``; transposed convs ``(*k, out, in)``; depthwise
``(*k, in, multiplier)``) and a Transpose/Reshape in the graph gives ONNX its ``(out, in, *k)`` view.
``same``/``causal`` padding becomes explicit pads (TF puts the odd cell at the end)."""

from __future__ import annotations

import re
from typing import Any

from graphdnn.converters.keras_layers import (
    KerasLayer,
    from_channels_first,
    same_pads,
    spatial_sizes,
    to_channels_first,
    translates,
    tuple_n,
)
from graphdnn.converters.keras_layers.core import activation, bias_add

from graphdnn.graph import Tensor


def _spatial(cls: str) -> int:
    return int(re.search(r"(\d)D", cls).group(1))


def _channels(layer: KerasLayer, x: Tensor) -> int:
    return int(x.shape[-1] if layer.cfg.get("data_format") in (None, "channels_last") else x.shape[1])


def conv_attrs(layer: KerasLayer, x: Tensor, n: int, kernel: list[int], strides: list[int] | None = None,
               dilations: list[int] | None = None, padding: str | None = None) -> dict[str, Any]:
    """ONNX Conv/Pool attributes with explicit pads for Keras's ``valid``/``same``/``causal``."""
    strides = strides or tuple_n(layer.cfg.get("strides", 1), n)
    dilations = dilations or tuple_n(layer.cfg.get("dilation_rate", 1), n)
    padding = str(padding or layer.cfg.get("padding", "valid")).lower()
    if padding == "same":
        pads = same_pads(spatial_sizes(layer, x), kernel, strides, dilations, layer.where())
    elif padding == "causal":
        pads = [(kernel[0] - 1) * dilations[0], 0]
    elif padding == "valid":
        pads = [0] * (2 * n)
    else:
        raise layer.unsupported(f"padding {padding!r}")
    return {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "pads": pads}


def _finish(layer: KerasLayer, y: Tensor, filters: int) -> Tensor:
    """Back to Keras's layout, then bias and activation."""
    y = from_channels_first(layer, y)
    if layer.cfg.get("use_bias", True):
        bias = layer.var("bias", (filters,))
        if layer.cfg.get("data_format") == "channels_first":
            bias = layer.op("Reshape", [bias, layer.const([filters] + [1] * (len(y.shape) - 2), "bias_shape",
                                                          "int64")])
        y = bias_add(layer, y, bias)
    return activation(layer, y, layer.cfg.get("activation"))


@translates("Conv1D", "Conv2D", "Conv3D")
def conv(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x, n = xs[0], _spatial(layer.cls)
    k, filters = tuple_n(layer.cfg["kernel_size"], n), int(layer.cfg["filters"])
    groups = int(layer.cfg.get("groups", 1))
    kernel = layer.var("kernel", (*k, _channels(layer, x) // groups, filters), "hwio" if n == 2 else None)
    attrs = conv_attrs(layer, x, n, k)
    attrs["group"] = groups
    w = layer.op("Transpose", [kernel], {"perm": [n + 1, n] + list(range(n))}, "kernel_oihw")
    y = layer.op("Conv", [to_channels_first(layer, x), w], attrs, f"Conv{n}D")
    return _finish(layer, y, filters)


@translates("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def conv_transpose(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x, n = xs[0], _spatial(layer.cls)
    k, filters = tuple_n(layer.cfg["kernel_size"], n), int(layer.cfg["filters"])
    strides, dilations = tuple_n(layer.cfg.get("strides", 1), n), tuple_n(layer.cfg.get("dilation_rate", 1), n)
    padding = str(layer.cfg.get("padding", "valid")).lower()
    out_pad = layer.cfg.get("output_padding")
    out_pad = None if out_pad is None else tuple_n(out_pad, n)
    kernel = layer.var("kernel", (*k, filters, _channels(layer, x)))
    begins, ends, extra = [], [], []
    for i, (size, kk, s, d) in enumerate(zip(spatial_sizes(layer, x), k, strides, dilations)):
        if size is None:
            raise layer.unsupported("a transposed convolution over dynamic spatial sizes")
        ke = kk + (kk - 1) * (d - 1)
        if out_pad is None:  # keras.src.utils.conv_utils.deconv_output_length
            length = size * s + max(ke - s, 0) if padding == "valid" else size * s
        else:
            pad = ke // 2 if padding == "same" else 0
            length = (size - 1) * s + ke - 2 * pad + out_pad[i]
        total = max((size - 1) * s + ke - length, 0) if padding == "same" else 0
        begins.append(total // 2)
        ends.append(total - total // 2)
        extra.append(length - ((size - 1) * s + ke - total))
    attrs = {"kernel_shape": k, "strides": strides, "dilations": dilations, "pads": begins + ends,
             "output_padding": extra}
    w = layer.op("Transpose", [kernel], {"perm": [n + 1, n] + list(range(n))}, "kernel_iohw")
    y = layer.op("ConvTranspose", [to_channels_first(layer, x), w], attrs, f"Conv{n}DTranspose")
    return _finish(layer, y, filters)


def depthwise_weight(layer: KerasLayer, kernel: Tensor, k: list[int], channels: int, multiplier: int) -> Tensor:
    """ONNX grouped-conv weight ``(in * multiplier, 1, *k)`` from Keras's ``(*k, in, multiplier)``."""
    n = len(k)
    w = layer.op("Transpose", [kernel], {"perm": [n, n + 1] + list(range(n))}, "depthwise_cmhw")
    return layer.op("Reshape", [w, layer.const([channels * multiplier, 1, *k], "depthwise_shape", "int64")],
                    name="depthwise_oihw")


@translates("DepthwiseConv1D", "DepthwiseConv2D")
def depthwise_conv(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x, n = xs[0], _spatial(layer.cls)
    k, c, m = tuple_n(layer.cfg["kernel_size"], n), _channels(layer, x), int(layer.cfg.get("depth_multiplier", 1))
    kernel = layer.var(("kernel", "depthwise_kernel"), (*k, c, m))  # Keras 2 named it depthwise_kernel
    attrs = conv_attrs(layer, x, n, k)
    attrs["group"] = c
    y = layer.op("Conv", [to_channels_first(layer, x), depthwise_weight(layer, kernel, k, c, m)], attrs,
                 f"DepthwiseConv{n}D")
    return _finish(layer, y, c * m)


@translates("SeparableConv1D", "SeparableConv2D")
def separable_conv(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x, n = xs[0], _spatial(layer.cls)
    k, c, m = tuple_n(layer.cfg["kernel_size"], n), _channels(layer, x), int(layer.cfg.get("depth_multiplier", 1))
    filters = int(layer.cfg["filters"])
    depthwise = layer.var("depthwise_kernel", (*k, c, m))
    pointwise = layer.var("pointwise_kernel", (*([1] * n), c * m, filters))
    attrs = conv_attrs(layer, x, n, k)
    attrs["group"] = c
    h = layer.op("Conv", [to_channels_first(layer, x), depthwise_weight(layer, depthwise, k, c, m)], attrs,
                 "depthwise")
    pw = layer.op("Transpose", [pointwise], {"perm": [n + 1, n] + list(range(n))}, "pointwise_oihw")
    y = layer.op("Conv", [h, pw], {"kernel_shape": [1] * n, "pads": [0] * (2 * n)}, "pointwise")
    return _finish(layer, y, filters)
