"""Operators of graphdnn's own domain (``graphdnn``), for what ONNX lacks in training."""

from __future__ import annotations

import torch

from graphdnn.ops.registry import GRAPHDNN_DOMAIN, register


@register("StopGradient", since=1, domain=GRAPHDNN_DOMAIN)
def stop_gradient(x: torch.Tensor) -> torch.Tensor:
    """Identity forward, no gradient backward (TF's ``tf.stop_gradient``). Exports as ONNX Identity."""
    return x.detach()


@register("AlphaDropout", since=1, domain=GRAPHDNN_DOMAIN, uses_training=True)
def alpha_dropout(x: torch.Tensor, *, ratio: float = 0.1, training: bool = False) -> torch.Tensor:
    """SELU-preserving dropout in training mode, identity otherwise. Exports as ONNX Identity."""
    return torch.nn.functional.alpha_dropout(x, ratio, training)
