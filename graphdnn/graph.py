"""The graph IR: named ops in a ``networkx`` DiGraph, as in TensorFlow 1.

An ``Op`` holds its ordered input tensor names, its attributes and its outputs' shapes and dtypes;
consumers are derived from the networkx edges. Placeholders and variables are ops too (domain
``graphdnn``), so ``networkx`` ancestor/descendant queries answer "what does this tensor depend on".
Variable values live in ``Graph.values`` (``nn.Parameter`` for trainable variables, tensors for
state such as moving statistics); modules compiled from a graph share them, as TF variables are
shared by everything that runs in one graph.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch

from graphdnn import graph_hooks
from graphdnn.dtypes import dtype_name, is_container_type, value_type_name
from graphdnn.errors import GraphError
from graphdnn.names import check_name, split_tensor_name, tensor_name
from graphdnn.opset import DEFAULT_OPSET, GRAPHDNN_DOMAIN
from graphdnn.small_dtypes import SMALL_DTYPES, clone, int_range, is_small, storage

Shape = tuple[int | None, ...]
VARIABLE, PLACEHOLDER = "Variable", "Placeholder"
TRAINABLE_VARIABLES = "trainable_variables"
GLOBAL_VARIABLES = "variables"
REGULARIZATION_LOSSES = "regularization_losses"
UPDATE_OPS = "update_ops"
#: Key of the declared signature in ``Graph.meta`` (see ``Graph.signature``).
SIGNATURE = "signature"


@dataclass(slots=True)
class ValueInfo:
    """Shape (None for an unknown rank, None entries for unknown dims) and dtype name of a value."""

    shape: Shape | None
    dtype: str | None


@dataclass(slots=True)
class Op:
    """One named operation. ``inputs`` are tensor names (``"op:i"``), ``None`` for an omitted input."""

    name: str
    type: str
    inputs: list[str | None]
    attrs: dict[str, Any]
    outputs: list[ValueInfo]
    domain: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_variable(self) -> bool:
        return self.domain == GRAPHDNN_DOMAIN and self.type == VARIABLE

    @property
    def is_placeholder(self) -> bool:
        return self.domain == GRAPHDNN_DOMAIN and self.type == PLACEHOLDER

    def output(self, index: int = 0) -> str:
        """The name of output ``index``."""
        return tensor_name(self.name, index)


class Tensor:
    """A handle on one output of an op: ``graph``, ``name`` (``"op:i"``), shape and dtype."""

    __slots__ = ("graph", "op_name", "index")

    def __init__(self, graph: Graph, op_name: str, index: int = 0) -> None:
        self.graph, self.op_name, self.index = graph, op_name, index

    @property
    def name(self) -> str:
        return tensor_name(self.op_name, self.index)

    @property
    def op(self) -> Op:
        return self.graph.get_operation(self.op_name)

    @property
    def shape(self) -> Shape | None:
        return self.op.outputs[self.index].shape

    @property
    def dtype(self) -> str | None:
        return self.op.outputs[self.index].dtype

    def consumers(self) -> list[Op]:
        """Ops that read this tensor."""
        return [op for op in self.graph.consumers(self.op_name) if self.name in op.inputs]

    def __repr__(self) -> str:
        return f"<Tensor {self.name!r} shape={self.shape} dtype={self.dtype}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tensor) and other.graph is self.graph and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self.graph), self.name))

    def _binary(self, op_type: str, other: Any, reverse: bool = False) -> Tensor:
        other_t = other if isinstance(other, Tensor) else self.graph.constant(other, dtype=self.dtype)
        a, b = (other_t, self) if reverse else (self, other_t)
        return self.graph.add_op(op_type, [a, b]).out()

    def __add__(self, o: Any) -> Tensor:
        return self._binary("Add", o)

    def __radd__(self, o: Any) -> Tensor:
        return self._binary("Add", o, True)

    def __sub__(self, o: Any) -> Tensor:
        return self._binary("Sub", o)

    def __rsub__(self, o: Any) -> Tensor:
        return self._binary("Sub", o, True)

    def __mul__(self, o: Any) -> Tensor:
        return self._binary("Mul", o)

    def __rmul__(self, o: Any) -> Tensor:
        return self._binary("Mul", o, True)

    def __truediv__(self, o: Any) -> Tensor:
        return self._binary("Div", o)

    def __matmul__(self, o: Any) -> Tensor:
        return self._binary("MatMul", o)

    def __neg__(self) -> Tensor:
        return self.graph.add_op("Neg", [self]).out()


TensorLike = Tensor | str


class OpHandle:
    """What ``Graph.add_op`` returns: the op plus convenient access to its outputs as ``Tensor``s."""

    __slots__ = ("graph", "op")

    def __init__(self, graph: Graph, op: Op) -> None:
        self.graph, self.op = graph, op

    def out(self, index: int = 0) -> Tensor:
        return Tensor(self.graph, self.op.name, index)

    @property
    def outputs(self) -> list[Tensor]:
        return [Tensor(self.graph, self.op.name, i) for i in range(len(self.op.outputs))]


class Graph:
    """A named operation graph: ops, variable values, collections, name scopes and an opset."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.nx = nx.DiGraph()
        self.values: dict[str, torch.Tensor] = {}
        self.collections: dict[str, list[str]] = {}
        self.opset: dict[str, int] = dict(DEFAULT_OPSET)
        self.meta: dict[str, Any] = {}
        #: Foreign value names (ONNX value names that are not ``op:i``) -> tensor names; see ``get_tensor``.
        self.aliases: dict[str, str] = {}
        self._name_stack: list[str] = []
        self._var_stack: list[str] = []
        self._scopes: set[str] = set()
        self._op_counters: dict[str, int] = {}
        self._scope_counters: dict[str, int] = {}
        self._topo: list[str] | None = None

    # ----------------------------------------------------------------- scopes and names
    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[str]:
        """Prefix op names (not variable names, as in TF1) with ``name``; yields the full scope."""
        check_name(name, "scope name")
        self._name_stack.append(name)
        try:
            yield self.current_scope()
        finally:
            self._name_stack.pop()

    @contextlib.contextmanager
    def variable_scope(self, name: str) -> Iterator[str]:
        """Prefix both variable names and op names with ``name`` (TF1's ``variable_scope``)."""
        check_name(name, "scope name")
        self._var_stack.append(name)
        self._name_stack.append(name)
        try:
            yield "/".join(self._var_stack)
        finally:
            self._name_stack.pop()
            self._var_stack.pop()

    @contextlib.contextmanager
    def layer_scope(self, name: str | None, default: str) -> Iterator[str]:
        """Open a layer's variable scope: an explicit ``name`` must be new; a default is uniquified
        (``dense``, ``dense_1``...) like TF1's layers. Yields the layer's variable scope."""
        prefix = "/".join(self._var_stack + [""])
        if name is None:
            name = self._uniquify(prefix + default, self._scopes.__contains__, self._scope_counters)[len(prefix):]
        elif prefix + check_name(name, "layer name") in self._scopes:
            raise GraphError(
                f"a layer named {prefix + name!r} already exists; give the new layer another name "
                f"(layer names are explicit and never silently renamed)"
            )
        self._scopes.add(prefix + name)
        with self.variable_scope(name) as scope:
            yield scope

    def current_scope(self) -> str:
        """The current op name scope (``dnn/hidden1``), '' at top level."""
        return "/".join(self._name_stack)

    @property
    def layer_scopes(self) -> frozenset[str]:
        """The variable scopes of the layers built in this graph (``dnn/hidden1``): a new layer may not reuse
        one (see :meth:`layer_scope`). Assign a set to replace them (a graph read from a file, cut or renamed)."""
        return frozenset(self._scopes)

    @layer_scopes.setter
    def layer_scopes(self, scopes: Iterable[str]) -> None:
        self._scopes = set(scopes)

    def _op_name(self, name: str | None, default: str, explicit_is_final: bool) -> str:
        scope = self.current_scope()
        full = f"{scope}/{name or default}" if scope else (name or default)
        if name is not None and explicit_is_final:
            if full in self.nx:
                raise GraphError(f"an op named {full!r} already exists; choose another name")
            return full
        return self._uniquify(full, self.nx.__contains__, self._op_counters)

    @staticmethod
    def _uniquify(base: str, taken: Any, counters: dict[str, int]) -> str:
        """``base``, else ``base_1``, ``base_2``... (TF1's rule); a counter per base keeps it O(1)."""
        i = counters.get(base, 0)
        candidate = base if i == 0 else f"{base}_{i}"
        while taken(candidate):
            i += 1
            candidate = f"{base}_{i}"
        counters[base] = i + 1
        return candidate

    def _var_name(self, name: str) -> str:
        full = "/".join(self._var_stack + [check_name(name, "variable name")])
        if full in self.nx:
            raise GraphError(f"variable {full!r} already exists; variable names must be unique")
        return full

    # ----------------------------------------------------------------------- building
    def add_op(
        self,
        op_type: str,
        inputs: list[TensorLike | None],
        attrs: dict[str, Any] | None = None,
        name: str | None = None,
        *,
        domain: str = "",
        num_outputs: int | None = None,
        outputs: list[ValueInfo] | None = None,
        scoped: bool = True,
        default_name: str | None = None,
    ) -> OpHandle:
        """Add an op of a registered type. ``name`` is taken as given (an error if taken) unless
        None, when ``default_name`` (else the op type) is used and uniquified (``Relu``, ``Relu_1``).
        Output shapes are inferred unless ``outputs`` is given. ``scoped=False`` takes ``name`` as a
        full name."""
        lookup, infer = graph_hooks.get(graph_hooks.OPS)  # the operator set (graphdnn.shapes)
        opdef = lookup(op_type, domain, self.opset.get(domain))
        if scoped:
            full = self._op_name(name, default_name or op_type, explicit_is_final=True)
        else:
            full = check_name(name or op_type, "op name")
            if full in self.nx:
                raise GraphError(f"an op named {full!r} already exists; choose another name")
        refs = [None if t is None else self._resolve_input(t, full) for t in inputs]
        count = num_outputs or opdef.num_outputs or 1
        op = Op(full, op_type, refs, dict(attrs or {}), [], domain)
        op.outputs = outputs if outputs is not None else infer(self, op, opdef, count)
        self._insert(op)
        return OpHandle(self, op)

    def _resolve_input(self, t: TensorLike, consumer: str) -> str:
        ref = t.name if isinstance(t, Tensor) else t
        if isinstance(t, Tensor) and t.graph is not self:
            raise GraphError(f"op {consumer!r}: input {ref!r} belongs to another graph")
        op_name, index = split_tensor_name(ref)
        op = self.nx.nodes[op_name]["op"] if op_name in self.nx else None
        if op is None or index >= len(op.outputs):
            raise GraphError(
                f"op {consumer!r}: input {ref!r} does not exist in graph {self.name!r}"
                + ("" if op is None else f" (op {op_name!r} has {len(op.outputs)} outputs)")
            )
        return tensor_name(op_name, index)

    def insert_op(self, op: Op) -> None:
        """Add ``op`` exactly as built (its name, inputs, attributes and outputs taken as they are: no scoping,
        no shape inference): for readers that rebuild a graph from a file and for graph surgery. Its inputs'
        producers should be in the graph already; ``add_op`` is the checked way to build."""
        if op.name in self.nx:
            raise GraphError(f"an op named {op.name!r} already exists in graph {self.name!r}")
        self._insert(op)

    def _insert(self, op: Op) -> None:
        self.meta.pop(SIGNATURE, None)  # a declared signature describes the graph as it was declared
        self.nx.add_node(op.name, op=op)
        for ref in op.inputs:
            if ref is not None:
                self.nx.add_edge(split_tensor_name(ref)[0], op.name)
        self._topo = None

    def placeholder(self, name: str, shape: tuple[int | None, ...] | None, dtype: Any = "float32") -> Tensor:
        """A graph input: ``None`` dims (the batch) are dynamic; ``shape=None`` means unknown rank.
        ``dtype`` may be a sequence or optional type string (``"seq(float32)"``, see
        ``graphdnn.dtypes.value_type_name``): the input is then a list of tensors / a value or None,
        and ``shape`` must be None (element shapes go in the type string)."""
        dt = value_type_name(dtype)
        if is_container_type(dt) and shape is not None:
            raise GraphError(f"placeholder {name!r} of type {dt!r} is not a tensor: its shape must be None "
                             "(write element shapes in the type, e.g. 'seq(float32[3,?])')")
        shp = None if shape is None else tuple(None if d is None or d < 0 else int(d) for d in shape)
        attrs = {"shape": None if shp is None else list(shp), "dtype": dt}
        op = Op(self._op_name(check_name(name), name, True), PLACEHOLDER, [], attrs, [ValueInfo(shp, dt)],
                GRAPHDNN_DOMAIN)
        self._insert(op)
        return Tensor(self, op.name)

    def variable(
        self,
        name: str,
        shape: tuple[int, ...] | None = None,
        dtype: Any = None,
        initializer: dict[str, Any] | None = None,
        *,
        trainable: bool = True,
        value: Any = None,
        regularizer: dict[str, Any] | None = None,
        constraint: dict[str, Any] | None = None,
        layout: str | None = None,
        scoped: bool = True,
        copy: bool = True,
    ) -> Tensor:
        """A named variable (in the variable scope, not the name scope). Its value is ``value`` or
        is drawn now from ``initializer`` (an ``initializers`` spec). ``trainable=False`` makes it
        state (a buffer), like moving statistics. ``dtype`` defaults to float32 (or the value's).
        ``layout`` ("io" for ``[in, out]`` dense kernels,
        "oihw" for conv kernels) guides fan computation and foreign-weight conversion. ``copy=False``
        lets the variable own ``value``'s storage (loaders that just created it)."""
        from graphdnn import initializers

        full = self._var_name(name) if scoped else check_name(name)
        if full in self.nx:
            raise GraphError(f"variable {full!r} already exists; variable names must be unique")
        if value is not None:
            tensor = torch.as_tensor(value).detach()
            tensor = tensor.to(_dtype(dtype)) if dtype is not None else tensor
            if shape is not None and tuple(tensor.shape) != tuple(shape):
                raise GraphError(f"variable {full!r}: value has shape {tuple(tensor.shape)}, declared {tuple(shape)}")
            init_spec = initializers.from_value()
        else:
            if shape is None:
                raise GraphError(f"variable {full!r} needs a shape or a value")
            init_spec = initializer or initializers.glorot_uniform()
            tensor = initializers.materialize(init_spec, tuple(shape), dtype or "float32", layout)
        dt = dtype_name(tensor.dtype)
        attrs = {
            "shape": list(tensor.shape),
            "dtype": dt,
            "trainable": bool(trainable),
            "initializer": dict(init_spec),
            "regularizer": regularizer,
            "constraint": constraint,
            "layout": layout,
        }
        op = Op(full, VARIABLE, [], attrs, [ValueInfo(tuple(tensor.shape), dt)], GRAPHDNN_DOMAIN)
        self._insert(op)
        self.set_value(full, tensor, copy=copy or value is None)
        handle = Tensor(self, full)
        if regularizer:
            graph_hooks.get(graph_hooks.REGULARIZER)(self, handle, regularizer)  # graphdnn.regularizers.add_loss
        return handle

    def set_value(self, name: str, value: Any, *, copy: bool = True) -> None:
        """Set a variable's value (shape must match the declaration; the dtype is cast to it).
        ``copy=False`` lets a variable without a value take ``value``'s storage (used by loaders)."""
        op = self.get_operation(name)
        if not op.is_variable:
            raise GraphError(f"{name!r} is a {op.type} op, not a variable")
        tensor = torch.as_tensor(value).detach()
        if list(tensor.shape) != op.attrs["shape"]:
            raise GraphError(f"variable {name!r}: value has shape {list(tensor.shape)}, expected {op.attrs['shape']}")
        tensor = _as_dtype(tensor, _dtype(op.attrs["dtype"]), name)
        current = self.values.get(name)
        if current is not None:
            with torch.no_grad():
                storage(current).copy_(storage(tensor))  # int4 & co. copy as their bytes
            return
        if not copy:
            owned = tensor
        elif tensor.is_contiguous() or is_small(tensor.dtype):
            owned = clone(tensor)
        else:  # copied anyway: row-major, the order a checkpoint holds (saved and loaded without reordering)
            owned = tensor.contiguous()
        if op.attrs["trainable"] and tensor.is_floating_point():
            self.values[name] = torch.nn.Parameter(owned, requires_grad=not op.attrs.get("frozen", False))
        else:
            self.values[name] = owned

    # ----------------------------------------------------------------------- editing
    def set_input(self, op_name: str, index: int, ref: TensorLike) -> None:
        """Make input ``index`` of op ``op_name`` read tensor ``ref`` (graph surgery's rewiring)."""
        op = self.get_operation(op_name)
        new = self._resolve_input(ref, op_name)
        if op_name in nx.ancestors(self.nx, split_tensor_name(new)[0]) | {split_tensor_name(new)[0]}:
            raise GraphError(f"op {op_name!r} cannot read {new!r}: that tensor depends on {op_name!r} (a cycle)")
        op.inputs[index] = new
        self.nx.remove_edges_from([(p, op_name) for p in list(self.nx.predecessors(op_name))])
        for r in op.inputs:
            if r is not None:
                self.nx.add_edge(split_tensor_name(r)[0], op_name)
        self._topo = None

    def remove_ops(self, names: list[str] | set[str]) -> None:
        """Remove ops (and their variable values and collection entries). Removing an op that a
        remaining op reads is an error: remove its consumers too, or rewire them first."""
        doomed = set(names)
        for name in doomed:
            self.get_operation(name)
            users = sorted(c for c in self.nx.successors(name) if c not in doomed)
            if users:
                raise GraphError(f"cannot remove op {name!r}: ops {users[:5]} still read it; remove or rewire them")
        self.nx.remove_nodes_from(doomed)
        self.meta.pop(SIGNATURE, None)
        for name in doomed:
            self.values.pop(name, None)
        for key, refs in list(self.collections.items()):
            self.collections[key] = [r for r in refs if split_tensor_name(r)[0] not in doomed and r not in doomed]
        self._topo = None

    def rename_ops(self, mapping: dict[str, str]) -> None:
        """Rename ops (variables included) everywhere: inputs, values, collections; the creation
        order, and so the default input order of compiled modules, is kept."""
        for old, new in mapping.items():
            self.get_operation(old)
            check_name(new, "op name")
        targets = [mapping.get(n, n) for n in self.nx.nodes]
        if len(set(targets)) != len(targets):
            dup = sorted({t for t in targets if targets.count(t) > 1})
            raise GraphError(f"renaming would give two ops the same name: {dup[:5]}")

        def ref(r: str | None) -> str | None:
            if r is None:
                return None
            op_name, index = split_tensor_name(r)
            return tensor_name(mapping.get(op_name, op_name), index) if op_name in mapping else r

        ops = [self.nx.nodes[n]["op"] for n in self.nx.nodes]
        declared = self.meta.get(SIGNATURE)
        self.nx = nx.DiGraph()
        for op in ops:
            op.name = mapping.get(op.name, op.name)
            op.inputs = [ref(r) for r in op.inputs]
            self._insert(op)
        self.values = {mapping.get(k, k): v for k, v in self.values.items()}
        self.collections = {k: [mapping.get(r) or ref(r) for r in v] for k, v in self.collections.items()}
        self.aliases = {k: ref(v) or v for k, v in self.aliases.items()}
        if declared is not None:
            self.meta[SIGNATURE] = {k: [ref(r) for r in v] for k, v in declared.items()}

    @property
    def signature(self) -> dict[str, list[str]] | None:
        """The declared ``{"inputs": [...], "outputs": [...]}`` tensor names (an imported model's own), or
        None. ``graphdnn.compile``, ``export_onnx`` and the CLI default to it. Saved with the graph; adding
        or removing ops drops it (renaming follows it)."""
        return self.meta.get(SIGNATURE)

    @signature.setter
    def signature(self, value: dict[str, list[TensorLike]] | None) -> None:
        if value is None:
            self.meta.pop(SIGNATURE, None)
            return
        if not isinstance(value, dict) or set(value) != {"inputs", "outputs"}:
            raise GraphError("a signature is {'inputs': [tensor names], 'outputs': [tensor names]}")
        self.meta[SIGNATURE] = {k: [self.get_tensor(t).name for t in value[k]] for k in ("inputs", "outputs")}

    def constant(self, value: Any, name: str | None = None, dtype: Any = None) -> Tensor:
        """A literal Constant op (folded at compile time); scalars and small lists are kept inline."""
        t = torch.as_tensor(value, dtype=_dtype(dtype) if dtype else None)
        literal = {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "data": t.reshape(-1).tolist()}
        return self.add_op("Constant", [], {"value": literal}, name).out()

    # ---------------------------------------------------------------------- queries
    def get_operation(self, name: str) -> Op:
        """The op named ``name`` (a tensor name ``op:i`` is accepted too)."""
        if name not in self.nx and name in self.aliases and not _is_tensor_of(self, name):
            name = self.aliases[name]
        op_name = split_tensor_name(name)[0] if name not in self.nx else name
        if op_name not in self.nx:
            from graphdnn.suggest import did_you_mean

            hint = did_you_mean(op_name, list(self.nx) + list(self.aliases))
            raise GraphError(f"no op named {op_name!r} in graph {self.name!r}{hint}")
        return self.nx.nodes[op_name]["op"]

    def get_tensor(self, name: str) -> Tensor:
        """The tensor ``op:i`` (a bare op name means its output 0): ``get_tensor("dnn/hidden4/Relu:0")``.
        A name in ``aliases`` (an imported ONNX value name) resolves to its tensor unless it is itself
        the name of an existing ``op:i`` tensor."""
        if isinstance(name, Tensor):
            return name
        if name in self.aliases and not _is_tensor_of(self, name):
            name = self.aliases[name]
        op_name, index = (name, 0) if name in self.nx else split_tensor_name(name)
        op = self.get_operation(op_name)
        if index >= len(op.outputs):
            raise GraphError(f"op {op_name!r} has {len(op.outputs)} output(s); {name!r} does not exist")
        return Tensor(self, op_name, index)

    get_tensor_by_name = get_tensor
    get_operation_by_name = get_operation

    def __contains__(self, name: str) -> bool:
        return name in self.nx or split_tensor_name(name)[0] in self.nx or name in self.aliases

    def operations(self) -> list[Op]:
        """Every op, in a topological order that keeps creation order where it can."""
        return [self.nx.nodes[n]["op"] for n in self.topological_order()]

    get_operations = operations

    def topological_order(self) -> list[str]:
        """Op names in a topological order, creation order wherever possible (cached)."""
        if self._topo is None:
            created = list(self.nx.nodes)
            position = {n: i for i, n in enumerate(created)}
            if all(position[p] < position[n] for p, n in self.nx.edges):
                self._topo = created  # ops are created after their inputs: usually already sorted
            else:
                self._topo = list(nx.lexicographical_topological_sort(self.nx, key=position.__getitem__))
        return self._topo

    def consumers(self, op_name: str) -> list[Op]:
        """Ops that read any output of ``op_name``."""
        return [self.nx.nodes[n]["op"] for n in self.nx.successors(op_name)]

    def placeholders(self) -> list[Op]:
        return [op for op in self.operations() if op.is_placeholder]

    def variables(self, scope: str | None = None) -> list[Op]:
        """Every variable (TF's global variables), optionally those whose name matches ``scope``."""
        rx = re.compile(scope) if scope else None
        return [op for op in self.operations() if op.is_variable and (rx is None or rx.match(op.name))]

    def trainable_variables(self, scope: str | None = None) -> list[Op]:
        """Trainable, unfrozen variables, optionally filtered by a ``scope`` regex (``"hidden[34]|outputs"``)."""
        return [v for v in self.variables(scope) if v.attrs["trainable"] and not v.attrs.get("frozen")]

    # ------------------------------------------------------------------- collections
    def add_to_collection(self, name: str, value: TensorLike | Op | str) -> None:
        """Append a tensor or op (by name) to collection ``name``."""
        ref = value.name if isinstance(value, (Tensor, Op)) else value
        if ref not in self:
            raise GraphError(f"cannot add {ref!r} to collection {name!r}: no such op or tensor")
        self.collections.setdefault(name, []).append(ref)

    def get_collection(self, name: str, scope: str | None = None) -> list[str]:
        """Names in collection ``name`` (built in: ``variables``, ``trainable_variables``,
        ``regularization_losses``), filtered by a ``scope`` regex matched at the start."""
        if name == GLOBAL_VARIABLES:
            return [v.name for v in self.variables(scope)]
        if name == TRAINABLE_VARIABLES:
            return [v.name for v in self.trainable_variables(scope)]
        rx = re.compile(scope) if scope else None
        return [n for n in self.collections.get(name, []) if rx is None or rx.match(n)]

    # ------------------------------------------------------------------ serialization
    def to_json(self, indent: int | None = None) -> str:
        """The graph (without variable values) as versioned JSON; see ``graphdnn.serialize``."""
        return graph_hooks.get(graph_hooks.TO_JSON)(self, indent)

    @classmethod
    def from_json(cls, text: str | bytes, initialize: bool = False) -> Graph:
        """Rebuild a graph from ``to_json``; ``initialize=True`` draws variable values from initializers."""
        graph = graph_hooks.get(graph_hooks.FROM_JSON)(text)  # graphdnn.serialize.graph_from_json
        if initialize:
            graph_hooks.get(graph_hooks.INITIALIZE)(graph)  # graphdnn.restoring.initialize
        return graph

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {self.nx.number_of_nodes()} ops, {len(self.values)} variables>"

    # ---------------------------------------------------------------- default graph
    @contextlib.contextmanager
    def as_default(self) -> Iterator[Graph]:
        """Make this the graph that module-level helpers (``graphdnn.placeholder``...) build into."""
        _DEFAULT.append(self)
        try:
            yield self
        finally:
            _DEFAULT.pop()


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


def _is_tensor_of(graph: Graph, name: str) -> bool:
    """Whether ``name`` is literally ``op:i`` of an existing op (such names win over aliases)."""
    op_name, index = split_tensor_name(name)
    return name != op_name and op_name in graph.nx and index < len(graph.nx.nodes[op_name]["op"].outputs)


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """``tensor`` as ``dtype``; a small type (int4...) takes the int8/uint8 bytes it is stored in (how
    checkpoints hold it) as they are, after a range check for the integer kinds."""
    info = SMALL_DTYPES.get(dtype)
    if info is None or tensor.dtype == dtype:
        return tensor.to(dtype)
    if tensor.dtype != info.storage:
        raise GraphError(f"variable {name!r} is {dtype_name(dtype)}: give its values as {info.storage} "
                         f"(one value per byte), not {tensor.dtype}")
    if info.kind in ("int", "uint") and tensor.numel():
        low, high = int_range(dtype)
        if int(tensor.min()) < low or int(tensor.max()) > high:
            raise GraphError(f"variable {name!r}: values outside the {dtype_name(dtype)} range [{low}, {high}]")
    return tensor.view(dtype)


def _dtype(name: Any) -> torch.dtype:
    from graphdnn.dtypes import torch_dtype

    return torch_dtype(name)


_DEFAULT: list[Graph] = []
_ROOT: list[Graph] = [Graph()]


def get_default_graph() -> Graph:
    """The innermost ``as_default`` graph, or the process-wide default one."""
    return _DEFAULT[-1] if _DEFAULT else _ROOT[0]


def reset_default_graph() -> Graph:
    """Replace the process-wide default graph with a new, empty one."""
    _ROOT[0] = Graph()
    return _ROOT[0]
