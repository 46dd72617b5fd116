"""Quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearMatMul,
QLinearConv (ONNX semantics: per-tensor, per-axis and blocked scales; int8/uint8/int16/uint16/int32,
float8 and the small types int4/uint4/int2/uint2/float4_e2m1fn, held unpacked as ``graphdnn.small_dtypes``
describes)."""

from __future__ import annotations

import torch

from graphdnn.ops._util import norm_axis
from graphdnn.ops.conv import conv
from graphdnn.ops.elementwise import cast_to
from graphdnn.ops.registry import register
from graphdnn.ops.static import dtype_from_onnx
from graphdnn.small_dtypes import decode, int_range


def _expand_param(p: torch.Tensor, x: torch.Tensor, axis: int, block_size: int) -> torch.Tensor:
    """Broadcast a scale/zero point to ``x``: scalar, 1-D along ``axis``, or blocked along ``axis``."""
    if p.dim() == 0 or p.numel() == 1 and p.dim() <= 1 and not block_size:
        return p.reshape(())
    axis = norm_axis(axis, x.dim())
    if block_size:
        p = p.repeat_interleave(block_size, dim=axis).narrow(axis, 0, x.shape[axis])
        return p
    shape = [1] * x.dim()
    shape[axis] = -1
    return p.reshape(shape)


def _quantize(x: torch.Tensor, scale, zero_point, dtype: torch.dtype, saturate: int = 1) -> torch.Tensor:
    scaled = x.to(torch.float32) / scale.to(torch.float32)
    if dtype.is_floating_point:  # float8/float4: no rounding step, the cast rounds to nearest even
        if zero_point is not None:
            scaled = scaled + zero_point.to(torch.float32)
        return cast_to(scaled, dtype, saturate)
    y = torch.round(scaled)  # half to even
    if zero_point is not None:
        y = y + zero_point.to(torch.float32)
    lo, hi = int_range(dtype)
    y = torch.nan_to_num(y, nan=0.0)  # NaN is undefined in ONNX; 0 keeps the result deterministic
    return cast_to(torch.clamp(y, lo, hi).to(torch.int64), dtype)


@register("QuantizeLinear", since=10)
def quantize_linear(
    x: torch.Tensor,
    y_scale: torch.Tensor,
    y_zero_point: torch.Tensor | None = None,
    *,
    axis: int = 1,
    block_size: int = 0,
    output_dtype: int = 0,
    precision: int = 0,
    saturate: int = 1,
) -> torch.Tensor:
    """``saturate(round(x / y_scale) + y_zero_point)``; the type is the zero point's, else
    ``output_dtype``, else uint8."""
    if y_zero_point is not None:
        dtype = y_zero_point.dtype
    elif output_dtype:
        dtype = dtype_from_onnx(output_dtype)
    else:
        dtype = torch.uint8
    scale = _expand_param(y_scale, x, axis, block_size)
    zp = _expand_param(decode(y_zero_point), x, axis, block_size) if y_zero_point is not None else None
    return _quantize(x, scale, zp, dtype, saturate)


@register("DequantizeLinear", since=10)
def dequantize_linear(
    x: torch.Tensor,
    x_scale: torch.Tensor,
    x_zero_point: torch.Tensor | None = None,
    *,
    axis: int = 1,
    block_size: int = 0,
    output_dtype: int = 0,
) -> torch.Tensor:
    """``(x - x_zero_point) * x_scale`` in the scale's type (or ``output_dtype``)."""
    scale = _expand_param(x_scale, x, axis, block_size)
    xf = decode(x).to(torch.float32)
    if x_zero_point is not None:
        xf = xf - _expand_param(decode(x_zero_point), x, axis, block_size).to(torch.float32)
    out = dtype_from_onnx(output_dtype) if output_dtype else x_scale.dtype
    return (xf * scale.to(torch.float32)).to(out)


@register("DynamicQuantizeLinear", since=11, num_outputs=3)
def dynamic_quantize_linear(x: torch.Tensor):
    """uint8 quantization with the scale and zero point computed from the data range (including 0)."""
    lo = torch.clamp(torch.min(x), max=0.0)
    hi = torch.clamp(torch.max(x), min=0.0)
    scale = ((hi - lo) / 255.0).to(torch.float32)
    zp = torch.clamp(torch.round(0.0 - lo / scale), 0, 255).to(torch.uint8)
    return _quantize(x, scale, zp, torch.uint8), scale, zp


@register("QLinearMatMul", since=10)
def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    af = (a.to(torch.float64) - a_zero_point.to(torch.float64).reshape(-1, 1) if a_zero_point.numel() > 1
          else a.to(torch.float64) - a_zero_point.to(torch.float64))
    bf = b.to(torch.float64) - b_zero_point.to(torch.float64)
    acc = torch.matmul(af, bf)  # exact integer accumulation
    a_s = a_scale.to(torch.float64).reshape(-1, 1) if a_scale.numel() > 1 else a_scale.to(torch.float64)
    real = acc * a_s * b_scale.to(torch.float64) / y_scale.to(torch.float64)
    y = torch.round(real) + y_zero_point.to(torch.float64)
    info = torch.iinfo(y_zero_point.dtype)
    return torch.clamp(y, info.min, info.max).to(y_zero_point.dtype)


@register("QLinearConv", since=10)
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, b=None, **attrs):
    xf = x.to(torch.float64) - x_zero_point.to(torch.float64)
    wz = w_zero_point.to(torch.float64)
    wf = w.to(torch.float64) - (wz.reshape(-1, *([1] * (w.dim() - 1))) if wz.numel() > 1 else wz)
    acc = conv(xf, wf, b.to(torch.float64) if b is not None else None, **attrs)
    ws = w_scale.to(torch.float64)
    ws = ws.reshape(1, -1, *([1] * (x.dim() - 2))) if ws.numel() > 1 else ws
    real = acc * x_scale.to(torch.float64) * ws / y_scale.to(torch.float64)
    y = torch.round(real) + y_zero_point.to(torch.float64)
    info = torch.iinfo(y_zero_point.dtype)
    return torch.clamp(y, info.min, info.max).to(y_zero_point.dtype)
