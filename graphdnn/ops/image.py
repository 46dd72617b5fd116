"""Spatial sampling and patch operators: GridSample, AffineGrid, Col2Im, DeformConv."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from graphdnn.ops._util import compute_dtype
from graphdnn.ops.registry import register
from graphdnn.ops.static import as_ints

_MODES = {"linear": "bilinear", "bilinear": "bilinear", "nearest": "nearest", "cubic": "bicubic", "bicubic": "bicubic"}


@register("GridSample", since=16)
def grid_sample(
    x: torch.Tensor, grid: torch.Tensor, *, align_corners: int = 0, mode: str = "linear", padding_mode: str = "zeros"
) -> torch.Tensor:
    """Opset 16 spells the modes bilinear/bicubic, 20+ linear/cubic; N-D (2-D and 3-D) grids."""
    return F.grid_sample(x, grid.to(x.dtype), mode=_MODES[mode], padding_mode=padding_mode,
                         align_corners=bool(align_corners))


@register("AffineGrid", since=20, static_inputs=(1,))
def affine_grid(theta: torch.Tensor, size, *, align_corners: int = 0) -> torch.Tensor:
    return F.affine_grid(theta, as_ints(size), align_corners=bool(align_corners))


@register("Col2Im", since=18, static_inputs=(1, 2))
def col2im(x: torch.Tensor, image_shape, block_shape, *, dilations=None, pads=None, strides=None) -> torch.Tensor:
    """Sum sliding blocks [N, C*prod(block), L] back into an image [N, C, *image_shape]."""
    image = as_ints(image_shape)
    block = as_ints(block_shape)
    n = len(image)
    dil = as_ints(dilations) if dilations else [1] * n
    strides = as_ints(strides) if strides else [1] * n
    pads = as_ints(pads) if pads else [0] * (2 * n)
    padded = [image[i] + pads[i] + pads[i + n] for i in range(n)]
    counts = [(padded[i] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(n)]
    batch, channels = x.shape[0], x.shape[1] // math.prod(block)
    # target flat position (in the padded image) of every (kernel offset, block location) pair
    pos = torch.zeros((1, 1), dtype=torch.int64)
    for i in range(n):
        k = torch.arange(block[i]).reshape(-1, 1) * dil[i]
        l_ = torch.arange(counts[i]).reshape(1, -1) * strides[i]
        coord = k + l_  # [block_i, count_i]
        pos = (pos.reshape(pos.shape[0], 1, pos.shape[1], 1) * padded[i]
               + coord.reshape(1, block[i], 1, counts[i])).reshape(pos.shape[0] * block[i], -1)
    cols = x.reshape(batch, channels, -1)
    out = torch.zeros(batch, channels, math.prod(padded), dtype=x.dtype, device=x.device)
    out = out.index_add(2, pos.reshape(-1).to(x.device), cols)
    out = out.reshape(batch, channels, *padded)
    for i in range(n):
        out = out.narrow(2 + i, pads[i], image[i])
    return out


def _interpolate(flat: torch.Tensor, pos: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """N-linear samples of ``flat`` [N, G, Cg, S] (S = prod(sizes), row-major) at pixel positions
    ``pos`` [N, G, n, P]; corners outside the image read 0. Returns [N, G, Cg, P]."""
    low = pos.floor()
    frac = pos - low
    low = low.to(torch.int64)
    out = None
    for corner in itertools.product((0, 1), repeat=len(sizes)):
        weight = None
        valid = None
        index = None
        for d, bit in enumerate(corner):
            i = low[:, :, d] + bit
            wd = frac[:, :, d] if bit else 1 - frac[:, :, d]
            vd = (i >= 0) & (i < sizes[d])
            weight = wd if weight is None else weight * wd
            valid = vd if valid is None else valid & vd
            index = i if index is None else index * sizes[d] + i
        index = torch.where(valid, index, 0)
        gathered = torch.gather(flat, 3, index.unsqueeze(2).expand(-1, -1, flat.shape[2], -1))
        term = gathered * torch.where(valid, weight, 0).unsqueeze(2)
        out = term if out is None else out + term
    return out


@register("DeformConv", since=19)
def deform_conv(
    x: torch.Tensor,
    w: torch.Tensor,
    offset: torch.Tensor,
    b: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    dilations=None,
    group: int = 1,
    kernel_shape=None,
    offset_group: int = 1,
    pads=None,
    strides=None,
) -> torch.Tensor:
    """N-D deformable convolution (v2 when ``mask`` is given): kernel tap ``k`` of output position ``o``
    reads the input at ``o * strides - pads_begin + k * dilations + offset[n, g, k, :, o]`` by
    (bi/tri)linear interpolation (zero outside the input), scaled by ``mask[n, g, k, o]``; input
    channels are split into ``offset_group`` groups sharing offsets. Offset [N, G*prod(kernel)*n, *out]."""
    nd = x.dim() - 2
    kernel = as_ints(kernel_shape) if kernel_shape else [int(k) for k in w.shape[2:]]
    dil = as_ints(dilations) if dilations else [1] * nd
    stride = as_ints(strides) if strides else [1] * nd
    pad = as_ints(pads) if pads else [0] * (2 * nd)
    n, c = x.shape[:2]
    sizes = [int(s) for s in x.shape[2:]]
    out_shape = [int(s) for s in offset.shape[2:]]
    taps, points = math.prod(kernel), math.prod(out_shape)
    work = compute_dtype(x.dtype)
    # undeformed sampling positions [nd, taps, points]
    k_grid = torch.meshgrid(*[torch.arange(k, device=x.device) for k in kernel], indexing="ij")
    o_grid = torch.meshgrid(*[torch.arange(o, device=x.device) for o in out_shape], indexing="ij")
    base = torch.stack([
        (o_grid[d].reshape(1, -1) * stride[d] - pad[d] + k_grid[d].reshape(-1, 1) * dil[d]) for d in range(nd)
    ]).to(work)
    off = offset.to(work).reshape(n, offset_group, taps, nd, points).transpose(2, 3)  # [N, G, n, taps, P]
    pos = (base + off).reshape(n, offset_group, nd, taps * points)
    flat = x.to(work).reshape(n, offset_group, c // offset_group, math.prod(sizes))
    cols = _interpolate(flat, pos, sizes).reshape(n, offset_group, c // offset_group, taps, points)
    if mask is not None:
        cols = cols * mask.to(work).reshape(n, offset_group, 1, taps, points)
    cols = cols.reshape(n, group, (c // group) * taps, points)
    weight = w.to(work).reshape(group, w.shape[0] // group, (c // group) * taps)
    y = torch.einsum("gok,ngkp->ngop", weight, cols).reshape(n, w.shape[0], *out_shape)
    if b is not None:
        y = y + b.to(work).reshape(1, -1, *([1] * nd))
    return y.to(x.dtype)
