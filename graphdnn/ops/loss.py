"""Losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (ONNX semantics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from graphdnn.ops.registry import register

_NO_IGNORE = -(2**62)  # a label value that never occurs


def _nll(log_prob: torch.Tensor, target: torch.Tensor, weight, ignore_index, reduction: str) -> torch.Tensor:
    """``-input[n, target[n], d...] * weight[target]``; ``mean`` divides by the summed weights of the
    non-ignored targets, as ONNX (and torch) do."""
    work = log_prob if log_prob.dtype in (torch.float32, torch.float64) else log_prob.float()
    w = weight.to(work.dtype) if weight is not None else None
    ignore = _NO_IGNORE if ignore_index is None else int(ignore_index)
    loss = F.nll_loss(work, target.to(torch.int64), weight=w, ignore_index=ignore, reduction=reduction)
    return loss.to(log_prob.dtype)


@register("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    return _nll(input, target, weight, ignore_index, reduction)


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
    """Outputs: the loss and (optionally) the log-probabilities."""
    log_prob = torch.log_softmax(scores, dim=1)
    loss = _nll(log_prob, labels, weights, ignore_index, reduction)
    return (loss, log_prob)[:_outputs]
