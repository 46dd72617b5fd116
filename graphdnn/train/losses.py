"""Losses and metrics by name (TensorFlow's names first, Keras aliases accepted)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from graphdnn.errors import InputError

__all__ = ["LossFn", "MetricFn", "accuracy", "get_loss", "get_metric"]

LossFn = Callable[[Tensor, Tensor], Tensor]
MetricFn = Callable[[Tensor, Tensor], Tensor]


def sparse_softmax_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross entropy of integer ``labels`` against unnormalized ``logits`` ``(n, classes)``; floating
    labels must hold whole numbers (class indices), anything else raises ``InputError``."""
    rank = labels.dim()
    if rank != 1 and rank == logits.dim():
        raise InputError(f"sparse_softmax_cross_entropy takes one class index per sample; the labels have shape "
                         f"{list(labels.shape)} (one-hot? pass labels.argmax(-1))")
    if labels.dtype is not torch.int64:
        if labels.is_floating_point() and not bool((labels == labels.trunc()).all()):
            raise InputError("sparse_softmax_cross_entropy takes integer class labels; the labels hold fractional "
                             "values (use loss='mse' or 'sigmoid_cross_entropy' for real-valued targets)")
        labels = labels.long()
    return F.cross_entropy(logits, labels)


def sigmoid_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross entropy with logits; ``labels`` in [0, 1], same shape as ``logits``."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype).reshape(logits.shape))


def mean_squared_error(predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean of ``(predictions - targets) ** 2``."""
    return F.mse_loss(predictions, targets.to(predictions.dtype).reshape(predictions.shape))


def accuracy(outputs: Tensor, labels: Tensor) -> Tensor:
    """Fraction of correct predictions: ``in_top_k(outputs, labels, 1)`` for ``(n, classes)`` logits,
    ``outputs > 0`` against 0/1 labels for a single logit per sample."""
    shape = outputs.shape
    if len(shape) == 1 or shape[-1] == 1:
        predicted = (outputs.reshape(-1) > 0).long()
    else:
        predicted = outputs.argmax(dim=-1)
    if labels.shape != predicted.shape:
        labels = labels.reshape(predicted.shape)
    if labels.is_floating_point():  # 0./1. labels: compared as the integers they hold, as before
        labels = labels.long()
    return (predicted == labels).to(torch.float32).mean()


_LOSSES: dict[str, LossFn] = {
    "sparse_softmax_cross_entropy": sparse_softmax_cross_entropy,
    "sparse_categorical_crossentropy": sparse_softmax_cross_entropy,
    "cross_entropy": sparse_softmax_cross_entropy,
    "sigmoid_cross_entropy": sigmoid_cross_entropy,
    "binary_crossentropy": sigmoid_cross_entropy,
    "mse": mean_squared_error,
    "mean_squared_error": mean_squared_error,
}
_METRICS: dict[str, MetricFn] = {"accuracy": accuracy, "acc": accuracy}


def get_loss(loss: str | LossFn) -> LossFn:
    """The loss function called ``loss`` (or ``loss`` itself when callable)."""
    if callable(loss):
        return loss
    if loss not in _LOSSES:
        raise InputError(f"unknown loss {loss!r}; expected a callable or one of {', '.join(_LOSSES)}")
    return _LOSSES[loss]


def get_metric(metric: str | MetricFn) -> tuple[str, MetricFn]:
    """``(name, function)`` for a metric name or callable (named after its ``__name__``)."""
    if callable(metric):
        return getattr(metric, "__name__", type(metric).__name__), metric
    if metric not in _METRICS:
        raise InputError(f"unknown metric {metric!r}; expected a callable or one of {', '.join(_METRICS)}")
    return ("accuracy" if metric == "acc" else metric), _METRICS[metric]
