"""Reductions (ReduceSum ... ReduceLogSumExp), ArgMax/ArgMin, CumSum/CumProd (ONNX semantics).

Before opset 13 (ReduceSum) / 18 (the others) the axes are an attribute; afterwards an optional
input, which the compiler passes as a Python list when it is constant (``static_inputs``).
"""

from __future__ import annotations

import torch

from graphdnn.ops._util import narrow, norm_axis, widen
from graphdnn.ops.registry import register
from graphdnn.ops.static import as_ints


def _dims(axes, x: torch.Tensor, noop_with_empty_axes: int) -> list[int] | None:
    """Normalized reduction dims; None means 'return x unchanged'."""
    dims = [] if axes is None else as_ints(axes)
    if not dims:
        if noop_with_empty_axes:
            return None
        dims = list(range(x.dim()))
    return sorted({norm_axis(d, x.dim()) for d in dims})


def _sum(x, dims, keep):
    return torch.sum(x, dim=dims, keepdim=keep) if dims else x


def _prod(x, dims, keep):
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, dim=d, keepdim=keep)
    return x


def _extreme(fn, fill):
    def run(x, dims, keep):
        if not dims:
            return x
        if x.numel() == 0:
            shape = [1 if i in dims else s for i, s in enumerate(x.shape)]
            if not keep:
                shape = [s for i, s in enumerate(shape) if i not in dims]
            if x.dtype == torch.bool:
                value = fill > 0  # max of nothing: False; min of nothing: True
            else:
                value = fill if x.dtype.is_floating_point else (
                    torch.iinfo(x.dtype).min if fill < 0 else torch.iinfo(x.dtype).max
                )
            return torch.full(shape, value, dtype=x.dtype, device=x.device)
        if x.dtype == torch.bool:
            return fn(x.to(torch.uint8), dim=dims, keepdim=keep).to(torch.bool)
        return fn(x, dim=dims, keepdim=keep)

    return run


def _mean(x, dims, keep):
    return torch.mean(x, dim=dims, keepdim=keep) if dims else x


def _l1(x, dims, keep):
    return _sum(torch.abs(x), dims, keep)


def _l2(x, dims, keep):
    y = _sum(x * x, dims, keep)
    return torch.sqrt(y) if y.dtype.is_floating_point else torch.sqrt(y.double()).round().to(y.dtype)


def _log_sum(x, dims, keep):
    return torch.log(_sum(x, dims, keep))


def _log_sum_exp(x, dims, keep):
    if not dims:
        return x
    if x.numel() == 0:
        return torch.log(_sum(x, dims, keep))
    return torch.logsumexp(x, dim=dims, keepdim=keep)


def _sum_square(x, dims, keep):
    return _sum(x * x, dims, keep)


_KINDS = {
    "ReduceSum": (_sum, 13),
    "ReduceMean": (_mean, 18),
    "ReduceMax": (_extreme(torch.amax, float("-inf")), 18),
    "ReduceMin": (_extreme(torch.amin, float("inf")), 18),
    "ReduceProd": (_prod, 18),
    "ReduceL1": (_l1, 18),
    "ReduceL2": (_l2, 18),
    "ReduceLogSum": (_log_sum, 18),
    "ReduceLogSumExp": (_log_sum_exp, 18),
    "ReduceSumSquare": (_sum_square, 18),
}


def _reduce(fn, x, axes, keepdims, noop_with_empty_axes):
    dims = _dims(axes, x, noop_with_empty_axes)
    if dims is None:
        return x
    dtype, (wx,) = widen(x)
    y = fn(wx, dims, bool(keepdims))
    if y.dtype != wx.dtype:
        y = y.to(wx.dtype)
    return narrow(y, dtype)


def _register_reduce(op_type: str, fn, input_since: int) -> None:
    def lower_attr(x: torch.Tensor, *, axes=None, keepdims: int = 1, noop_with_empty_axes: int = 0):
        return _reduce(fn, x, axes, keepdims, noop_with_empty_axes)

    def lower_input(x: torch.Tensor, axes=None, *, keepdims: int = 1, noop_with_empty_axes: int = 0):
        return _reduce(fn, x, axes, keepdims, noop_with_empty_axes)

    lower_attr.__name__ = op_type.lower() + "_v1"
    lower_input.__name__ = op_type.lower()
    register(op_type, since=1)(lower_attr)
    register(op_type, since=input_since, static_inputs=(1,))(lower_input)


for _name, (_fn, _since) in _KINDS.items():
    _register_reduce(_name, _fn, _since)


def _arg(fn, x, axis, keepdims, select_last_index):
    dtype, (x,) = widen(x)
    axis = norm_axis(axis, x.dim())
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if select_last_index:
        flipped = torch.flip(x, dims=[axis])
        return x.shape[axis] - 1 - fn(flipped, dim=axis, keepdim=bool(keepdims))
    return fn(x, dim=axis, keepdim=bool(keepdims))


@register("ArgMax", since=1)
def argmax(x: torch.Tensor, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> torch.Tensor:
    return _arg(torch.argmax, x, axis, keepdims, select_last_index)


@register("ArgMin", since=1)
def argmin(x: torch.Tensor, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> torch.Tensor:
    return _arg(torch.argmin, x, axis, keepdims, select_last_index)


def _cumulative(fn, neutral, x, axis, exclusive, reverse):
    dtype, (x,) = widen(x)
    axis = norm_axis(as_ints(axis)[0], x.dim())
    if reverse:
        x = torch.flip(x, dims=[axis])
    if exclusive:
        pad_shape = list(x.shape)
        pad_shape[axis] = 1
        head = torch.full(pad_shape, neutral, dtype=x.dtype, device=x.device)
        x = torch.cat([head, x.narrow(axis, 0, x.shape[axis] - 1)], dim=axis)
    y = fn(x, dim=axis).to(x.dtype)
    if reverse:
        y = torch.flip(y, dims=[axis])
    return narrow(y, dtype)


@register("CumSum", since=11, static_inputs=(1,))
def cumsum(x: torch.Tensor, axis, *, exclusive: int = 0, reverse: int = 0) -> torch.Tensor:
    return _cumulative(torch.cumsum, 0, x, axis, exclusive, reverse)


@register("CumProd", since=26, static_inputs=(1,))
def cumprod(x: torch.Tensor, axis, *, exclusive: int = 0, reverse: int = 0) -> torch.Tensor:
    return _cumulative(torch.cumprod, 1, x, axis, exclusive, reverse)
