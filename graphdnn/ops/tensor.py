"""Shape, layout, indexing and tensor-construction operators (ONNX semantics).

Inputs that are shapes, axes, sizes or indices of *positions* (not data) are ``static_inputs``:
the compiler passes them as Python lists when constant, and ``as_ints`` accepts either form.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from graphdnn.errors import GraphError
from graphdnn.ops._util import narrow, norm_axis, widen
from graphdnn.ops.registry import register
from graphdnn.ops.static import array_from_attr, as_ints, dtype_from_onnx, tensor_from_attr
from graphdnn.small_dtypes import clone, decode, encode, is_small, storage


@register("Identity", since=1)
def identity(x: torch.Tensor) -> torch.Tensor:
    return x


# ---- reshaping ---------------------------------------------------------------------------------
def _onnx_shape(x: torch.Tensor, shape: list[int], allowzero: int) -> list[int]:
    """Resolve ONNX's 0 (copy the input dim, unless ``allowzero``) in a target shape."""
    if allowzero:
        return shape
    return [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]


@register("Reshape", since=1)
def reshape_v1(x: torch.Tensor, *, shape=None, consumed_inputs=None) -> torch.Tensor:
    return torch.reshape(x, _onnx_shape(x, as_ints(shape), 0))


@register("Reshape", since=5, static_inputs=(1,))
def reshape(x: torch.Tensor, shape, *, allowzero: int = 0) -> torch.Tensor:
    return torch.reshape(x, _onnx_shape(x, as_ints(shape), allowzero))


@register("Flatten", since=1)
def flatten(x: torch.Tensor, *, axis: int = 1) -> torch.Tensor:
    axis = norm_axis(axis, x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Transpose", since=1)
def transpose(x: torch.Tensor, *, perm: list[int] | None = None) -> torch.Tensor:
    return torch.permute(x, perm if perm is not None else list(reversed(range(x.dim()))))


@register("Squeeze", since=1)
def squeeze_v1(x: torch.Tensor, *, axes=None) -> torch.Tensor:
    return squeeze(x, axes)


@register("Squeeze", since=13, static_inputs=(1,))
def squeeze(x: torch.Tensor, axes=None) -> torch.Tensor:
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    dims = {norm_axis(a, x.dim()) for a in as_ints(axes)}
    return x.reshape([d for i, d in enumerate(x.shape) if i not in dims])


@register("Unsqueeze", since=1)
def unsqueeze_v1(x: torch.Tensor, *, axes) -> torch.Tensor:
    return unsqueeze(x, axes)


@register("Unsqueeze", since=13, static_inputs=(1,))
def unsqueeze(x: torch.Tensor, axes) -> torch.Tensor:
    rank = x.dim() + len(as_ints(axes))
    dims = sorted(norm_axis(a, rank) for a in as_ints(axes))
    shape = list(x.shape)
    for d in dims:
        shape.insert(d, 1)
    return x.reshape(shape)


@register("Expand", since=8, static_inputs=(1,))
def expand(x: torch.Tensor, shape) -> torch.Tensor:
    out = torch.broadcast_shapes(tuple(x.shape), tuple(as_ints(shape)))
    return x.expand(out)


@register("Tile", since=6, static_inputs=(1,))
def tile(x: torch.Tensor, repeats) -> torch.Tensor:
    return torch.tile(x, tuple(as_ints(repeats)))


@register("Concat", since=1)
def concat(*xs: torch.Tensor, axis: int = 1) -> torch.Tensor:
    dtype, wide = widen(*[x for x in xs if x is not None])
    return narrow(torch.cat(wide, dim=axis), dtype)


def _split_sizes(dim: int, parts: int) -> list[int]:
    chunk = -(-dim // parts)
    sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
    return sizes


def _split(x: torch.Tensor, axis: int, split, outputs: int, num_outputs: int | None = None):
    dim = x.shape[norm_axis(axis, x.dim())]
    if split is not None and len(as_ints(split)):
        sizes = as_ints(split)
    elif num_outputs is not None:
        sizes = _split_sizes(dim, num_outputs)
    else:
        sizes = [dim // outputs] * outputs
    return tuple(torch.split(x, sizes, dim=axis))


@register("Split", since=1, num_outputs=None, static_inputs=(1,))
def split_v1(x: torch.Tensor, split_input=None, *, axis: int = 0, split=None, _outputs: int = 1):
    return _split(x, axis, split if split is not None else split_input, _outputs)


@register("Split", since=13, num_outputs=None, static_inputs=(1,))
def split(x: torch.Tensor, split=None, *, axis: int = 0, _outputs: int = 1):
    return _split(x, axis, split, _outputs)


@register("Split", since=18, num_outputs=None, static_inputs=(1,))
def split_v18(x: torch.Tensor, split=None, *, axis: int = 0, num_outputs: int | None = None, _outputs: int = 1):
    return _split(x, axis, split, _outputs, num_outputs)


# ---- slicing and indexing ----------------------------------------------------------------------
def _slice(x: torch.Tensor, starts, ends, axes, steps) -> torch.Tensor:
    starts, ends = as_ints(starts), as_ints(ends)
    axes = as_ints(axes) if axes is not None else list(range(len(starts)))
    steps = as_ints(steps) if steps is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = norm_axis(axis, x.dim())
        dim = x.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            index[axis] = slice(start, max(end, start), step)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            count = max(0, -(-(start - end) // -step))
            # walk backwards: take positions start, start+step, ... in the flipped tensor
            fstart = dim - 1 - start
            index[axis] = slice(fstart, fstart + (count - 1) * -step + 1 if count else fstart, -step)
            flips.append(axis)
    if flips:
        x = torch.flip(x, dims=flips)
    return x[tuple(index)]


@register("Slice", since=1)
def slice_v1(x: torch.Tensor, *, starts, ends, axes=None) -> torch.Tensor:
    return _slice(x, starts, ends, axes, None)


@register("Slice", since=10, static_inputs=(1, 2, 3, 4))
def slice_(x: torch.Tensor, starts, ends, axes=None, steps=None) -> torch.Tensor:
    return _slice(x, starts, ends, axes, steps)


def _positive(idx: torch.Tensor, dim: int) -> torch.Tensor:
    idx = idx.to(torch.int64)
    return torch.where(idx < 0, idx + dim, idx)


@register("Gather", since=1)
def gather(x: torch.Tensor, indices: torch.Tensor, *, axis: int = 0) -> torch.Tensor:
    axis = norm_axis(axis, x.dim())
    idx = _positive(indices, x.shape[axis])
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1 :]))


@register("GatherElements", since=11)
def gather_elements(x: torch.Tensor, indices: torch.Tensor, *, axis: int = 0) -> torch.Tensor:
    axis = norm_axis(axis, x.dim())
    return torch.gather(x, axis, _positive(indices, x.shape[axis]))


@register("GatherND", since=11)
def gather_nd(x: torch.Tensor, indices: torch.Tensor, *, batch_dims: int = 0) -> torch.Tensor:
    b = batch_dims
    k = indices.shape[-1]
    batch = math.prod(x.shape[:b])
    data = x.reshape((batch,) + tuple(x.shape[b:]))
    idx = indices.reshape(batch, -1, k).to(torch.int64)
    rows = torch.arange(batch, device=x.device).reshape(batch, 1)
    coords = [rows] + [_positive(idx[..., j], x.shape[b + j]) for j in range(k)]
    out = data[tuple(coords)]
    return out.reshape(tuple(indices.shape[:-1]) + tuple(x.shape[b + k :]))


_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@register("ScatterElements", since=11)
def scatter_elements(
    x: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, *, axis: int = 0, reduction: str = "none"
) -> torch.Tensor:
    axis = norm_axis(axis, x.dim())
    idx = _positive(indices, x.shape[axis])
    if reduction == "none":
        return torch.scatter(x, axis, idx, updates)
    return torch.scatter_reduce(x, axis, idx, updates, _REDUCE[reduction], include_self=True)


@register("Scatter", since=9)
def scatter(x: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, *, axis: int = 0) -> torch.Tensor:
    return scatter_elements(x, indices, updates, axis=axis)


@register("ScatterND", since=11)
def scatter_nd(
    x: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor, *, reduction: str = "none"
) -> torch.Tensor:
    k = indices.shape[-1]
    lead = tuple(x.shape[:k])
    flat = x.reshape((math.prod(lead),) + tuple(x.shape[k:]))
    idx = indices.reshape(-1, k).to(torch.int64)
    linear = torch.zeros(idx.shape[0], dtype=torch.int64, device=x.device)
    for j, size in enumerate(lead):
        linear = linear * size + _positive(idx[:, j], size)
    upd = updates.reshape((idx.shape[0],) + tuple(x.shape[k:]))
    if reduction == "none":
        out = flat.index_put((linear,), upd)
    elif reduction == "add":
        out = flat.index_put((linear,), upd, accumulate=True)
    else:
        expanded = linear.reshape((-1,) + (1,) * (upd.dim() - 1)).expand(upd.shape)
        out = torch.scatter_reduce(flat, 0, expanded, upd, _REDUCE[reduction], include_self=True)
    return out.reshape(x.shape)


@register("Compress", since=9)
def compress(x: torch.Tensor, condition: torch.Tensor, *, axis: int | None = None) -> torch.Tensor:
    if axis is None:
        x, axis = x.reshape(-1), 0
    axis = norm_axis(axis, x.dim())
    keep = torch.nonzero(condition.to(torch.bool).reshape(-1)).reshape(-1)
    return torch.index_select(x, axis, keep)


@register("NonZero", since=9)
def non_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(x).t().contiguous()


@register("ReverseSequence", since=10)
def reverse_sequence(
    x: torch.Tensor, sequence_lens: torch.Tensor, *, batch_axis: int = 1, time_axis: int = 0
) -> torch.Tensor:
    steps, batch = x.shape[time_axis], x.shape[batch_axis]
    t = torch.arange(steps, device=x.device).reshape(steps, 1)
    lens = sequence_lens.to(torch.int64).reshape(1, batch)
    src = torch.where(t < lens, lens - 1 - t, t)  # [time, batch]
    if time_axis > batch_axis:
        src = src.t()
    shape = [1] * x.dim()
    shape[time_axis], shape[batch_axis] = steps, batch
    src = src.reshape(shape).expand(x.shape)
    return torch.gather(x, time_axis, src)


# ---- layout ------------------------------------------------------------------------------------
@register("DepthToSpace", since=1)
def depth_to_space(x: torch.Tensor, *, blocksize: int, mode: str = "DCR") -> torch.Tensor:
    b, c, h, w = x.shape
    bs = blocksize
    if mode == "CRD":
        y = x.reshape(b, c // (bs * bs), bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        y = x.reshape(b, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(b, c // (bs * bs), h * bs, w * bs)


@register("SpaceToDepth", since=1)
def space_to_depth(x: torch.Tensor, *, blocksize: int, mode: str = "DCR") -> torch.Tensor:
    b, c, h, w = x.shape
    bs = blocksize
    y = x.reshape(b, c, h // bs, bs, w // bs, bs)
    y = y.permute(0, 1, 3, 5, 2, 4) if mode == "CRD" else y.permute(0, 3, 5, 1, 2, 4)
    return y.reshape(b, c * bs * bs, h // bs, w // bs)


# ---- padding -----------------------------------------------------------------------------------
def _pad_index(n: int, begin: int, end: int, mode: str, device) -> torch.Tensor:
    pos = torch.arange(-begin, n + end, device=device)
    if mode == "edge":
        return pos.clamp(0, n - 1)
    if mode == "wrap":
        return torch.remainder(pos, n)
    # reflect: mirror without repeating the edge
    period = 2 * (n - 1) if n > 1 else 1
    pos = torch.remainder(pos, period)
    return torch.where(pos >= n, period - pos, pos)


def _pad(x: torch.Tensor, pads: list[int], mode: str, value, axes: list[int] | None) -> torch.Tensor:
    if is_small(x.dtype):  # int4, float4...: pad the bytes, with the fill's code
        code = storage(encode(torch.tensor(0 if value is None else value), x.dtype)).item()
        return _pad(storage(x), pads, mode, code, axes).view(x.dtype)
    rank = x.dim()
    axes = [norm_axis(a, rank) for a in axes] if axes is not None else list(range(rank))
    half = len(axes)
    begins = dict(zip(axes, pads[:half]))
    ends = dict(zip(axes, pads[half:]))
    if mode == "constant":
        torch_pads: list[int] = []
        for d in reversed(range(rank)):
            torch_pads += [begins.get(d, 0), ends.get(d, 0)]
        dtype, (wx,) = widen(x)
        fill = 0 if value is None else value
        if x.dtype == torch.bool:
            return F.pad(x.to(torch.uint8), torch_pads, value=int(bool(fill))).to(torch.bool)
        if not wx.dtype.is_floating_point:
            fill = int(fill)
        return narrow(F.pad(wx, torch_pads, value=fill), dtype)
    for d in axes:
        b, e = begins[d], ends[d]
        if b or e:
            x = torch.index_select(x, d, _pad_index(x.shape[d], b, e, mode, x.device))
    return x


@register("Pad", since=1)
def pad_v1(x: torch.Tensor, *, mode: str = "constant", pads=None, paddings=None, value: float = 0.0):
    return _pad(x, as_ints(pads if pads is not None else paddings), mode, value, None)


def _scalar(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return decode(value).reshape(-1)[0].item() if value.numel() else None
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


@register("Pad", since=11, static_inputs=(1, 2, 3))
def pad(x: torch.Tensor, pads, constant_value=None, axes=None, *, mode: str = "constant") -> torch.Tensor:
    return _pad(x, as_ints(pads), mode, _scalar(constant_value), as_ints(axes) if axes is not None else None)


@register("CenterCropPad", since=18, static_inputs=(1,))
def center_crop_pad(x: torch.Tensor, shape, *, axes=None) -> torch.Tensor:
    shape = as_ints(shape)
    axes = [norm_axis(a, x.dim()) for a in axes] if axes is not None else list(range(x.dim()))
    pads_begin, pads_end = [0] * x.dim(), [0] * x.dim()
    for a, target in zip(axes, shape):
        diff = target - x.shape[a]  # > 0: pad, < 0: crop (negative padding)
        small = abs(diff) // 2
        big = abs(diff) - small
        sign = 1 if diff > 0 else -1
        pads_begin[a], pads_end[a] = sign * small, sign * big
    return _pad(x, pads_begin + pads_end, "constant", 0, None)


# ---- shapes and constants ----------------------------------------------------------------------
@register("Shape", since=1)
def shape(x: torch.Tensor, *, start: int = 0, end: int | None = None) -> torch.Tensor:
    return torch.tensor(list(x.shape)[start:end], dtype=torch.int64)


@register("Size", since=1)
def size(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(x.numel(), dtype=torch.int64)


@register("Constant", since=1)
def constant(
    *,
    value=None,
    sparse_value=None,
    value_float=None,
    value_floats=None,
    value_int=None,
    value_ints=None,
    value_string=None,
    value_strings=None,
) -> torch.Tensor:
    """A literal (TENSOR attributes arrive as ``{"dtype", "shape", "data"}``); string literals are
    numpy arrays of ``str``, the run-time form of string tensors."""
    if value is not None:
        return array_from_attr(value)
    if sparse_value is not None:
        return tensor_from_attr(sparse_value)
    if value_float is not None:
        return torch.tensor(value_float, dtype=torch.float32)
    if value_floats is not None:
        return torch.tensor(value_floats, dtype=torch.float32)
    if value_int is not None:
        return torch.tensor(value_int, dtype=torch.int64)
    if value_ints is not None:
        return torch.tensor(value_ints, dtype=torch.int64)
    if value_string is not None:
        return np.array(value_string, dtype=object)
    if value_strings is not None:
        return np.array(list(value_strings), dtype=object)
    raise GraphError("Constant needs one of value, value_float(s), value_int(s)")


@register("ConstantOfShape", since=9, static_inputs=(0,))
def constant_of_shape(shape, *, value=None) -> torch.Tensor:
    if value is None:
        return torch.zeros(as_ints(shape), dtype=torch.float32)
    fill = tensor_from_attr(value).reshape(-1)
    return clone(fill.expand(1).reshape([1] * len(as_ints(shape))).expand(as_ints(shape)))


@register("Range", since=11)
def range_(start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Data-dependent length: the count is read from the (usually constant) inputs."""
    s, lim, d = (t.reshape(()) if isinstance(t, torch.Tensor) else torch.tensor(t) for t in (start, limit, delta))
    count = max(int(math.ceil((lim.double() - s.double()).item() / d.double().item())), 0)
    steps = torch.arange(count, device=s.device)
    if s.dtype.is_floating_point and s.dtype != torch.float64:
        return (s.float() + steps.float() * d.float()).to(s.dtype)
    return (s + steps.to(s.dtype) * d).to(s.dtype)


@register("EyeLike", since=9)
def eye_like(x: torch.Tensor, *, dtype: int | None = None, k: int = 0) -> torch.Tensor:
    n, m = x.shape
    out = dtype_from_onnx(dtype) if dtype is not None else x.dtype
    rows = torch.arange(n, device=x.device).reshape(n, 1)
    cols = torch.arange(m, device=x.device).reshape(1, m)
    return (cols - rows == k).to(out)


@register("OneHot", since=9, static_inputs=(1,))
def one_hot(indices: torch.Tensor, depth, values: torch.Tensor, *, axis: int = -1) -> torch.Tensor:
    depth = int(as_ints_float(depth)[0])
    idx = indices.to(torch.int64) if not indices.dtype.is_floating_point else indices.trunc().to(torch.int64)
    idx = torch.where(idx < 0, idx + depth, idx)
    axis = norm_axis(axis, indices.dim() + 1)
    shape = [1] * (indices.dim() + 1)
    shape[axis] = depth
    classes = torch.arange(depth, device=indices.device).reshape(shape)
    hot = idx.unsqueeze(axis) == classes
    return torch.where(hot, values[1], values[0])


def as_ints_float(value) -> list[float]:
    """Numbers from a static input that may hold floats (OneHot's depth)."""
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)]


@register("Trilu", since=14, static_inputs=(1,))
def trilu(x: torch.Tensor, k=None, *, upper: int = 1) -> torch.Tensor:
    k = as_ints(k)[0] if k is not None else 0
    dtype, (wx,) = widen(x)
    return narrow(torch.triu(wx, k) if upper else torch.tril(wx, k), dtype)


def _topk(x: torch.Tensor, k: int, axis: int, largest: int, sorted: int):
    axis = norm_axis(axis, x.dim())
    values, indices = torch.sort(x, dim=axis, descending=bool(largest), stable=True)
    return values.narrow(axis, 0, k), indices.narrow(axis, 0, k)


@register("TopK", since=1, num_outputs=2)
def topk_v1(x: torch.Tensor, *, axis: int = -1, k: int):
    return _topk(x, k, axis, 1, 1)


@register("TopK", since=10, num_outputs=2, static_inputs=(1,))
def topk(x: torch.Tensor, k, *, axis: int = -1, largest: int = 1, sorted: int = 1):
    return _topk(x, as_ints(k)[0], axis, largest, sorted)


@register("Unique", since=11, num_outputs=None)
def unique(x: torch.Tensor, *, axis: int | None = None, sorted: int = 1, _outputs: int = 1):
    """Outputs: unique values, first-occurrence indices, inverse indices, counts."""
    flat = x.reshape(-1) if axis is None else x
    dim = 0 if axis is None else norm_axis(axis, x.dim())
    values, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True, dim=dim)
    n = flat.shape[dim]
    positions = torch.arange(n, device=x.device)
    first = torch.full((values.shape[dim],), n, dtype=torch.int64, device=x.device)
    first = first.scatter_reduce(0, inverse.reshape(-1), positions, "amin", include_self=True)
    if not sorted:
        order = torch.argsort(first)
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=x.device))
        values = torch.index_select(values, dim, order)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    outs = (values, first, inverse.reshape(-1).to(torch.int64), counts.to(torch.int64))
    return outs[:_outputs]
