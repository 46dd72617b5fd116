"""Operators of the ``ai.onnx.ml`` domain: ArrayFeatureExtractor, Binarizer, LabelEncoder, TreeEnsemble.

String tensors are numpy arrays of ``str`` (object dtype) at run time, as in ``ops.strings``; TENSOR
attributes arrive as ``{"dtype", "shape", "data"}`` dicts (``ops.static.array_from_attr``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from graphdnn.errors import ArgumentTypeError, GraphError, InputError, OutOfRangeError
from graphdnn.ops.registry import register
from graphdnn.ops.static import array_from_attr, tensor_from_attr

ML_DOMAIN = "ai.onnx.ml"

Values = torch.Tensor | np.ndarray


def _is_strings(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == object


# ---------------------------------------------------------------------------------------------
# ArrayFeatureExtractor, Binarizer
# ---------------------------------------------------------------------------------------------
@register("ArrayFeatureExtractor", since=1, domain=ML_DOMAIN)
def array_feature_extractor(x: Values, y: torch.Tensor) -> Values:
    """``x[..., y.flatten()]``: the indices select along the last axis, a 1-D ``x`` gives ``[1, k]`` (as
    ONNX Runtime and the ONNX reference do)."""
    index = y.reshape(-1).to(torch.int64)
    if _is_strings(x):
        if x.ndim == 0:
            raise InputError("ArrayFeatureExtractor takes a tensor of rank >= 1")
        idx = index.tolist()
        if any(not 0 <= i < x.shape[-1] for i in idx):
            raise OutOfRangeError(f"ArrayFeatureExtractor: index out of range for {x.shape[-1]} features: {idx}")
        out = np.take(x, idx, axis=-1)
    else:
        if x.dim() == 0:
            raise InputError("ArrayFeatureExtractor takes a tensor of rank >= 1")
        out = x.index_select(-1, index)  # raises on an index outside [0, features)
    return out.reshape(1, -1) if out.ndim == 1 else out


@register("Binarizer", since=1, domain=ML_DOMAIN)
def binarizer(x: torch.Tensor, *, threshold: float = 0.0) -> torch.Tensor:
    """1 where ``x > threshold``, else 0, in ``x``'s dtype (NaN gives 0)."""
    return (x > threshold).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# LabelEncoder
# ---------------------------------------------------------------------------------------------
def _flat_list(x: Values) -> list:
    return x.reshape(-1).tolist()


def _lookup_python(x: Values, table: dict, nan_value: Any, default: Any) -> list:
    """The mapped value of each element of ``x`` (NaN keys match any NaN input)."""
    out = []
    for v in _flat_list(x):
        if isinstance(v, float) and math.isnan(v):
            out.append(default if nan_value is None else nan_value)
        else:
            out.append(table.get(v, default))
    return out


def _encode(x: Values, keys: Sequence, values: Sequence, default: Any, out_dtype: torch.dtype | None) -> Values:
    """Map every element of ``x`` through ``keys -> values`` (a repeated key: the last one wins), ``default``
    for the rest. ``out_dtype`` None means string output."""
    table: dict = {}
    nan_value = None
    for k, v in zip(keys, values):
        if isinstance(k, float) and math.isnan(k):
            nan_value = v
        else:
            table[k] = v
    shape = tuple(x.shape)
    if out_dtype is None:  # strings out
        return np.array(_lookup_python(x, table, nan_value, default), dtype=object).reshape(shape)
    if _is_strings(x):
        return torch.tensor(_lookup_python(x, table, nan_value, default), dtype=out_dtype).reshape(shape)
    # numbers to numbers: a sorted-key search, no per-element Python
    flat = x.reshape(-1)
    out = torch.full(flat.shape, default, dtype=out_dtype)
    if table:
        ordered = sorted(table)
        key_t = torch.tensor(ordered, dtype=x.dtype)
        val_t = torch.tensor([table[k] for k in ordered], dtype=out_dtype)
        pos = torch.searchsorted(key_t, flat).clamp(max=len(ordered) - 1)
        out = torch.where(key_t[pos] == flat, val_t[pos], out)
    if nan_value is not None and x.is_floating_point():
        out = torch.where(torch.isnan(flat), torch.tensor(nan_value, dtype=out_dtype), out)
    return out.reshape(shape)


def _attr_list(value: Any) -> tuple[list, torch.dtype | None] | None:
    """(values, torch dtype or None for strings) of a keys_/values_ TENSOR attribute."""
    if value is None:
        return None
    array = array_from_attr(value)
    if _is_strings(array):
        return array.reshape(-1).tolist(), None
    return array.reshape(-1).tolist(), array.dtype


@register("LabelEncoder", since=1, domain=ML_DOMAIN)
def label_encoder_v1(
    x: Values, *, classes_strings: Sequence[str] = (), default_int64: int = -1, default_string: str = "_Unused"
) -> Values:
    """Opset 1: strings -> their index in ``classes_strings`` (``default_int64`` if absent); int64 ->
    ``classes_strings[i]`` (``default_string`` out of range)."""
    classes = list(classes_strings)
    if _is_strings(x):
        return _encode(x, classes, list(range(len(classes))), default_int64, torch.int64)
    return _encode(x, list(range(len(classes))), classes, default_string, None)


@register("LabelEncoder", since=2, domain=ML_DOMAIN)
def label_encoder(
    x: Values,
    *,
    keys_floats: Sequence[float] | None = None,
    keys_int64s: Sequence[int] | None = None,
    keys_strings: Sequence[str] | None = None,
    keys_tensor: dict | None = None,
    values_floats: Sequence[float] | None = None,
    values_int64s: Sequence[int] | None = None,
    values_strings: Sequence[str] | None = None,
    values_tensor: dict | None = None,
    default_float: float = -0.0,
    default_int64: int = -1,
    default_string: str = "_Unused",
    default_tensor: dict | None = None,
) -> Values:
    """Map each element through the parallel ``keys_*``/``values_*`` lists (opset 4 adds ``*_tensor``);
    elements not among the keys get the default of the values' type (``default_tensor`` first, then
    ``default_float``/``default_int64``/``default_string``; for other tensor types -1 or -0.0). Float
    NaN keys match any NaN; of repeated keys the last wins. Output shape = input shape."""
    key_sets = [k for k in (keys_floats, keys_int64s, keys_strings) if k is not None]
    if keys_tensor is not None:
        key_sets.append(_attr_list(keys_tensor)[0])
    if len(key_sets) != 1:
        raise GraphError(f"LabelEncoder needs exactly one keys_* attribute, got {len(key_sets)}")
    keys = list(key_sets[0])
    choices: list[tuple[list, torch.dtype | None]] = []
    if values_floats is not None:
        choices.append((list(values_floats), torch.float32))
    if values_int64s is not None:
        choices.append((list(values_int64s), torch.int64))
    if values_strings is not None:
        choices.append((list(values_strings), None))
    if values_tensor is not None:
        choices.append(_attr_list(values_tensor))
    if len(choices) != 1:
        raise GraphError(f"LabelEncoder needs exactly one values_* attribute, got {len(choices)}")
    values, out_dtype = choices[0]
    if len(keys) != len(values):
        raise GraphError(f"LabelEncoder: {len(keys)} keys but {len(values)} values")
    if default_tensor is not None:
        default = _attr_list(default_tensor)[0][0]
    elif out_dtype is None:
        default = default_string
    elif out_dtype.is_floating_point:
        default = default_float
    else:
        default = default_int64
    if out_dtype is None and not isinstance(default, str):
        raise ArgumentTypeError(f"LabelEncoder: string values need a string default, not {default!r}")
    return _encode(x, keys, values, default, out_dtype)


# ---------------------------------------------------------------------------------------------
# TreeEnsemble
# ---------------------------------------------------------------------------------------------
_LEQ, _LT, _GTE, _GT, _EQ, _NEQ, _MEMBER = range(7)
_AVERAGE, _SUM, _MIN, _MAX = range(4)


def _member_sets(modes: list[int], membership_values: Any | None) -> list[list[float]]:
    """The member set of each BRANCH_MEMBER node, in node order: ``membership_values`` split at NaNs."""
    n_member = sum(m == _MEMBER for m in modes)
    if membership_values is None:
        if n_member:
            raise GraphError("TreeEnsemble: BRANCH_MEMBER nodes need membership_values")
        return []
    sets: list[list[float]] = [[]]
    for v in tensor_from_attr(membership_values).reshape(-1).double().tolist():
        if math.isnan(v):
            sets.append([])
        else:
            sets[-1].append(v)
    if not sets[-1]:
        sets.pop()
    if len(sets) != n_member:
        raise GraphError(f"TreeEnsemble: {n_member} BRANCH_MEMBER nodes but {len(sets)} NaN-delimited member sets")
    return sets


def _max_depth(roots: Sequence[int], true_ids: list[int], false_ids: list[int], true_leaf: list[int],
               false_leaf: list[int], n_leaves: int) -> int:
    """The most interior nodes on any root-to-leaf path (checks indices and rejects cycles)."""
    n_nodes = len(true_ids)
    depth: dict[int, int] = {}

    def visit(node: int, path: set[int]) -> int:
        if not 0 <= node < n_nodes:
            raise GraphError(f"TreeEnsemble: node index {node} out of range [0, {n_nodes})")
        if node in depth:
            return depth[node]
        if node in path:
            raise GraphError(f"TreeEnsemble: the trees have a cycle through node {node}")
        path.add(node)
        deepest = 0
        for child, is_leaf in ((true_ids[node], true_leaf[node]), (false_ids[node], false_leaf[node])):
            if is_leaf:
                if not 0 <= child < n_leaves:
                    raise GraphError(f"TreeEnsemble: leaf index {child} out of range [0, {n_leaves})")
            else:
                deepest = max(deepest, visit(child, path))
        path.discard(node)
        depth[node] = deepest + 1
        return depth[node]

    return max((visit(r, set()) for r in roots), default=0)


def _post_transform(scores: torch.Tensor, post_transform: int) -> torch.Tensor:
    """NONE (0), SOFTMAX (1), LOGISTIC (2), SOFTMAX_ZERO (3: zeros stay 0, the rest share the mass) or
    PROBIT (4: sqrt(2) * erfinv(2p - 1)) over the targets."""
    if post_transform == 0:
        return scores
    if post_transform == 1:
        return torch.softmax(scores, dim=1)
    if post_transform == 2:
        return torch.sigmoid(scores)
    if post_transform == 3:
        nonzero = scores != 0
        top = scores.masked_fill(~nonzero, float("-inf")).amax(dim=1, keepdim=True)
        e = torch.where(nonzero, torch.exp(scores - torch.where(torch.isinf(top), 0, top)), 0)
        total = e.sum(dim=1, keepdim=True)
        return torch.where(total > 0, e / torch.where(total > 0, total, 1), 0)
    if post_transform == 4:
        return math.sqrt(2.0) * torch.erfinv(2 * scores - 1)
    raise GraphError(f"TreeEnsemble: post_transform {post_transform} is not one of 0..4")


@register("TreeEnsemble", since=5, domain=ML_DOMAIN)
def tree_ensemble(
    x: torch.Tensor,
    *,
    tree_roots: Sequence[int],
    nodes_modes: dict,
    nodes_splits: dict,
    nodes_featureids: Sequence[int],
    nodes_truenodeids: Sequence[int],
    nodes_falsenodeids: Sequence[int],
    nodes_trueleafs: Sequence[int],
    nodes_falseleafs: Sequence[int],
    leaf_targetids: Sequence[int],
    leaf_weights: dict,
    n_targets: int | None = None,
    aggregate_function: int = _SUM,
    post_transform: int = 0,
    nodes_missing_value_tracks_true: Sequence[int] | None = None,
    membership_values: dict | None = None,
    nodes_hitrates: dict | None = None,
) -> torch.Tensor:
    """Evaluate the trees on ``x`` [N, F], all samples and trees at once: each step moves every
    (sample, tree) pair one level down until it reaches a leaf. A node sends a sample to its true
    branch when ``x[feature] <op> split`` holds (or, for BRANCH_MEMBER, ``x[feature]`` is in its set),
    or when the feature is NaN and ``nodes_missing_value_tracks_true`` is set. Leaf weights are
    aggregated per target (SUM, AVERAGE over the trees, MIN, MAX; a target no leaf reaches is 0),
    then ``post_transform`` applies. Output [N, n_targets] in ``x``'s dtype."""
    del nodes_hitrates  # a performance hint only
    if x.dim() != 2:
        raise InputError(f"TreeEnsemble takes an [N, F] input, not shape {list(x.shape)}")
    modes = [int(m) for m in tensor_from_attr(nodes_modes).reshape(-1).tolist()]
    splits = tensor_from_attr(nodes_splits).reshape(-1)
    weights = tensor_from_attr(leaf_weights).reshape(-1)
    n_nodes, n_leaves = len(modes), weights.numel()
    lists = (nodes_featureids, nodes_truenodeids, nodes_falsenodeids, nodes_trueleafs, nodes_falseleafs)
    if splits.numel() != n_nodes or any(len(v) != n_nodes for v in lists):
        raise GraphError("TreeEnsemble: the nodes_* attributes must all have the same length")
    if len(leaf_targetids) != n_leaves:
        raise GraphError("TreeEnsemble: leaf_targetids and leaf_weights must have the same length")
    if any(not 0 <= m <= _MEMBER for m in modes):
        raise GraphError(f"TreeEnsemble: nodes_modes must be in 0..6, got {sorted(set(modes))}")
    targets = int(n_targets) if n_targets is not None else max(leaf_targetids, default=-1) + 1
    if any(not 0 <= t < targets for t in leaf_targetids):
        raise GraphError(f"TreeEnsemble: leaf_targetids must be in [0, {targets})")
    if any(not 0 <= f < x.shape[1] for f in nodes_featureids):
        raise InputError(f"TreeEnsemble: a feature id is outside [0, {x.shape[1]})")
    depth = _max_depth(tree_roots, list(nodes_truenodeids), list(nodes_falsenodeids), list(nodes_trueleafs),
                       list(nodes_falseleafs), n_leaves)

    cmp_dtype = torch.promote_types(x.dtype, splits.dtype)
    long = torch.int64
    feature = torch.tensor(list(nodes_featureids), dtype=long)
    true_id = torch.tensor(list(nodes_truenodeids), dtype=long)
    false_id = torch.tensor(list(nodes_falsenodeids), dtype=long)
    true_leaf = torch.tensor([bool(v) for v in nodes_trueleafs])
    false_leaf = torch.tensor([bool(v) for v in nodes_falseleafs])
    missing = torch.tensor([bool(v) for v in (nodes_missing_value_tracks_true or [0] * n_nodes)])
    mode = torch.tensor(modes, dtype=long)
    split = splits.to(cmp_dtype)
    sets = _member_sets(modes, membership_values)
    n = x.shape[0]
    data = x.to(cmp_dtype)
    member_hit = None
    member_col = torch.zeros(n_nodes, dtype=long)  # node -> its column of member_hit (0 for other nodes)
    if sets:  # [N, member nodes]: whether each sample's feature is in each member node's set
        member_nodes = [i for i, m in enumerate(modes) if m == _MEMBER]
        member_col[member_nodes] = torch.arange(len(member_nodes))
        member_hit = torch.stack([
            torch.isin(data[:, nodes_featureids[i]], torch.tensor(s, dtype=torch.float64).to(cmp_dtype))
            for i, s in zip(member_nodes, sets)], dim=1)
    node = torch.tensor(list(tree_roots), dtype=long).expand(n, -1).contiguous()  # [N, trees]
    leaf = torch.full_like(node, -1)
    for _ in range(depth):
        active = leaf < 0
        v = data.gather(1, feature[node])
        s = split[node]
        outcomes = [v <= s, v < s, v >= s, v > s, v == s, v != s]
        outcomes.append(member_hit.gather(1, member_col[node]) if member_hit is not None else torch.zeros_like(active))
        cond = torch.stack(outcomes, dim=-1).gather(-1, mode[node].unsqueeze(-1)).squeeze(-1)
        cond = cond | (missing[node] & torch.isnan(v))
        nxt = torch.where(cond, true_id[node], false_id[node])
        reached = active & torch.where(cond, true_leaf[node], false_leaf[node])
        leaf = torch.where(reached, nxt, leaf)
        node = torch.where(active & ~reached, nxt, node)

    w = weights.to(torch.float64)[leaf]  # [N, trees]
    tid = torch.tensor(list(leaf_targetids), dtype=long)[leaf]
    out = torch.zeros(n, targets, dtype=torch.float64)
    if aggregate_function in (_SUM, _AVERAGE):
        out = out.scatter_add(1, tid, w)
        if aggregate_function == _AVERAGE and len(tree_roots):
            out = out / len(tree_roots)
    elif aggregate_function in (_MIN, _MAX):
        out = out.scatter_reduce(1, tid, w, reduce="amin" if aggregate_function == _MIN else "amax",
                                 include_self=False)
    else:
        raise GraphError(f"TreeEnsemble: aggregate_function {aggregate_function} is not one of 0..3")
    return _post_transform(out, int(post_transform)).to(x.dtype)
