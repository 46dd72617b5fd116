"""Small helpers shared by the lowerings (not operators themselves)."""

from __future__ import annotations

import torch

#: Unsigned types torch stores but barely computes with on CPU: computed in int64, cast back.
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def widen(*xs: torch.Tensor | None) -> tuple[torch.dtype | None, list[torch.Tensor | None]]:
    """(original dtype of the first tensor, tensors widened to int64 where torch lacks kernels)."""
    dtype = next((x.dtype for x in xs if x is not None), None)
    out = [x.to(torch.int64) if x is not None and x.dtype in _WIDE_UNSIGNED else x for x in xs]
    return dtype, out


def narrow(y: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Cast a widened result back to ``dtype`` (no-op for other types)."""
    if dtype in _WIDE_UNSIGNED and y.dtype != dtype and y.dtype != torch.bool:
        return y.to(dtype)
    return y


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The float type to compute in: float64 for float64 inputs, float32 for everything narrower."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def norm_axis(axis: int, rank: int) -> int:
    """A non-negative axis."""
    return axis + rank if axis < 0 else axis


def legacy_broadcast(a: torch.Tensor, b: torch.Tensor, broadcast: int, axis: int | None) -> torch.Tensor:
    """Opset < 7 binary ops: with ``broadcast=1``, ``b`` aligns with ``a`` starting at ``axis``
    (default: trailing alignment, which numpy broadcasting already does)."""
    if broadcast and axis is not None and b.dim() > 0:
        axis = norm_axis(axis, a.dim())
        trailing = a.dim() - axis - b.dim()
        if trailing > 0:
            b = b.reshape(tuple(b.shape) + (1,) * trailing)
    return b
