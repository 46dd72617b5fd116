"""Convolution and pooling: Conv, ConvTranspose, ConvInteger, MaxPool, AveragePool, LpPool,
Global*Pool, MaxUnpool (ONNX semantics, 1-D to 3-D).

Pooling pads explicitly (``F.pad`` with the op's neutral value) and then runs torch's kernels
unpadded, so ONNX's asymmetric pads, ``ceil_mode`` and dilations need no torch-side constraints.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from graphdnn.ops.registry import register
from graphdnn.ops.static import as_ints

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _same_pads(in_sizes, kernel, strides, dilations, auto_pad: str) -> list[int]:
    """ONNX pads ``[b1..bn, e1..en]`` for SAME_UPPER / SAME_LOWER (TF's SAME is SAME_UPPER)."""
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(big if auto_pad == "SAME_LOWER" else small)
        ends.append(small if auto_pad == "SAME_LOWER" else big)
    return begins + ends


def _spatial_args(x, kernel_shape, strides, dilations, pads, auto_pad):
    n = x.dim() - 2
    kernel = as_ints(kernel_shape)
    strides = as_ints(strides) if strides else [1] * n
    dilations = as_ints(dilations) if dilations else [1] * n
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(list(x.shape[2:]), kernel, strides, dilations, auto_pad)
    elif auto_pad == "VALID" or not pads:
        pads = [0] * (2 * n)
    return n, kernel, strides, dilations, as_ints(pads)


def _torch_pads(begins, ends) -> list[int]:
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        out += [b, e]
    return out


@register("Conv", since=1)
def conv(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations=None,
    group: int = 1,
    kernel_shape=None,
    pads=None,
    strides=None,
) -> torch.Tensor:
    kernel_shape = kernel_shape or list(w.shape[2:])
    n, _, strides, dilations, pads = _spatial_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    begins, ends = pads[:n], pads[n:]
    if begins != ends:
        x, padding = F.pad(x, _torch_pads(begins, ends)), [0] * n
    else:
        padding = begins
    return _CONV[n](x, w, b, strides, padding, dilations, group)


@register("ConvInteger", since=10)
def conv_integer(
    x: torch.Tensor,
    w: torch.Tensor,
    x_zero_point: torch.Tensor | None = None,
    w_zero_point: torch.Tensor | None = None,
    **attrs,
) -> torch.Tensor:
    """Integer convolution in int32: zero points are subtracted (input padding is the zero point)."""
    xf = x.to(torch.float64) - (x_zero_point.to(torch.float64) if x_zero_point is not None else 0.0)
    wf = w.to(torch.float64)
    if w_zero_point is not None:
        wz = w_zero_point.to(torch.float64)
        wf = wf - (wz.reshape(-1, *([1] * (w.dim() - 1))) if wz.numel() > 1 else wz)
    return torch.round(conv(xf, wf, None, **attrs)).to(torch.int32)


@register("ConvTranspose", since=1)
def conv_transpose(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations=None,
    group: int = 1,
    kernel_shape=None,
    output_padding=None,
    output_shape=None,
    pads=None,
    strides=None,
) -> torch.Tensor:
    n = x.dim() - 2
    kernel = as_ints(kernel_shape) if kernel_shape else list(w.shape[2:])
    strides = as_ints(strides) if strides else [1] * n
    dilations = as_ints(dilations) if dilations else [1] * n
    out_pad = as_ints(output_padding) if output_padding else [0] * n
    in_sizes = list(x.shape[2:])
    full = [s * (i - 1) + (k - 1) * d + 1 for i, k, s, d in zip(in_sizes, kernel, strides, dilations)]
    if output_shape:
        target = as_ints(output_shape)[-n:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [i * s for i, s in zip(in_sizes, strides)]
    else:
        target = None
    if target is not None:
        begins, ends = [], []
        for f, op, t in zip(full, out_pad, target):
            total = f + op - t
            if auto_pad == "SAME_UPPER":
                begins.append(total // 2)
            else:
                begins.append(total - total // 2)
            ends.append(total - begins[-1])
    else:
        p = as_ints(pads) if pads else [0] * (2 * n)
        begins, ends = p[:n], p[n:]
        target = [f + op - b_ - e for f, op, b_, e in zip(full, out_pad, begins, ends)]
    y = _CONV_T[n](x, w, None, strides, 0, 0, group, dilations)
    # crop the pads (negative F.pad) and extend with zeros up to the target size
    adjust: list[int] = []
    for f, b_, t in zip(reversed(full), reversed(begins), reversed(target)):
        adjust += [-b_, t - (f - b_)]
    if any(adjust):
        y = F.pad(y, adjust)
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * n)
    return y


# ---- pooling -----------------------------------------------------------------------------------
def _pool_geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    """(n, kernel, strides, dilations, begins, ends, extra_ends): extra_ends is the additional end
    padding that makes a floor-mode pooling produce ONNX's ceil-mode output size."""
    n, kernel, strides, dilations, pads = _spatial_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    begins, ends = pads[:n], pads[n:]
    extra = [0] * n
    if ceil_mode:
        for i, (size, k, s, d) in enumerate(zip(x.shape[2:], kernel, strides, dilations)):
            span = size + begins[i] + ends[i] - ((k - 1) * d + 1)
            out = -(-span // s) + 1
            if (out - 1) * s >= size + begins[i]:  # a window may not start in the end padding
                out -= 1
            extra[i] = max((out - 1) * s + (k - 1) * d + 1 - (size + begins[i] + ends[i]), 0)
    return n, kernel, strides, dilations, begins, ends, extra


def _lowest(dtype: torch.dtype):
    if dtype.is_floating_point:
        return float("-inf")
    if dtype == torch.bool:
        return 0
    return torch.iinfo(dtype).min


@register("MaxPool", since=1, num_outputs=None)
def max_pool(
    x: torch.Tensor,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations=None,
    kernel_shape,
    pads=None,
    storage_order: int = 0,
    strides=None,
    _outputs: int = 1,
):
    """Output 2 (opset 8+) holds flat indices into the input, row-major (``storage_order=0``) or
    column-major per spatial plane, offset by ``(n * C + c) * plane_size`` as in ONNX."""
    geo = _pool_geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    n, kernel, strides, dilations, begins, ends, extra = geo
    total_ends = [e + x_ for e, x_ in zip(ends, extra)]
    work = x if x.dtype not in (torch.bool,) else x.to(torch.uint8)
    padded = F.pad(work, _torch_pads(begins, total_ends), value=_lowest(work.dtype)) if any(
        begins + total_ends
    ) else work
    if _outputs == 1:
        y = _MAXPOOL[n](padded, kernel, strides, 0, dilations, False)
        return (y.to(x.dtype),)
    y, idx = _MAXPOOL[n](padded, kernel, strides, 0, dilations, False, return_indices=True)
    spatial = list(x.shape[2:])
    padded_sizes = list(padded.shape[2:])
    coords = []
    rest = idx
    for size in reversed(padded_sizes):
        coords.append(rest % size)
        rest = rest // size
    coords.reverse()
    coords = [c - b for c, b in zip(coords, begins)]
    order = list(reversed(range(n))) if storage_order else list(range(n))
    flat = torch.zeros_like(idx)
    for axis in order:
        flat = flat * spatial[axis] + coords[axis]
    plane = math.prod(spatial)
    offsets = torch.arange(x.shape[0] * x.shape[1], device=x.device).reshape(x.shape[0], x.shape[1])
    flat = flat + (offsets * plane).reshape(tuple(offsets.shape) + (1,) * n)
    return y.to(x.dtype), flat


def _window_sum(t: torch.Tensor, n, kernel, strides, dilations) -> torch.Tensor:
    """Sum over each pooling window (depthwise convolution with ones)."""
    channels = t.shape[1]
    weight = torch.ones((channels, 1, *kernel), dtype=t.dtype, device=t.device)
    return _CONV[n](t, weight, None, strides, 0, dilations, channels)


@register("AveragePool", since=1)
def average_pool(
    x: torch.Tensor,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    dilations=None,
    kernel_shape,
    pads=None,
    strides=None,
) -> torch.Tensor:
    """Padding counts in the divisor only with ``count_include_pad`` (never the ceil-mode excess)."""
    geo = _pool_geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    n, kernel, strides, dilations, begins, ends, extra = geo
    zeros = [0] * n
    padded = F.pad(x, _torch_pads(begins, [e + x_ for e, x_ in zip(ends, extra)]))
    total = _window_sum(padded, n, kernel, strides, dilations)
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    if count_include_pad:
        mask = F.pad(F.pad(ones, _torch_pads(begins, ends), value=1.0), _torch_pads(zeros, extra))
    else:
        mask = F.pad(ones, _torch_pads(begins, [e + x_ for e, x_ in zip(ends, extra)]))
    count = _window_sum(mask, n, kernel, strides, dilations)
    return total / count


@register("LpPool", since=1)
def lp_pool(
    x: torch.Tensor,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations=None,
    kernel_shape,
    p: int = 2,
    pads=None,
    strides=None,
) -> torch.Tensor:
    geo = _pool_geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    n, kernel, strides, dilations, begins, ends, extra = geo
    padded = F.pad(torch.abs(x) ** p, _torch_pads(begins, [e + x_ for e, x_ in zip(ends, extra)]))
    return _window_sum(padded, n, kernel, strides, dilations) ** (1.0 / p)


@register("GlobalAveragePool", since=1)
def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    return torch.mean(x, dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool", since=1)
def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalLpPool", since=2)
def global_lp_pool(x: torch.Tensor, *, p: int = 2) -> torch.Tensor:
    return torch.sum(torch.abs(x) ** p, dim=tuple(range(2, x.dim())), keepdim=True) ** (1.0 / p)


@register("MaxUnpool", since=9, static_inputs=(2,))
def max_unpool(
    x: torch.Tensor, indices: torch.Tensor, output_shape=None, *, kernel_shape, pads=None, strides=None
) -> torch.Tensor:
    n = x.dim() - 2
    kernel = as_ints(kernel_shape)
    strides = as_ints(strides) if strides else [1] * n
    p = as_ints(pads) if pads else [0] * (2 * n)
    spatial = [(i - 1) * s + k - p[j] - p[j + n] for j, (i, k, s) in enumerate(zip(x.shape[2:], kernel, strides))]
    inferred = [x.shape[0], x.shape[1], *spatial]
    out = torch.zeros(math.prod(inferred), dtype=x.dtype, device=x.device)
    out = out.scatter(0, indices.reshape(-1).to(torch.int64), x.reshape(-1)).reshape(inferred)
    if output_shape is not None:  # the indices address the inferred shape; extra space is zeros
        target = as_ints(output_shape)
        out = F.pad(out, _torch_pads([0] * n, [t - i for t, i in zip(target[2:], spatial)]))
    return out
