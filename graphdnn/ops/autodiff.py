"""ONNX ``Gradient`` (ai.onnx.preview.training): derivatives of one tensor of the graph with respect
to others, computed by torch autograd on the region of the same graph between them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from graphdnn.ops.registry import register

TRAINING_DOMAIN = "ai.onnx.preview.training"


def _region(op: Any) -> tuple[list[str], list[str]]:
    return [*op.attrs["xs"], *(op.attrs.get("zs") or [])], [op.attrs["y"]]


@register("Gradient", since=1, domain=TRAINING_DOMAIN, num_outputs=None, region=_region)
def gradient(*inputs: torch.Tensor, xs: list[str], y: str, zs: list[str] | None = None,
             _region: Callable[..., Any], _outputs: int = 1) -> tuple[torch.Tensor, ...]:
    """``d y / d x`` for each tensor named in ``xs`` (summed over ``y``'s elements, as ONNX does),
    with the inputs named in ``xs`` then ``zs`` fed to the region that computes ``y``."""
    n = len(xs)
    with torch.inference_mode(False), torch.enable_grad():  # differentiates even inside inference mode
        leaves = [t.clone().requires_grad_(True) for t in inputs[:n]]
        rest = [t.clone() if isinstance(t, torch.Tensor) and t.is_inference() else t for t in inputs[n:]]
        out = _region(*leaves, *rest)
        grads = torch.autograd.grad(out, leaves, grad_outputs=torch.ones_like(out), allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))[:_outputs]
