"""Transformer operators: Attention (opset 23-25), RotaryEmbedding (opset 23) and the KV-cache update
TensorScatter (opset 24)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from graphdnn.errors import GraphError
from graphdnn.ops.registry import register
from graphdnn.ops.static import dtype_from_onnx


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, S, H*D] -> [B, H, S, D]."""
    b, s, hidden = x.shape
    return x.reshape(b, s, num_heads, hidden // num_heads).transpose(1, 2)


def _neg_inf_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.full((), float("-inf"), dtype=dtype, device=allowed.device))


@register("Attention", since=23, num_outputs=None)
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    past_key: torch.Tensor | None = None,
    past_value: torch.Tensor | None = None,
    nonpad_kv_seqlen: torch.Tensor | None = None,
    *,
    is_causal: int = 0,
    kv_num_heads: int | None = None,
    q_num_heads: int | None = None,
    qk_matmul_output_mode: int = 0,
    scale: float | None = None,
    softcap: float = 0.0,
    softmax_precision: int | None = None,
    left_window_size: int = -1,
    right_window_size: int = -1,
    _outputs: int = 1,
):
    """Scaled dot-product attention with masks, KV cache, GQA, softcap and sliding windows.

    Outputs: Y, present_key, present_value, qk_matmul_output (mode 0: Q@K' scaled, 1: + bias,
    2: after softcap... as selected by ``qk_matmul_output_mode``). 3-D inputs are [B, S, H*D]."""
    rank3 = q.dim() == 3
    if rank3:
        q, k, v = _heads(q, q_num_heads), _heads(k, kv_num_heads), _heads(v, kv_num_heads)
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[3])
    root = math.sqrt(scale)
    present_key = torch.cat([past_key, k], dim=2) if past_key is not None else k
    present_value = torch.cat([past_value, v], dim=2) if past_value is not None else v
    k, v = present_key, present_value
    q_len, kv_len = q.shape[2], k.shape[2]
    bias = torch.zeros((q_len, kv_len), dtype=dtype, device=q.device)

    if attn_mask is not None and attn_mask.shape[-1] < kv_len:
        pad_value = False if attn_mask.dtype == torch.bool else float("-inf")
        attn_mask = F.pad(attn_mask, [0, kv_len - attn_mask.shape[-1]], value=pad_value)
    if attn_mask is not None:
        mask_bias = _neg_inf_bias(attn_mask, dtype) if attn_mask.dtype == torch.bool else attn_mask.to(dtype)
        bias = bias + mask_bias

    # offset of query i in the key sequence: past length, or per batch nonpad_kv_seqlen - q_len
    rows = torch.arange(q_len, device=q.device).reshape(q_len, 1)
    cols = torch.arange(kv_len, device=q.device).reshape(1, kv_len)
    if past_key is None and nonpad_kv_seqlen is not None:
        offset = (nonpad_kv_seqlen.to(torch.int64) - q_len).reshape(-1, 1, 1, 1)
    else:
        offset = past_key.shape[2] if past_key is not None else 0
    diff = rows + offset - cols  # how far key j lies behind query i
    if is_causal:
        bias = bias + _neg_inf_bias(diff >= 0, dtype)
    if left_window_size >= 0 or right_window_size >= 0:
        allowed = torch.ones_like(diff, dtype=torch.bool)
        if left_window_size >= 0:
            allowed = allowed & (diff <= left_window_size)
        if right_window_size >= 0:
            allowed = allowed & (-diff <= right_window_size)
        bias = bias + _neg_inf_bias(allowed, dtype)
    if nonpad_kv_seqlen is not None:
        keep = cols.reshape(1, 1, 1, kv_len) < nonpad_kv_seqlen.to(torch.int64).reshape(-1, 1, 1, 1)
        bias = bias + _neg_inf_bias(keep, dtype)

    heads_q, heads_kv = q.shape[1], k.shape[1]
    if heads_q != heads_kv:  # grouped-query attention
        k = k.repeat_interleave(heads_q // heads_kv, dim=1)
        v = v.repeat_interleave(heads_q // heads_kv, dim=1)

    scores = torch.matmul(q * root, k.transpose(-1, -2) * root)
    qk_out = scores
    if softcap and softcap > 0:
        scores = torch.tanh(scores / softcap) * softcap
        qk_out = scores
    with_bias = scores + bias
    if qk_matmul_output_mode == 2:
        qk_out = with_bias
    work = with_bias.to(dtype_from_onnx(softmax_precision)) if softmax_precision else with_bias
    row_max = torch.amax(work, dim=-1, keepdim=True)
    safe_max = torch.where(torch.isneginf(row_max), torch.zeros_like(row_max), row_max)
    e = torch.exp(work - safe_max)
    total = torch.sum(e, dim=-1, keepdim=True)
    probs = e / torch.where(total == 0, torch.ones_like(total), total)
    all_masked = torch.isneginf(torch.amax(bias, dim=-1, keepdim=True))
    probs = torch.where(all_masked, torch.zeros_like(probs), probs)
    if qk_matmul_output_mode == 3:
        qk_out = probs
    y = torch.matmul(probs.to(dtype), v)
    if rank3:
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
    return (y, present_key, present_value, qk_out.to(dtype))[:_outputs]


@register("RotaryEmbedding", since=23)
def rotary_embedding(
    x: torch.Tensor,
    cos_cache: torch.Tensor,
    sin_cache: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    *,
    interleaved: int = 0,
    num_heads: int = 0,
    rotary_embedding_dim: int = 0,
) -> torch.Tensor:
    """Rotates the first ``rotary_embedding_dim`` features of each head; input [B, H, S, D] or
    [B, S, H*D]."""
    shape = x.shape
    if x.dim() == 4:
        t = x.transpose(1, 2)  # [B, S, H, D]
    else:
        t = x.reshape(shape[0], shape[1], num_heads, shape[2] // num_heads)
    dim = rotary_embedding_dim or t.shape[3]
    rot, rest = t[..., :dim], t[..., dim:]
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids.to(torch.int64)], sin_cache[position_ids.to(torch.int64)]
    cos, sin = cos_cache.unsqueeze(2), sin_cache.unsqueeze(2)
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    else:
        x1, x2 = rot[..., : dim // 2], rot[..., dim // 2 :]
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    if interleaved:
        rot = torch.stack([real, imag], dim=-1).reshape(rot.shape)
    else:
        rot = torch.cat([real, imag], dim=-1)
    out = torch.cat([rot, rest], dim=-1).to(x.dtype)
    return out.transpose(1, 2) if x.dim() == 4 else out.reshape(shape)


@register("TensorScatter", since=24)
def tensor_scatter(
    past_cache: torch.Tensor,
    update: torch.Tensor,
    write_indices: torch.Tensor | None = None,
    *,
    axis: int = -2,
    mode: str = "linear",
) -> torch.Tensor:
    """Functional KV-cache write: ``present[b, ..., write_indices[b] + s, ...] = update[b, ..., s, ...]``
    along ``axis`` (never the batch axis 0) for every ``s < update.shape[axis]``; write indices default to 0
    and wrap modulo the cache length in ``circular`` mode."""
    if mode not in ("linear", "circular"):
        raise GraphError(f"TensorScatter: mode must be 'linear' or 'circular', not {mode!r}")
    axis = axis % past_cache.dim()
    if axis == 0:
        raise GraphError("TensorScatter: axis cannot be the batch axis 0")
    batch, seq = past_cache.shape[0], update.shape[axis]
    if write_indices is None:
        write_indices = torch.zeros(batch, dtype=torch.int64, device=past_cache.device)
    index = write_indices.to(torch.int64).reshape(-1, 1) + torch.arange(seq, device=past_cache.device)
    if mode == "circular":
        index = index % past_cache.shape[axis]
    shape = [1] * past_cache.dim()
    shape[0], shape[axis] = batch, seq
    index = index.reshape(shape).expand(update.shape)
    if past_cache.element_size() == 1 and past_cache.dtype.is_floating_point:  # float8: scatter the raw bytes
        return past_cache.view(torch.uint8).scatter(axis, index, update.view(torch.uint8)).view(past_cache.dtype)
    return past_cache.scatter(axis, index, update)
