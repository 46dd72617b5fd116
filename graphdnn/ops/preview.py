"""Operators of ONNX's preview domains.

* ``ai.onnx.preview``: FlexAttention (attention with user score/probability modifier bodies, passed
  as compiled modules exactly as control-flow bodies are, see ``graphdnn.ops.control``);
* ``ai.onnx.preview.training``: the optimizer steps Adagrad, Momentum and Adam, pure functions of
  their inputs (R, T, then the tensors X..., their gradients G..., their states...).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from graphdnn.errors import GraphError, InputError
from graphdnn.ops.control import Body, _results
from graphdnn.ops.registry import register
from graphdnn.ops.static import dtype_from_onnx

PREVIEW_DOMAIN = "ai.onnx.preview"
TRAINING_DOMAIN = "ai.onnx.preview.training"


# ------------------------------------------------------------------------------------------------
# FlexAttention
# ------------------------------------------------------------------------------------------------
def _softmax_dtype(dtype: torch.dtype, softmax_precision: int | None) -> torch.dtype:
    """``softmax_precision`` when given, else float32 for types narrower than 4 bytes, else the input type."""
    if softmax_precision is not None:
        return dtype_from_onnx(softmax_precision)
    return torch.float32 if dtype.itemsize < 4 else dtype


def _modify(body: Body | None, value: torch.Tensor, captured: list[Any]) -> torch.Tensor:
    if body is None:
        return value
    return _results(body, body(value, *captured))[0].to(value.dtype)


@register("FlexAttention", since=1, domain=PREVIEW_DOMAIN)
def flex_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *captured: Any,
    scale: float | None = None,
    softmax_precision: int | None = None,
    score_mod: Body | None = None,
    prob_mod: Body | None = None,
    _captures: int = 0,
) -> torch.Tensor:
    """``softmax(score_mod((Q @ K^T) * scale)) -> prob_mod -> @ V`` on [B, H, L, E] inputs, with GQA
    (query head h reads K/V head h // (Hq / Hkv)); the modifiers run in the softmax precision."""
    outer = list(captured[len(captured) - _captures:]) if _captures else []
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise InputError(f"FlexAttention: inputs must be rank 4, got Q {tuple(q.shape)}, K {tuple(k.shape)}, "
                         f"V {tuple(v.shape)}")
    heads_q, heads_kv = q.shape[1], k.shape[1]
    if heads_q != heads_kv:
        if heads_q % heads_kv:
            raise InputError(f"FlexAttention: {heads_q} query heads are not a multiple of {heads_kv} K/V heads")
        k = k.repeat_interleave(heads_q // heads_kv, dim=1)
        v = v.repeat_interleave(heads_q // heads_kv, dim=1)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[3])
    # sqrt(scale) rounded to float32, then to Q's type, as ONNX's reference computes it
    root = float(torch.tensor(math.sqrt(scale), dtype=torch.float32).to(q.dtype))
    work = _softmax_dtype(q.dtype, softmax_precision)
    scores = torch.matmul(q * root, (k * root).transpose(-1, -2)).to(work)
    scores = _modify(score_mod, scores, outer)
    probs = torch.softmax(scores, dim=-1)
    probs = _modify(prob_mod, probs, outer)
    return torch.matmul(probs, v.to(work)).to(v.dtype)


# ------------------------------------------------------------------------------------------------
# Optimizer steps (ai.onnx.preview.training)
# ------------------------------------------------------------------------------------------------
def _groups(tensors: tuple[torch.Tensor, ...], per_tensor: int, op: str) -> list[tuple[torch.Tensor, ...]]:
    """[(X_i, G_i, state_i...)] from the flat X..., G..., states... list."""
    if not tensors or len(tensors) % per_tensor:
        raise InputError(f"{op}: expected R, T and a multiple of {per_tensor} tensors, got {len(tensors)} tensors")
    n = len(tensors) // per_tensor
    return [tuple(tensors[i + j * n] for j in range(per_tensor)) for i in range(n)]


def _flatten(results: list[tuple[torch.Tensor, ...]], outputs: int) -> tuple[torch.Tensor, ...]:
    """Per-tensor (X_new, state_new...) tuples -> X_new..., state_new... (the ONNX output order)."""
    return tuple(r[j] for j in range(len(results[0])) for r in results)[:outputs]


def _scalar(value: torch.Tensor) -> torch.Tensor:
    return value.reshape(()).to(torch.float64)


@register("Adagrad", since=1, domain=TRAINING_DOMAIN, num_outputs=None)
def adagrad(r: torch.Tensor, t: torch.Tensor, *tensors: torch.Tensor, decay_factor: float = 0.0,
            epsilon: float = 1e-6, norm_coefficient: float = 0.0, _outputs: int = 2) -> tuple[torch.Tensor, ...]:
    """One ADAGRAD step: inputs R, T, X..., G..., H...; outputs X_new..., H_new..."""
    rate = _scalar(r) / (1 + _scalar(t) * decay_factor)
    results = []
    for x, g, h in _groups(tensors, 3, "Adagrad"):
        g_reg = norm_coefficient * x + g
        h_new = h + g_reg * g_reg
        x_new = x - rate.to(x.dtype) * g_reg / (torch.sqrt(h_new) + epsilon)
        results.append((x_new.to(x.dtype), h_new.to(h.dtype)))
    return _flatten(results, _outputs)


@register("Momentum", since=1, domain=TRAINING_DOMAIN, num_outputs=None)
def momentum(r: torch.Tensor, t: torch.Tensor, *tensors: torch.Tensor, alpha: float, beta: float, mode: str,
             norm_coefficient: float, _outputs: int = 2) -> tuple[torch.Tensor, ...]:
    """One step of SGD with standard or Nesterov momentum: inputs R, T, X..., G..., V...; outputs
    X_new..., V_new... (the gradient's coefficient is 1 instead of ``beta`` while T is 0)."""
    if mode not in ("standard", "nesterov"):
        raise GraphError(f"Momentum: mode must be 'standard' or 'nesterov', not {mode!r}")
    started = (t.reshape(()) > 0).to(torch.float64)
    results = []
    for x, g, v in _groups(tensors, 3, "Momentum"):
        rate, b = _scalar(r).to(x.dtype), (1 + (beta - 1) * started).to(x.dtype)
        g_reg = norm_coefficient * x + g
        v_new = alpha * v + b * g_reg
        step = v_new if mode == "standard" else g_reg + alpha * v_new
        results.append(((x - rate * step).to(x.dtype), v_new.to(v.dtype)))
    return _flatten(results, _outputs)


@register("Adam", since=1, domain=TRAINING_DOMAIN, num_outputs=None)
def adam(r: torch.Tensor, t: torch.Tensor, *tensors: torch.Tensor, alpha: float = 0.9, beta: float = 0.999,
         epsilon: float = 1e-6, norm_coefficient: float = 0.0, norm_coefficient_post: float = 0.0,
         _outputs: int = 3) -> tuple[torch.Tensor, ...]:
    """One Adam step: inputs R, T, X..., G..., V..., H...; outputs X_new..., V_new..., H_new...
    (bias correction ``sqrt(1 - beta^T) / (1 - alpha^T)`` applies from T = 1 on)."""
    steps = _scalar(t)
    safe = torch.where(steps > 0, steps, torch.ones_like(steps))
    corrected = _scalar(r) * torch.sqrt(1 - beta ** safe) / (1 - alpha ** safe)
    rate = torch.where(steps > 0, corrected, _scalar(r))
    results = []
    for x, g, v, h in _groups(tensors, 4, "Adam"):
        g_reg = norm_coefficient * x + g
        v_new = alpha * v + (1 - alpha) * g_reg
        h_new = beta * h + (1 - beta) * (g_reg * g_reg)
        x_new = x - rate.to(x.dtype) * (v_new / (torch.sqrt(h_new) + epsilon))
        results.append((((1 - norm_coefficient_post) * x_new).to(x.dtype), v_new.to(v.dtype), h_new.to(h.dtype)))
    return _flatten(results, _outputs)
