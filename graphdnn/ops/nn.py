"""Dropout (ONNX semantics for every opset version).

Convolution and pooling live in ``conv``, normalization in ``norm``, losses in ``loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from graphdnn.ops.registry import register
from graphdnn.ops.static import as_float


def _dropout(x: torch.Tensor, p: float, train: bool, outputs: int, mask_dtype=torch.bool):
    if not train or p == 0.0:
        return (x, torch.ones_like(x, dtype=mask_dtype))[:outputs]
    if outputs == 1:
        return (F.dropout(x, p, True),)
    mask = torch.rand_like(x, dtype=torch.float32) >= p
    return x * mask / (1.0 - p), mask.to(mask_dtype)


@register("Dropout", since=1, num_outputs=None, uses_training=True)
def dropout_v1(
    x: torch.Tensor, *, ratio: float = 0.5, is_test: int = 0, consumed_inputs=None, training: bool = False,
    _outputs: int = 1,
):
    """Opsets 1-9: an identity at inference; the mask output has the input's type (bool from 10)."""
    return _dropout(x, ratio, training, _outputs, mask_dtype=x.dtype)


@register("Dropout", since=10, num_outputs=None, uses_training=True)
def dropout_v10(x: torch.Tensor, *, ratio: float = 0.5, training: bool = False, _outputs: int = 1):
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
    """Active when the module is in training mode (``model.train()``) or ``training_mode`` is true."""
    p = 0.5 if ratio is None else as_float(ratio)
    train = training or (training_mode is not None and bool(as_float(training_mode)))
    return _dropout(x, p, train, _outputs)
