"""Activation functions and the softmax family (ONNX semantics, attribute names and defaults as
in the spec)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from graphdnn.ops._util import norm_axis
from graphdnn.ops.registry import register


@register("Relu", since=1)
def relu(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


@register("LeakyRelu", since=1)
def leaky_relu(x: torch.Tensor, *, alpha: float = 0.01) -> torch.Tensor:
    return F.leaky_relu(x, alpha)


@register("Elu", since=1)
def elu(x: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    return F.elu(x, alpha)


_SELU_ALPHA = 1.67326319217681884765625
_SELU_GAMMA = 1.05070102214813232421875


@register("Selu", since=1)
def selu(x: torch.Tensor, *, alpha: float = _SELU_ALPHA, gamma: float = _SELU_GAMMA) -> torch.Tensor:
    if alpha == _SELU_ALPHA and gamma == _SELU_GAMMA:
        return torch.selu(x)
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@register("Celu", since=12)
def celu(x: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    return F.celu(x, alpha)


@register("Tanh", since=1)
def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


@register("Sigmoid", since=1)
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@register("HardSigmoid", since=1)
def hard_sigmoid(x: torch.Tensor, *, alpha: float = 0.2, beta: float = 0.5) -> torch.Tensor:
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


@register("HardSwish", since=14)
def hard_swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


@register("Softplus", since=1)
def softplus(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x)


@register("Softsign", since=1)
def softsign(x: torch.Tensor) -> torch.Tensor:
    return x / (1.0 + torch.abs(x))


@register("Mish", since=18)
def mish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tanh(F.softplus(x))


@register("Swish", since=24)
def swish(x: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    return x * torch.sigmoid(alpha * x)


@register("ThresholdedRelu", since=10)
def thresholded_relu(x: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    return torch.where(x > alpha, x, torch.zeros_like(x))


@register("Shrink", since=9)
def shrink(x: torch.Tensor, *, bias: float = 0.0, lambd: float = 0.5) -> torch.Tensor:
    zero = torch.zeros_like(x)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero)).to(x.dtype)


@register("PRelu", since=1)
def prelu_v1(x: torch.Tensor, slope: torch.Tensor, *, consumed_inputs=None) -> torch.Tensor:
    """Opsets 1-6: a ``[C]`` slope applies per channel (axis 1), a one-element slope to everything."""
    if slope.dim() == 1 and slope.numel() > 1 and x.dim() > 2 and slope.numel() == x.shape[1]:
        slope = slope.reshape((1, -1) + (1,) * (x.dim() - 2))
    return prelu(x, slope)


@register("PRelu", since=7)
def prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """``slope`` broadcasts unidirectionally to ``x``."""
    return torch.where(x < 0, x * slope, x).to(x.dtype)


@register("Gelu", since=20)
def gelu(x: torch.Tensor, *, approximate: str = "none") -> torch.Tensor:
    return F.gelu(x, approximate="tanh" if approximate == "tanh" else "none")


@register("SwiGLU", since=28)
def swiglu(a: torch.Tensor, b: torch.Tensor, *, alpha: float = 1.0) -> torch.Tensor:
    """``Swish_alpha(A) * B``."""
    return a * torch.sigmoid(alpha * a) * b


# ---- softmax family ----------------------------------------------------------------------------
def _coerced(fn, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Opset < 13: the input is coerced to 2-D at ``axis`` and the op runs over the second dim."""
    axis = norm_axis(axis, x.dim())
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    return fn(flat, 1).reshape(x.shape)


def _hardmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    idx = torch.argmax(x, dim=dim, keepdim=True)
    return torch.zeros_like(x).scatter(dim, idx, 1.0)


@register("Softmax", since=1)
def softmax_v1(x: torch.Tensor, *, axis: int = 1) -> torch.Tensor:
    return _coerced(lambda t, d: torch.softmax(t, dim=d), x, axis)


@register("Softmax", since=13)
def softmax(x: torch.Tensor, *, axis: int = -1) -> torch.Tensor:
    return torch.softmax(x, dim=axis)


@register("LogSoftmax", since=1)
def log_softmax_v1(x: torch.Tensor, *, axis: int = 1) -> torch.Tensor:
    return _coerced(lambda t, d: torch.log_softmax(t, dim=d), x, axis)


@register("LogSoftmax", since=13)
def log_softmax(x: torch.Tensor, *, axis: int = -1) -> torch.Tensor:
    return torch.log_softmax(x, dim=axis)


@register("Hardmax", since=1)
def hardmax_v1(x: torch.Tensor, *, axis: int = 1) -> torch.Tensor:
    return _coerced(_hardmax, x, axis)


@register("Hardmax", since=13)
def hardmax(x: torch.Tensor, *, axis: int = -1) -> torch.Tensor:
    return _hardmax(x, norm_axis(axis, x.dim()))
