"""Initializers as JSON specs, drawn with torch's global RNG (seed with ``torch.manual_seed``).

Variance scaling (TF/Keras ``VarianceScaling``) draws with variance ``scale / n`` where ``n`` is
fan_in, fan_out or their average. Fans depend on the kernel layout: ``"io"`` (dense ``[in, out]``,
and TF's HWIO convolution kernels ``[..., in, out]``) or ``"oihw"`` (ONNX/torch ``[out, in, ...]``).
Truncated normals are cut at two standard deviations and rescaled so the variance is exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from graphdnn.dtypes import torch_dtype
from graphdnn.errors import GraphError

Spec = dict[str, Any]
_TRUNC_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def variance_scaling(scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal") -> Spec:
    """Variance ``scale / n``; ``mode`` in fan_in/fan_out/fan_avg; ``distribution`` in
    truncated_normal/normal (alias untruncated_normal)/uniform."""
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise GraphError(f"variance_scaling mode must be fan_in, fan_out or fan_avg, not {mode!r}")
    distribution = {"untruncated_normal": "normal"}.get(distribution, distribution)
    if distribution not in ("truncated_normal", "normal", "uniform"):
        raise GraphError(f"unknown distribution {distribution!r}")
    return {"type": "variance_scaling", "scale": float(scale), "mode": mode, "distribution": distribution}


def he_normal() -> Spec:
    """He et al. 2015: variance 2 / fan_in, truncated normal (for ReLU-family activations)."""
    return variance_scaling(2.0, "fan_in", "truncated_normal")


def he_uniform() -> Spec:
    return variance_scaling(2.0, "fan_in", "uniform")


def glorot_uniform() -> Spec:
    """Glorot & Bengio 2010 (Xavier): variance 2 / (fan_in + fan_out), uniform (TF's default)."""
    return variance_scaling(1.0, "fan_avg", "uniform")


def glorot_normal() -> Spec:
    return variance_scaling(1.0, "fan_avg", "truncated_normal")


def lecun_normal() -> Spec:
    """LeCun: variance 1 / fan_in, truncated normal (for SELU)."""
    return variance_scaling(1.0, "fan_in", "truncated_normal")


def lecun_uniform() -> Spec:
    return variance_scaling(1.0, "fan_in", "uniform")


xavier_uniform, xavier_normal = glorot_uniform, glorot_normal


def zeros() -> Spec:
    return {"type": "constant", "value": 0.0}


def ones() -> Spec:
    return {"type": "constant", "value": 1.0}


def constant(value: float) -> Spec:
    return {"type": "constant", "value": float(value)}


def random_normal(mean: float = 0.0, stddev: float = 0.05) -> Spec:
    return {"type": "normal", "mean": float(mean), "stddev": float(stddev)}


def from_value() -> Spec:
    """Marks a variable whose value was given (an array, a checkpoint, another framework)."""
    return {"type": "value"}


def from_array(array: Any) -> Any:
    """Use ``array`` as the initial value: ``graph.variable(name, initializer=from_array(w))``
    and the layers' ``kernel_initializer=from_array(original_w)`` (the book's foreign weights)."""
    return _ArrayInit(np.asarray(array))


class _ArrayInit(dict):
    """A spec dict that also carries the array (dropped from the JSON, which says ``value``)."""

    def __init__(self, array: np.ndarray) -> None:
        super().__init__(type="value")
        self.array = array


def fans(shape: tuple[int, ...], layout: str | None = None) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel shape in the given layout ("io" default, or "oihw")."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if layout == "oihw":
        receptive = math.prod(shape[2:])
        return shape[1] * receptive, shape[0] * receptive
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def materialize(spec: Spec, shape: tuple[int, ...], dtype: Any = "float32", layout: str | None = None) -> torch.Tensor:
    """Draw a tensor of ``shape`` from ``spec``."""
    dt = torch_dtype(dtype)
    kind = spec.get("type")
    if isinstance(spec, _ArrayInit):
        value = torch.as_tensor(spec.array, dtype=dt)
        if tuple(value.shape) != tuple(shape):
            raise GraphError(f"initial value has shape {tuple(value.shape)}, the variable {tuple(shape)}")
        return value.clone()
    if kind == "constant":
        return torch.full(shape, spec["value"], dtype=dt)
    if kind == "normal":
        return torch.empty(shape, dtype=dt).normal_(spec["mean"], spec["stddev"])
    if kind == "variance_scaling":
        fan_in, fan_out = fans(tuple(shape), layout)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[spec["mode"]]
        variance = spec["scale"] / max(1.0, n)
        out = torch.empty(shape, dtype=dt)
        if spec["distribution"] == "uniform":
            limit = math.sqrt(3.0 * variance)
            return out.uniform_(-limit, limit)
        std = math.sqrt(variance)
        if spec["distribution"] == "normal":
            return out.normal_(0.0, std)
        return torch.nn.init.trunc_normal_(out, 0.0, std / _TRUNC_STD, -2 * std / _TRUNC_STD, 2 * std / _TRUNC_STD)
    raise GraphError(f"unknown initializer spec {spec!r}")
