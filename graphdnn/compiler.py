"""Compile a graph (or the part between chosen inputs and outputs) to a ``torch.fx.GraphModule``.

The generated ``forward`` is straight-line torch code (``model.code`` shows it): one call per op,
through the op's registered lowering, with no per-node interpretation at run time. Variables are
parameters (trainable) or buffers (state) in nested submodules that mirror the scopes, under the
keys of ``names.state_key`` (``hidden1/kernel`` -> ``hidden1.kernel``); they are the graph's own
tensors, so modules compiled from one graph share their variables, as TF variables are shared.
Any tensor can be an input (everything it depends on is skipped) and any tensor an output.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx

from graphdnn.bulk import paused_gc
from graphdnn.errors import GraphError
from graphdnn.graph import REGULARIZATION_LOSSES, Graph, Op, Tensor
from graphdnn.names import identifier, split_tensor_name, state_key, tensor_name
from graphdnn.ops.registry import OpDef, lookup
from graphdnn.shapes import constant_value
from graphdnn.small_dtypes import decode
from graphdnn.subgraphs import captures, compile_body, has_subgraphs, subgraph_attrs

TensorRef = Tensor | str


def _ref(graph: Graph, t: TensorRef) -> str:
    return graph.get_tensor(t).name if not isinstance(t, Tensor) else t.name


def default_outputs(graph: Graph) -> list[str]:
    """Outputs of ops nothing consumes (variables, placeholders, constants and regularization
    losses excluded): what a model built in the graph computes."""
    skip = set(graph.get_collection(REGULARIZATION_LOSSES))
    outs = []
    for op in graph.operations():
        if op.is_variable or op.is_placeholder or op.type == "Constant" or graph.nx.out_degree(op.name):
            continue
        outs += [op.output(i) for i in range(len(op.outputs)) if op.output(i) not in skip]
    return outs


def needed_ops(graph: Graph, inputs: Sequence[str], outputs: Sequence[str]) -> list[Op]:
    """The ops computing ``outputs`` from ``inputs``, in topological order; a needed placeholder
    that is not an input is an error."""
    fed, seen, stack = set(inputs), set(), list(outputs)
    while stack:
        ref = stack.pop()
        if ref in fed:
            continue
        op_name = split_tensor_name(ref)[0]
        if op_name in seen:
            continue
        seen.add(op_name)
        op = graph.get_operation(op_name)
        if op.is_placeholder:
            raise GraphError(
                f"the outputs need placeholder {op.name!r}, which is not among the inputs {list(inputs)}; "
                "add it to inputs (or feed a tensor downstream of it)"
            )
        stack.extend(r for r in op.inputs if r is not None)
    return [graph.nx.nodes[n]["op"] for n in graph.topological_order() if n in seen]


class CompiledGraph(fx.GraphModule):
    """A module compiled from a graph: ``forward(*inputs)`` returns the outputs (one tensor or a
    tuple, in order). ``source_graph``, ``input_names`` and ``output_names`` say what it computes."""

    source_graph: Graph
    input_names: list[str]
    output_names: list[str]
    variable_names: list[str]

    def variable(self, name: str) -> torch.Tensor:
        """The parameter or buffer of variable ``name`` (graph name, e.g. ``hidden1/kernel``)."""
        key = state_key(name)
        try:
            return self.get_parameter(key)
        except AttributeError:
            try:
                return self.get_buffer(key)
            except AttributeError:
                raise GraphError(f"variable {name!r} is not part of this compiled module") from None

    def graph_state_dict(self) -> dict[str, torch.Tensor]:
        """The module's variables keyed by graph name."""
        return {name: self.variable(name) for name in self.variable_names}

    def _specs(self, attr: str) -> list[tuple[str, dict[str, Any]]]:
        """``(variable, spec)`` for this module's variables that carry a ``regularizer``/``constraint``
        (read from the graph once; recompile after changing them)."""
        cache = self.__dict__.setdefault("_spec_cache", {})
        if attr not in cache:
            ops = (self.source_graph.get_operation(n) for n in self.variable_names)
            cache[attr] = [(op.name, op.attrs[attr]) for op in ops if op.attrs.get(attr)]
        return cache[attr]

    def regularization_loss(self) -> torch.Tensor:
        """Sum of the penalties of the regularizers attached to this module's variables."""
        from graphdnn.regularizers import penalty

        total: torch.Tensor | None = None
        for name, spec in self._specs("regularizer"):
            term = penalty(spec, self.variable(name))
            total = term if total is None else total + term
        if total is None:
            p = next(iter(self.parameters()), None)
            return torch.zeros((), device=p.device if p is not None else None)
        return total

    def apply_constraints(self) -> None:
        """Apply the variables' constraints (max-norm...) in place; call after each optimizer step."""
        from graphdnn.regularizers import apply_constraint

        for name, spec in self._specs("constraint"):
            apply_constraint(spec, self.variable(name))


def compile(  # noqa: A001 - the public name mirrors torch.compile
    graph: Graph,
    inputs: Sequence[TensorRef] | None = None,
    outputs: Sequence[TensorRef] | TensorRef | None = None,
) -> CompiledGraph:
    """Compile ``graph`` to a module computing ``outputs`` (default: every terminal tensor) from
    ``inputs`` (default: the placeholders the outputs need, in creation order)."""
    if isinstance(outputs, (Tensor, str)):
        outputs = [outputs]
    out_refs = [_ref(graph, t) for t in outputs] if outputs is not None else default_outputs(graph)
    if not out_refs:
        raise GraphError("nothing to compile: the graph has no outputs; pass outputs=[...]")
    if inputs is None:
        needed = needed_ops(graph, [op.output() for op in graph.placeholders()], out_refs)
        needed_names = {op.name for r in out_refs for op in [graph.get_operation(r)]} | {o.name for o in needed}
        in_refs = [op.output() for op in graph.placeholders() if _feeds(graph, op, needed_names)]
    else:
        in_refs = [_ref(graph, t) for t in inputs]
    with paused_gc():
        ops = needed_ops(graph, in_refs, out_refs)
        return _Builder(graph, in_refs, out_refs, ops).build()


def _info(graph: Graph, ref: str | None) -> Any:
    op_name, index = split_tensor_name(ref or "")
    return graph.nx.nodes[op_name]["op"].outputs[index]


def _feeds(graph: Graph, placeholder: Op, needed: set[str]) -> bool:
    return any(c.name in needed for c in graph.consumers(placeholder.name)) or placeholder.name in needed


_DETERMINISTIC_EXCLUDED = {"Dropout", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                           "Multinomial", "Bernoulli", "AlphaDropout"}


class _Builder:
    """Emits the fx graph of a compile plan."""

    def __init__(self, graph: Graph, inputs: list[str], outputs: list[str], ops: list[Op]) -> None:
        self.graph, self.inputs, self.outputs, self.ops = graph, inputs, outputs, ops
        self.fx = fx.Graph()
        self.root: dict[str, Any] = {"training": True}
        self.scopes: set[str] = set()
        self.env: dict[str, Any] = {}
        self.consts: dict[str, torch.Tensor] = {}
        self.consts_by_ref: dict[str, str] = {}
        self.variables: list[str] = []
        self.bodies: list[str] = []
        self.training: fx.Node | None = None
        self.uses = self._count_uses()

    def _count_uses(self) -> dict[str, int]:
        uses: dict[str, int] = {}
        for op in self.ops:
            for r in op.inputs:
                if r is not None:
                    uses[r] = uses.get(r, 0) + 1
        for r in self.outputs:
            uses[r] = uses.get(r, 0) + 1
        return uses

    def build(self) -> CompiledGraph:
        used_idents: set[str] = set()
        for ref in self.inputs:
            ident = identifier(split_tensor_name(ref)[0], "input")
            while ident in used_idents:
                ident += "_"
            used_idents.add(ident)
            node = self.fx.placeholder(ident)
            node.meta["graphdnn_name"] = ref
            self.env[ref] = node
        fused = self._fusions()
        absorbed = set(fused.values())
        for op in self.ops:
            if op.is_variable:
                self._variable(op)
            elif op.name in absorbed:
                continue
            elif op.name in fused:
                self._addmm(op, self.graph.get_operation(fused[op.name]))
            else:
                opdef = lookup(op.type, op.domain, self.graph.opset.get(op.domain))
                if self._foldable(op, opdef):
                    self._fold(op, opdef)
                else:
                    self._call(op, opdef)
        results = [self._value(r) for r in self.outputs]
        self.fx.output(results[0] if len(results) == 1 else tuple(results))
        module = CompiledGraph(self.root, self.fx, class_name="CompiledGraph")
        for key in self.consts:
            module.register_buffer(key, getattr(module, key), persistent=False)
        module.source_graph = self.graph
        module.input_names = list(self.inputs)
        module.output_names = list(self.outputs)
        module.variable_names = list(self.variables)
        return module

    # -- values -------------------------------------------------------------------------
    def _value(self, ref: str) -> Any:
        if ref in self.env:
            return self.env[ref]
        op_name, index = split_tensor_name(ref)
        base = self.env.get(tensor_name(op_name, -1))
        if base is None:
            raise GraphError(f"tensor {ref!r} is not computed by this plan")
        node = self.fx.call_function(operator.getitem, (base, index))
        self.env[ref] = node
        return node

    def _variable(self, op: Op) -> None:
        key = state_key(op.name)
        parts = key.split(".")
        for i in range(1, len(parts)):
            self.scopes.add(".".join(parts[:i]))
        clash = key in self.scopes or any(".".join(parts[:i]) in self.root for i in range(1, len(parts)))
        if clash:
            raise GraphError(
                f"variable {op.name!r} and another variable inside scope {op.name!r} (or vice versa) cannot both "
                "live in a module hierarchy; rename one of them"
            )
        self.root[key] = self.graph.values[op.name]
        node = self.fx.get_attr(key)
        node.meta["graphdnn_name"] = op.name
        self.env[op.output()] = node
        self.variables.append(op.name)

    def _foldable(self, op: Op, opdef: OpDef) -> bool:
        if op.type in _DETERMINISTIC_EXCLUDED or has_subgraphs(op) or opdef.region is not None:
            return False
        if op.type == "Constant":
            return True
        return bool(op.inputs) and all(r is None or r in self.consts_by_ref for r in op.inputs)

    def _fold(self, op: Op, opdef: OpDef) -> None:
        args = [None if r is None else self.consts[self.consts_by_ref[r]] for r in op.inputs]
        for i in opdef.static_inputs:
            if i < len(args) and args[i] is not None:
                args[i] = decode(args[i]).tolist()  # decode: int4 & co. as their values
        kwargs = dict(op.attrs)
        if opdef.num_outputs is None:
            kwargs["_outputs"] = len(op.outputs)
        with torch.no_grad():
            result = opdef.lower(*args, **kwargs)
        results = result if isinstance(result, tuple) else (result,)
        if not all(isinstance(r, torch.Tensor) for r in results):  # a sequence (list) stays a run-time value
            self._call(op, opdef)
            return
        for i, value in enumerate(results[: len(op.outputs)]):
            key = f"_const_{len(self.consts)}"
            self.consts[key] = value
            self.root[key] = value
            ref = op.output(i)
            self.consts_by_ref[ref] = key
            node = self.fx.get_attr(key)
            node.meta["graphdnn_name"] = ref
            self.env[ref] = node

    def _args(self, op: Op, opdef: OpDef) -> list[Any]:
        args: list[Any] = []
        for i, ref in enumerate(op.inputs):
            if ref is None:
                args.append(None)
            elif i in opdef.static_inputs and (value := self._static(ref)) is not None:
                args.append(value)
            else:
                args.append(self._value(ref))
        while args and args[-1] is None:
            args.pop()
        return args

    def _static(self, ref: str) -> Any:
        if ref in self.consts_by_ref:
            return decode(self.consts[self.consts_by_ref[ref]]).tolist()
        value = constant_value(self.graph, ref)
        return None if value is None else decode(value).tolist()

    def _call(self, op: Op, opdef: OpDef) -> None:
        kwargs = dict(op.attrs)
        if opdef.uses_training and op.meta.get("frozen"):  # a frozen layer runs in inference mode
            kwargs["training"] = False
        elif opdef.uses_training:
            if self.training is None:
                self.training = self.fx.get_attr("training")
            kwargs["training"] = self.training
        if opdef.num_outputs is None:
            kwargs["_outputs"] = len(op.outputs)
        if has_subgraphs(op):  # control flow: each body becomes a submodule passed to the lowering
            for key, body in subgraph_attrs(op).items():
                target = f"_body{len(self.bodies)}_{identifier(key, 'body')}"
                self.bodies.append(target)
                self.root[target] = compile_body(body)
                kwargs[key] = self.fx.get_attr(target)
            kwargs["_captures"] = captures(op)
        if opdef.region is not None:  # e.g. Gradient: the part of this graph it differentiates
            kwargs["_region"] = self._region(op, opdef)
        node = self._emit(opdef.lower, tuple(self._args(op, opdef)), kwargs, op.name)
        node.meta["graphdnn_name"] = op.name
        if opdef.num_outputs == 1:
            self.env[op.output()] = node
        else:
            self.env[tensor_name(op.name, -1)] = node

    def _region(self, op: Op, opdef: OpDef) -> fx.Node:
        ins, outs = opdef.region(op)
        try:
            refs = [self.graph.get_tensor(n).name for n in (*ins, *outs)]
        except GraphError as exc:
            raise GraphError(f"op {op.name!r} ({op.type}) names a tensor this graph lacks: {exc}") from exc
        target = f"_region{len(self.bodies)}"
        self.bodies.append(target)
        self.root[target] = compile(self.graph, inputs=refs[: len(ins)], outputs=refs[len(ins):])
        return self.fx.get_attr(target)

    def _emit(self, fn: Any, args: tuple, kwargs: dict[str, Any], op_name: str) -> fx.Node:
        return self.fx.create_node("call_function", fn, args, kwargs, name=identifier(op_name, "op"))

    # -- peephole: MatMul + bias Add -> addmm --------------------------------------------
    def _fusions(self) -> dict[str, str]:
        """Map Add op -> MatMul op for ``x @ W + b`` with 2-D x and W, 1-D b, used once."""
        fused: dict[str, str] = {}
        planned = {op.name for op in self.ops}
        for op in self.ops:
            if op.type != "Add" or op.domain or op.inputs[0] is None:
                continue
            mm_name, _ = split_tensor_name(op.inputs[0])
            mm = self.graph.get_operation(mm_name)
            if mm.type != "MatMul" or mm.domain or self.uses.get(op.inputs[0], 0) != 1 or op.inputs[0] in self.inputs:
                continue
            infos = [_info(self.graph, r) for r in (*mm.inputs, op.inputs[1])]
            shapes = [i.shape for i in infos]
            dtypes = {i.dtype for i in infos}
            if None in shapes or [len(s) for s in shapes] != [2, 2, 1] or len(dtypes) != 1:
                continue
            if mm.name in planned:
                fused[op.name] = mm.name
        return fused

    def _addmm(self, add: Op, mm: Op) -> None:
        x, w = (self._value(r) for r in mm.inputs)
        node = self._emit(torch.addmm, (self._value(add.inputs[1]), x, w), {}, add.name)
        node.meta["graphdnn_name"] = add.name
        node.meta["graphdnn_fused"] = [mm.name, add.name]
        self.env[add.output()] = node
