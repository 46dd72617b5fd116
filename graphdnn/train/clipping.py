"""Gradient clipping, applied in place to ``.grad`` between ``backward()`` and ``optimizer.step()``."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from graphdnn.errors import InputError

__all__ = ["clip_gradients_by_global_norm", "clip_gradients_by_value"]


def clip_gradients_by_value(parameters: Tensor | Iterable[Tensor], clip_value: float = 1.0) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` (the book's ``clip_by_value``, 1.0)."""
    if clip_value <= 0:
        raise InputError(f"clip_value must be > 0, got {clip_value}")
    torch.nn.utils.clip_grad_value_(parameters, clip_value)


def clip_gradients_by_global_norm(
    parameters: Tensor | Iterable[Tensor], clip_norm: float, norm_type: float = 2.0
) -> Tensor:
    """Rescale all gradients together so their global norm is at most ``clip_norm``; return the norm before.

    Like TF's ``clip_by_global_norm`` except that torch divides by ``norm + 1e-6``.
    """
    if clip_norm <= 0:
        raise InputError(f"clip_norm must be > 0, got {clip_norm}")
    return torch.nn.utils.clip_grad_norm_(parameters, clip_norm, norm_type=norm_type)
