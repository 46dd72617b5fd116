"""Normalization: BatchNormalization, LayerNormalization, RMSNormalization, InstanceNormalization,
GroupNormalization, LpNormalization, MeanVarianceNormalization, LRN (ONNX semantics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from graphdnn.ops._util import norm_axis
from graphdnn.ops.registry import register
from graphdnn.ops.static import dtype_from_onnx


def _per_channel(t: torch.Tensor, rank: int) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (rank - 2))


def _bn_infer(x, scale, bias, mean, var, epsilon):
    r = x.dim()
    return (x - _per_channel(mean, r)) / torch.sqrt(_per_channel(var, r) + epsilon) * _per_channel(
        scale, r
    ) + _per_channel(bias, r)


def _bn_module(x, scale, bias, mean, var, epsilon, momentum, training):
    """``F.batch_norm``: one fused kernel, identical to ``nn.BatchNorm`` (torch momentum = 1 - ONNX's)."""
    return F.batch_norm(x, mean, var, scale, bias, training, 1.0 - momentum, epsilon)


def _bn_train(x, scale, bias, mean, var, epsilon, momentum, update_in_place):
    """Batch statistics (population variance, as ONNX) and the new running statistics
    ``running = momentum * running + (1 - momentum) * batch`` (ONNX/TF momentum). With
    ``update_in_place`` (module in training mode) the running-statistic buffers are updated too."""
    dims = [0] + list(range(2, x.dim()))
    batch_mean = torch.mean(x, dim=dims)
    batch_var = torch.var(x, dim=dims, unbiased=False)
    new_mean = mean * momentum + batch_mean.detach() * (1.0 - momentum)
    new_var = var * momentum + batch_var.detach() * (1.0 - momentum)
    if update_in_place and not mean.requires_grad and not var.requires_grad:
        with torch.no_grad():
            mean.copy_(new_mean)
            var.copy_(new_var)
    y = _bn_infer(x, scale, bias, batch_mean, batch_var, epsilon)
    return y, batch_mean, batch_var, new_mean, new_var


@register("BatchNormalization", since=1, num_outputs=None, uses_training=True)
def batch_normalization_v1(
    x, scale, bias, mean, var, *, epsilon: float = 1e-5, momentum: float = 0.9, is_test: int = 0,
    spatial: int = 1, consumed_inputs=None, training: bool = False, _outputs: int = 1,
):
    """Opsets 1-13: training mode when the node asks for the extra outputs (or the module trains)."""
    if _outputs == 1:
        return (_bn_module(x, scale, bias, mean, var, epsilon, momentum, training),)
    y, bmean, bvar, new_mean, new_var = _bn_train(x, scale, bias, mean, var, epsilon, momentum, training)
    return (y, new_mean, new_var, bmean, bvar)[:_outputs]


@register("BatchNormalization", since=14, num_outputs=None, uses_training=True)
def batch_normalization(
    x: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    *,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    training_mode: int | None = None,
    training: bool = False,
    _outputs: int = 1,
):
    """With one output the module's mode decides, with PyTorch/TF semantics, whatever
    ``training_mode`` the file holds (exporters write the mode the model was exported in, an
    artefact): in ``model.train()`` the batch statistics normalize ``x`` and the moving statistics
    (buffers) are updated in place, ``moving = momentum * moving + (1 - momentum) * batch``, with the
    unbiased batch variance as ``nn.BatchNorm`` and TF's fused batch norm do; ``model.eval()`` (and a
    frozen batch norm, see ``graphdnn.freeze``) normalizes with the moving statistics. A node that
    asks for the running-statistic outputs follows the ONNX specification of ``training_mode``
    (population variance; outputs 2 and 3 are the new running statistics)."""
    if _outputs == 1:
        return (_bn_module(x, scale, bias, mean, var, epsilon, momentum, training),)
    training = training if training_mode is None else bool(training_mode)
    if not training:
        y = _bn_infer(x, scale, bias, mean, var, epsilon)
        return (y, mean, var)[:_outputs]
    y, _, _, new_mean, new_var = _bn_train(x, scale, bias, mean, var, epsilon, momentum, training)
    return (y.to(x.dtype), new_mean.to(mean.dtype), new_var.to(var.dtype))[:_outputs]


def _stash(x: torch.Tensor, stash_type: int) -> torch.Tensor:
    dtype = dtype_from_onnx(stash_type)
    return x.to(dtype) if x.dtype != dtype and x.dtype.is_floating_point else x


@register("LayerNormalization", since=17, num_outputs=None)
def layer_normalization(
    x: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    axis: int = -1,
    epsilon: float = 1e-5,
    stash_type: int = 1,
    _outputs: int = 1,
):
    """Outputs: Y, Mean, InvStdDev (statistics keep the normalized dims as size 1)."""
    axis = norm_axis(axis, x.dim())
    normalized = tuple(x.shape[axis:])
    if (_outputs == 1 and x.dtype == torch.float32 and stash_type == 1 and tuple(scale.shape) == normalized
            and (bias is None or tuple(bias.shape) == normalized)):
        return (F.layer_norm(x, normalized, scale, bias, epsilon),)  # one kernel, as nn.LayerNorm
    dims = list(range(axis, x.dim()))
    xs = _stash(x, stash_type)
    mean = torch.mean(xs, dim=dims, keepdim=True)
    var = torch.mean((xs - mean) ** 2, dim=dims, keepdim=True)
    inv_std = torch.rsqrt(var + epsilon)
    y = ((xs - mean) * inv_std).to(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return (y.to(x.dtype), mean, inv_std)[:_outputs]


@register("RMSNormalization", since=23)
def rms_normalization(
    x: torch.Tensor, scale: torch.Tensor, *, axis: int = -1, epsilon: float = 1e-5, stash_type: int = 1
) -> torch.Tensor:
    axis = norm_axis(axis, x.dim())
    xs = _stash(x, stash_type)
    ms = torch.mean(xs * xs, dim=list(range(axis, x.dim())), keepdim=True)
    return ((xs * torch.rsqrt(ms + epsilon)).to(x.dtype) * scale).to(x.dtype)


@register("InstanceNormalization", since=1)
def instance_normalization(
    x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, *, epsilon: float = 1e-5
) -> torch.Tensor:
    dims = list(range(2, x.dim()))
    mean = torch.mean(x, dim=dims, keepdim=True)
    var = torch.var(x, dim=dims, keepdim=True, unbiased=False)
    r = x.dim()
    return (x - mean) / torch.sqrt(var + epsilon) * _per_channel(scale, r) + _per_channel(bias, r)


def _group_norm(x, scale, bias, epsilon, num_groups, per_group: bool, stash_type: int = 1):
    n, c = x.shape[0], x.shape[1]
    xs = _stash(x, stash_type).reshape(n, num_groups, -1)
    mean = torch.mean(xs, dim=-1, keepdim=True)
    var = torch.var(xs, dim=-1, keepdim=True, unbiased=False)
    y = ((xs - mean) / torch.sqrt(var + epsilon)).reshape(x.shape).to(x.dtype)
    if per_group:
        scale = scale.repeat_interleave(c // num_groups)
        bias = bias.repeat_interleave(c // num_groups)
    r = x.dim()
    return y * _per_channel(scale, r) + _per_channel(bias, r)


@register("GroupNormalization", since=18)
def group_normalization_v18(x, scale, bias, *, epsilon: float = 1e-5, num_groups: int) -> torch.Tensor:
    """Opset 18: scale and bias have one value per group."""
    return _group_norm(x, scale, bias, epsilon, num_groups, per_group=True)


@register("GroupNormalization", since=21)
def group_normalization(
    x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, *, epsilon: float = 1e-5, num_groups: int,
    stash_type: int = 1,
) -> torch.Tensor:
    """Opset 21: scale and bias have one value per channel."""
    return _group_norm(x, scale, bias, epsilon, num_groups, per_group=False, stash_type=stash_type)


@register("LpNormalization", since=1)
def lp_normalization(x: torch.Tensor, *, axis: int = -1, p: int = 2) -> torch.Tensor:
    norm = torch.linalg.vector_norm(x, ord=p, dim=axis, keepdim=True)
    return torch.where(norm == 0, torch.zeros_like(x), x / norm)


@register("MeanVarianceNormalization", since=9)
def mean_variance_normalization(x: torch.Tensor, *, axes=None) -> torch.Tensor:
    dims = list(axes) if axes is not None else [0, 2, 3]
    mean = torch.mean(x, dim=dims, keepdim=True)
    var = torch.mean((x - mean) ** 2, dim=dims, keepdim=True)
    return (x - mean) / (torch.sqrt(var) + 1e-9)


@register("LRN", since=1)
def lrn(x: torch.Tensor, *, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, size: int) -> torch.Tensor:
    """Sum of squares over channels ``[c - floor((size-1)/2), c + ceil((size-1)/2)]``."""
    front, back = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = (x * x).transpose(1, -1)
    padded = F.pad(sq, [front + 1, back])  # one extra leading zero for the cumulative difference
    cs = torch.cumsum(padded, dim=-1)
    window = (cs[..., size:] - cs[..., :-size]).transpose(1, -1)
    return x / (bias + alpha / size * window) ** beta
