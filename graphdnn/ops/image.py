"""Spatial sampling and patch operators: GridSample, AffineGrid, Col2Im."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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
