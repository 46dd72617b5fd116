"""L1 / L2 weight penalties with TensorFlow 1's ``tf.contrib.layers`` definitions, as the book uses them.

* ``l1_regularizer(scale)(w) = scale * sum(|w|)``
* ``l2_regularizer(scale)(w) = scale * sum(w**2) / 2``  (it is ``scale * tf.nn.l2_loss(w)``: note the 1/2)
* ``l1_l2_regularizer(scale_l1, scale_l2)(w)`` = the sum of both.

Keras's ``l2(l)`` is ``l * sum(w**2)`` without the 1/2, i.e. ``l2_regularizer(2 * l)`` here.
A regularizer's result is added to the training loss (``fit`` adds ``model.regularization_loss()``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

__all__ = [
    "Regularizer",
    "l1_l2_regularizer",
    "l1_penalty",
    "l1_regularizer",
    "l2_penalty",
    "l2_regularizer",
    "total_penalty",
]

Regularizer = Callable[[Tensor], Tensor]


def _check(scale: float, name: str) -> float:
    if scale < 0:
        raise ValueError(f"{name} must be >= 0, got {scale}")
    return float(scale)


def l1_penalty(weight: Tensor, scale: float) -> Tensor:
    """``scale * sum(|w|)``."""
    return _check(scale, "scale") * weight.abs().sum()


def l2_penalty(weight: Tensor, scale: float) -> Tensor:
    """``scale * sum(w**2) / 2`` (``scale * tf.nn.l2_loss(w)``)."""
    return _check(scale, "scale") * weight.square().sum() / 2


def l1_regularizer(scale: float) -> Regularizer:
    """TF1 ``tf.contrib.layers.l1_regularizer``: ``w -> scale * sum(|w|)``."""
    _check(scale, "scale")
    return lambda weight: l1_penalty(weight, scale)


def l2_regularizer(scale: float) -> Regularizer:
    """TF1 ``tf.contrib.layers.l2_regularizer``: ``w -> scale * sum(w**2) / 2``."""
    _check(scale, "scale")
    return lambda weight: l2_penalty(weight, scale)


def l1_l2_regularizer(scale_l1: float = 1.0, scale_l2: float = 1.0) -> Regularizer:
    """TF1 ``tf.contrib.layers.l1_l2_regularizer``: the sum of the L1 and L2 penalties."""
    _check(scale_l1, "scale_l1")
    _check(scale_l2, "scale_l2")
    return lambda weight: l1_penalty(weight, scale_l1) + l2_penalty(weight, scale_l2)


def total_penalty(pairs: Iterable[tuple[Tensor, Regularizer]]) -> Tensor:
    """Sum of ``regularizer(weight)`` over ``(weight, regularizer)`` pairs (TF's REGULARIZATION_LOSSES)."""
    total: Tensor | None = None
    for weight, regularizer in pairs:
        term = regularizer(weight)
        total = term if total is None else total + term
    return torch.zeros(()) if total is None else total
