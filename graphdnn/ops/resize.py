"""Resize (opsets 10, 11, 13, 18, 19) and Upsample (7, 9).

Resizing is separable: each resized axis gets a constant [out, in] interpolation matrix, built in
numpy from the static sizes (nearest, linear, cubic, antialiased filters, every coordinate
transformation mode, ``exclude_outside`` and ``tf_crop_and_resize`` extrapolation), and applied
with a matmul. The result is differentiable in the input and needs no data-dependent control flow.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from graphdnn.errors import GraphError
from graphdnn.ops.registry import register
from graphdnn.ops.static import as_floats, as_ints


def _nearest_coeffs(mode: str):
    def fn(ratio: float, scale: float) -> list[float]:
        if float(ratio).is_integer():
            return [0.0, 1.0]
        if mode == "round_prefer_floor":
            return [float(ratio <= 0.5), float(ratio > 0.5)]
        if mode == "round_prefer_ceil":
            return [float(ratio < 0.5), float(ratio >= 0.5)]
        if mode == "floor":
            return [1.0, 0.0]
        if mode == "ceil":
            return [0.0, 1.0]
        raise GraphError(f"Resize: unknown nearest_mode {mode!r}")

    return fn


def _linear_coeffs(antialias: bool):
    def fn(ratio: float, scale: float) -> list[float]:
        if not antialias:
            return [1.0 - ratio, ratio]
        scale = min(scale, 1.0)
        start = int(math.floor(-1 / scale) + 1)
        args = (np.arange(start, start + 2 - 2 * start) - ratio) * scale
        coeffs = np.clip(1 - np.abs(args), 0, 1)
        return list(coeffs / coeffs.sum())

    return fn


def _cubic_coeffs(a: float, antialias: bool):
    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    def fn(ratio: float, scale: float) -> list[float]:
        if not antialias:
            return [kernel(ratio + 1), kernel(ratio), kernel(1 - ratio), kernel(2 - ratio)]
        scale = min(scale, 1.0)
        start = int(math.floor(-2 / scale) + 1)
        coeffs = np.array([kernel(scale * (i - ratio)) for i in range(start, 2 - start)])
        return list(coeffs / coeffs.sum())

    return fn


def _source_coords(mode: str, out_size: int, in_size: int, scale: float, roi) -> tuple[np.ndarray, np.ndarray | None]:
    y = np.arange(out_size, dtype=np.float64)
    out_width = scale * in_size
    extrapolated = None
    if mode == "align_corners":
        x = np.zeros(out_size) if out_width == 1 else y * (in_size - 1) / (out_width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        start, end = roi
        if out_width == 1:
            x = np.full(out_size, (end - start) * (in_size - 1) / 2)
        else:
            x = y * (end - start) * (in_size - 1) / (out_width - 1)
        x = x + start * (in_size - 1)
        extrapolated = (x < 0) | (x > in_size - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(out_size, -0.5) if out_width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        adjustment = out_size / out_width
        offset = in_size / 2 * (1 - adjustment)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise GraphError(f"Resize: unknown coordinate_transformation_mode {mode!r}")
    return x, extrapolated


def _axis_matrix(in_size, out_size, scale, coeff_fn, ctm, roi, exclude_outside):
    """[out, in] interpolation weights and the rows to extrapolate (or None)."""
    x, extrapolated = _source_coords(ctm, out_size, in_size, scale, roi)
    x_int = np.floor(x)
    ratios = np.where(x == x_int, 1.0, x - x_int)
    coeffs = np.array([coeff_fn(float(r), scale) for r in ratios], dtype=np.float64).reshape(out_size, -1)
    n = coeffs.shape[1]
    pad = int(math.ceil(n / 2))
    xp = x + pad
    p = np.floor(xp)
    frac = xp - p
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        base = -((n - 1) // 2)
        offset = np.where(frac <= 0.5, base, base + 1)
    idx = (p + offset).astype(np.int64)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((idx < 0) | (idx >= in_size), 0.0, coeffs)
        total = coeffs.sum(axis=-1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    weights = np.zeros((out_size, in_size))
    rows = np.repeat(np.arange(out_size), n)
    np.add.at(weights, (rows, np.clip(idx, 0, in_size - 1).reshape(-1)), coeffs.reshape(-1))
    return weights, extrapolated


def _resize(
    x: torch.Tensor,
    roi,
    scales,
    sizes,
    *,
    mode: str,
    ctm: str,
    nearest_mode: str,
    cubic_coeff_a: float,
    exclude_outside: int,
    extrapolation_value: float,
    antialias: int = 0,
    axes=None,
    keep_aspect_ratio_policy: str = "stretch",
) -> torch.Tensor:
    r = x.dim()
    axes = [a + r if a < 0 else a for a in as_ints(axes)] if axes is not None else list(range(r))
    roi_full = None
    if roi is not None and len(as_floats(roi)):
        values = as_floats(roi)
        roi_full = [0.0] * r + [1.0] * r
        k = len(axes)
        for i, a in enumerate(axes):
            roi_full[a], roi_full[r + a] = values[i], values[k + i]
    in_shape = list(x.shape)
    if sizes is not None and len(as_ints(sizes)):
        out = list(in_shape)
        for a, s in zip(axes, as_ints(sizes)):
            out[a] = s
        factors = [out[i] / in_shape[i] if in_shape[i] else 1.0 for i in range(r)]
        if keep_aspect_ratio_policy != "stretch":
            pick = min if keep_aspect_ratio_policy == "not_larger" else max
            s = pick(factors[a] for a in axes)
            factors = [s if i in axes else 1.0 for i in range(r)]
            out = [int(s * in_shape[i] + 0.5) if i in axes else in_shape[i] for i in range(r)]
    else:
        factors = [1.0] * r
        for a, s in zip(axes, as_floats(scales)):
            factors[a] = s
        out = [int(f * d) for f, d in zip(factors, in_shape)]

    if mode == "nearest":
        coeff_fn = _nearest_coeffs(nearest_mode)
    elif mode == "linear":
        coeff_fn = _linear_coeffs(bool(antialias))
    elif mode == "cubic":
        coeff_fn = _cubic_coeffs(cubic_coeff_a, bool(antialias))
    else:
        raise GraphError(f"Resize: unknown mode {mode!r}")

    work_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    y = x.to(work_dtype) if x.dtype != work_dtype else x
    keep = None
    for a in axes:
        roi_pair = (roi_full[a], roi_full[r + a]) if roi_full is not None else None
        unchanged = math.isclose(factors[a], 1.0) and out[a] == in_shape[a] and (
            roi_pair is None or (math.isclose(roi_pair[0], 0.0) and math.isclose(roi_pair[1], 1.0))
        )
        if unchanged:
            continue
        weights, extrapolated = _axis_matrix(
            in_shape[a], out[a], factors[a], coeff_fn, ctm, roi_pair, exclude_outside
        )
        w = torch.tensor(weights, dtype=work_dtype, device=x.device)
        y = torch.movedim(torch.matmul(torch.movedim(y, a, -1), w.t()), -1, a)
        if extrapolated is not None and extrapolated.any():
            shape = [1] * r
            shape[a] = out[a]
            mask = torch.tensor(extrapolated, device=x.device).reshape(shape)
            keep = mask if keep is None else keep | mask
    if keep is not None:
        y = torch.where(keep, torch.full((), extrapolation_value, dtype=y.dtype, device=y.device), y)
    if x.dtype.is_floating_point:
        return y.to(x.dtype)
    info = torch.iinfo(x.dtype)
    return torch.clamp(torch.round(y), info.min, info.max).to(x.dtype)


@register("Resize", since=10, static_inputs=(1,))
def resize_v10(x: torch.Tensor, scales, *, mode: str = "nearest") -> torch.Tensor:
    """Opset 10: asymmetric coordinates, nearest rounds down (as Upsample)."""
    return _resize(
        x, None, scales, None, mode=mode, ctm="asymmetric", nearest_mode="floor", cubic_coeff_a=-0.75,
        exclude_outside=0, extrapolation_value=0.0,
    )


@register("Resize", since=11, static_inputs=(1, 2, 3))
def resize(
    x: torch.Tensor,
    roi=None,
    scales=None,
    sizes=None,
    *,
    antialias: int = 0,
    axes=None,
    coordinate_transformation_mode: str = "half_pixel",
    cubic_coeff_a: float = -0.75,
    exclude_outside: int = 0,
    extrapolation_value: float = 0.0,
    keep_aspect_ratio_policy: str = "stretch",
    mode: str = "nearest",
    nearest_mode: str = "round_prefer_floor",
) -> torch.Tensor:
    return _resize(
        x, roi, scales, sizes, mode=mode, ctm=coordinate_transformation_mode, nearest_mode=nearest_mode,
        cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside, extrapolation_value=extrapolation_value,
        antialias=antialias, axes=axes, keep_aspect_ratio_policy=keep_aspect_ratio_policy,
    )


@register("Upsample", since=7)
def upsample_v7(x: torch.Tensor, *, mode: str = "nearest", scales) -> torch.Tensor:
    return resize_v10(x, scales, mode=mode)


@register("Upsample", since=9, static_inputs=(1,))
def upsample(x: torch.Tensor, scales, *, mode: str = "nearest") -> torch.Tensor:
    return resize_v10(x, scales, mode=mode)
