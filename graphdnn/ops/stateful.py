"""Stateful sequence operators of ONNX opset 27: LinearAttention (linear / gated / delta-rule
recurrences with a carried state, GQA included) and CausalConvWithState (causal depthwise 1-D
convolution with a carried tail). Both return the state to feed the next call."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from graphdnn.errors import GraphError, InputError
from graphdnn.ops._util import compute_dtype
from graphdnn.ops.registry import register

_UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def _unpack(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, H*D] -> [B, H, T, D]."""
    b, t, hd = x.shape
    if hd % heads:
        raise InputError(f"LinearAttention: last dim {hd} of shape {tuple(x.shape)} is not divisible by {heads} heads")
    return x.reshape(b, t, heads, hd // heads).transpose(1, 2)


def _per_head(x: torch.Tensor, kv_heads: int, d_k: int, name: str) -> torch.Tensor:
    """decay/beta [B, T, H_kv | H_kv*d_k | 1] -> [B, H_kv|1, T, 1|d_k]."""
    b, t, last = x.shape
    if last in (kv_heads, 1):
        return x.reshape(b, t, last, 1).transpose(1, 2)
    if last == kv_heads * d_k and name == "decay":
        return _unpack(x, kv_heads)
    raise InputError(f"LinearAttention: {name} last dim {last} must be {kv_heads}"
                     + (f" or {kv_heads * d_k}" if name == "decay" else " or 1"))


def _parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor, g: torch.Tensor | None,
              scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear attention without the delta rule and with at most a per-head scalar decay, in closed form.

    q [B, Hkv, G, T, dk], k [B, Hkv, T, dk], v [B, Hkv, T, dv], state [B, Hkv, dk, dv], g [B, Hkv, T, 1]:
    ``o_t = scale * (e^{c_t} q_t S_0 + sum_{s<=t} e^{c_t - c_s} (q_t . k_s) v_s)`` with ``c = cumsum(g)``."""
    t = q.shape[3]
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    scores = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2))  # [B, Hkv, G, T, T]
    if g is None:
        weights = torch.where(causal, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
        past = torch.matmul(q, state.unsqueeze(2))
        new_state = state + torch.matmul(k.transpose(-1, -2), v)
    else:
        c = torch.cumsum(g[..., 0], dim=-1)  # [B, Hkv, T]
        diff = c.unsqueeze(-1) - c.unsqueeze(-2)  # c_t - c_s
        neg_inf = torch.full((), float("-inf"), dtype=diff.dtype, device=diff.device)
        decay = torch.exp(torch.where(causal, diff, neg_inf)).unsqueeze(2)
        weights = scores * decay
        past = torch.exp(c).unsqueeze(2).unsqueeze(-1) * torch.matmul(q, state.unsqueeze(2))
        tail = torch.exp(c[..., -1:] - c).unsqueeze(-1)  # e^{c_T - c_s}: [B, Hkv, T, 1]
        new_state = torch.exp(c[..., -1]).unsqueeze(-1).unsqueeze(-1) * state + torch.matmul(
            k.transpose(-1, -2), tail * v)
    out = scale * (past + torch.matmul(weights, v.unsqueeze(2)))
    return out, new_state


def _recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: torch.Tensor, g: torch.Tensor | None,
               beta: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence token by token (delta rules, per-key-dimension decay); shapes as in ``_parallel``,
    ``g`` [B, Hkv, T, 1|dk], ``beta`` [B, Hkv|1, T, 1]."""
    outs = []
    for i in range(q.shape[3]):
        k_t, v_t = k[:, :, i], v[:, :, i]  # [B, Hkv, dk], [B, Hkv, dv]
        if g is not None:
            state = state * torch.exp(g[:, :, i]).unsqueeze(-1)
        if beta is not None:
            retrieved = torch.einsum("bhdm,bhd->bhm", state, k_t)
            v_t = beta[:, :, i] * (v_t - retrieved)
        state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        outs.append(torch.einsum("bhgd,bhdm->bhgm", q[:, :, :, i], state))
    out = torch.stack(outs, dim=3) if outs else q.new_zeros((*q.shape[:4], state.shape[-1]))
    return scale * out, state


@register("LinearAttention", since=27, num_outputs=2)
def linear_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    past_state: torch.Tensor | None = None,
    decay: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    *,
    q_num_heads: int,
    kv_num_heads: int,
    chunk_size: int = 64,
    scale: float = 0.0,
    update_rule: str = "gated_delta",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear attention recurrence over packed [B, T, H*D] inputs; returns (output [B, T, Hq*dv],
    present_state [B, Hkv, dk, dv]). Computed in float32 (float64 for float64 inputs)."""
    del chunk_size  # a tuning hint for chunked kernels; the result does not depend on it
    if update_rule not in _UPDATE_RULES:
        raise GraphError(f"LinearAttention: update_rule must be one of {_UPDATE_RULES}, not {update_rule!r}")
    if q_num_heads <= 0 or kv_num_heads <= 0 or q_num_heads % kv_num_heads:
        raise GraphError(f"LinearAttention: q_num_heads ({q_num_heads}) must be a positive multiple of "
                         f"kv_num_heads ({kv_num_heads})")
    gating = update_rule in ("gated", "gated_delta")
    delta = update_rule in ("delta", "gated_delta")
    if gating != (decay is not None):
        raise GraphError(f"LinearAttention: update_rule {update_rule!r} {'requires' if gating else 'forbids'} decay")
    if delta != (beta is not None):
        raise GraphError(f"LinearAttention: update_rule {update_rule!r} {'requires' if delta else 'forbids'} beta")
    work = compute_dtype(query.dtype)
    b, t, _ = query.shape
    d_k = query.shape[-1] // q_num_heads
    d_v = value.shape[-1] // kv_num_heads
    group = q_num_heads // kv_num_heads
    q = _unpack(query, q_num_heads).to(work)
    q = q.reshape(b, kv_num_heads, group, t, d_k)  # query head h reads KV head h // group
    k = _unpack(key, kv_num_heads).to(work)
    v = _unpack(value, kv_num_heads).to(work)
    g = _per_head(decay, kv_num_heads, d_k, "decay").to(work) if decay is not None else None
    bt = _per_head(beta, kv_num_heads, d_k, "beta").to(work) if beta is not None else None
    if past_state is not None:
        if tuple(past_state.shape) != (b, kv_num_heads, d_k, d_v):
            raise InputError(f"LinearAttention: past_state shape {tuple(past_state.shape)} is not "
                             f"{(b, kv_num_heads, d_k, d_v)}")
        state = past_state.to(work)
    else:
        state = torch.zeros((b, kv_num_heads, d_k, d_v), dtype=work, device=query.device)
    scale_value = float(scale) if scale else 1.0 / math.sqrt(d_k)
    if not delta and (g is None or g.shape[-1] == 1):
        out, state = _parallel(q, k, v, state, g, scale_value)
    else:
        out, state = _recurrent(q, k, v, state, g, bt, scale_value)
    output = out.reshape(b, q_num_heads, t, d_v).transpose(1, 2).reshape(b, t, q_num_heads * d_v)
    state_dtype = past_state.dtype if past_state is not None else query.dtype
    return output.to(query.dtype), state.to(state_dtype)


@register("CausalConvWithState", since=27, num_outputs=2)
def causal_conv_with_state(
    input: torch.Tensor,  # noqa: A002  (the ONNX input name)
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    past_state: torch.Tensor | None = None,
    *,
    activation: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv of [B, C, L] with kernel [C, 1, k], left-padded by ``past_state``
    [B, C, k-1] (zeros when absent); returns (output [B, C, L], the last k-1 padded positions)."""
    if activation not in ("none", "silu", "swish"):
        raise GraphError(f"CausalConvWithState: activation must be 'none', 'silu' or 'swish', not {activation!r}")
    if input.dim() != 3 or weight.dim() != 3:
        raise InputError(f"CausalConvWithState: input and weight must be rank 3, got {tuple(input.shape)} "
                         f"and {tuple(weight.shape)}")
    batch, channels, _ = input.shape
    k = weight.shape[2]
    if past_state is None:
        past_state = input.new_zeros((batch, channels, k - 1))
    padded = torch.cat([past_state.to(input.dtype), input], dim=2)
    work = compute_dtype(input.dtype)
    y = F.conv1d(padded.to(work), weight.to(work), None if bias is None else bias.to(work), groups=channels)
    if activation != "none":
        y = y * torch.sigmoid(y)
    present = padded[:, :, padded.shape[2] - (k - 1):]
    return y.to(input.dtype), present
