"""TF1 control flow (``tf.while_loop`` frames and ``tf.cond``) as ONNX ``Loop`` and ``If`` ops with nested bodies.

A v1 while loop is a *frame*: ``Enter`` brings each loop variable (and each loop-invariant value) in,
``Merge(Enter, NextIteration)`` is the variable at the top of an iteration, the condition is computed from
the merges into ``LoopCond``, ``Switch(merge, LoopCond)`` sends the variable to the body (output 1) or to
``Exit`` (output 0), and ``NextIteration`` carries the body's result back. graphdnn imports it as one ONNX
``Loop`` named after the frame (``lstm/while``): the body graph takes the variables (placeholders named after
their ``Merge``), computes the next values with the body's TF names, and evaluates the condition on them;
the first condition is evaluated before the loop (ops named ``<cond op>/_initial``). Loop-invariant values
(variables, shapes) are captured outer values (see ``graphdnn.subgraphs``), so gradients reach the
variables. TensorArrays as ``dynamic_rnn`` uses them become plain tensors: an unstacked input is the
stacked tensor and a read is a ``Gather``; an output array written once per iteration (at the iteration
number, as ``dynamic_rnn`` and ``tf.map_fn`` write) is a scan output of the ``Loop``.

A ``tf.cond`` whose predicate is data (not a training flag or a constant, which are folded) becomes one
``If`` per ``Merge``: each branch is the ops between the cond's ``Switch`` outputs and that ``Merge``.
Nested loops and nested conds are reported as unsupported.

TF2 functional control flow (``While``/``If`` calling functions of a SavedModel's library) and the
TensorLists that Keras RNNs use inside them have their translators here too (``FUNCTIONAL_TRANSLATORS``,
part of ``graphdnn.converters.tf_ops.TRANSLATORS``); the bodies are built by the importer that owns the function
library (``graphdnn.converters.saved_model``), passed to the translators as the node's ``_functions`` attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from graphdnn.converters.tf_proto import TFShape, parse_tensor_name

from graphdnn.dtypes import is_container_type, onnx_code
from graphdnn.errors import GraphError, UnknownOpError
from graphdnn.graph import Graph, ValueInfo
from graphdnn.names import split_tensor_name, tensor_name
from graphdnn.subgraphs import CAPTURES_KEY, set_signature

if TYPE_CHECKING:
    from graphdnn.converters.tf_import import Node, TFImport, _Builder

ENTERS, EXITS = ("Enter", "RefEnter"), ("Exit", "RefExit")
MERGES, SWITCHES = ("Merge", "RefMerge"), ("Switch", "RefSwitch")
NEXT_ITERATIONS = ("NextIteration", "RefNextIteration")
#: TensorArray ops: the inputs that carry data (the others are the array's handle or, for writes, its flow).
TENSOR_ARRAY_DATA = {"TensorArrayWriteV3": (1, 2), "TensorArrayReadV3": (1, 2), "TensorArrayGatherV3": (1, 2),
                     "TensorArrayScatterV3": (1, 2), "TensorArraySizeV3": (1,), "TensorArrayV3": ()}
_STRUCTURE = set(ENTERS) | set(EXITS) | set(MERGES) | set(SWITCHES) | set(NEXT_ITERATIONS) | {"LoopCond"}


@dataclass
class Flow:
    """Control-flow facts about one import: frames, loops and cond branches."""

    frame_of: dict[str, str] = field(default_factory=dict)  # node -> frame name ("" outside loops)
    parent: dict[str, str] = field(default_factory=dict)  # frame -> enclosing frame
    side: dict[str, tuple[str, bool]] = field(default_factory=dict)  # cond branch node -> (predicate, branch)
    loops: dict[str, Loop] = field(default_factory=dict)
    built: dict[str, list[str]] = field(default_factory=dict)  # loop frame -> Loop output tensors
    taken: set[str] = field(default_factory=set)  # op names used in bodies


@dataclass
class Var:
    merge: str
    enter: str
    next_ref: str  # the NextIteration's input (in the frame)
    switch: str | None
    exit: str | None
    accumulates: bool  # a TensorArray written once per iteration: a scan output


@dataclass
class Loop:
    frame: str
    name: str
    variables: list[Var]
    loop_cond: str
    body: list[str]  # frame nodes the next values need, in order
    cond: list[str]  # frame nodes the condition needs, in order
    outer: list[str]  # resolved outer tensors the frame reads


def _canon(ref: str) -> str:
    op, index = parse_tensor_name(ref)
    return f"{op}:{index}"


def _inputs(node: Any) -> list[str]:
    data = TENSOR_ARRAY_DATA.get(node.op)
    refs = node.inputs if data is None else [node.inputs[i] for i in data if i < len(node.inputs)]
    return [r for r in refs if not r.startswith("^")]


def _depth(flow: Flow, frame: str) -> int:
    depth = 0
    while frame and depth < 10000:
        frame, depth = flow.parent.get(frame, ""), depth + 1
    return depth


def assign_frames(imp: TFImport, order: list[str]) -> None:
    """Which while-loop frame each node runs in (``Enter`` opens one, ``Exit`` leaves it)."""
    flow = imp.flow
    for name in order:
        node = imp.nodes[name]
        srcs = [parse_tensor_name(r)[0] for r in node.inputs + node.control_inputs]
        known = [flow.frame_of[s] for s in srcs if s in flow.frame_of]
        if node.op in ENTERS:
            outer = known[0] if known else ""
            frame = str(node.attrs.get("frame_name", "")) or name
            flow.parent.setdefault(frame, outer)
        elif node.op in EXITS:
            frame = flow.parent.get(known[0], "") if known else ""
        else:
            frame = max(known, key=lambda f: _depth(flow, f), default="")
        flow.frame_of[name] = frame


def in_region(imp: TFImport, name: str) -> bool:
    """Whether ``name`` is imported inside a body (a loop frame, a cond branch) or as a Loop/If output; such
    nodes get no ordinary translation. Called in topological order."""
    flow, node = imp.flow, imp.nodes[name]
    if flow.frame_of.get(name):
        return True
    if node.op in EXITS:
        return True
    if node.op in SWITCHES and len(node.inputs) == 2:
        if _dynamic_switch(imp, name):
            return True
    sides = _sides(imp, node)
    if node.op in MERGES and sides:
        _cond_merge(imp, name, sides)
        return True
    if sides:
        if len(sides) > 1:
            imp.problems[name] = "reads both branches of a tf.cond (nested conds are not supported)"
            imp.deps[name] = []
            return False
        flow.side[name] = next(iter(sides))
        return True
    return False


def _sides(imp: TFImport, node: Any) -> set[tuple[str, bool]]:
    flow, found = imp.flow, set()
    for ref in node.inputs + node.control_inputs:
        src, index = parse_tensor_name(ref)
        if src in flow.side:
            found.add(flow.side[src])
        elif imp.nodes[src].op in SWITCHES and _dynamic_switch(imp, src):
            found.add((_predicate(imp, src), bool(index)))
    return found


def _dynamic_switch(imp: TFImport, name: str) -> bool:
    node = imp.nodes[name]
    if flow_frame(imp, name) or len(node.inputs) != 2:
        return False
    pred = imp.res(node.inputs[1])
    return imp.predicate(pred) is None and not imp.is_dead(pred)


def flow_frame(imp: TFImport, name: str) -> str:
    return imp.flow.frame_of.get(name, "")


def _predicate(imp: TFImport, switch: str) -> str:
    """The predicate tensor of a cond Switch, through ``pred_id`` Identities."""
    ref = imp.res(imp.nodes[switch].inputs[1])
    seen = 0
    while imp.nodes[split_tensor_name(ref)[0]].op == "Identity" and seen < 1000:
        ref, seen = imp.res(imp.nodes[split_tensor_name(ref)[0]].inputs[0]), seen + 1
    return ref


def _cond_merge(imp: TFImport, name: str, sides: set[tuple[str, bool]]) -> None:
    node = imp.nodes[name]
    preds = {p for p, _ in sides}
    if len(preds) != 1 or len(node.inputs) != 2:
        imp.problems[name] = "a Merge of several tf.cond predicates (nested conds are not supported)"
        imp.deps[name] = []
        return
    pred = next(iter(preds))
    branches: dict[bool, tuple[str, list[str]]] = {}
    outer: list[str] = [pred]
    for ref in node.inputs:
        src, _ = parse_tensor_name(ref)
        members = _branch_closure(imp, src)
        side = imp.flow.side[src][1] if src in imp.flow.side else bool(parse_tensor_name(ref)[1])
        if src not in imp.flow.side:  # the Switch itself: the branch returns an outer value unchanged
            members = []
        branches[side] = (ref, members)
        for member in members + ([src] if not members else []):
            for r in _inputs(imp.nodes[member]):
                s = parse_tensor_name(r)[0]
                if imp.nodes[s].op in SWITCHES and _dynamic_switch(imp, s):
                    outer.append(imp.res(imp.nodes[s].inputs[0]))
                elif s not in imp.flow.side and imp.nodes[s].op != "Const":
                    outer.append(imp.res(r))
            if not members and imp.nodes[member].op in SWITCHES:
                outer.append(imp.res(imp.nodes[member].inputs[0]))
    bad = [f"{m} ({imp.nodes[m].op})" for _, ms in branches.values() for m in ms if not _translatable(imp, m)]
    if bad:
        imp.problems[name] = f"unsupported op(s) in a tf.cond branch: {', '.join(bad)}"
        imp.deps[name] = []
        return
    if set(branches) != {True, False}:
        imp.problems[name] = "a tf.cond Merge whose inputs are not one per branch"
        imp.deps[name] = []
        return
    imp.special[name] = {"if": pred, "branches": branches}
    imp.deps[name] = list(dict.fromkeys(outer))


def _branch_closure(imp: TFImport, start: str) -> list[str]:
    """The branch nodes ``start`` needs (data and control inputs), in topological order."""
    flow, seen, stack = imp.flow, set(), [start]
    while stack:
        name = stack.pop()
        if name in seen or name not in flow.side:
            continue
        seen.add(name)
        node = imp.nodes[name]
        stack += [parse_tensor_name(r)[0] for r in node.inputs + node.control_inputs]
    return [n for n in imp.order_cache if n in seen]


# ------------------------------------------------------------------------------------------------ loops
def analyse_loops(imp: TFImport) -> None:
    """Make each top-level frame's Exits depend on the frame's outer inputs (special Loop outputs)."""
    flow = imp.flow
    members: dict[str, list[str]] = {}
    exits: dict[str, list[str]] = {}
    for name in imp.order_cache:
        frame = flow.frame_of.get(name, "")
        if frame:
            members.setdefault(frame, []).append(name)
        elif imp.nodes[name].op in EXITS:
            src = parse_tensor_name(imp.nodes[name].inputs[0])[0]
            inner = flow.frame_of.get(src, "")
            if inner:
                exits.setdefault(inner, []).append(name)
    for frame, names in exits.items():
        if flow.parent.get(frame, ""):
            continue
        try:
            loop = _analyse(imp, frame, members.get(frame, []))
        except (GraphError, IndexError, KeyError, ValueError, TypeError) as exc:
            why = str(exc) if isinstance(exc, GraphError) else f"a malformed while loop ({type(exc).__name__}: {exc})"
            for name in names:
                imp.problems[name] = why
                imp.deps[name] = []
            continue
        flow.loops[frame] = loop
        by_exit = {v.exit: i for i, v in enumerate(loop.variables) if v.exit}
        for name in names:
            if name not in by_exit:
                imp.problems[name] = "an Exit that is not a loop variable's"
                imp.deps[name] = []
                continue
            imp.special[name] = {"loop": frame, "variable": by_exit[name]}
            imp.deps[name] = list(loop.outer)


def _analyse(imp: TFImport, frame: str, names: list[str]) -> Loop:
    flow = imp.flow
    nested = [f for f, p in flow.parent.items() if p == frame]
    if nested:
        raise GraphError(f"a tf.while_loop nested in another ({nested[0]}) is not supported")
    conds = [n for n in names if imp.nodes[n].op == "LoopCond"]
    if len(conds) != 1:
        raise GraphError(f"while-loop frame {frame!r} has {len(conds)} LoopCond ops, expected 1")
    switches = {parse_tensor_name(imp.nodes[n].inputs[0])[0]: n for n in names if imp.nodes[n].op in SWITCHES}
    exits: dict[str, str] = {}
    for name, node in imp.nodes.items():
        if node.op in EXITS and parse_tensor_name(node.inputs[0])[0] in switches.values():
            exits[parse_tensor_name(node.inputs[0])[0]] = name
    variables = []
    for name in names:
        node = imp.nodes[name]
        if node.op not in MERGES:
            continue
        enter, nxt = (parse_tensor_name(r)[0] for r in node.inputs[:2])
        if imp.nodes[enter].op not in ENTERS or imp.nodes[nxt].op not in NEXT_ITERATIONS:
            raise GraphError(f"while-loop Merge {name!r} does not merge an Enter with a NextIteration")
        init = imp.nodes[parse_tensor_name(imp.res(imp.nodes[enter].inputs[0]))[0]]
        next_ref = imp.nodes[nxt].inputs[0]
        accumulates = init.op == "TensorArrayV3"
        if accumulates and imp.nodes[parse_tensor_name(next_ref)[0]].op != "TensorArrayWriteV3":
            raise GraphError(f"TensorArray loop variable {name!r} is not written once per iteration")
        switch = switches.get(name)
        variables.append(Var(name, enter, next_ref, switch, exits.get(switch) if switch else None, accumulates))
    stops = set(MERGES) | set(SWITCHES) | set(ENTERS)
    loop_cond = conds[0]
    body = _closure(imp, frame, [v.next_ref for v in variables], stops)
    cond = _closure(imp, frame, [imp.nodes[loop_cond].inputs[0]], stops)
    both = set(body) & set(cond) - {n for n in body if imp.nodes[n].op == "Const"}
    if both:
        raise GraphError(f"the loop body reads the loop condition's ops ({sorted(both)[:3]}); not supported")
    bad = [f"{n} ({imp.nodes[n].op})" for n in body + cond if not _translatable(imp, n)]
    if bad:
        raise GraphError(f"unsupported op(s) in the loop body: {', '.join(bad)}")
    outer = []  # what the loop reads from outside: its variables' first values and the Enters its ops read
    enters = [v.enter for v in variables if not v.accumulates]
    for name in body + cond:
        for r in _inputs(imp.nodes[name]):
            src = parse_tensor_name(r)[0]
            if imp.nodes[src].op in ENTERS:
                enters.append(src)
    for name in enters:
        ref = imp.res(imp.nodes[name].inputs[0])
        if imp.nodes[split_tensor_name(ref)[0]].op != "TensorArrayV3":
            outer.append(ref)
    prefix = frame.removesuffix("/while_context")
    loop_name = prefix if prefix not in imp.nodes else f"{prefix}/_loop"
    return Loop(frame, loop_name, variables, loop_cond, body, cond, list(dict.fromkeys(outer)))


def _translatable(imp: TFImport, name: str) -> bool:
    from graphdnn.converters.tf_ops import TRANSLATORS

    op = imp.nodes[name].op
    return (op in TRANSLATORS or op in ("Const", "Identity") or op in TENSOR_ARRAY_DATA
            or op == "RandomUniform" and imp.dropout_mask(name))


def _closure(imp: TFImport, frame: str, refs: list[str], stops: set[str]) -> list[str]:
    seen: set[str] = set()
    stack = [parse_tensor_name(r)[0] for r in refs]
    while stack:
        name = stack.pop()
        if name in seen or imp.flow.frame_of.get(name) != frame or imp.nodes[name].op in stops:
            continue
        seen.add(name)
        node = imp.nodes[name]
        stack += [parse_tensor_name(r)[0] for r in _inputs(node) + node.control_inputs]
    return [n for n in imp.order_cache if n in seen]


# ------------------------------------------------------------------------------------------------ building
class _Region:
    """Translates TF nodes into ``graph`` with ``local`` refs; ``outer`` gives a value from outside."""

    def __init__(self, builder: _Builder, graph: Graph, outer: Callable[[str], str | None]) -> None:
        self.b, self.graph, self.outer = builder, graph, outer
        self.local: dict[str, str] = {}
        self.captured: dict[str, str] = {}  # outer graph tensor -> placeholder here

    def capture(self, outer_tensor: str, name: str) -> str:
        if outer_tensor not in self.captured:
            info = self.b.graph.get_tensor(outer_tensor)
            base = self._free(name, "captured")
            self.captured[outer_tensor] = self.graph.placeholder(base, info.shape, info.dtype or "float32").name
            self.b.imp.flow.taken.add(base)
        return self.captured[outer_tensor]

    def tensor(self, ref: str) -> str:
        ref = _canon(ref)
        if ref in self.local:
            return self.local[ref]
        imp = self.b.imp
        node = imp.nodes[split_tensor_name(ref)[0]]
        inside = bool(imp.flow.frame_of.get(node.name)) or node.name in imp.flow.side
        if node.op == "Const" and (inside or self.graph is not self.b.graph):  # constants: the body's own
            name = self._free(node.name + ("/_initial" if self.graph is self.b.graph else ""), "const")
            self.local[ref] = self.graph.constant(np.asarray(node.attrs["value"]), name=name).name
            self.b.imp.flow.taken.add(name)
            return self.local[ref]
        found = self.outer(ref)
        if found is None:
            raise GraphError(f"TF tensor {ref!r} is read inside a control-flow body before it is computed")
        self.local[ref] = found
        return found

    def _free(self, name: str, what: str) -> str:
        """``name`` unless an op of the model (any graph, any body: ONNX names are global) has it."""
        taken = self.b.imp.flow.taken
        base, k = name, 0
        while base in self.graph.nx or base in self.b.graph.nx or base in taken:
            base, k = f"{name}/_{what}" + (f"_{k}" if k else ""), k + 1
        return base

    def run(self, names: list[str], suffix: str = "") -> None:
        from graphdnn.converters.tf_import import Node
        from graphdnn.converters.tf_ops import TRANSLATORS

        imp = self.b.imp
        saved = imp.graph, imp.tensor  # type: ignore[attr-defined]
        imp.graph, imp.tensor = self.graph, self.tensor  # type: ignore[attr-defined]
        try:
            for name in names:
                node = imp.nodes[name]
                if node.op in ("Const", "RandomUniform"):  # constants: on first use; RandomUniform: see GreaterEqual
                    continue
                imp.region_deps[name] = [_canon(r) for r in node.inputs if not r.startswith("^")]
                view = Node(imp, node)
                view.name = name + suffix
                outs = TRANSLATORS[node.op](view)
                for i, ref in enumerate(outs):
                    self.local[f"{name}:{i}"] = ref
                    self.b._declared_shape(node, i, ref, self.graph)
            if self.graph is not self.b.graph:
                self.b.imp.flow.taken.update(self.graph.nx)
        finally:
            imp.graph, imp.tensor = saved  # type: ignore[attr-defined]


def _declared(imp: TFImport, name: str) -> tuple[int | None, ...] | None:
    shapes = imp.nodes[name].attrs.get("_output_shapes")
    if isinstance(shapes, list) and shapes and isinstance(shapes[0], TFShape) and shapes[0].dims is not None:
        return tuple(shapes[0].dims)
    return None


def _output(graph: Graph, ref: str, name: str, taken: set[str]) -> str:
    """``ref`` as a body output: an Identity when it is an input of the body or already an output."""
    if ref in taken or not graph.get_operation(split_tensor_name(ref)[0]).inputs:
        ref = graph.add_op("Identity", [ref], {}, name, scoped=False).out().name
    taken.add(ref)
    return ref


def build_loop(b: _Builder, frame: str) -> list[str]:
    """The ONNX Loop of ``frame`` in the outer graph; returns one tensor per loop variable."""
    imp, flow = b.imp, b.imp.flow
    if frame in flow.built:
        return flow.built[frame]
    loop = flow.loops[frame]
    carried = [v for v in loop.variables if not v.accumulates]
    scans = [v for v in loop.variables if v.accumulates]
    init = {v.merge: b.tensor(imp.res(imp.nodes[v.enter].inputs[0])) for v in carried}

    def outer_value(ref: str) -> str | None:
        node = imp.nodes[split_tensor_name(ref)[0]]
        if node.op in ENTERS:
            return b.tensor(imp.res(node.inputs[0]))
        return None if flow.frame_of.get(node.name) else b.tensor(imp.res(ref))

    first = _Region(b, b.graph, outer_value)  # the condition before the first iteration
    first.local.update({f"{m}:0": t for m, t in init.items()})
    first.run(loop.cond, suffix="/_initial")
    cond0 = first.tensor(imp.nodes[loop.loop_cond].inputs[0])

    body = Graph(f"{loop.name}/body")
    body.opset.update(b.graph.opset)
    region = _Region(b, body, lambda ref: None)

    def body_outer(ref: str) -> str | None:
        node = imp.nodes[split_tensor_name(ref)[0]]
        if node.op in ENTERS:
            return region.capture(b.tensor(imp.res(node.inputs[0])), node.name)
        if flow.frame_of.get(node.name) == frame:
            return None
        outer_ref = imp.res(ref)
        return region.capture(b.tensor(outer_ref), split_tensor_name(outer_ref)[0])

    region.outer = body_outer
    iteration = body.placeholder(f"{loop.name}/_iteration", (), "int64").name
    condition = body.placeholder(f"{loop.name}/_condition", (), "bool").name
    formal = []
    for v in carried:
        info = b.graph.get_tensor(init[v.merge])
        shape = _declared(imp, v.merge) or info.shape
        ph = body.placeholder(v.merge, shape, info.dtype or "float32").name
        formal.append(ph)
        region.local[f"{v.merge}:0"] = ph
        if v.switch:
            region.local[f"{v.switch}:1"] = ph
    region.run(loop.body)
    nexts = {v.merge: region.tensor(v.next_ref) for v in loop.variables}
    for v in carried:
        region.local[f"{v.merge}:0"] = nexts[v.merge]
    region.run(loop.cond)
    cond_next = region.tensor(imp.nodes[loop.loop_cond].inputs[0])
    taken: set[str] = set()
    outputs = [_output(body, cond_next, f"{loop.name}/_next_condition", taken)]
    outputs += [_output(body, nexts[v.merge], f"{v.merge}/_next", taken) for v in carried]
    outputs += [_output(body, nexts[v.merge], f"{v.merge}/_scan", taken) for v in scans]
    captured_outer = list(region.captured)
    set_signature(body, [iteration, condition, *formal], [region.captured[t] for t in captured_outer], outputs)
    infos = [body.get_tensor(o) for o in outputs[1:]]
    values = [ValueInfo(i.shape, i.dtype) for i in infos[:len(carried)]]
    values += [ValueInfo(None if i.shape is None else (None, *i.shape), i.dtype) for i in infos[len(carried):]]
    op = b.graph.add_op("Loop", [None, cond0, *[init[v.merge] for v in carried], *captured_outer], {"body": body},
                        loop.name, outputs=values, scoped=False)
    op.op.meta[CAPTURES_KEY] = len(captured_outer)
    position = {v.merge: i for i, v in enumerate(carried)}
    position.update({v.merge: len(carried) + i for i, v in enumerate(scans)})
    flow.built[frame] = [op.out(position[v.merge]).name for v in loop.variables]
    for v, ref in zip(loop.variables, flow.built[frame]):  # every Exit is reachable, also those nothing reads
        if v.exit:
            imp.refs.setdefault(f"{v.exit}:0", ref)
            b.graph.aliases.setdefault(f"{v.exit}:0", ref)
    return flow.built[frame]


def build_if(b: _Builder, name: str, spec: dict[str, Any]) -> str:
    """One ONNX If computing ``Merge`` ``name``: its two branches become the then/else bodies."""
    imp = b.imp
    regions: dict[bool, _Region] = {}
    outs: dict[bool, str] = {}
    for side in (True, False):
        ref, members = spec["branches"][side]
        body = Graph(f"{name}/{'then' if side else 'else'}_branch")
        body.opset.update(b.graph.opset)
        region = _Region(b, body, lambda r: None)

        def outer(r: str, region: _Region = region) -> str | None:
            node = imp.nodes[split_tensor_name(r)[0]]
            if node.op in SWITCHES and _dynamic_switch(imp, node.name):
                src = imp.res(node.inputs[0])
                return region.capture(b.tensor(src), node.name)
            if node.name in imp.flow.side:
                return None
            src = imp.res(r)
            return region.capture(b.tensor(src), split_tensor_name(src)[0])

        region.outer = outer
        region.run(members)
        outs[side] = _output(body, region.tensor(ref), f"{name}/_{'then' if side else 'else'}", set())
        regions[side] = region
    union = list(dict.fromkeys([*regions[True].captured, *regions[False].captured]))
    for side, region in regions.items():
        for t in union:
            region.capture(t, split_tensor_name(t)[0])
        set_signature(region.graph, [], [region.captured[t] for t in union], [outs[side]])
    info = regions[True].graph.get_tensor(outs[True])
    shape = _declared(imp, name) or info.shape
    cond = b.tensor(spec["if"])
    op = b.graph.add_op("If", [cond, *union], {"then_branch": regions[True].graph,
                                                "else_branch": regions[False].graph}, name,
                        outputs=[ValueInfo(shape, info.dtype)], scoped=False)
    op.op.meta[CAPTURES_KEY] = len(union)
    return op.out().name


# ------------------------------------------------------------------------ TF2 functional control flow
WHILE_OPS = ("While", "StatelessWhile")
IF_OPS = ("If", "StatelessIf")
Spec = tuple[str, "tuple[int | None, ...] | None"]


class FunctionLibrary(Protocol):
    """What the functional ``While``/``If`` translators need from the importer owning the function library."""

    def function(self, node: Any, attr: str) -> Any:
        """The library function the node's attribute ``attr`` names."""

    def resource_spec(self, ref: str) -> Spec | None:
        """dtype and shape of the variable ``ref`` is a handle of (None when it is not one)."""

    def subgraph(self, label: str, specs: list[Spec], build: Callable[[Any, list[str]], list[str]]
                 ) -> tuple[Graph, list[str], list[str]]:
        """A body graph with placeholders ``specs``; returns (graph, input tensors, output tensors)."""


def _library(n: Node) -> FunctionLibrary:
    functions = n.tf.attrs.get("_functions")
    if functions is None:
        raise UnknownOpError(f"{n.imp.source}: TF op {n.name!r} ({n.op}) calls functions of a function library; "
                             "graphdnn imports TF2 functional control flow only from a SavedModel folder "
                             "(graphdnn.load('<saved_model dir>')), or from TF1 graphs built with "
                             "tf.compat.v1.disable_control_flow_v2()")
    return functions


def _specs(n: Node, functions: FunctionLibrary, refs: list[str], types: Any, shapes: Any) -> list[Spec]:
    specs: list[Spec] = []
    for i, ref in enumerate(refs):
        resource = functions.resource_spec(ref)
        if resource is not None:
            specs.append(resource)
            continue
        t = types[i] if isinstance(types, list) and i < len(types) else None
        tensor = n.graph.get_tensor(n.x(i + (1 if n.op in IF_OPS else 0)))
        if is_container_type(tensor.dtype):  # a TensorList: a sequence
            specs.append((str(tensor.dtype), None))
            continue
        shape = shapes[i] if isinstance(shapes, list) and i < len(shapes) else None
        dims = shape.dims if isinstance(shape, TFShape) else tensor.shape
        specs.append((str(t.base_dtype) if t is not None else str(tensor.dtype), dims))
    return specs


def _infos(n: Node, count: int, body_outputs: list[str], body: Graph) -> list[ValueInfo]:
    """The op's output ValueInfos: TF's declared shapes, else the body's, with the body's dtypes."""
    declared = n.tf.attrs.get("_shapes")
    infos = []
    for i in range(count):
        t = body.get_tensor(body_outputs[i])
        shape = declared[i] if isinstance(declared, list) and i < len(declared) else None
        dims = tuple(shape.dims) if isinstance(shape, TFShape) and shape.dims is not None else t.shape
        infos.append(ValueInfo(dims, t.dtype))
    return infos


def functional_while(n: Node) -> list[str]:
    """``While``/``StatelessWhile`` -> ONNX ``Loop`` (no trip count; the condition computed before each step)."""
    functions = _library(n)
    carried = n.inputs[:-1]
    body_fn, cond_fn = functions.function(n.tf, "body"), functions.function(n.tf, "cond")
    specs = _specs(n, functions, carried, n.tf.attrs.get("T"), n.tf.attrs.get("output_shapes"))
    count = len(carried)

    def build(sub: Any, args: list[str]) -> list[str]:
        outs = sub.call_function(body_fn, args[2:], "body")
        return sub.call_function(cond_fn, outs, "cond")[:1] + outs

    body, inputs, outputs = functions.subgraph(f"{n.name} (body {body_fn.name!r})",
                                               [("int64", ()), ("bool", ())] + specs, build)
    set_signature(body, inputs, [], outputs)
    ins = [None, n.x(count)] + [n.x(i) for i in range(count)]
    infos = _infos(n, count, outputs[1:], body)
    op = n.graph.add_op("Loop", ins, {"body": body}, n.name, outputs=infos, scoped=False).op
    op.meta[CAPTURES_KEY] = 0
    return [tensor_name(op.name, i) for i in range(count)]


def functional_if(n: Node) -> list[str]:
    """``If``/``StatelessIf`` -> ONNX ``If``; the branches receive the op's inputs as captured values."""
    functions = _library(n)
    args = n.inputs[1:]
    specs = _specs(n, functions, args, n.tf.attrs.get("Tin"), None)
    branches = {}
    count = 0
    outputs: list[str] = []
    for key in ("then_branch", "else_branch"):
        fn = functions.function(n.tf, key)
        body, inputs, outputs = functions.subgraph(f"{n.name} ({key} {fn.name!r})", specs,
                                                   lambda sub, refs, fn=fn: sub.call_function(fn, refs, "branch"))
        set_signature(body, [], inputs, outputs)
        branches[key], count = body, len(outputs)
    ins = [n.x(0)] + [n.x(i + 1) for i in range(len(args))]
    infos = _infos(n, count, outputs, branches["then_branch"])
    op = n.graph.add_op("If", ins, branches, n.name, outputs=infos, scoped=False).op
    op.meta[CAPTURES_KEY] = len(args)
    return [tensor_name(op.name, i) for i in range(count)]


# TF2 TensorLists (tf.TensorArray in functions, as Keras RNNs use them) become ONNX sequences; writes are
# appends, as a loop writing one element per step (at the step's index) makes them.
def _sequence(n: Node, op_type: str, inputs: list[str], attrs: dict[str, Any], element: str | None) -> list[str]:
    info = ValueInfo(None, f"seq({element or 'float32'})")
    return [n.graph.add_op(op_type, inputs, attrs, n.name, outputs=[info], scoped=False).out().name]


def _retval(n: Node) -> list[str]:
    """A body's output (TF's ``_Retval``): an Identity of a tensor or a sequence."""
    x = n.x(0)
    info = n.graph.get_tensor(x)
    return [n.graph.add_op("Identity", [x], {}, n.name, outputs=[ValueInfo(info.shape, info.dtype)],
                           scoped=False).out().name]


def _tensor_list_reserve(n: Node) -> list[str]:
    dtype = n.tf_dtype("element_dtype")
    return _sequence(n, "SequenceEmpty", [], {"dtype": onnx_code(dtype)}, dtype)


def _tensor_list_from_tensor(n: Node) -> list[str]:
    return _sequence(n, "SplitToSequence", [n.x(0)], {"axis": 0, "keepdims": 0}, n.dtype(n.x(0)))


def _declared_info(n: Node, dtype: str) -> ValueInfo:
    """The output's ValueInfo from TF's ``_output_shapes`` (graphdnn cannot infer through sequences)."""
    shapes = n.tf.attrs.get("_output_shapes")
    shape = shapes[0] if isinstance(shapes, list) and shapes else None
    return ValueInfo(tuple(shape.dims) if isinstance(shape, TFShape) and shape.dims is not None else None, dtype)


def _tensor_list_get_item(n: Node) -> list[str]:
    info = _declared_info(n, n.tf_dtype("element_dtype"))
    return [n.graph.add_op("SequenceAt", [n.x(0), n.x(1)], {}, n.name, outputs=[info], scoped=False).out().name]


def _tensor_list_set_item(n: Node) -> list[str]:
    return _sequence(n, "SequenceInsert", [n.x(0), n.x(2)], {}, n.dtype(n.x(2)))


def _tensor_list_stack(n: Node) -> list[str]:
    info = _declared_info(n, n.tf_dtype("element_dtype"))
    attrs = {"axis": 0, "new_axis": 1}
    return [n.graph.add_op("ConcatFromSequence", [n.x(0)], attrs, n.name, outputs=[info], scoped=False).out().name]


def _tensor_list_length(n: Node) -> list[str]:
    length = n.graph.add_op("SequenceLength", [n.x(0)], {}, n.sub("length"), outputs=[ValueInfo((), "int64")],
                            scoped=False).out().name
    return [n.add("Cast", [length], {"to": onnx_code("int32")})]


#: Translators of TF2 functional control flow and TensorLists (merged into ``graphdnn.converters.tf_ops.TRANSLATORS``).
FUNCTIONAL_TRANSLATORS: dict[str, Callable[[Node], list[str]]] = {
    **{op: functional_while for op in WHILE_OPS}, **{op: functional_if for op in IF_OPS},
    "TensorListReserve": _tensor_list_reserve, "TensorListFromTensor": _tensor_list_from_tensor,
    "TensorListGetItem": _tensor_list_get_item, "TensorListSetItem": _tensor_list_set_item,
    "TensorListStack": _tensor_list_stack, "TensorListLength": _tensor_list_length, "_Retval": _retval,
}
