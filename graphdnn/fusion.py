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
- ``ReduceMean(SoftmaxCrossEntropyLoss(scores, labels, reduction="none"))`` over every axis, without
  weights or ``ignore_index`` (which would change the divisor): ``F.cross_entropy(scores, labels)``.

Shape arithmetic (``shape_ops``): the Shape/Gather/Unsqueeze/Concat/Slice/Cast... chains that exporters
write to compute shapes from a tensor's dimensions and constants. The compiler emits, for each value such
a chain hands to the rest of the model, one call of a ``ShapeProgram``, which runs the chain's lowerings
once per distinct input shape (and device) and returns the cached value afterwards. Like a folded
constant, a cached value is shared between calls: the lowerings never write to their inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from graphdnn.graph import Graph, Op
from graphdnn.names import split_tensor_name
from graphdnn.ops.registry import lookup

_FLOATS = frozenset({"float16", "bfloat16", "float32", "float64"})
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
    loss = F.cross_entropy(scores, labels.to(torch.int64))
    return loss.reshape((1,) * keep_rank) if keep_rank else loss


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
        return Fusion(mean.name, (sce.name,), (scores, labels), softmax_cross_entropy_mean,
                      {"keep_rank": keep} if keep else {})

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


_PATTERNS = {"Add": _Plan.bias_add, "Gemm": _Plan.gemm, "ReduceMean": _Plan.mean_loss}


def plan(graph: Graph, ops: Sequence[Op], inputs: Sequence[str], outputs: Sequence[str]) -> dict[str, Fusion]:
    """The fusions of a compile plan (``ops`` in topological order), keyed by root op name."""
    p = _Plan(graph, ops, inputs, outputs)
    fusions: dict[str, Fusion] = {}
    taken: set[str] = set()
    for op in ops:
        pattern = _PATTERNS.get(op.type)
        if pattern is None or op.domain or len(op.outputs) != 1:
            continue
        fusion = pattern(p, op)
        if fusion is None or taken.intersection(fusion.ops):
            continue
        taken.update(fusion.ops)
        fusions[op.name] = fusion
    return fusions


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
    """Shape arithmetic as one call: ``program(*reads, *constants, *variables)`` runs the ops (their
    lowerings) once per distinct (shape, device) of the ``reads`` (the tensors Shape/Size look at) and
    state of the non-trainable ``variables`` (the same tensor objects at the same in-place version), and
    returns the cached value afterwards: the value depends on nothing else (folded constants never change).
    ``steps``: ``(lowering, argument slots, static argument indices, attributes)``, slots numbering the
    call's arguments, then each step's result."""

    def __init__(self, steps: list[tuple[Callable[..., Any], list[int | None], tuple[int, ...], dict[str, Any]]],
                 reads: int, variables: int = 0) -> None:
        self.steps = steps
        self.reads = reads
        self.variables = variables
        self.cache: dict[tuple, tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self.run(tensors)
        fixed = tensors[len(tensors) - self.variables :] if self.variables else ()
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
        return entry[1]

    def run(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """The value, computed now."""
        from graphdnn.small_dtypes import decode

        slots: list[Any] = list(tensors)
        for fn, arg_slots, static, kwargs in self.steps:
            args = [None if s is None else slots[s] for s in arg_slots]
            for i in static:
                if i < len(args) and isinstance(args[i], torch.Tensor):
                    args[i] = decode(args[i]).tolist()
            slots.append(fn(*args, **kwargs))
        return slots[-1]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "cache": {}}


def run_shape_program(program: ShapeProgram, *tensors: torch.Tensor) -> torch.Tensor:
    """Generated code's call of a ``ShapeProgram`` (an fx target must be a function)."""
    return program(*tensors)
