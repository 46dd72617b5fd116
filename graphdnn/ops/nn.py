"""Neural-network operators: convolution, pooling, normalization, dropout, losses (ONNX semantics)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from graphdnn.ops.registry import register
from graphdnn.ops.static import as_float, as_ints

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _same_pads(in_sizes, kernel, strides, dilations, auto_pad: str) -> list[int]:
    """ONNX pads ``[b1..bn, e1..en]`` for SAME_UPPER / SAME_LOWER (TF's SAME is SAME_UPPER)."""
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(big if auto_pad == "SAME_LOWER" else small)
        ends.append(small if auto_pad == "SAME_LOWER" else big)
    return begins + ends


def _spatial_args(x, kernel_shape, strides, dilations, pads, auto_pad):
    n = x.dim() - 2
    kernel = as_ints(kernel_shape)
    strides = as_ints(strides) if strides else [1] * n
    dilations = as_ints(dilations) if dilations else [1] * n
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(list(x.shape[2:]), kernel, strides, dilations, auto_pad)
    elif auto_pad == "VALID" or not pads:
        pads = [0] * (2 * n)
    return n, kernel, strides, dilations, as_ints(pads)


def _pad_input(x, pads, n, value=0.0):
    """Explicit F.pad for asymmetric pads; returns (x, symmetric_padding or None)."""
    begins, ends = pads[:n], pads[n:]
    if begins == ends:
        return x, begins
    torch_pads: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        torch_pads += [b, e]
    return F.pad(x, torch_pads, value=value), [0] * n


@register("Conv", since=1)
def conv(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations=None,
    group: int = 1,
    kernel_shape=None,
    pads=None,
    strides=None,
) -> torch.Tensor:
    kernel_shape = kernel_shape or list(w.shape[2:])
    n, _, strides, dilations, pads = _spatial_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    x, padding = _pad_input(x, pads, n)
    return _CONV[n](x, w, b, strides, padding, dilations, group)


@register("MaxPool", since=1, num_outputs=None)
def max_pool(
    x: torch.Tensor,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations=None,
    kernel_shape,
    pads=None,
    storage_order: int = 0,
    strides=None,
    _outputs: int = 1,
):
    n, kernel, strides, dilations, pads = _spatial_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    symmetric = pads[:n] == pads[n:] and all(p <= k // 2 for p, k in zip(pads[:n], kernel))
    if symmetric:
        padding = pads[:n]
    else:
        x, padding = _pad_input(x, pads, n, value=float("-inf"))
    if _outputs == 1:
        return (_MAXPOOL[n](x, kernel, strides, padding, dilations, bool(ceil_mode)),)
    y, idx = _MAXPOOL[n](x, kernel, strides, padding, dilations, bool(ceil_mode), return_indices=True)
    if storage_order:  # column-major flat indices
        spatial = list(x.shape[2:])
        coords = []
        rest = idx
        for size in reversed(spatial):
            coords.append(rest % size)
            rest = rest // size
        coords.reverse()
        flat = torch.zeros_like(idx)
        stride = 1
        for c, size in zip(coords, spatial):
            flat = flat + c * stride
            stride *= size
        idx = flat
    offsets = torch.arange(x.shape[0] * x.shape[1], device=x.device).reshape(x.shape[0], x.shape[1])
    per_channel = math.prod(x.shape[2:])
    idx = idx + (offsets * per_channel).reshape(offsets.shape + (1,) * n)
    return y, idx


@register("AveragePool", since=1)
def average_pool(
    x: torch.Tensor,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    dilations=None,
    kernel_shape,
    pads=None,
    strides=None,
) -> torch.Tensor:
    n, kernel, strides, dilations, pads = _spatial_args(x, kernel_shape, strides, dilations, pads, auto_pad)
    if any(d != 1 for d in dilations):
        return _dilated_avg_pool(x, n, kernel, strides, dilations, pads, ceil_mode, count_include_pad)
    symmetric = pads[:n] == pads[n:] and all(p <= k // 2 for p, k in zip(pads[:n], kernel))
    if symmetric:
        return _AVGPOOL[n](x, kernel, strides, pads[:n], bool(ceil_mode), bool(count_include_pad))
    padded, _ = _pad_input(x, pads, n)
    total = _AVGPOOL[n](padded, kernel, strides, 0, bool(ceil_mode), True) * math.prod(kernel)
    if count_include_pad:
        ones = _pad_input(torch.ones_like(x[:1, :1]), pads, n, value=1.0)[0]
    else:
        ones = _pad_input(torch.ones_like(x[:1, :1]), pads, n, value=0.0)[0]
    count = _AVGPOOL[n](ones, kernel, strides, 0, bool(ceil_mode), True) * math.prod(kernel)
    return total / count


def _dilated_avg_pool(x, n, kernel, strides, dilations, pads, ceil_mode, count_include_pad):
    padded, _ = _pad_input(x, pads, n) if any(pads) else (x, None)
    mask = torch.ones_like(x[:1, :1])
    mask = _pad_input(mask, pads, n, value=1.0 if count_include_pad else 0.0)[0] if any(pads) else mask
    channels = x.shape[1]
    weight = torch.ones((channels, 1, *kernel), dtype=x.dtype, device=x.device)
    total = _CONV[n](padded, weight, None, strides, 0, dilations, channels)
    count = _CONV[n](mask, weight[:1], None, strides, 0, dilations, 1)
    return total / count


@register("GlobalAveragePool", since=1)
def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    return torch.mean(x, dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool", since=1)
def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


@register("BatchNormalization", since=9, num_outputs=None, uses_training=True)
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
    """In training the batch statistics normalize ``x`` and the moving statistics (module buffers)
    are updated in place: ``moving = momentum * moving + (1 - momentum) * batch`` (ONNX/TF momentum),
    with the unbiased batch variance, as PyTorch's BatchNorm does. Without a ``training_mode``
    attribute the module's mode (``model.train()``/``eval()``) decides; with one, it is forced."""
    train = training if training_mode is None else bool(training_mode)
    y = F.batch_norm(x, mean, var, scale, bias, train, 1.0 - momentum, epsilon)
    if _outputs == 1:
        return (y,)
    return (y, mean, var)


@register("Dropout", since=7, num_outputs=None, uses_training=True)
def dropout_v7(x: torch.Tensor, *, ratio: float = 0.5, training: bool = False, _outputs: int = 1):
    return _dropout(x, ratio, training, _outputs)


@register("Dropout", since=12, num_outputs=None, uses_training=True, static_inputs=(1, 2))
def dropout(
    x: torch.Tensor,
    ratio=None,
    training_mode=None,
    *,
    seed: int | None = None,
    training: bool = False,
    _outputs: int = 1,
):
    """Active in the module's training mode (``model.train()``) unless ``training_mode`` is given."""
    p = 0.5 if ratio is None else as_float(ratio)
    train = training if training_mode is None else bool(as_float(training_mode))
    return _dropout(x, p, train, _outputs)


def _dropout(x: torch.Tensor, p: float, train: bool, outputs: int):
    if not train or p == 0.0:
        return (x,) if outputs == 1 else (x, torch.ones_like(x, dtype=torch.bool))
    if outputs == 1:
        return (F.dropout(x, p, True),)
    mask = torch.rand_like(x) >= p
    return x * mask / (1.0 - p), mask


@register("SoftmaxCrossEntropyLoss", since=12, num_outputs=None)
def softmax_cross_entropy_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    ignore_index: int | None = None,
    reduction: str = "mean",
    _outputs: int = 1,
):
    log_prob = torch.log_softmax(scores, dim=1)
    ignore = -100 if ignore_index is None else ignore_index
    if ignore_index is None and labels.dtype != torch.int64:
        labels = labels.long()
    loss = F.nll_loss(log_prob, labels.long(), weight=weights, ignore_index=ignore, reduction=reduction)
    return (loss,) if _outputs == 1 else (loss, log_prob)
