"""Max-norm regularization: after every training step, rescale weight vectors whose L2 norm exceeds a limit.

Axis convention. graphdnn stores dense kernels TensorFlow-style as ``[in, out]``. TensorFlow's
``clip_by_norm(w, clip_norm, axes=1)`` takes the L2 norm over axis 1, so it gives one norm per *row*:
row ``i`` holds the weights leaving input unit ``i`` towards every neuron. That is what the book does
(``axes=1``, "each row vector ends up with a maximum norm of 1.0") and it is our default. The max-norm of
Srivastava et al. (2014) and Keras's ``MaxNorm(axis=0)`` bound each neuron's *incoming* weights, a column of
an ``[in, out]`` kernel: use ``axes=0`` for that. For a plain ``torch.nn.Linear.weight`` (``[out, in]``)
the roles swap: the book's behaviour is ``axes=0`` and per-neuron is ``axes=1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MaxNorm", "clip_by_norm", "max_norm_"]

Axes = int | Sequence[int] | None


def _dims(tensor: Tensor, axes: Axes) -> list[int]:
    if axes is None:
        return list(range(tensor.dim()))
    dims = [axes] if isinstance(axes, int) else list(axes)
    return [d % tensor.dim() for d in dims]


def _scale(tensor: Tensor, clip_norm: float, axes: Axes) -> Tensor:
    norms = tensor.detach().square().sum(dim=_dims(tensor, axes), keepdim=True).sqrt()
    over = norms > clip_norm
    ones = torch.ones_like(norms)
    return torch.where(over, clip_norm / torch.where(over, norms, ones), ones)


def clip_by_norm(tensor: Tensor, clip_norm: float, axes: Axes = None) -> Tensor:
    """TensorFlow's ``clip_by_norm``: slices along ``axes`` with L2 norm above ``clip_norm`` scaled to it.

    Slices already within the limit are returned bit-for-bit unchanged. ``axes=None`` uses the whole tensor.
    """
    if clip_norm <= 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    return tensor * _scale(tensor, clip_norm, axes)


def max_norm_(weight: Tensor, max_value: float = 1.0, axes: Axes = 1) -> Tensor:
    """In place, under ``torch.no_grad()``: ``weight = clip_by_norm(weight, max_value, axes)``; return it."""
    if max_value <= 0:
        raise ValueError(f"max_value must be > 0, got {max_value}")
    with torch.no_grad():
        weight.mul_(_scale(weight, max_value, axes))
    return weight


@dataclass(frozen=True)
class MaxNorm:
    """A max-norm constraint to call on a weight after every optimizer step (book: 1.0, ``axes=1``)."""

    max_value: float = 1.0
    axes: int | tuple[int, ...] | None = 1

    def __call__(self, weight: Tensor) -> Tensor:
        return max_norm_(weight, self.max_value, self.axes)
