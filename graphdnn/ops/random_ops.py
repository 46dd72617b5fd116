"""Random operators: Bernoulli (opsets 15, 22).

ONNX leaves the random stream to the implementation ("may not produce the same values in different
implementations, even if a seed is specified"): with ``seed`` set, graphdnn draws from a fresh
``torch.Generator`` seeded with it, so every run of the node gives the same sample; without it,
from torch's global generator (``torch.manual_seed`` makes a run reproducible). The compiler never
constant-folds these ops.
"""

from __future__ import annotations

import torch

from graphdnn.ops._util import compute_dtype
from graphdnn.ops.registry import register
from graphdnn.ops.static import dtype_from_onnx


def _generator(seed: float | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


@register("Bernoulli", since=15)
def bernoulli(x: torch.Tensor, *, dtype: int | None = None, seed: float | None = None) -> torch.Tensor:
    """1 with probability ``x``, else 0, elementwise; output type ``dtype`` (default: the input's)."""
    out_dtype = dtype_from_onnx(dtype) if dtype is not None else x.dtype
    probs = x.to(compute_dtype(x.dtype))
    return torch.bernoulli(probs, generator=_generator(seed, x.device)).to(out_dtype)
