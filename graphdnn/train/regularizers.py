"""TF1's L1 / L2 penalties on plain PyTorch weights: another name for :mod:`graphdnn.regularizers`, where they
are defined with the specs attached to graph variables (one set of formulas for both)."""

from __future__ import annotations

from graphdnn.regularizers import (
    Regularizer,
    l1_l2_regularizer,
    l1_penalty,
    l1_regularizer,
    l2_penalty,
    l2_regularizer,
    total_penalty,
)

__all__ = [
    "Regularizer",
    "l1_l2_regularizer",
    "l1_penalty",
    "l1_regularizer",
    "l2_penalty",
    "l2_regularizer",
    "total_penalty",
]
