"""MultiHeadAttention (Keras's EinsumDense projections, Keras-named ``mha/query/kernel``...), Attention
(dot and concat scores, ``use_scale``) and AdditiveAttention, with ``use_causal_mask`` and Keras masks.

The masks are Keras's: for MultiHeadAttention the query's, value's and key's masks (the inputs' Keras masks,
or ``query_mask``/``value_mask``/``key_mask``) and ``attention_mask`` are ANDed into a (batch, Tq, Tv) mask
and a masked score becomes -1e9 before the softmax; for Attention/AdditiveAttention the value mask (and the
causal mask) subtracts 1e9 from masked scores and masked query rows of the output are 0."""

from __future__ import annotations

import math

import numpy as np
from graphdnn.converters.keras_layers import KerasLayer, reduce, translates

from graphdnn.graph import Tensor

_NEG = -1e9  # Keras's large negative number for masked float32 logits


def _causal(layer: KerasLayer, scores: Tensor, tq: int, tk: int) -> Tensor:
    """Add Keras's large negative number above the diagonal (query i sees keys <= i)."""
    mask = np.triu(np.full((tq, tk), _NEG, np.float32), k=1)
    return layer.op("Add", [scores, layer.fconst(mask, "causal_mask", scores)], name="causal")


def _probabilities(layer: KerasLayer, scores: Tensor, causal: bool, tq: int, tk: int) -> Tensor:
    """The attention weights of ``scores`` (keys on the last axis): the causal mask when asked, softmax over
    the keys, then the layer's ``dropout``."""
    if causal:
        scores = _causal(layer, scores, tq, tk)
    probs = layer.op("Softmax", [scores], {"axis": -1})
    rate = float(layer.cfg.get("dropout", 0.0))
    if rate:
        probs = layer.op("Dropout", [probs, layer.fconst(rate, "rate", probs)])
    return probs


def _kwargs_check(layer: KerasLayer) -> bool:
    if layer.kwargs.get("return_attention_scores"):
        raise layer.unsupported("return_attention_scores")
    return bool(layer.kwargs.get("use_causal_mask"))


@translates("MultiHeadAttention")
def multi_head_attention(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    causal = _kwargs_check(layer)
    query = xs[0]
    value = xs[1] if len(xs) > 1 else layer.kwargs.get("value")  # Keras 2 files pass value by keyword
    if not isinstance(value, Tensor):
        raise layer.unsupported("a MultiHeadAttention call without a value tensor")
    key = layer.kwargs.get("key_tensor") or (xs[2] if len(xs) > 2 else value)
    if len(query.shape) != 3 or layer.cfg.get("attention_axes") not in (None, [1], (1,)):
        raise layer.unsupported("MultiHeadAttention over inputs that are not (batch, time, features)")
    heads, key_dim = int(layer.cfg["num_heads"]), int(layer.cfg["key_dim"])
    value_dim = int(layer.cfg.get("value_dim") or key_dim)
    bias = bool(layer.cfg.get("use_bias", True))

    def project(x: Tensor, part: str, dim: int) -> Tensor:
        kernel = layer.var(f"{part}/kernel", (int(x.shape[-1]), heads, dim))
        y = layer.op("Einsum", [x, kernel], {"equation": "abc,cde->abde"}, part)
        return layer.op("Add", [y, layer.var(f"{part}/bias", (heads, dim))], name=f"{part}_bias") if bias else y

    q = project(query, "query", key_dim)
    k = project(key, "key", key_dim)
    v = project(value, "value", value_dim)
    q = layer.op("Mul", [q, layer.fconst(1.0 / math.sqrt(key_dim), "scale", q)], name="scale_query")
    scores = layer.op("Einsum", [k, q], {"equation": "aecd,abcd->acbe"}, "scores")
    mask = _mha_mask(layer, query, key, value, causal)
    if mask is not None:  # Keras's masked softmax: a masked score is replaced by -1e9
        heads_axis = layer.op("Unsqueeze", [mask, layer.const([1], "heads_axis", "int64")], name="attention_mask")
        scores = layer.op("Where", [heads_axis, scores, layer.fconst(_NEG, "large_negative", scores)], name="masked")
    probs = _probabilities(layer, scores, causal and mask is None, int(query.shape[1]), int(key.shape[1]))
    out = layer.op("Einsum", [probs, v], {"equation": "acbe,aecd->abcd"}, "context")
    out_shape = layer.cfg.get("output_shape") or query.shape[-1]
    out_shape = list(out_shape) if isinstance(out_shape, (list, tuple)) else [out_shape]
    if len(out_shape) != 1:
        raise layer.unsupported("a MultiHeadAttention with a multi-dimensional output_shape")
    out_dim = int(out_shape[0])
    kernel = layer.var("attention_output/kernel", (heads, value_dim, out_dim))
    y = layer.op("Einsum", [out, kernel], {"equation": "abcd,cde->abe"}, "attention_output")
    return layer.op("Add", [y, layer.var("attention_output/bias", (out_dim,))], name="output_bias") if bias else y


def _bool(layer: KerasLayer, t: Tensor) -> Tensor:
    return t if t.dtype == "bool" else layer.op("Cast", [t], {"to": 9}, "as_bool")


def _mha_mask(layer: KerasLayer, query: Tensor, key: Tensor, value: Tensor, causal: bool) -> Tensor | None:
    """MultiHeadAttention's (batch, Tq, Tv) boolean mask from the Keras masks, ``attention_mask`` and the
    causal mask, as Keras's ``_compute_attention_mask`` ANDs them (None when nothing is masked)."""
    kw = layer.kwargs
    q_mask = kw.get("query_mask") if isinstance(kw.get("query_mask"), Tensor) else layer.mask(0)
    v_mask = kw.get("value_mask") if isinstance(kw.get("value_mask"), Tensor) else layer.mask(1)
    k_mask = kw.get("key_mask") if isinstance(kw.get("key_mask"), Tensor) else layer.mask(2)
    parts = []
    if q_mask is not None:
        parts.append(layer.op("Unsqueeze", [_bool(layer, q_mask), layer.const([-1], "query_axis", "int64")],
                              name="query_mask"))
    for m, what in ((v_mask, "value_mask"), (k_mask, "key_mask")):
        if m is not None:
            parts.append(layer.op("Unsqueeze", [_bool(layer, m), layer.const([-2], "key_axis", "int64")], name=what))
    explicit = kw.get("attention_mask")
    if isinstance(explicit, Tensor):
        parts.append(_bool(layer, explicit))
    elif explicit is not None:
        raise layer.unsupported("an attention_mask that is not a layer output")
    if not parts:
        return None
    if causal:
        tq, tk = int(query.shape[1]), int(key.shape[1])
        parts.append(layer.const(np.tril(np.ones((tq, tk), bool)), "causal_mask", "bool"))
    mask = parts[0]
    for p in parts[1:]:
        mask = layer.op("And", [mask, p], name="mask")
    return mask


def _pairwise_tanh(layer: KerasLayer, q: Tensor, k: Tensor, scale: Tensor | None) -> Tensor:
    """``tanh(scale * (q[:, :, None] + k[:, None]))`` of shape (N, Tq, Tk, D)."""
    qe = layer.op("Unsqueeze", [q, layer.const([2], "axes_q", "int64")])
    ke = layer.op("Unsqueeze", [k, layer.const([1], "axes_k", "int64")])
    s = layer.op("Add", [qe, ke])
    return layer.op("Tanh", [s if scale is None else layer.op("Mul", [s, scale])])


@translates("Attention", "AdditiveAttention")
def attention(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    causal = _kwargs_check(layer)
    q, v = xs[0], xs[1]
    k = xs[2] if len(xs) > 2 else v
    mode = "concat" if layer.cls == "AdditiveAttention" else str(layer.cfg.get("score_mode", "dot"))
    use_scale = bool(layer.cfg.get("use_scale", layer.cls == "AdditiveAttention"))
    if layer.cls == "AdditiveAttention":
        t = _pairwise_tanh(layer, q, k, None)
        if use_scale:
            t = layer.op("Mul", [t, layer.var("scale", (int(q.shape[-1]),))])
        scores = reduce(layer, "ReduceSum", t, [3], False, "scores")
    elif mode == "dot":
        scores = layer.op("MatMul", [q, layer.op("Transpose", [k], {"perm": [0, 2, 1]})], name="scores")
        if use_scale:
            scores = layer.op("Mul", [scores, layer.var("scale", ())])
    elif mode == "concat":
        t = _pairwise_tanh(layer, q, k, layer.var("scale", ()) if use_scale else None)
        scores = layer.op("Mul", [reduce(layer, "ReduceSum", t, [3], False), layer.var("concat_score_weight", ())],
                          name="scores")
    else:
        raise layer.unsupported(f"score_mode {mode!r}")
    q_mask, v_mask = layer.mask(0), layer.mask(1)
    if v_mask is not None:  # Keras: a masked score (a masked value, or above the diagonal) loses 1e9
        keys = layer.op("Unsqueeze", [_bool(layer, v_mask), layer.const([1], "query_axis", "int64")], name="v_mask")
        if causal:
            tq, tk = int(q.shape[1]), int(k.shape[1])
            keys = layer.op("And", [keys, layer.const(np.tril(np.ones((tq, tk), bool)), "causal_mask", "bool")])
        shifted = layer.op("Sub", [scores, layer.fconst(-_NEG, "max_value", scores)])
        scores = layer.op("Where", [keys, scores, shifted], name="masked")
    probs = _probabilities(layer, scores, causal and v_mask is None, int(q.shape[1]), int(k.shape[1]))
    out = layer.op("MatMul", [probs, v], name="context")
    if q_mask is not None:  # masked query rows are 0
        rows = layer.op("Unsqueeze", [_bool(layer, q_mask), layer.const([-1], "row_axis", "int64")], name="q_mask")
        out = layer.op("Where", [rows, out, layer.fconst(0.0, "zero", out)], name="masked_rows")
    return out
