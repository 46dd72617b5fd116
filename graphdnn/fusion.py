"""Compile-time fusion: short op chains of a compile plan that one torch call computes faster.

``plan(graph, ops, inputs, outputs)`` looks at the ops a compile will emit (in topological order) and
returns, per fused chain, a ``Fusion``: the op whose outputs the fused call produces (the chain's last
op), the ops it absorbs (computed by nothing else, never fed, never requested), the tensors it reads and
the torch function that replaces the chain. The compiler emits that one call where the last op was and
skips the absorbed ones. Variables stay ``get_attr`` reads of the graph's own tensors, so gradients
reach them by name as before; numerics match the unfused chain to float rounding.

Patterns (ONNX domain, floating tensors of known rank only):

- ``MatMul(x, W) + b`` (either operand order) with 2-D ``x``/``W`` and 1-D ``b``: ``torch.addmm(b, x, W)``;
  with an N-D ``x`` (N > 2): ``F.linear(x, W.t(), b)``, which runs as one ``addmm`` on the flattened rows.
- ``Gemm(A, B, C)`` with ``alpha == beta == 1``, 2-D ``A``/``B`` and 1-D or 2-D ``C``: ``torch.addmm``.
- ``Conv(x, W, B)`` whose ``B`` is zeros of shape ``[W.shape[0]]`` by construction, as the dynamo exporter
  writes a bias-free conv (``Expand(CastLike(0, x), Shape(W)[0:1])``): a zero constant, or a zero constant
  cast, ``Expand``ed or ``ConstantOfShape``d to a shape computed from constants and the shapes of variables
  (fixed once compiled): ``Conv(x, W)``, the glue that nothing else reads absorbed (any dtype or rank).
- ``ReduceMean(SoftmaxCrossEntropyLoss(scores, labels, reduction="none"))`` over every axis, without
  weights or ``ignore_index`` (which would change the divisor): ``F.cross_entropy(scores, labels)`` (with int64
  labels and a scalar result, the binding it calls, ``torch._C._nn.cross_entropy_loss``, called directly).
- attention, as the exporters write it: ``MatMul(Softmax(S), V)`` where ``S`` is ``MatMul(Q, Kt)``, optionally
  divided (``Div``) or multiplied (``Mul``) by a scalar, then optionally masked: ``Add`` of a floating mask
  (either order) or ``Where(cond, x, fill)`` / ``Where(cond, fill, x)`` with a scalar ``fill <= -1e30``
  (-inf included), which equals adding ``fill`` where ``x`` is dropped. Softmax over the last axis; ``Q``,
  ``Kt``, ``V`` of one floating dtype and rank 3 or 4: ``F.scaled_dot_product_attention(Q, Kt^T, V,
  mask, scale)``. The scale and fill are read when compiled, from ``Constant`` ops or non-trainable
  scalar variables (an exporter's constants; recompile after changing one). Batch dimensions that would
  broadcast, or a mask larger than the scores, run the unfused ops at run time.
- stacked recurrent layers, as the exporters write a multi-layer ``nn.LSTM``/``GRU``/``RNN``: ops of one type
  and configuration (layout 0, forward or bidirectional, default activations or RNN's Tanh/Relu, no clip,
  ``sequence_lens``, peepholes or ``input_forget``, GRU with ``linear_before_reset``; float32/float64), each
  reading the previous one's ``Y`` with its directions merged by ``Squeeze`` of axis 1 or by
  ``Transpose(perm=[0, 2, 1, 3])`` then ``Reshape`` to [seq, batch, dirs * H] (a constant shape, or shape
  arithmetic on the transposed tensor that nothing else reads, checked when compiled on a few shapes):
  one multi-layer call of torch's kernel (``rnn.stacked``), whose initial states are the layers' own
  (concatenated), and whose weights are each layer's ``W``/``R``/``B``, gradients included. Initial states
  that are zeros whatever the input (a ``ConstantOfShape`` of 0 or an ``Expand``ed zero scalar, sliced: the
  exporters' way of writing "none") are left to the kernel, for a single layer too, so nothing computes them. A layer's
  final states, its ``Y`` or the glue between layers being read elsewhere or requested keeps the layers apart.

Direct calls (``direct``): an op whose lowering, for the floating dtypes the graph declares, is one torch
call (Add, MatMul, Softmax, Transpose, Reshape to a known shape, LayerNormalization over known sizes,
Gather...) is emitted as that call, without the lowering's dtype handling around it.

Shape arithmetic (``shape_ops``): the Shape/Gather/Unsqueeze/Concat/Slice/Cast... chains that exporters
write to compute shapes from a tensor's dimensions and constants. The compiler emits, for each value such
a chain hands to the rest of the model, one call of a ``ShapeProgram``, which runs the chain's lowerings
once per distinct input shape (and device) and returns the cached value afterwards. Like a folded
constant, a cached value is shared between calls: the lowerings never write to their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from graphdnn.graph import Graph, Op
from graphdnn.names import split_tensor_name
from graphdnn.ops import rnn as rnn_ops
from graphdnn.ops.registry import lookup

_FLOATS = frozenset({"float16", "bfloat16", "float32", "float64"})
#: Ops whose output is all zeros when their first input is (the others give shapes, axes or indices).
_ZERO_KEEPING = frozenset({"Slice", "Squeeze", "Unsqueeze", "Reshape", "Expand", "Identity", "Cast", "Transpose",
                           "Tile", "Flatten"})
_WIDE_FLOATS = frozenset({"float32", "float64"})


@dataclass(frozen=True)
class Fusion:
    """One fused chain: ``fn(*inputs, **kwargs)`` computes ``root``'s single output."""

    root: str
    absorbed: tuple[str, ...]
    inputs: tuple[str, ...]
    fn: Callable[..., Any]
    kwargs: dict[str, Any]

    @property
    def ops(self) -> tuple[str, ...]:
        """The fused ops, in the order the unfused code runs them."""
        return (*self.absorbed, self.root)


# -- fused computations (called from generated code) ---------------------------------------
def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ w + b`` for an N-D ``x`` (N > 2), 2-D ``w`` and 1-D ``b``, as one ``F.linear``."""
    return F.linear(x, w.t(), b)


def gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, transA: int = 0, transB: int = 0) -> torch.Tensor:
    """ONNX ``Gemm`` with ``alpha == beta == 1``: ``C + A' @ B'`` as one ``addmm``."""
    return torch.addmm(c, a.t() if transA else a, b.t() if transB else b)


def softmax_cross_entropy_mean(scores: torch.Tensor, labels: torch.Tensor, *, keep_rank: int = 0) -> torch.Tensor:
    """The mean over every element of ``SoftmaxCrossEntropyLoss(reduction="none")``; ``keep_rank``: the
    rank of ReduceMean's ``keepdims=1`` result (all ones)."""
    loss = F.cross_entropy(scores, labels if labels.dtype == torch.int64 else labels.to(torch.int64))
    return loss.reshape((1,) * keep_rank) if keep_rank else loss


def attention(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
              scale: float = 1.0, divide: bool = False, fill: float | None = None, keep: bool = True) -> torch.Tensor:
    """``Softmax(mask(q @ kt [/ or *] scale)) @ v`` through ``F.scaled_dot_product_attention``. ``mask``: an
    additive floating mask, or with ``fill`` the condition of ``Where(mask, x, fill)`` (``keep``) or
    ``Where(mask, fill, x)`` (not ``keep``)."""
    batch = q.shape[:-2]
    if kt.shape[:-2] != batch or v.shape[:-2] != batch or (mask is not None and not _fits(mask.shape, q, kt)):
        return _attention_ops(q, kt, v, mask, scale=scale, divide=divide, fill=fill, keep=keep)
    if fill is not None:
        zero = torch.zeros((), dtype=q.dtype, device=q.device)
        mask = torch.where(mask, zero, fill) if keep else torch.where(mask, fill, zero)
    return F.scaled_dot_product_attention(q, kt.transpose(-2, -1), v, attn_mask=mask,
                                          scale=1.0 / scale if divide else scale)


def _fits(mask: torch.Size, q: torch.Tensor, kt: torch.Tensor) -> bool:
    """Whether a mask of shape ``mask`` broadcasts to the scores' shape without enlarging it."""
    rank = q.dim()
    if len(mask) > rank:
        return False
    scores = (*q.shape[:-1], kt.shape[-1])
    return all(m == 1 or m == s for m, s in zip(mask, scores[rank - len(mask):]))


def _attention_ops(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, *,
                   scale: float, divide: bool, fill: float | None, keep: bool) -> torch.Tensor:
    """The unfused ops (ONNX broadcasting), for shapes ``scaled_dot_product_attention`` does not take."""
    s = torch.matmul(q, kt)
    s = s / scale if divide else s * scale if scale != 1.0 else s
    if fill is not None:
        f = torch.tensor(fill, dtype=s.dtype, device=s.device)
        s = torch.where(mask, s, f) if keep else torch.where(mask, f, s)
    elif mask is not None:
        s = s + mask
    return torch.matmul(torch.softmax(s, dim=-1), v)


# -- the planner ---------------------------------------------------------------------------
class _Plan:
    def __init__(self, graph: Graph, ops: Sequence[Op], inputs: Sequence[str], outputs: Sequence[str]) -> None:
        self.graph = graph
        self.planned = {op.name for op in ops}
        self.inputs = set(inputs)
        self.uses: dict[str, int] = {}
        for op in ops:
            for r in op.inputs:
                if r is not None:
                    self.uses[r] = self.uses.get(r, 0) + 1
        for r in outputs:
            self.uses[r] = self.uses.get(r, 0) + 1
        self.ops = ops
        self.outputs = set(outputs)

    def info(self, ref: str) -> Any:
        op_name, index = split_tensor_name(ref)
        return self.graph.get_operation(op_name).outputs[index]

    def rank(self, ref: str) -> int | None:
        shape = self.info(ref).shape
        return None if shape is None else len(shape)

    def dtype(self, ref: str) -> str | None:
        return self.info(ref).dtype

    def producer(self, ref: str, op_type: str) -> Op | None:
        """The op computing ``ref`` when it is an ``op_type`` this plan computes and only ``ref``'s one
        reader needs (so the fused call may absorb it)."""
        if ref in self.inputs or self.uses.get(ref, 0) != 1:
            return None
        op_name, index = split_tensor_name(ref)
        if op_name not in self.planned:
            return None
        op = self.graph.get_operation(op_name)
        if op.type != op_type or op.domain or index != 0:
            return None
        if any(self.uses.get(op.output(i), 0) for i in range(1, len(op.outputs))):
            return None
        return op

    # each pattern: its root op -> Fusion or None
    def bias_add(self, add: Op) -> Fusion | None:
        if len(add.inputs) != 2 or None in add.inputs or add.attrs:  # attrs: opset < 7 broadcasting
            return None
        for mm_ref, b_ref in (add.inputs, add.inputs[::-1]):
            mm = self.producer(mm_ref, "MatMul")
            if mm is None or len(mm.inputs) != 2 or None in mm.inputs:
                continue
            x_ref, w_ref = mm.inputs
            ranks = [self.rank(r) for r in (x_ref, w_ref, b_ref)]
            dtypes = {self.dtype(r) for r in (x_ref, w_ref, b_ref, add.output())}
            if None in ranks or len(dtypes) != 1 or not dtypes <= _FLOATS or ranks[1:] != [2, 1]:
                continue
            if ranks[0] == 2:
                return Fusion(add.name, (mm.name,), (b_ref, x_ref, w_ref), torch.addmm, {})
            if ranks[0] > 2:
                return Fusion(add.name, (mm.name,), (x_ref, w_ref, b_ref), linear, {})
        return None

    def gemm(self, op: Op) -> Fusion | None:
        if len(op.inputs) != 3 or None in op.inputs:
            return None
        attrs = op.attrs
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("broadcast", 0):
            return None
        refs = tuple(op.inputs)
        ranks = [self.rank(r) for r in refs]
        dtypes = {self.dtype(r) for r in (*refs, op.output())}
        if ranks[:2] != [2, 2] or ranks[2] not in (1, 2) or len(dtypes) != 1 or not dtypes <= _FLOATS:
            return None
        kwargs = {k: int(attrs[k]) for k in ("transA", "transB") if attrs.get(k)}
        return Fusion(op.name, (), refs, gemm, kwargs)

    def zero_bias_conv(self, conv: Op) -> Fusion | None:
        """``Conv(x, W, B)`` whose ``B`` is zeros by construction (a zero constant, or one ``Expand``ed /
        ``ConstantOfShape``d to shape arithmetic on variables' shapes and constants, through casts):
        ``Conv(x, W)``, absorbing the glue that only this bias needs."""
        if len(conv.inputs) != 3 or None in conv.inputs:
            return None
        x_ref, w_ref, b_ref = conv.inputs
        w = self._fixed(w_ref)
        found = self._zeros(b_ref)
        if w is None or w.dim() < 1 or found is None or found[0] != [w.shape[0]]:
            return None
        if None not in (self.dtype(b_ref), self.dtype(x_ref)) and self.dtype(b_ref) != self.dtype(x_ref):
            return None
        order = {op.name: i for i, op in enumerate(self.ops)}
        absorbed: list[Op] = []
        reads: dict[str, int] = {b_ref: 1}  # uses of each tensor by the conv's bias and the absorbed ops
        for op in sorted(found[1], key=lambda o: order[o.name], reverse=True):
            if not all(self.uses.get(r, 0) == reads.get(r, 0) and r not in self.outputs
                       for r in map(op.output, range(len(op.outputs)))):
                continue  # read elsewhere or requested: computed as before
            absorbed.append(op)
            for r in op.inputs:
                if r is not None:
                    reads[r] = reads.get(r, 0) + 1
        opdef = lookup(conv.type, conv.domain, self.graph.opset.get(conv.domain))
        return Fusion(conv.name, tuple(op.name for op in reversed(absorbed)), (x_ref, w_ref), opdef.lower,
                      dict(conv.attrs))

    def _fixed(self, ref: str) -> torch.Tensor | None:
        """A tensor whose shape is fixed once compiled: a variable or a constant (read for its shape only)."""
        from graphdnn.shapes import constant_value

        name = split_tensor_name(ref)[0]
        if ref in self.inputs or name not in self.graph.nx.nodes:
            return None
        op = self.graph.get_operation(name)
        value = self.graph.values.get(name) if op.is_variable else constant_value(self.graph, ref)
        return value if isinstance(value, torch.Tensor) else None

    def _zeros(self, ref: str) -> tuple[list[int], list[Op]] | None:
        """``(shape, ops)`` when ``ref`` is all zeros whatever the inputs and variables hold: its shape,
        known when compiled, and the planned ops computing it; else None."""
        from graphdnn.ops.static import tensor_from_attr
        from graphdnn.shapes import constant_value
        from graphdnn.small_dtypes import decode

        name, index = split_tensor_name(ref)
        if ref in self.inputs or name not in self.planned:
            return None
        op = self.graph.get_operation(name)
        value = constant_value(self.graph, ref)
        if value is not None and not op.is_variable:
            if not decode(value).count_nonzero():
                return list(value.shape), [op]
            return None
        if op.domain or index != 0 or len(op.outputs) != 1 or not op.inputs or op.inputs[0] is None:
            return None
        if op.type in ("Cast", "CastLike", "Identity"):
            found = self._zeros(op.inputs[0])
            return None if found is None else (found[0], [*found[1], op])
        if op.type == "ConstantOfShape":
            fill = op.attrs.get("value")
            if fill is not None and decode(tensor_from_attr(fill)).count_nonzero():
                return None
            shape = self._known(op.inputs[0])
            return None if shape is None else (shape[0], [*shape[1], op])
        if op.type == "Expand" and len(op.inputs) == 2 and op.inputs[1] is not None:
            found, shape = self._zeros(op.inputs[0]), self._known(op.inputs[1])
            if found is None or shape is None:
                return None
            try:
                out = list(torch.broadcast_shapes(tuple(found[0]), tuple(shape[0])))
            except RuntimeError:
                return None
            return out, [*found[1], *shape[1], op]
        return None

    def _known(self, ref: str) -> tuple[list[int], list[Op]] | None:
        """``(value, ops)`` when ``ref`` is a 1-D integer tensor computed, by planned shape arithmetic, from
        ``Constant`` ops and the shapes of variables and constants only (so known when compiled; the values
        of variables, which may change, are not read); else None."""
        ops: dict[str, Op] = {}
        stack = [ref]
        while stack:
            r = stack.pop()
            name = split_tensor_name(r)[0]
            if name in ops:
                continue
            if r in self.inputs or name not in self.planned:
                return None
            op = self.graph.get_operation(name)
            if op.type == "Constant" and not op.domain:
                continue
            if op.is_variable or op.domain or op.type not in SHAPE_OPS or len(op.outputs) != 1:
                return None
            ops[name] = op
            if op.type in _SHAPE_READERS:
                if op.inputs[0] is None or self._fixed(op.inputs[0]) is None:
                    return None
            else:
                stack.extend(i for i in op.inputs if i is not None)
        order = {op.name: i for i, op in enumerate(self.ops)}
        chain = sorted(ops.values(), key=lambda o: order[o.name])
        value = self._evaluate(chain, ref, "", torch.empty(0))
        return None if value is None else (value, chain)

    def mean_loss(self, mean: Op) -> Fusion | None:
        if not mean.inputs or mean.inputs[0] is None:
            return None
        sce = self.producer(mean.inputs[0], "SoftmaxCrossEntropyLoss")
        if sce is None or len(sce.inputs) < 2 or None in sce.inputs[:2] or any(r is not None for r in sce.inputs[2:]):
            return None
        if sce.attrs.get("reduction", "mean") != "none" or sce.attrs.get("ignore_index") is not None:
            return None
        scores, labels = sce.inputs[:2]
        if self.dtype(labels) not in ("int32", "int64"):
            return None
        rank = self.rank(mean.inputs[0])
        if rank is None or self.dtype(scores) not in _WIDE_FLOATS or self.dtype(mean.output()) != self.dtype(scores):
            return None
        if not self._all_axes(mean, rank):
            return None
        keep = rank if mean.attrs.get("keepdims", 1) else 0
        if not keep and self.dtype(labels) == "int64":  # what F.cross_entropy(scores, labels) calls (1: the mean)
            return Fusion(mean.name, (sce.name,), (scores, labels), torch._C._nn.cross_entropy_loss, {"reduction": 1})
        return Fusion(mean.name, (sce.name,), (scores, labels), softmax_cross_entropy_mean,
                      {"keep_rank": keep} if keep else {})

    def attention(self, mm: Op) -> Fusion | None:
        if len(mm.inputs) != 2 or None in mm.inputs:
            return None
        p_ref, v_ref = mm.inputs
        sm = self.producer(p_ref, "Softmax")
        if sm is None or len(sm.inputs) != 1 or sm.inputs[0] is None:
            return None
        s_ref = sm.inputs[0]
        rank = self.rank(s_ref)
        default_axis = -1 if self.graph.opset.get("", 13) >= 13 else 1
        if rank not in (3, 4) or int(sm.attrs.get("axis", default_axis)) % rank != rank - 1:
            return None
        masked: tuple[Op, ...] = ()
        mask: str | None = None
        kwargs: dict[str, Any] = {}
        core = self._scores(s_ref)
        if core is None and (add := self.producer(s_ref, "Add")) is not None:
            if len(add.inputs) != 2 or None in add.inputs or add.attrs:
                return None
            for x_ref, m_ref in (add.inputs, add.inputs[::-1]):
                core = self._scores(x_ref)
                if core is not None:
                    masked, mask = (add,), m_ref
                    break
        elif core is None and (where := self.producer(s_ref, "Where")) is not None:
            if len(where.inputs) != 3 or None in where.inputs or self.dtype(where.inputs[0]) != "bool":
                return None
            cond, a_ref, b_ref = where.inputs
            for x_ref, f_ref, keep in ((a_ref, b_ref, True), (b_ref, a_ref, False)):
                core = self._scores(x_ref)
                fill = self._scalar(f_ref) if core is not None else None
                if fill is not None and fill <= -1e30:
                    masked, mask = (where,), cond
                    kwargs["fill"] = fill
                    if not keep:
                        kwargs["keep"] = False
                    break
                core = None
        if core is None:
            return None
        scores_ops, q_ref, kt_ref, scale, divide = core
        refs = (q_ref, kt_ref, v_ref)
        if any(self.rank(r) != rank for r in refs):
            return None
        checked = [*refs, mm.output(), p_ref, s_ref, *(op.output() for op in scores_ops)]
        if mask is not None and "fill" not in kwargs:
            mask_rank = self.rank(mask)
            if mask_rank is None or mask_rank > rank:
                return None
            checked.append(mask)
        dtypes = {self.dtype(r) for r in checked}
        if len(dtypes) != 1 or not dtypes <= _FLOATS:
            return None
        if scale != 1.0:
            kwargs["scale"] = scale
            if divide:
                kwargs["divide"] = True
        return Fusion(mm.name, tuple(op.name for op in (*scores_ops, *masked, sm)),
                      refs if mask is None else (*refs, mask), attention, kwargs)

    def _scores(self, ref: str) -> tuple[tuple[Op, ...], str, str, float, bool] | None:
        """``(ops, Q, Kt, scale, divide)`` when ``ref`` is ``MatMul(Q, Kt)``, optionally divided or multiplied
        by a scalar constant, each op read by ``ref``'s reader only."""
        ops: tuple[Op, ...] = ()
        scale, divide = 1.0, False
        for op_type in ("Div", "Mul"):
            op = self.producer(ref, op_type)
            if op is None or len(op.inputs) != 2 or None in op.inputs or op.attrs:
                continue
            pairs = [op.inputs] if op_type == "Div" else [op.inputs, op.inputs[::-1]]
            for x_ref, c_ref in pairs:
                value = self._scalar(c_ref)
                if value is not None and value != 0.0 and self.producer(x_ref, "MatMul") is not None:
                    ops, ref, scale, divide = (op,), x_ref, value, op_type == "Div"
                    break
            if ops:
                break
        mm = self.producer(ref, "MatMul")
        if mm is None or len(mm.inputs) != 2 or None in mm.inputs or not math.isfinite(scale):
            return None
        return (mm, *ops), mm.inputs[0], mm.inputs[1], scale, divide

    def _scalar(self, ref: str) -> float | None:
        return scalar(self.graph, ref)

    def _all_axes(self, mean: Op, rank: int) -> bool:
        """Whether ReduceMean ``mean`` reduces every axis of its rank-``rank`` input."""
        if any(k not in ("axes", "keepdims", "noop_with_empty_axes") for k in mean.attrs):
            return False
        axes = mean.attrs.get("axes")
        if len(mean.inputs) > 1 and mean.inputs[1] is not None:
            if axes is not None:
                return False
            from graphdnn.shapes import constant_value

            value = constant_value(self.graph, mean.inputs[1])
            if value is None:
                return False
            axes = [int(a) for a in value.reshape(-1).tolist()]
        if not axes:
            return not mean.attrs.get("noop_with_empty_axes", 0) or rank == 0
        try:
            return sorted(int(a) % rank for a in axes) == list(range(rank)) if rank else False
        except (TypeError, ValueError):
            return False


    # stacked recurrent layers
    def recurrent_stack(self, op: Op) -> Fusion | None:
        """Recurrent ops of one configuration, each reading the previous one's ``Y`` through the glue the
        exporters write to merge its directions ([seq, dirs, batch, H] -> [seq, batch, dirs * H]): one
        multi-layer kernel call (``rnn.stacked``) computing the last one's ``Y``."""
        layer = self._recurrent_layer(op)
        if layer is None or any(self.uses.get(op.output(i), 0) for i in range(1, len(op.outputs))):
            return None
        chain, absorbed = [op], []
        while (merged := self._merged(chain[-1].inputs[0], layer)) is not None:
            prev = self.producer(merged[0], op.type)
            if prev is None or self._recurrent_layer(prev) != layer:
                break
            chain.append(prev)
            absorbed += [prev, *merged[1]]
        kind, direction, mode, bias, hidden, gate_order = layer
        chain.reverse()
        refs = [chain[0].inputs[0]]
        for layer_op in chain:
            refs += layer_op.inputs[1 : 4 if bias else 3]
        states, zeros = [], 0
        for layer_op in chain:
            for i in (5, 6) if kind == "LSTM" else (5,):
                given = len(layer_op.inputs) > i and layer_op.inputs[i] is not None
                if given and self._always_zero(layer_op.inputs[i]):
                    given, zeros = False, zeros + 1  # the kernel's own zero state: nothing computed per call
                states.append(given)
                if given:
                    refs.append(layer_op.inputs[i])
        if len(chain) < 2 and not zeros:
            return None
        order = {o.name: i for i, o in enumerate(self.ops)}
        absorbed.sort(key=lambda o: order[o.name])
        kwargs: dict[str, Any] = {"kind": kind, "layers": len(chain), "bias": bias, "states": tuple(states),
                                  "hidden": hidden}
        if direction != "forward":
            kwargs["direction"] = direction
        if mode:
            kwargs["mode"] = mode
        if gate_order != "onnx":
            kwargs["gate_order"] = gate_order
        return Fusion(op.name, tuple(o.name for o in absorbed), tuple(refs), rnn_ops.stacked, kwargs)

    def _always_zero(self, ref: str) -> bool:
        """Whether ``ref`` is all zeros whatever the inputs, of a shape that may depend on them: a
        ``ConstantOfShape`` of zero (the legacy exporter's initial states) or an ``Expand``ed zero scalar (a
        ``Constant``, or a non-trainable variable read now, as ``scalar`` does: the dynamo exporter's), possibly
        sliced, reshaped or cast. (Shape arithmetic computing it is emitted only where read.)"""
        from graphdnn.ops.static import tensor_from_attr
        from graphdnn.small_dtypes import decode

        for _ in range(16):
            if ref in self.inputs:
                return False
            op = self.graph.get_operation(split_tensor_name(ref)[0])
            if op.name not in self.planned:
                return False
            if op.type == "Constant" or op.is_variable:  # the dynamo exporter expands a zero scalar
                return scalar(self.graph, ref) == 0.0
            if op.domain:
                return False
            if op.type == "ConstantOfShape":
                value = op.attrs.get("value")
                return value is None or not decode(tensor_from_attr(value)).count_nonzero()
            if op.type not in _ZERO_KEEPING or not op.inputs or op.inputs[0] is None:
                return False
            ref = op.inputs[0]
        return False

    def _recurrent_layer(self, op: Op) -> tuple[str, str, str, bool, int, str] | None:
        """``(kind, direction, mode, bias, hidden, gate_order)`` when recurrent ``op`` runs as one layer of torch's
        multi-layer kernel: layout 0, forward or bidirectional, default activations (RNN: Tanh or Relu), no clip,
        ``sequence_lens``, peepholes or ``input_forget``, GRU with ``linear_before_reset``, float32/float64."""
        attrs, kind = op.attrs, op.type
        if op.domain or set(attrs) - _RECURRENT_ATTRS[kind] or int(attrs.get("layout", 0)) or not attrs.get(
                "hidden_size"):
            return None
        direction = attrs.get("direction", "forward")
        if direction not in ("forward", "bidirectional") or int(attrs.get("input_forget", 0)):
            return None
        if kind == "GRU" and not int(attrs.get("linear_before_reset", 0)):
            return None
        dirs = 2 if direction == "bidirectional" else 1
        names = [str(a).lower() for a in attrs.get("activations") or []]
        mode = ""
        if kind == "RNN":
            mode = names[0] if names else "tanh"
            defaults = [mode]
            if mode not in ("tanh", "relu"):
                return None
        else:
            defaults = ["sigmoid", "tanh", "tanh"] if kind == "LSTM" else ["sigmoid", "tanh"]
        if names and names != defaults * dirs:
            return None
        inputs = op.inputs
        if len(inputs) < 3 or None in inputs[:3] or any(r is not None for r in inputs[4:5] + inputs[7:]):
            return None
        dtypes = {self.dtype(r) for r in (*inputs, op.output()) if r is not None}
        if len(dtypes) != 1 or not dtypes <= _WIDE_FLOATS or self.rank(inputs[0]) != 3:
            return None
        bias = len(inputs) > 3 and inputs[3] is not None
        gate_order = attrs.get("gate_order") or "onnx"
        if gate_order not in ("onnx", "torch"):
            return None
        return kind, direction, mode, bias, int(attrs["hidden_size"]), gate_order

    def _merged(self, ref: str, layer: tuple[str, str, str, bool, int, str]) -> tuple[str, list[Op]] | None:
        """``(Y, glue ops)`` when ``ref`` is a recurrent op's ``Y`` [seq, dirs, batch, H] with its directions
        merged: ``Squeeze`` of axis 1 (one direction) or ``Transpose(perm=[0, 2, 1, 3])`` then ``Reshape`` to
        [seq, batch, dirs * H] (a constant shape, or shape arithmetic on the transposed tensor's shape that
        only this ``Reshape`` reads, evaluated when compiled for a few shapes)."""
        from graphdnn.shapes import constant_value

        dirs = 2 if layer[1] == "bidirectional" else 1
        hidden = layer[4]
        squeeze = self.producer(ref, "Squeeze")
        if squeeze is not None:
            axes = squeeze.attrs.get("axes")
            if len(squeeze.inputs) > 1 and squeeze.inputs[1] is not None:
                value = constant_value(self.graph, squeeze.inputs[1])
                axes = None if value is None or axes is not None else value.reshape(-1).tolist()
            if dirs != 1 or axes is None or [int(a) % 4 for a in axes] != [1] or self.rank(squeeze.inputs[0]) != 4:
                return None
            return squeeze.inputs[0], [squeeze]
        reshape = self.producer(ref, "Reshape")
        if reshape is None or len(reshape.inputs) != 2 or None in reshape.inputs or set(reshape.attrs) - {"allowzero"}:
            return None
        t_ref, shape_ref = reshape.inputs
        t_name, index = split_tensor_name(t_ref)
        transpose = self.graph.get_operation(t_name)
        if (transpose.type != "Transpose" or transpose.domain or index or t_name not in self.planned
                or t_ref in self.inputs or t_ref in self.outputs or [int(a) for a in transpose.attrs.get("perm", [])]
                != [0, 2, 1, 3] or self.rank(transpose.inputs[0]) != 4):
            return None
        arithmetic = self._shape_side(shape_ref, t_ref, reshape)
        if arithmetic is None:
            return None
        shape = self.info(transpose.inputs[0]).shape
        seq = shape[0] if type(shape[0]) is int else 7
        for batch in (1, 3, 5):
            fake = torch.empty((seq, batch, dirs, hidden), device="meta")
            target = self._evaluate(arithmetic, shape_ref, t_ref, fake)
            if target is None or _reshaped(fake.shape, target, int(reshape.attrs.get("allowzero", 0))) != [
                    seq, batch, dirs * hidden]:
                return None
        return transpose.inputs[0], [transpose, *arithmetic, reshape]

    def _shape_side(self, shape_ref: str, t_ref: str, reshape: Op) -> list[Op] | None:
        """The ops computing ``shape_ref`` from ``t_ref``'s shape and constants that nothing but ``reshape``
        (the only other reader of ``t_ref``) needs, in plan order; None when there are others."""
        ops: dict[str, Op] = {}
        stack = [shape_ref]
        while stack:
            r = stack.pop()
            name, _ = split_tensor_name(r)
            op = self.graph.get_operation(name)
            if name in ops or op.type == "Constant" or (op.is_variable and not op.attrs.get("trainable", True)):
                continue
            if r == t_ref or r in self.inputs or name not in self.planned or op.is_variable or op.domain:
                return None
            if op.type in _SHAPE_READERS:
                if op.inputs[0] != t_ref:
                    return None
            else:
                stack.extend(x for x in op.inputs if x is not None)
            ops[name] = op
        for op in self.ops:
            if op.name in ops or op.name == reshape.name:
                continue
            if t_ref in op.inputs or any(r is not None and split_tensor_name(r)[0] in ops for r in op.inputs):
                return None  # something else reads the shape arithmetic or the transposed tensor
        if any(op.output(i) in self.outputs for op in ops.values() for i in range(len(op.outputs))):
            return None
        order = {o.name: i for i, o in enumerate(self.ops)}
        return sorted(ops.values(), key=lambda o: order[o.name])

    def _evaluate(self, ops: list[Op], ref: str, t_ref: str, fake: torch.Tensor) -> list[int] | None:
        """The value of ``ref`` computed by ``ops`` when ``t_ref`` has ``fake``'s shape, as a list."""
        from graphdnn.shapes import constant_value
        from graphdnn.small_dtypes import decode

        values: dict[str, Any] = {t_ref: fake}
        try:
            for op in ops:
                opdef = lookup(op.type, op.domain, self.graph.opset.get(op.domain))
                args: list[Any] = []
                for i, r in enumerate(op.inputs):
                    value = None if r is None else values.get(r)
                    if r is not None and value is None:
                        value = constant_value(self.graph, r)
                        if value is None:
                            value = self.graph.values.get(split_tensor_name(r)[0])
                        if value is None:
                            return None
                    if i in opdef.static_inputs and isinstance(value, torch.Tensor):
                        value = decode(value).tolist()
                    args.append(value)
                kwargs = dict(op.attrs)
                if opdef.num_outputs is None:
                    kwargs["_outputs"] = 1
                out = opdef.lower(*args, **kwargs)
                values[op.output()] = out[0] if isinstance(out, (tuple, list)) and opdef.num_outputs is None else out
            value = values.get(ref)
            if value is None:
                value = constant_value(self.graph, ref)
            if not isinstance(value, torch.Tensor) or value.dim() != 1 or value.is_floating_point():
                return None
            return [int(v) for v in value.tolist()]
        except Exception:  # anything the shape arithmetic cannot compute here: no fusion
            return None


def _reshaped(shape: Sequence[int], target: Sequence[int], allowzero: int) -> list[int] | None:
    """The shape ONNX ``Reshape`` gives a tensor of ``shape`` with ``target`` (0 copies a dimension unless
    ``allowzero``; one -1 is inferred), or None when it is invalid."""
    dims = [shape[i] if d == 0 and not allowzero and i < len(shape) else d for i, d in enumerate(target)]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        return None
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if not known or math.prod(shape) % known:
            return None
        dims[dims.index(-1)] = math.prod(shape) // known
    return dims if math.prod(dims) == math.prod(shape) else None


_RECURRENT_ATTRS = {
    "LSTM": frozenset({"hidden_size", "direction", "layout", "activations", "input_forget", "gate_order"}),
    "GRU": frozenset({"hidden_size", "direction", "layout", "activations", "linear_before_reset", "gate_order"}),
    "RNN": frozenset({"hidden_size", "direction", "layout", "activations"}),
}
_PATTERNS = {"Add": _Plan.bias_add, "Gemm": _Plan.gemm, "Conv": _Plan.zero_bias_conv, "ReduceMean": _Plan.mean_loss,
             "MatMul": _Plan.attention, "LSTM": _Plan.recurrent_stack, "GRU": _Plan.recurrent_stack,
             "RNN": _Plan.recurrent_stack}


def plan(graph: Graph, ops: Sequence[Op], inputs: Sequence[str], outputs: Sequence[str]) -> dict[str, Fusion]:
    """The fusions of a compile plan (``ops`` in topological order), keyed by root op name."""
    p = _Plan(graph, ops, inputs, outputs)
    fusions: dict[str, Fusion] = {}
    taken: set[str] = set()
    for op in ops:
        pattern = _PATTERNS.get(op.type)
        if pattern is None or op.domain or (len(op.outputs) != 1 and op.type not in _RECURRENT_ATTRS):
            continue
        fusion = pattern(p, op)
        if fusion is None:
            continue
        if taken.intersection(fusion.ops):
            # a longer chain of recurrent layers replaces the chain it extends; anything else keeps the first
            prior = [f for f in fusions.values() if f.root in fusion.absorbed]
            covered = {name for f in prior for name in f.ops}
            if op.type not in _RECURRENT_ATTRS or not covered <= set(fusion.ops) or taken.intersection(
                    fusion.ops) != covered:
                continue
            for f in prior:
                del fusions[f.root]
            taken -= covered
        taken.update(fusion.ops)
        fusions[op.name] = fusion
    return fusions


# -- direct calls: ops whose lowering is one torch call for the dtypes the graph declares ----------
_PLAIN = _FLOATS | {"int8", "int16", "int32", "int64", "uint8", "bool"}
_DIRECT_BINARY: dict[str, Callable[..., Any]] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "MatMul": torch.matmul, "Pow": torch.pow}
_DIRECT_UNARY: dict[str, Callable[..., Any]] = {
    "Relu": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid, "Exp": torch.exp, "Sqrt": torch.sqrt,
    "Erf": torch.erf, "Neg": torch.neg}


def direct(graph: Graph, op: Op, args: Sequence[Any]) -> tuple[Callable[..., Any], tuple, dict[str, Any]] | None:
    """``(fn, args, kwargs)``: one torch call computing single-output ``op`` from its compiled arguments
    (``args``: static inputs already as lists), skipping the lowering's dtype handling, when the graph
    declares floating tensors of one dtype, for which the lowering makes that same call; else None. A
    ``Pow`` by a scalar constant (``scalar``, read now) passes the exponent as a number."""
    if op.domain or len(op.outputs) != 1 or None in op.inputs:
        return None
    infos = [_info(graph, r) for r in (*op.inputs, op.output())]
    dtypes = [i.dtype for i in infos]
    t = op.type
    if t in _DIRECT_BINARY and len(args) == 2 and not op.attrs:
        if not _one_float(dtypes):
            return None
        exponent = scalar(graph, op.inputs[1]) if t == "Pow" and _broadcast_scalar(infos[1].shape, infos[0].shape) \
            else None
        if exponent is not None and math.isfinite(exponent):  # a number: torch's special cases (x*x*x...)
            return torch.pow, (args[0], exponent), {}
        return _DIRECT_BINARY[t], tuple(args), {}
    if t in _DIRECT_UNARY and len(args) == 1 and not op.attrs:
        return (_DIRECT_UNARY[t], tuple(args), {}) if _one_float(dtypes) else None
    if t == "Where" and len(args) == 3 and dtypes[0] == "bool" and _one_float(dtypes[1:]):
        return torch.where, tuple(args), {}
    if not (dtypes[0] == dtypes[-1] and dtypes[0] in _PLAIN):
        return None
    if t == "Transpose" and len(args) == 1 and set(op.attrs) == {"perm"}:
        return torch.permute, (args[0], [int(a) for a in op.attrs["perm"]]), {}
    if t in ("Squeeze", "Unsqueeze") and len(args) == 2 and isinstance(args[1], list) and not op.attrs:
        axes = args[1]
        if t == "Squeeze" and axes and all(type(a) is int for a in axes):
            return torch.squeeze, (args[0], tuple(axes)), {}
        if t == "Unsqueeze" and len(axes) == 1 and type(axes[0]) is int:
            return torch.unsqueeze, (args[0], axes[0]), {}
    if t == "Reshape" and len(args) == 2 and set(op.attrs) <= {"allowzero"}:
        shape = args[1]
        if isinstance(shape, list) and all(type(d) is int for d in shape) and (
                op.attrs.get("allowzero", 0) or 0 not in shape):
            return torch.reshape, (args[0], shape), {}
        program = getattr(shape, "target", None)
        if isinstance(program, ShapeProgram) and program.listed:
            return reshape, tuple(args), {"allowzero": 1} if op.attrs.get("allowzero", 0) else {}
    if not _one_float(dtypes[:1] + dtypes[-1:]):
        return None
    rank = None if infos[0].shape is None else len(infos[0].shape)
    if t == "Softmax" and len(args) == 1 and set(op.attrs) <= {"axis"}:
        axis = int(op.attrs.get("axis", -1 if graph.opset.get("", 13) >= 13 else 1))
        if graph.opset.get("", 13) >= 13 or (rank and axis % rank == rank - 1):
            return torch.softmax, (args[0], axis), {}
    if t == "Gelu" and len(args) == 1 and set(op.attrs) <= {"approximate"}:
        return F.gelu, tuple(args), {"approximate": "tanh" if op.attrs.get("approximate") == "tanh" else "none"}
    if t == "Gather" and len(args) == 2 and set(op.attrs) <= {"axis"} and dtypes[1] in ("int32", "int64"):
        axis = int(op.attrs.get("axis", 0))
        if axis == 0:
            return gather_rows, tuple(args), {}
        if rank and 0 < axis < rank:
            return gather, tuple(args), {"axis": axis}
    if t == "LayerNormalization" and len(args) in (2, 3) and dtypes[0] == "float32":
        if int(op.attrs.get("stash_type", 1)) != 1 or set(op.attrs) - {"axis", "epsilon", "stash_type"}:
            return None
        shape = infos[0].shape
        axis = int(op.attrs.get("axis", -1))
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        normalized = list(shape[axis:])
        if not normalized or not all(type(d) is int for d in normalized):
            return None
        if any(list(i.shape or ()) != normalized or i.dtype != "float32" for i in infos[1 : len(args)]):
            return None
        return F.layer_norm, (args[0], normalized, *args[1:], float(op.attrs.get("epsilon", 1e-5))), {}
    return None


def reshape(x: torch.Tensor, shape: list[int], allowzero: int = 0) -> torch.Tensor:
    """ONNX ``Reshape`` to a computed shape (a list): a 0 copies the input's dimension unless ``allowzero``."""
    if allowzero or 0 not in shape:
        return torch.reshape(x, shape)
    return torch.reshape(x, [x.shape[i] if d == 0 else d for i, d in enumerate(shape)])


def gather_rows(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """ONNX ``Gather`` along axis 0 (negative indices count from the end), as one indexing call."""
    return x[indices]


def scalar(graph: Graph, ref: str) -> float | None:
    """The value of a one-element floating constant: a ``Constant`` op, or a non-trainable variable (an
    exporter's constant), read now; None for anything else."""
    from graphdnn.shapes import constant_value

    value = constant_value(graph, ref)
    if value is None:
        op = graph.get_operation(split_tensor_name(ref)[0])
        if op.is_variable and not op.attrs.get("trainable", True):
            value = graph.values.get(op.name)
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
        return None
    return float(value.reshape(()))


def gather(x: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX ``Gather`` along a positive ``axis`` (negative indices count from the end), as one indexing call."""
    return x[(slice(None),) * axis + (indices,)]


def _info(graph: Graph, ref: str) -> Any:
    op_name, index = split_tensor_name(ref)
    return graph.get_operation(op_name).outputs[index]


def _broadcast_scalar(shape: Sequence[Any] | None, other: Sequence[Any] | None) -> bool:
    """Whether a tensor of ``shape`` (all ones) broadcast against one of ``other`` leaves the latter's shape."""
    return shape is not None and other is not None and len(shape) <= len(other) and all(d == 1 for d in shape)


def _one_float(dtypes: Sequence[str | None]) -> bool:
    return len(set(dtypes)) == 1 and dtypes[0] in _FLOATS


# -- shape arithmetic: computed once per input shape ------------------------------------------
#: Pure ops that shape arithmetic is made of (Shape/Size read a tensor's shape, never its values).
SHAPE_OPS = frozenset({
    "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Reshape", "Identity", "Add",
    "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Floor", "Ceil", "Sqrt", "Max", "Min", "Equal", "Less", "Greater",
    "Not", "Where", "Range", "ReduceProd", "ConstantOfShape", "Expand",
})
_SHAPE_READERS = frozenset({"Shape", "Size"})
_SHAPE_CACHE_ENTRIES = 64


def shape_ops(graph: Graph, ops: Sequence[Op], outputs: Sequence[str]) -> set[str]:
    """The ops of a compile plan whose values depend only on tensor shapes (through Shape/Size), constants
    and non-trainable variables (an exporter's shape constants): shape arithmetic, which ``ShapeProgram``
    computes once per input shape. Constant chains (the compiler folds them) and ops whose value is a
    requested output are left out."""
    requested = {split_tensor_name(r)[0] for r in outputs}
    const: set[str] = set()
    fixed: set[str] = set()  # non-trainable variables
    shape: set[str] = set()
    for op in ops:
        if op.is_variable and not op.attrs.get("trainable", True):
            fixed.add(op.name)
        if op.is_variable or op.is_placeholder or op.domain or len(op.outputs) != 1:
            continue
        if op.type == "Constant":
            const.add(op.name)
            continue
        if op.type not in SHAPE_OPS or lookup(op.type, op.domain, graph.opset.get(op.domain)).num_outputs != 1:
            continue
        sources = [split_tensor_name(r) for r in op.inputs if r is not None]
        if sources and all(n in const and i == 0 for n, i in sources):
            const.add(op.name)
        elif op.name in requested:
            continue
        elif op.type in _SHAPE_READERS or (any(n in shape for n, _ in sources) and all(
                i == 0 and (n in const or n in shape or n in fixed) for n, i in sources)):
            shape.add(op.name)
    return shape


def shape_closure(graph: Graph, ref: str, shape: set[str], order: dict[str, int]
                  ) -> tuple[list[Op], list[str], int, int]:
    """The shape ops computing ``ref`` (in plan order), the tensors they read from outside (the inputs of
    Shape/Size, then constants, then variables), how many are Shape/Size inputs and how many variables."""
    seen: set[str] = set()
    stack = [split_tensor_name(ref)[0]]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        op = graph.get_operation(name)
        stack.extend(n for n in (split_tensor_name(r)[0] for r in op.inputs if r is not None) if n in shape)
    closure = sorted((graph.get_operation(n) for n in seen), key=lambda op: order[op.name])
    reads: list[str] = []
    consts: list[str] = []
    variables: list[str] = []
    for op in closure:
        for r in op.inputs:
            if r is None or split_tensor_name(r)[0] in seen or r in reads or r in consts or r in variables:
                continue
            if op.type in _SHAPE_READERS:
                reads.append(r)
            elif graph.get_operation(split_tensor_name(r)[0]).is_variable:
                variables.append(r)
            else:
                consts.append(r)
    return closure, reads + consts + variables, len(reads), len(variables)


class ShapeProgram:
    """Shape arithmetic as one call: ``program(*reads, *variables)`` runs the ops (their lowerings) once
    per distinct (shape, device) of the ``reads`` (the tensors Shape/Size look at) and state of the
    non-trainable ``variables`` (the same tensor objects at the same in-place version), and returns the
    cached value afterwards: the value depends on nothing else (``constants``, folded when compiled, never
    change). It is computed on the CPU, where ``Shape`` puts its result, and handed over on the device of
    the reads (the model's). ``steps``: ``(lowering, argument slots,
    static argument indices, attributes)``, slots numbering the reads, constants and variables, then each
    step's result; ``listed``: the value as a (nested) list of numbers, for an op's static input. Generated
    code calls the program itself (``__name__`` names it there)."""

    __name__ = "shape_program"

    def __init__(self, steps: list[tuple[Callable[..., Any], list[int | None], tuple[int, ...], dict[str, Any]]],
                 reads: int, variables: int = 0, constants: Sequence[torch.Tensor] = (), listed: bool = False) -> None:
        self.steps = steps
        self.listed = listed
        self.reads = reads
        self.variables = variables
        self.constants = tuple(constants)
        self.cache: dict[tuple, tuple[tuple[torch.Tensor, ...], Any]] = {}

    def __call__(self, *tensors: torch.Tensor) -> Any:
        if torch.compiler.is_compiling():  # torch.compile: run by Python between compiled parts, cached
            return _eager(self, tensors)
        fixed = tensors[self.reads :] if self.variables else ()
        if fixed and torch.is_grad_enabled() and any(v.requires_grad for v in fixed):
            return self.run(tensors)  # made trainable since: computed with autograd, every call
        key = tuple((t.shape, t.device) for t in tensors[: self.reads])
        if fixed:  # the entry holds the variables, so their ids stay theirs while it lives
            key += tuple((id(v), v._version) for v in fixed)
        entry = self.cache.get(key)
        if entry is None:
            with torch.inference_mode(False), torch.no_grad():  # usable by later calls in any mode
                entry = (tuple(fixed), self.run(tensors))
            if len(self.cache) >= _SHAPE_CACHE_ENTRIES:
                self.cache.clear()
            self.cache[key] = entry
        value = entry[1]
        return value[:] if type(value) is list else value  # a list is the caller's to change, as a constant's is

    def run(self, tensors: Sequence[torch.Tensor]) -> Any:
        """The value, computed now."""
        from graphdnn.small_dtypes import decode

        cpu = torch.device("cpu")
        variables = [v if v.device == cpu else v.to(cpu) for v in tensors[self.reads :]]
        slots: list[Any] = [*tensors[: self.reads], *self.constants, *variables]
        for fn, arg_slots, static, kwargs in self.steps:
            args = [None if s is None else slots[s] for s in arg_slots]
            for i in static:
                if i < len(args) and isinstance(args[i], torch.Tensor):
                    args[i] = decode(args[i]).tolist()
            slots.append(fn(*args, **kwargs))
        value = slots[-1]
        if not isinstance(value, torch.Tensor):
            return value
        if self.listed:
            return decode(value).tolist()
        device = tensors[0].device if self.reads and isinstance(tensors[0], torch.Tensor) else cpu
        return value if value.device == device else value.to(device)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "cache": {}}


@torch.compiler.disable
def _eager(program: ShapeProgram, tensors: Sequence[torch.Tensor]) -> Any:
    """``program(*tensors)`` outside ``torch.compile``'s trace: shape arithmetic reads shapes as numbers and
    caches, which a trace would turn into data-dependent code."""
    return program(*tensors)
