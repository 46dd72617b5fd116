"""Compile a graph (or the part between chosen inputs and outputs) to a ``torch.fx.GraphModule``.

The generated ``forward`` is straight-line torch code (``model.code`` shows it): one call per op,
through the op's registered lowering or, where the graph's dtypes make the lowering a single torch call,
that call itself (``fusion.direct``); fused chains and cached shape arithmetic (``graphdnn.fusion``) are
one call each; no per-node interpretation at run time. Variables are
parameters (trainable) or buffers (state) in nested submodules that mirror the scopes, under the
keys of ``names.state_key`` (``hidden1/kernel`` -> ``hidden1.kernel``); they are the graph's own
tensors, so modules compiled from one graph share their variables, as TF variables are shared.
Any tensor can be an input (everything it depends on is skipped) and any tensor an output.

Strings read from a model file are data, never code. What fx writes into the generated source is:
identifiers derived with ``names.identifier`` (placeholders, node names, body submodules),
``names.state_key`` paths (their segments are either plain identifiers or percent-escaped text inside
``getattr(self, "...")``), attribute keywords that pass ``names.is_identifier`` *and* are parameters of
the op's lowering (checked here, at compile time, with a ``GraphError`` naming the op and the
attribute otherwise), and attribute values that are small plain data of built-in types, whose
``repr`` reads back as the same value. Any other value (a tensor, a numpy scalar, a long list or
string) is passed by reference: it becomes an attribute of the module, read with ``self._attr<N>``.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import operator
import os
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules import module as _module_hooks

from graphdnn import budget, fusion, module_slots
from graphdnn.bulk import paused_gc
from graphdnn.errors import GraphDNNError, GraphError, InputError, UninitializedError
from graphdnn.graph import REGULARIZATION_LOSSES, Graph, Op, Tensor, needed_ops
from graphdnn.names import identifier, is_identifier, split_tensor_name, state_key, tensor_name
from graphdnn.ops.registry import OpDef, lookup
from graphdnn.shapes import constant_value, fold_bytes
from graphdnn.small_dtypes import decode
from graphdnn.subgraphs import captures, ensure_stateless, has_subgraphs, signature, subgraph_attrs

TensorRef = Tensor | str


def _ref(graph: Graph, t: TensorRef) -> str:
    return graph.get_tensor(t).name if not isinstance(t, Tensor) else t.name


def default_outputs(graph: Graph) -> list[str]:
    """The declared outputs (``graph.signature``, an imported model's own, in order) when the graph has
    them; else the outputs of ops nothing consumes (variables, placeholders, constants and
    regularization losses excluded): what a model built in the graph computes."""
    declared = graph.signature
    if declared is not None:
        return list(declared["outputs"])
    skip = set(graph.get_collection(REGULARIZATION_LOSSES))
    outs = []
    for op in graph.operations():
        if op.is_variable or op.is_placeholder or op.type == "Constant" or graph.nx.out_degree(op.name):
            continue
        outs += [op.output(i) for i in range(len(op.outputs)) if op.output(i) not in skip]
    return outs


def default_inputs(graph: Graph, outputs: Sequence[str]) -> list[str]:
    """The declared inputs (``graph.signature``, in order) when ``outputs`` are the declared outputs;
    else the placeholders that ``outputs`` need, in creation order."""
    declared = graph.signature
    if declared is not None and list(outputs) == declared["outputs"]:
        return list(declared["inputs"])
    needed = needed_ops(graph, [op.output() for op in graph.placeholders()], outputs)
    needed_names = {graph.get_operation(r).name for r in outputs} | {o.name for o in needed}
    return [op.output() for op in graph.placeholders() if _feeds(graph, op, needed_names)]


class CompiledGraph(fx.GraphModule):
    """A module compiled from a graph: ``forward(*inputs)`` returns the outputs (one tensor or a
    tuple, in order). ``source_graph``, ``input_names`` and ``output_names`` say what it computes.

    Calling it checks the feeds first (``check_inputs``, default True; set it False on a module or on the
    class to skip): each input's rank, known dimensions and kind of dtype against its tensor in the graph,
    with an ``InputError`` naming the input (skipped while ``torch.compile`` or ``torch.jit.trace`` traces).
    Numpy arrays are accepted (converted, floating ones to the module's floating dtype, moved to its device),
    and inputs may be given by name: ``model(X=a)``, ``model(**{"X:0": a})``.
    ``torch.save(model)`` pickles the graph (as JSON) and the variables; ``torch.load(path,
    weights_only=False)`` recompiles it."""

    source_graph: Graph
    input_names: list[str]
    output_names: list[str]
    variable_names: list[str]
    check_inputs: bool = True
    _graphdnn_reads = module_slots.gathered

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            args, kwargs = self._bind(args, kwargs)
        d = self.__dict__
        if self.check_inputs and not _is_compiling():
            seen = d.get("_seen")  # the shapes and dtypes of the last feeds that passed the full check
            if seen is None or len(args) != len(seen):
                args = self._admit(args)
            else:
                for value, (shape, dtype) in zip(args, seen):
                    if type(value) is not torch.Tensor or value.shape != shape or value.dtype is not dtype:
                        args = self._admit(args)
                        break
        if (d.get("_compiled_call_impl") is not None or d["_forward_hooks"] or d["_forward_pre_hooks"]
                or d["_backward_hooks"] or d["_backward_pre_hooks"] or _GLOBAL_HOOKS[0] or _GLOBAL_HOOKS[1]
                or _GLOBAL_HOOKS[2] or _GLOBAL_HOOKS[3] or _tracing_state()):
            return nn.Module.__call__(self, *args)
        return self.forward(*args)  # what nn.Module.__call__ does here, without its layers of calls

    def _admit(self, args: tuple) -> tuple:
        """The full check of a call's inputs (skipped while ``torch.jit.trace`` traces). A call whose
        tensors have the shapes and dtypes of the last ones to pass it passes in a few comparisons."""
        if _tracing_state():
            return args
        args = self._checked(args)
        if all(type(value) is torch.Tensor for value in args):
            self.__dict__["_seen"] = tuple((value.shape, value.dtype) for value in args)
        return args

    def _bind(self, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """Positional inputs from feeds named by tensor (``X:0``), op (``X``) or argument (``x``) name."""
        index = self.__dict__.get("_feed_index")
        if index is None:
            params = [n.target for n in self.graph.nodes if n.op == "placeholder"]
            index = {}
            for i, ref in enumerate(self.input_names):
                for key in (ref, split_tensor_name(ref)[0], params[i] if i < len(params) else ref):
                    index.setdefault(key, i)
            self.__dict__["_feed_index"] = index
        feeds = list(args) + [_UNSET] * (len(self.input_names) - len(args))
        for key, value in kwargs.items():
            i = index.get(key)
            if i is None:
                from graphdnn.suggest import did_you_mean

                raise InputError(f"{key!r} is not an input of this module (inputs: {self.input_names})"
                                 f"{did_you_mean(key, index)}")
            if i < len(feeds) and feeds[i] is not _UNSET:
                raise InputError(f"input {self.input_names[i]!r} is fed twice")
            feeds[i] = value
        missing = [self.input_names[i] for i, v in enumerate(feeds) if v is _UNSET]
        if missing:
            raise InputError(f"no value fed for input(s) {missing}; this module takes {self.input_names}")
        return tuple(feeds), {}

    def _checked(self, args: tuple) -> tuple:
        specs = self.__dict__.get("_input_specs")
        if specs is None:
            specs = self.__dict__["_input_specs"] = _input_specs(self.source_graph, self.input_names)
        if len(args) != len(specs):
            raise InputError(f"this module takes {len(specs)} input(s) {self.input_names}, got {len(args)}")
        converted = None
        for i, (value, spec) in enumerate(zip(args, specs)):  # runs at every call: kept lean
            name, rank, fixed, dtype, floating = spec
            if type(value) is not torch.Tensor and not isinstance(value, torch.Tensor):
                if not isinstance(value, (np.ndarray, np.generic)) or value.dtype.kind in "OUSV":
                    continue  # a Python number, a traced proxy, strings: left to the lowering
                value = self._from_numpy(value, dtype, name)
                converted = list(args) if converted is None else converted
                converted[i] = value
            if rank is not None:
                shape = value.shape
                if len(shape) != rank:
                    raise InputError(f"input {name!r} expects shape {_show_shape(spec)}, got {list(shape)}")
                for axis, size in fixed:
                    if shape[axis] != size:
                        raise InputError(f"input {name!r} expects shape {_show_shape(spec)}, got {list(shape)}")
            if floating is not None and value.dtype.is_floating_point is not floating:
                raise InputError(f"input {name!r} expects {str(dtype).replace('torch.', '')}, got "
                                 f"{str(value.dtype).replace('torch.', '')}")
        return args if converted is None else tuple(converted)

    def _from_numpy(self, value: Any, dtype: torch.dtype | None, name: str) -> torch.Tensor:
        try:
            tensor = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise InputError(f"input {name!r}: cannot read a {value.dtype} array as a tensor ({exc})") from None
        first = next(iter(self.parameters()), None)
        first = next(iter(self.buffers()), None) if first is None else first
        if tensor.is_floating_point():  # the module's floating dtype (it may have been cast), else the input's
            if first is not None and first.is_floating_point():
                dtype = first.dtype
            if dtype is not None and dtype.is_floating_point:
                tensor = tensor.to(dtype)
        return tensor if first is None or first.device == tensor.device else tensor.to(first.device)

    def __deepcopy__(self, memo: dict[int, Any]) -> CompiledGraph:
        """A copy with its own variables (``copy.deepcopy``); the graph comes along, sharing the copies."""
        import copy

        result = super().__deepcopy__(memo)
        for key in ("source_graph", "input_names", "output_names", "variable_names", "check_inputs"):
            if key in self.__dict__:
                result.__dict__[key] = copy.deepcopy(self.__dict__[key], memo)
        if self.__dict__.get("_backend"):  # the copy's own compiled forward, not the original's
            result.__dict__["_compiled_call_impl"] = None
            _accelerate(result, self.__dict__["_backend"])
        return result

    def __reduce__(self) -> Any:
        values = {**self.source_graph.values, **self.graph_state_dict()}
        state = {"training": self.training, "check_inputs": self.__dict__.get("check_inputs")}
        return _rebuild, (self.source_graph.to_json(), values, list(self.input_names), list(self.output_names),
                          state)

    def __str__(self) -> str:
        from graphdnn.summary import variable_records, variable_tree

        records = variable_records(self)
        count = sum(r.numel for r in records)
        head = (f"CompiledGraph({', '.join(self.input_names)} -> {', '.join(self.output_names)}: "
                f"{len(records)} variables, {count:,} values)")
        tree = variable_tree(records)
        return head + ("\n" + "\n".join("  " + line for line in tree.splitlines()) if tree else "")

    __repr__ = __str__

    def summary(self, depth: int | None = None, print_fn: Any = print) -> None:
        """Print the Keras-style table of ``graphdnn.summary.summary`` (scopes, output shapes, parameters)."""
        from graphdnn.summary import summary

        print_fn(summary(self, depth))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, also accepting dense kernels in torch's ``[out, in]`` layout
        (``nn.Linear.weight``): a 2-D kernel whose shape is the transpose of the variable's is transposed,
        with a warning naming it (a square kernel cannot be told apart: transpose it yourself)."""
        import warnings

        own = self.state_dict(keep_vars=True)
        fixed = dict(state_dict)
        turned = []
        for key, value in state_dict.items():
            target = own.get(key)
            if (isinstance(value, torch.Tensor) and isinstance(target, torch.Tensor) and value.dim() == 2
                    and target.dim() == 2 and value.shape != target.shape and value.shape == target.shape[::-1]):
                fixed[key] = value.t()
                turned.append(key)
        if turned:
            warnings.warn(f"transposed {turned} from torch's [out, in] layout to graphdnn's [in, out] kernels",
                          stacklevel=2)
        try:
            return super().load_state_dict(fixed, strict=strict, assign=assign)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n(keys are graph names with '.' for '/', e.g. 'hidden1.kernel'; to load "
                               "another framework's weights by name, use graphdnn.converters.named_tensors.load_weights"
                               "(model, source), which maps names and layouts)") from None

    def recompile(self) -> Any:
        """Regenerate ``forward``. With ``FX_GRAPH_SHOW_META=1`` torch.fx writes every node's ``meta``
        into the source; graphdnn's entries hold names read from files, so they are left out of it."""
        module_slots.install(self)  # generated code reads variables without nn.Module.__getattr__
        reads = module_slots.BatchedReads(module_slots.gather_reads(self, list(self.graph.nodes)))
        try:
            with self.graph.on_generate_code(reads):  # all variables in one read (module_slots)
                if os.environ.get("FX_GRAPH_SHOW_META", "0") != "1":
                    return super().recompile()
                saved = [(node, node.meta) for node in self.graph.nodes]
                for node, meta in saved:
                    node.meta = {k: v for k, v in meta.items() if not k.startswith("graphdnn_")}
                try:
                    return super().recompile()
                finally:
                    for node, meta in saved:
                        node.meta = meta
        finally:
            reads.install(self)
            # torch.fx routes calls through two wrappers of its own (they add the generated line to an
            # error's message); graphdnn's call goes straight to forward, whose frames name the line anyway
            type(self).__call__ = CompiledGraph.__call__

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
    *,
    check_inputs: bool = True,
    backend: str = "eager",
) -> CompiledGraph:
    """Compile ``graph`` to a module computing ``outputs`` from ``inputs``. Defaults: an imported
    model's declared outputs and inputs, in order (``graph.signature``); for a graph without a
    signature, every terminal tensor from the placeholders they need, in creation order (see
    ``default_outputs``, ``default_inputs``). ``check_inputs`` checks each call's feeds against the
    inputs' shapes and dtypes (``CompiledGraph.check_inputs``). Every variable the outputs need must
    have a value (``graphdnn.initialize``, ``graphdnn.restore``), else ``UninitializedError`` lists them.
    ``backend``: ``"eager"`` (the generated code runs as it is) or a ``torch.compile`` backend such as
    ``"inductor"``, which compiles the module's forward in place (``nn.Module.compile``) at its first call
    (and again for new input shapes): a cold start of seconds, for faster calls afterwards. A copy
    (``copy.deepcopy``) is compiled the same way; a pickled module comes back eager."""
    if isinstance(outputs, (Tensor, str)):
        outputs = [outputs]
    out_refs = [_ref(graph, t) for t in outputs] if outputs is not None else default_outputs(graph)
    if not out_refs:
        raise GraphError("nothing to compile: the graph has no outputs; pass outputs=[...]")
    if inputs is None:
        in_refs = default_inputs(graph, out_refs)
    else:
        in_refs = [_ref(graph, t) for t in inputs]
    with paused_gc():
        ops = needed_ops(graph, in_refs, out_refs)
        missing = [op.name for op in ops if op.is_variable and op.name not in graph.values]
        if missing:
            raise UninitializedError(
                f"{len(missing)} variable(s) of graph {graph.name!r} have no value: {', '.join(missing)}; draw "
                "fresh values with graphdnn.initialize(graph) (include= selects some), or read them with "
                "graphdnn.restore(graph, checkpoint)")
        with budget.compile_scope(graph):  # folding a loaded graph's constants is bounded like its load
            module = _Builder(graph, in_refs, out_refs, ops).build()
    if not check_inputs:
        module.check_inputs = False
    if backend != "eager":
        _accelerate(module, backend)
    return module


#: Calls without effects beyond their result, dropped from generated code when nothing reads it.
_PURE_VIEWS = frozenset({torch.permute, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose, torch.flatten,
                         operator.getitem})
_is_compiling = torch.compiler.is_compiling
_tracing_state = torch._C._get_tracing_state


#: The dicts of hooks registered for all modules (torch fills them in place, never replaces them); a call
#: with any of them or of the module's own hooks goes through ``nn.Module.__call__``.
_GLOBAL_HOOKS = (_module_hooks._global_forward_hooks, _module_hooks._global_forward_pre_hooks,
                 _module_hooks._global_backward_hooks, _module_hooks._global_backward_pre_hooks)


def _accelerate(module: CompiledGraph, backend: str) -> None:
    """``torch.compile`` ``module``'s forward in place with ``backend``, refusing what cannot run here."""
    import shutil

    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if not isinstance(backend, str) or backend not in known:
        raise GraphError(f"backend {backend!r} is not 'eager' or a torch.compile backend ({', '.join(known)})")
    if backend == "inductor" and not any(p.device.type == "cuda" for p in module.parameters()):
        from torch._inductor import cpp_builder

        cxx = cpp_builder.get_cpp_compiler()
        if shutil.which(cxx) is None:
            raise GraphDNNError(f"backend 'inductor' compiles C++ for the CPU and needs a C++ compiler; {cxx!r} is "
                                "not on PATH: install one (g++, clang++; or set CXX), or use backend='eager'")
    module.compile(backend=backend)
    module.__dict__["_backend"] = backend


_UNSET = object()


def _input_specs(graph: Graph, refs: Sequence[str]) -> list[tuple[Any, ...]]:
    """Per input: name, rank (None: unknown), ``(axis, size)`` of its known dimensions, torch dtype (or None)
    and whether it is floating (None: not checked)."""
    from graphdnn.dtypes import torch_dtype

    specs = []
    for ref in refs:
        t = graph.get_tensor(ref)
        shape, dtype = t.shape, t.dtype
        known = shape is not None and all(d is None or isinstance(d, int) for d in shape)
        fixed = [(i, d) for i, d in enumerate(shape) if isinstance(d, int) and d >= 0] if known else []
        try:
            td = torch_dtype(dtype) if dtype else None
        except Exception:  # noqa: BLE001 - a dtype torch lacks: not checked
            td = None
        specs.append((ref, len(shape) if known else None, fixed, td, None if td is None else td.is_floating_point))
    return specs


def _show_shape(spec: tuple[Any, ...]) -> str:
    _, rank, fixed = spec[:3]
    dims: list[Any] = [None] * (rank or 0)
    for axis, size in fixed:
        dims[axis] = size
    return "[" + ", ".join("None" if d is None else str(d) for d in dims) + "]"


def _rebuild(graph_json: str, values: dict[str, torch.Tensor], inputs: list[str], outputs: list[str],
             state: dict[str, Any]) -> CompiledGraph:
    """Unpickle a ``CompiledGraph``: the graph from JSON, its variables, compiled again."""
    graph = Graph.from_json(graph_json)
    for name, value in values.items():
        if name in graph and graph.get_operation(name).is_variable:
            graph.values[name] = value
    module = compile(graph, inputs=inputs, outputs=outputs)
    module.train(bool(state.get("training", True)))
    if state.get("check_inputs") is not None:
        module.check_inputs = state["check_inputs"]
    return module


def _feeds(graph: Graph, placeholder: Op, needed: set[str]) -> bool:
    return any(c.name in needed for c in graph.consumers(placeholder.name)) or placeholder.name in needed


_DETERMINISTIC_EXCLUDED = {"Dropout", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                           "Multinomial", "Bernoulli", "AlphaDropout", "GaussianNoise", "GaussianDropout"}

# attribute values written into generated code as literals: exact built-in types (a subclass such as
# numpy.float64 has a repr that does not read back), at most this many leaves and characters per string
_LITERAL_TYPES = frozenset({type(None), bool, int, float, str, bytes, torch.dtype})
_LITERAL_LEAVES = 256
_LITERAL_CHARS = 256


def _printable(value: Any) -> bool:
    """Whether fx may write ``value`` into generated code as a literal (its ``repr``): small plain data."""
    room, stack = _LITERAL_LEAVES, [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is list or kind is tuple:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind not in _LITERAL_TYPES:
            return False
        elif (kind is str or kind is bytes) and len(item) > _LITERAL_CHARS:
            return False
        elif kind is int and item.bit_length() > 64:
            return False
        room -= 1
        if room < 0:
            return False
    return True


def _safe_path(key: str) -> bool:
    """Whether each segment of module path ``key`` is safe where fx writes it: ``self.seg`` for an
    identifier (no keyword; NFKC-stable, as Python reads identifiers in NFKC), else ``getattr(self, "seg")``
    (no quote, backslash or unprintable character)."""
    for seg in key.split("."):
        if seg.isidentifier():
            if keyword.iskeyword(seg) or (not seg.isascii() and unicodedata.normalize("NFKC", seg) != seg):
                return False
        elif not seg or any(ch in '"\\' or not ch.isprintable() for ch in seg):
            return False
    return True


@functools.cache
def _signature(fn: Any) -> tuple[inspect.Signature, frozenset[str]] | None:
    """``fn``'s signature and its keyword-only parameters (None when Python cannot tell)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return sig, frozenset(p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY)


def _check_call(op: Op, fn: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Refuse, naming the op, an attribute that cannot be a keyword argument of its lowering: a key
    that is not an identifier (it would be written into the generated code) or one the lowering lacks."""
    if not kwargs:
        return
    for key in kwargs:
        if not is_identifier(key):
            raise GraphError(
                f"op {op.name!r} ({op.type}) has an attribute named {key!r}, which is not an attribute name (an "
                "ASCII identifier that is not a Python keyword); the model is malformed: remove or rename the attribute"
            )
    known = _signature(fn)
    if known is None or known[1].issuperset(kwargs):
        return
    sig = known[0]
    try:
        sig.bind_partial(*args, **kwargs)
    except TypeError as exc:
        params = list(sig.parameters.values())
        takes = [p.name for i, p in enumerate(params) if not p.name.startswith("_") and p.name != "training" and (
            p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and i >= len(args)))]
        raise GraphError(
            f"op {op.name!r} ({op.type}) cannot take its attributes: {exc}; {op.type} takes "
            f"{', '.join(map(repr, takes)) or 'no attributes'}: remove the others"
        ) from None


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
        self.refs: dict[str, Any] = {}
        self.variables: list[str] = []
        self.bodies: list[str] = []
        self.training: fx.Node | None = None
        self.shape_ops: set[str] = set()
        self.listed: dict[str, fx.Node] = {}

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
        fused = fusion.plan(self.graph, self.ops, self.inputs, self.outputs)
        absorbed = {name for f in fused.values() for name in f.absorbed}
        self.shape_ops = fusion.shape_ops(self.graph, self.ops, self.outputs) - absorbed - set(fused)
        for op in self.ops:
            if op.is_variable:
                self._variable(op)
            elif op.name in absorbed or op.name in self.shape_ops:  # shape arithmetic: emitted where first read
                continue
            elif op.name in fused and not all(r in self.consts_by_ref for r in fused[op.name].inputs):
                self._fused(fused[op.name])
            else:
                for name in fused[op.name].absorbed if op.name in fused else ():  # constants: folded one by one
                    self._op(self.graph.get_operation(name))
                self._op(op)
        results = [self._value(r) for r in self.outputs]
        self.fx.output(results[0] if len(results) == 1 else tuple(results))
        for node in reversed(list(self.fx.nodes)):  # views that only a fused call's absorbed inputs read (none now)
            if node.op == "call_function" and not node.users and node.target in _PURE_VIEWS:
                self.fx.erase_node(node)
        for node in [n for n in self.fx.nodes if n.op == "get_attr" and not n.users and n.target in self.consts]:
            self.fx.erase_node(node)  # a folded constant that only other constants or shape arithmetic read
        module = CompiledGraph(self.root, self.fx, class_name="CompiledGraph")
        for key in self.consts:
            if hasattr(module, key):  # not when only folded into other constants or fused
                module.register_buffer(key, getattr(module, key), persistent=False)
        for key, value in self.refs.items():
            if isinstance(value, torch.Tensor) and hasattr(module, key):  # moves with the module, as constants do
                module.register_buffer(key, getattr(module, key), persistent=False)
        module.source_graph = self.graph
        module.input_names = list(self.inputs)
        module.output_names = list(self.outputs)
        module.variable_names = list(self.variables)
        unread = [n for n in module.graph.nodes if n.op == "get_attr" and not n.users]
        if unread:  # variables that only fused calls' compile-time reads or nothing needs: kept, not read per call
            for node in unread:
                module.graph.erase_node(node)
            module.recompile()
        module_slots.install(module)  # the constants registered as buffers above
        return module

    # -- values -------------------------------------------------------------------------
    def _value(self, ref: str) -> Any:
        if ref in self.env:
            return self.env[ref]
        op_name, index = split_tensor_name(ref)
        if op_name in self.shape_ops:
            return self._shape_value(ref)
        base = self.env.get(tensor_name(op_name, -1))
        if base is None:
            raise GraphError(f"tensor {ref!r} is not computed by this plan")
        node = self.fx.call_function(operator.getitem, (base, index))
        self.env[ref] = node
        return node

    def _variable(self, op: Op) -> None:
        key = state_key(op.name)
        if not _safe_path(key):  # names.state_key escapes every such character: a failed invariant
            raise GraphError(f"variable {op.name!r} maps to module path {key!r}, which generated code cannot name")
        parts = key.split(".")
        for i, seg in enumerate(parts):
            owner = CompiledGraph if i == 0 else nn.Module
            if hasattr(owner, seg):  # names.state_key escapes torch's and graphdnn's: one a library added since
                where = getattr(getattr(owner, seg), "__module__", None) or "another library"
                raise GraphError(
                    f"variable {op.name!r} maps to module path {key!r}, whose part {seg!r} is an attribute that "
                    f"{where} added to {owner.__name__} in this process; rename the variable or its scope "
                    "(Graph.rename_ops, graphdnn.surgery.rename_scope) before compiling"
                )
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
        _check_call(op, opdef.lower, args, kwargs)
        if budget.current() is not None:
            budget.charge(fold_bytes(op, opdef, args, kwargs), f"op {op.name!r} ({op.type}), folded to a constant")
        try:
            with torch.no_grad():
                result = opdef.lower(*args, **kwargs)
        except (GraphDNNError, MemoryError):
            raise
        except Exception as exc:  # the model's own constants and attributes are wrong for the op
            raise GraphError(f"op {op.name!r} ({op.type}) fails on its constant inputs: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
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
                args.append(self._data(value))
            elif i in opdef.static_inputs and split_tensor_name(ref)[0] in self.shape_ops:
                args.append(self._shape_value(ref, listed=True))  # the cached list, as a constant would be
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

    def _data(self, value: Any) -> Any:
        """``value`` as an fx argument: a node as it is, small plain data as a literal in the generated
        code, anything else by reference (a module attribute ``_attr<N>`` holding the object)."""
        if isinstance(value, fx.Node) or _printable(value):
            return value
        target = f"_attr{len(self.refs)}"
        self.refs[target] = value
        self.root[target] = value
        return self.fx.get_attr(target)

    def _call(self, op: Op, opdef: OpDef) -> None:
        bodies = subgraph_attrs(op)
        if not bodies and opdef.region is None and not opdef.uses_training:
            args = self._args(op, opdef)
            call = fusion.direct(self.graph, op, args)
            if call is not None:  # one torch call, no lowering around it
                node = self._emit(call[0], call[1], call[2], op)
                node.meta["graphdnn_name"] = op.name
                self.env[op.output()] = node
                return
        kwargs = {key: self._data(value) for key, value in op.attrs.items() if key not in bodies}
        if opdef.uses_training and op.meta.get("frozen"):  # a frozen layer runs in inference mode
            kwargs["training"] = False
        elif opdef.uses_training:
            if self.training is None:
                self.training = self.fx.get_attr("training")
            kwargs["training"] = self.training
        if opdef.num_outputs is None:
            kwargs["_outputs"] = len(op.outputs)
        if bodies:  # control flow: each body becomes a submodule passed to the lowering
            for key, body in bodies.items():
                target = f"_body{len(self.bodies)}_{identifier(key, 'body')}"
                self.bodies.append(target)
                self.root[target] = body_module = compile_body(body)
                body_module.check_inputs = False  # called by the lowering, not fed by a user
                kwargs[key] = self.fx.get_attr(target)
            kwargs["_captures"] = captures(op)
        if opdef.region is not None:  # e.g. Gradient: the part of this graph it differentiates
            kwargs["_region"] = self._region(op, opdef)
        node = self._emit(opdef.lower, tuple(self._args(op, opdef)), kwargs, op)
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
        self.root[target] = compile(self.graph, inputs=refs[: len(ins)], outputs=refs[len(ins):], check_inputs=False)
        return self.fx.get_attr(target)

    def _emit(self, fn: Any, args: tuple, kwargs: dict[str, Any], op: Op) -> fx.Node:
        _check_call(op, fn, args, kwargs)  # fx writes keyword names verbatim into the code
        return self.fx.create_node("call_function", fn, args, kwargs, name=identifier(op.name, "op"))

    def _op(self, op: Op) -> None:
        opdef = lookup(op.type, op.domain, self.graph.opset.get(op.domain))
        if self._foldable(op, opdef):
            self._fold(op, opdef)
        else:
            self._call(op, opdef)

    def _fused(self, f: fusion.Fusion) -> None:
        """One call for a fused chain (see ``graphdnn.fusion``), named after its last op."""
        root = self.graph.get_operation(f.root)
        node = self._emit(f.fn, tuple(self._value(r) for r in f.inputs), dict(f.kwargs), root)
        node.meta["graphdnn_name"] = root.name
        node.meta["graphdnn_fused"] = list(f.ops)
        self.env[root.output()] = node

    def _shape_value(self, ref: str, listed: bool = False) -> fx.Node:
        """Shape arithmetic computing ``ref``, as one call of a ``fusion.ShapeProgram`` (cached per input
        shape; ``listed``: as a list, for a static input); op by op when a constant it reads was not folded."""
        if listed and ref in self.listed:
            return self.listed[ref]
        order = self.__dict__.setdefault("_order", {op.name: i for i, op in enumerate(self.ops)})
        closure, external, reads, variables = fusion.shape_closure(self.graph, ref, self.shape_ops, order)
        if not all(r in self.consts_by_ref for r in external[reads : len(external) - variables]):
            for op in closure:
                if op.output() not in self.env:
                    self._op(op)
            return self.env[ref]
        slots = {r: i for i, r in enumerate(external)}
        steps = []
        for op in closure:
            opdef = lookup(op.type, op.domain, self.graph.opset.get(op.domain))
            kwargs = dict(op.attrs)
            if opdef.num_outputs is None:
                kwargs["_outputs"] = 1
            args = [None if r is None else slots[r] for r in op.inputs]
            _check_call(op, opdef.lower, args, kwargs)
            steps.append((opdef.lower, args, opdef.static_inputs, kwargs))
            slots[op.output()] = len(slots)
        consts = [self.consts[self.consts_by_ref[r]] for r in external[reads : len(external) - variables]]
        program = fusion.ShapeProgram(steps, reads, variables, consts, listed=listed)
        fed = external[:reads] + external[len(external) - variables :]
        node = self._emit(program, tuple(self._value(r) for r in fed), {},
                          self.graph.get_operation(split_tensor_name(ref)[0]))
        node.meta["graphdnn_name"] = ref
        node.meta["graphdnn_fused"] = [op.name for op in closure]
        (self.listed if listed else self.env)[ref] = node
        return node


def compile_body(body: Graph) -> CompiledGraph:
    """A control-flow ``body`` (see ``graphdnn.subgraphs``) compiled to a module called as
    ``module(*formal_inputs, *captured)``."""
    inputs, captured, outputs = signature(body)
    ensure_stateless(body)
    return compile(body, inputs=inputs + captured, outputs=outputs)
