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


@register("GaussianNoise", since=1, domain=GRAPHDNN_DOMAIN, uses_training=True)
def gaussian_noise(x: torch.Tensor, *, stddev: float = 0.1, training: bool = False) -> torch.Tensor:
    """``x + N(0, stddev)`` in training mode, identity otherwise (Keras's GaussianNoise). Exports as ONNX
    Identity."""
    return x + torch.randn_like(x) * stddev if training and stddev > 0 else x


@register("GaussianDropout", since=1, domain=GRAPHDNN_DOMAIN, uses_training=True)
def gaussian_dropout(x: torch.Tensor, *, ratio: float = 0.5, training: bool = False) -> torch.Tensor:
    """``x * N(1, sqrt(ratio / (1 - ratio)))`` in training mode, identity otherwise (Keras's GaussianDropout).
    Exports as ONNX Identity."""
    if not training or ratio <= 0:
        return x
    return x * (1.0 + torch.randn_like(x) * (ratio / (1.0 - ratio)) ** 0.5)
