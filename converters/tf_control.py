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
Loops nest: a ``tf.while_loop`` in a loop body is a ``Loop`` in the body graph (its loop-invariant values
captured through each level), and a ``tf.cond`` in a loop body is an ``If`` there. Conds nest too: each
``Switch`` of a cond opens two branch *contexts* inside the context its inputs come from (the top level or an
enclosing branch), so a ``tf.cond`` in a cond branch (``tf.case``) is an ``If`` in the branch graph and a
``tf.while_loop`` in a cond branch a ``Loop`` there (its body may hold conds again); values from outside reach
each level as captured values. Conds and loops in a cond branch inside a loop body nest the same way.

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
_SPLIT = ("", False)  # the branch of a loop that reads values of two sibling cond branches (reported)
_STRUCTURE = set(ENTERS) | set(EXITS) | set(MERGES) | set(SWITCHES) | set(NEXT_ITERATIONS) | {"LoopCond"}


@dataclass
class Flow:
    """Control-flow facts about one import: frames, loops and cond branches."""

    frame_of: dict[str, str] = field(default_factory=dict)  # node -> frame name ("" outside loops)
    parent: dict[str, str] = field(default_factory=dict)  # frame -> enclosing frame
    side: dict[str, tuple[str, bool]] = field(default_factory=dict)  # cond branch node -> (predicate, branch)
    cond_parent: dict[tuple[str, bool], tuple[str, bool] | None] = field(default_factory=dict)  # branch -> its host
    frame_ctx: dict[str, tuple[str, bool]] = field(default_factory=dict)  # loop opened in a cond branch -> branch
    cond_merges: list[str] = field(default_factory=list)  # cond Merges outside loops, in order
    reused: set[str] = field(default_factory=set)  # predicates of conds nested in a cond on the same predicate
    loops: dict[str, Loop] = field(default_factory=dict)
    built: dict[str, list[str]] = field(default_factory=dict)  # loop frame -> Loop output tensors
    nested_exits: dict[str, tuple[str, int]] = field(default_factory=dict)  # inner loop Exit -> (frame, variable)
    frame_ifs: dict[str, dict[str, Any]] = field(default_factory=dict)  # cond Merge in a body/branch -> If spec
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
    nodes get no ordinary translation. Called in topological order; records each node's cond branch."""
    flow, node = imp.flow, imp.nodes[name]
    frame = flow.frame_of.get(name)
    if frame:
        if node.op in ENTERS and not flow.parent.get(frame, ""):  # a loop opened inside a cond branch runs there
            sides = _sides(imp, node) | ({flow.frame_ctx[frame]} if frame in flow.frame_ctx else set())
            ctx = _innermost(imp, name, sides)
            if ctx is not None:
                flow.frame_ctx[frame] = ctx
            elif sides:  # values of two sibling branches: the loop's Exits are reported
                flow.frame_ctx[frame] = _SPLIT
        return True
    if node.op in EXITS:
        inner = flow.frame_of.get(parse_tensor_name(node.inputs[0])[0], "") if node.inputs else ""
        if inner in flow.frame_ctx:
            flow.side[name] = flow.frame_ctx[inner]
        return True
    if node.op in SWITCHES and len(node.inputs) == 2:
        if _dynamic_switch(imp, name):
            ctx = _innermost(imp, name, _sides(imp, node))
            pred = _predicate(imp, name)
            for branch in (True, False):
                if flow.cond_parent.setdefault((pred, branch), ctx) != ctx:
                    flow.reused.add(pred)  # conds nested on one predicate: their branches cannot be told apart
            return True
    sides = _sides(imp, node)
    if node.op in MERGES and sides:
        flow.cond_merges.append(name)  # its If: analyse_conds, once the loops are known
        preds = {p for p, _ in sides}
        host = flow.cond_parent.get((next(iter(preds)), True)) if len(preds) == 1 else None
        if host is not None:
            flow.side[name] = host
        return True
    if sides:
        ctx = _innermost(imp, name, sides)
        if ctx is None:
            imp.problems[name] = "reads both branches of a tf.cond"
            imp.deps[name] = []
            return False
        flow.side[name] = ctx
        return True
    return False


def _cond_depth(flow: Flow, ctx: tuple[str, bool] | None) -> int:
    depth = 0
    while ctx is not None and depth < 10000:
        ctx, depth = flow.cond_parent.get(ctx), depth + 1
    return depth


def _innermost(imp: TFImport, name: str, sides: set[tuple[str, bool]]) -> tuple[str, bool] | None:
    """The innermost of the cond branches ``sides`` (None outside conds, or when they are not nested in one
    another: then ``name`` reads two branches, a problem)."""
    flow = imp.flow
    if not sides:
        return None
    inner = max(sides, key=lambda c: _cond_depth(flow, c))
    chain, ctx = set(), inner
    while ctx is not None and len(chain) < 10000:
        chain.add(ctx)
        ctx = flow.cond_parent.get(ctx)
    return inner if sides <= chain else None


def _sides(imp: TFImport, node: Any) -> set[tuple[str, bool]]:
    """The cond branches ``node``'s inputs come from (a cond Switch's output opens one)."""
    flow, found = imp.flow, set()
    for ref in node.inputs + node.control_inputs:
        src, index = parse_tensor_name(ref)
        if imp.nodes[src].op in SWITCHES and _dynamic_switch(imp, src):
            found.add((_predicate(imp, src), bool(index)))
        elif src in flow.side:
            found.add(flow.side[src])
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


def analyse_conds(imp: TFImport) -> None:
    """The ``If`` of each cond Merge outside loops, inner conds first: a top-level one is a special node
    depending on what its branches read from outside, one in a cond branch is built in that branch's graph."""
    flow = imp.flow
    for name in flow.cond_merges:
        nested = name in flow.side
        try:
            spec = _cond_spec(imp, name)
        except GraphError as exc:
            imp.problems[name] = str(exc)
            imp.deps[name] = []
            continue
        if nested:
            flow.frame_ifs[name] = spec
        else:
            imp.special[name] = spec
            imp.deps[name] = list(dict.fromkeys(imp.res(r) for r in spec["reads"]))


def _cond_spec(imp: TFImport, merge: str) -> dict[str, Any]:
    """Predicate, branches (output, members in order), Switches, members and outer reads of a cond Merge
    outside loops (its branches may hold conds and loops: their Merges and Exits are members)."""
    flow, node = imp.flow, imp.nodes[merge]
    if len(node.inputs) != 2:
        raise GraphError("a tf.cond Merge whose inputs are not one per branch")
    branches: dict[bool, tuple[str, list[str]]] = {}
    switches: set[str] = set()
    members: set[str] = set()
    reads: list[str] = []
    preds = set()
    for ref in node.inputs:
        src, index = parse_tensor_name(ref)
        if imp.nodes[src].op in SWITCHES and _dynamic_switch(imp, src):  # the branch returns an outer value
            ctx, order = (_predicate(imp, src), bool(index)), []
            switches.add(src)
        elif src in flow.side:
            ctx = flow.side[src]
            order = _branch_members(imp, src, ctx, switches, reads)
        else:
            raise GraphError("a tf.cond Merge whose inputs are not one per branch")
        preds.add(ctx[0])
        branches[ctx[1]] = (ref, order)
        members.update(order)
    if len(preds) != 1 or set(branches) != {True, False}:
        raise GraphError("a Merge of the branches of several tf.conds (not one cond's two branches)")
    pred = preds.pop()
    if pred in flow.reused:
        raise GraphError(f"a tf.cond nested in a branch of a tf.cond on the same predicate {pred!r} (not supported: "
                         "the inner cond always takes the outer branch's side; build the graph without it)")
    broken = [f"{m}: {imp.problems[m]}" for m in sorted(members) if m in imp.problems]  # inner conds, loops
    if broken:
        raise GraphError(f"a tf.cond branch holds an op that cannot be imported ({'; '.join(broken)})")
    bad = [f"{m} ({imp.nodes[m].op})" for m in sorted(members) if not _translatable(imp, m)]
    if bad:
        raise GraphError(f"unsupported op(s) in a tf.cond branch: {', '.join(bad)}")
    outer = [pred, *(_canon(imp.nodes[s].inputs[0]) for s in sorted(switches))]
    outer += [r for r in reads if parse_tensor_name(r)[0] not in members | switches]
    return {"if": pred, "branches": branches, "switches": switches, "members": members,
            "reads": list(dict.fromkeys(outer))}


def _branch_members(imp: TFImport, start: str, ctx: tuple[str, bool], switches: set[str],
                    reads: list[str]) -> list[str]:
    """The nodes of branch ``ctx`` that ``start`` needs, inputs first; adds the cond's Switches they read to
    ``switches`` and the tensors they read to ``reads``. An inner cond's Merge needs what its branches read,
    an inner loop's Exit what the loop reads."""
    flow = imp.flow

    def needs(name: str) -> list[str]:
        data = _reads(imp, name)
        reads.extend(_canon(r) for r in data)
        within = []
        for ref in data + imp.nodes[name].control_inputs:
            src, index = parse_tensor_name(ref)
            if imp.nodes[src].op in SWITCHES and _dynamic_switch(imp, src) and (_predicate(imp, src), bool(index)) \
                    == ctx:
                switches.add(src)
            elif flow.side.get(src) == ctx:
                within.append(src)
        return within

    order: list[str] = []
    _post_order(start, needs, set(), order)
    return order


def _post_order(start: str, needs: Callable[[str], list[str]], done: set[str], order: list[str]) -> None:
    """Append to ``order`` the nodes reachable from ``start`` through ``needs`` (called once per node; the last
    one it returns is visited first), each after the ones it needs, skipping and adding to ``done``."""
    stack: list[tuple[str, bool]] = [(start, False)]
    while stack:
        name, ready = stack.pop()
        if ready:
            order.append(name)
            continue
        if name in done:
            continue
        done.add(name)
        stack.append((name, True))
        stack += [(src, False) for src in needs(name) if src not in done]


# ------------------------------------------------------------------------------------------------ loops
def analyse_loops(imp: TFImport) -> None:
    """Make each top-level frame's Exits depend on the frame's outer inputs (special Loop outputs); the Exits of
    a loop in a cond branch are built in the branch's graph."""
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
            loop = _analyse(imp, frame, members)
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
            elif frame in flow.frame_ctx:  # a loop in a cond branch: a Loop in the branch's graph
                if flow.side.get(name) != flow.frame_ctx[frame] or flow.frame_ctx[frame] == _SPLIT:
                    imp.problems[name] = f"while loop {loop.name!r} reads values of several tf.cond branches"
                flow.nested_exits[name] = (frame, by_exit[name])
            else:
                imp.special[name] = {"loop": frame, "variable": by_exit[name]}
                imp.deps[name] = list(loop.outer)


_MAX_NESTING = 64


def _analyse(imp: TFImport, frame: str, members: dict[str, list[str]], depth: int = 0) -> Loop:
    flow = imp.flow
    names = members.get(frame, [])
    if depth > _MAX_NESTING:
        raise GraphError(f"while loops nested more than {_MAX_NESTING} deep (at frame {frame!r})")
    for inner in [f for f, p in flow.parent.items() if p == frame]:  # loops in the body: Loops in its graph
        loop = _analyse(imp, inner, members, depth + 1)
        flow.loops[inner] = loop
        for i, v in enumerate(loop.variables):
            if v.exit:
                flow.nested_exits[v.exit] = (inner, i)
    for name in names:  # conds in the body: Ifs in its graph
        if imp.nodes[name].op in MERGES and not _loop_merge(imp, name):
            flow.frame_ifs[name] = _frame_cond(imp, frame, name)
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
        if node.op not in MERGES or name in flow.frame_ifs:
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
        for r in _reads(imp, name):
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


def _loop_merge(imp: TFImport, name: str) -> bool:
    """Whether Merge ``name`` is a while loop's (an Enter's value merged with a NextIteration's)."""
    ops = {imp.nodes[parse_tensor_name(r)[0]].op for r in imp.nodes[name].inputs[:2]}
    return bool(ops & set(ENTERS)) or bool(ops & set(NEXT_ITERATIONS))


def _cond_switch(imp: TFImport, frame: str, name: str) -> bool:
    """Whether ``name`` is a ``tf.cond`` Switch inside loop frame ``frame`` (not the loop's own Switch)."""
    node = imp.nodes[name]
    if node.op not in SWITCHES or imp.flow.frame_of.get(name) != frame or len(node.inputs) != 2:
        return False
    return imp.nodes[parse_tensor_name(node.inputs[1])[0]].op != "LoopCond"


def _frame_cond(imp: TFImport, frame: str, merge: str) -> dict[str, Any]:
    """The ``If`` of a cond Merge inside a loop body: its predicate, each branch's (output, members) and the
    tensors the branches read from the body (the Switches' data inputs and the ops before the cond). The
    Merges of conds and the Exits of loops nested in a branch are members that read what those read."""
    node = imp.nodes[merge]
    if len(node.inputs) != 2:
        raise GraphError(f"tf.cond Merge {merge!r} in a loop body has {len(node.inputs)} inputs, expected 2")
    branches: dict[bool, tuple[str, list[str]]] = {}
    switches: set[str] = set()
    members: set[str] = set()
    for ref in node.inputs:
        src, index = parse_tensor_name(ref)
        seen: set[str] = set()
        sides: set[int] = set()
        stack = [(src, index)]
        while stack:
            name, out = stack.pop()
            if _cond_switch(imp, frame, name):
                switches.add(name)
                sides.add(out)
                continue
            if name in seen:
                continue
            n = imp.nodes[name]
            special = name in imp.flow.frame_ifs or name in imp.flow.nested_exits  # an inner cond or loop
            if imp.flow.frame_of.get(name) != frame or n.op in _STRUCTURE and not special:
                raise GraphError(f"a tf.cond in a loop body whose branch reaches {name!r} ({n.op}), which is "
                                 "neither in the branch nor a value the cond switches in")
            seen.add(name)
            stack += [parse_tensor_name(r) for r in _reads(imp, name) + ([] if special else n.control_inputs)]
        if len(sides) != 1:
            raise GraphError(f"tf.cond Merge {merge!r} in a loop body: a branch reads both sides of its cond")
        branches[bool(sides.pop())] = (ref, _topological(imp, seen))
        members |= seen
    preds = {_predicate(imp, s) for s in switches}
    if set(branches) != {True, False} or len(preds) != 1:
        raise GraphError(f"tf.cond Merge {merge!r} in a loop body does not merge the two branches of one cond")
    bad = [f"{m} ({imp.nodes[m].op})" for m in members if not _translatable(imp, m)]
    if bad:
        raise GraphError(f"unsupported op(s) in a tf.cond branch in a loop body: {', '.join(sorted(bad))}")
    pred = preds.pop()
    reads = [pred]
    for name in list(members) + [parse_tensor_name(r)[0] for r in node.inputs]:
        n = imp.nodes[name]
        refs = [n.inputs[0]] if name in switches else _reads(imp, name) if name in members else []
        for r in refs:
            src = parse_tensor_name(r)[0]
            if src in switches:
                reads.append(imp.nodes[src].inputs[0])
            elif src not in members:
                reads.append(r)
    return {"if": pred, "branches": branches, "switches": switches, "members": members,
            "reads": list(dict.fromkeys(_canon(r) for r in reads))}


def _reads(imp: TFImport, name: str) -> list[str]:
    """The TF tensors a body node needs: an inner loop's Exit needs what that loop reads, a cond's Merge
    what its branches read."""
    flow = imp.flow
    if name in flow.nested_exits:
        return list(flow.loops[flow.nested_exits[name][0]].outer)
    if name in flow.frame_ifs:
        return list(flow.frame_ifs[name]["reads"])
    return _inputs(imp.nodes[name])


def _translatable(imp: TFImport, name: str) -> bool:
    from graphdnn.converters.tf_ops import TRANSLATORS

    op = imp.nodes[name].op
    if name in imp.flow.nested_exits or name in imp.flow.frame_ifs:
        return True
    return (op in TRANSLATORS or op in ("Const", "Identity") or op in TENSOR_ARRAY_DATA
            or op == "RandomUniform" and imp.dropout_mask(name))


def _closure(imp: TFImport, frame: str, refs: list[str], stops: set[str]) -> list[str]:
    seen: set[str] = set()
    stack = [parse_tensor_name(r)[0] for r in refs]
    flow = imp.flow
    while stack:
        name = stack.pop()
        if name in seen or flow.frame_of.get(name) != frame:
            continue
        special = name in flow.nested_exits or name in flow.frame_ifs
        if imp.nodes[name].op in stops and not special:
            continue
        seen.add(name)
        node = imp.nodes[name]
        stack += [parse_tensor_name(r)[0] for r in _reads(imp, name) + ([] if special else node.control_inputs)]
    return _topological(imp, seen)


def _topological(imp: TFImport, names: set[str]) -> list[str]:
    """``names`` in the graph's order, moved where needed so that each comes after the ones it reads (an inner
    loop's Exit reads what the loop body reads, which the graph's order, without back edges, may place later)."""
    flow, done, order = imp.flow, set(), []

    def needs(name: str) -> list[str]:
        special = name in flow.nested_exits or name in flow.frame_ifs
        refs = _reads(imp, name) + ([] if special else imp.nodes[name].control_inputs)
        return [s for s in reversed([parse_tensor_name(r)[0] for r in refs]) if s in names]

    for start in imp.order_cache:
        if start in names and start not in done:
            _post_order(start, needs, done, order)
    return order


# ------------------------------------------------------------------------------------------------ building
class _Region:
    """Translates TF nodes into ``graph`` with ``local`` refs; ``outer`` gives a value from outside."""

    def __init__(self, builder: _Builder, graph: Graph, outer: Callable[[str], str | None],
                 parent: Graph | None = None) -> None:
        self.b, self.graph, self.outer = builder, graph, outer
        self.parent = parent if parent is not None else builder.graph  # the graph captured values come from
        self.local: dict[str, str] = {}
        self.captured: dict[str, str] = {}  # outer graph tensor -> placeholder here
        self.built: dict[str, list[str]] = {}  # loop frame -> the outputs of its Loop in this graph

    def capture(self, outer_tensor: str, name: str) -> str:
        if outer_tensor not in self.captured:
            info = self.parent.get_tensor(outer_tensor)
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
                flow = imp.flow
                if name in flow.nested_exits:  # an inner loop: a Loop in this graph
                    frame, index = flow.nested_exits[name]
                    outs = [build_loop(self.b, frame, host=self)[index]]
                elif name in flow.frame_ifs:  # a cond in a loop body or a cond branch: an If in this graph
                    outs = [build_if(self.b, name, flow.frame_ifs[name], host=self)]
                else:
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


def build_loop(b: _Builder, frame: str, host: _Region | None = None) -> list[str]:
    """The ONNX Loop of ``frame`` in the outer graph (in ``host``'s body graph for a loop nested in another);
    returns one tensor per loop variable."""
    imp, flow = b.imp, b.imp.flow
    built = flow.built if host is None else host.built  # a branch computed by several Ifs builds it in each
    if frame in built:
        return built[frame]
    loop = flow.loops[frame]
    carried = [v for v in loop.variables if not v.accumulates]
    scans = [v for v in loop.variables if v.accumulates]
    graph = host.graph if host is not None else b.graph

    def outside(ref: str) -> str:
        return host.tensor(ref) if host is not None else b.tensor(imp.res(ref))

    init = {v.merge: outside(imp.nodes[v.enter].inputs[0]) for v in carried}

    def outer_value(ref: str) -> str | None:
        node = imp.nodes[split_tensor_name(ref)[0]]
        if node.op in ENTERS:
            return outside(node.inputs[0])
        return None if flow.frame_of.get(node.name) == frame else outside(ref)

    first = _Region(b, graph, outer_value, graph)  # the condition before the first iteration
    first.local.update({f"{m}:0": t for m, t in init.items()})
    first.run(loop.cond, suffix="/_initial")
    cond0 = first.tensor(imp.nodes[loop.loop_cond].inputs[0])

    body = Graph(f"{loop.name}/body")
    body.opset.update(graph.opset)
    region = _Region(b, body, lambda ref: None, graph)

    def body_outer(ref: str) -> str | None:
        node = imp.nodes[split_tensor_name(ref)[0]]
        if node.op in ENTERS:
            return region.capture(outside(node.inputs[0]), node.name)
        if flow.frame_of.get(node.name) == frame:
            return None
        outer_ref = imp.res(ref) if host is None else _canon(ref)
        return region.capture(outside(outer_ref), split_tensor_name(outer_ref)[0])

    region.outer = body_outer
    iteration = body.placeholder(f"{loop.name}/_iteration", (), "int64").name
    condition = body.placeholder(f"{loop.name}/_condition", (), "bool").name
    formal = []
    for v in carried:
        info = graph.get_tensor(init[v.merge])
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
    op = graph.add_op("Loop", [None, cond0, *[init[v.merge] for v in carried], *captured_outer], {"body": body},
                      loop.name, outputs=values, scoped=False)
    op.op.meta[CAPTURES_KEY] = len(captured_outer)
    position = {v.merge: i for i, v in enumerate(carried)}
    position.update({v.merge: len(carried) + i for i, v in enumerate(scans)})
    built[frame] = [op.out(position[v.merge]).name for v in loop.variables]
    for v, ref in zip(loop.variables, built[frame]):  # every Exit is reachable, also those nothing reads
        if v.exit and host is None:
            imp.refs.setdefault(f"{v.exit}:0", ref)
            b.graph.aliases.setdefault(f"{v.exit}:0", ref)
    return built[frame]


def build_if(b: _Builder, name: str, spec: dict[str, Any], host: _Region | None = None) -> str:
    """One ONNX If computing ``Merge`` ``name``: its two branches become the then/else bodies (in ``host``'s
    body graph for a cond in a loop body or in a cond branch)."""
    imp = b.imp
    regions: dict[bool, _Region] = {}
    outs: dict[bool, str] = {}
    graph = host.graph if host is not None else b.graph
    switches, members = spec["switches"], spec["members"]

    def outside(ref: str) -> str:
        return host.tensor(ref) if host is not None else b.tensor(imp.res(ref))

    for side in (True, False):
        ref, branch = spec["branches"][side]
        body = Graph(f"{name}/{'then' if side else 'else'}_branch")
        body.opset.update(graph.opset)
        region = _Region(b, body, lambda r: None, graph)

        def outer(r: str, region: _Region = region) -> str | None:
            node = imp.nodes[split_tensor_name(r)[0]]
            if node.op in SWITCHES and node.name in switches:
                return region.capture(outside(node.inputs[0]), node.name)
            if node.name in members:
                return None
            src = imp.res(r) if host is None else _canon(r)
            return region.capture(outside(src), split_tensor_name(src)[0])

        region.outer = outer
        region.run(branch)
        outs[side] = _output(body, region.tensor(ref), f"{name}/_{'then' if side else 'else'}", set())
        regions[side] = region
    union = list(dict.fromkeys([*regions[True].captured, *regions[False].captured]))
    for side, region in regions.items():
        for t in union:
            region.capture(t, split_tensor_name(t)[0])
        set_signature(region.graph, [], [region.captured[t] for t in union], [outs[side]])
    info = regions[True].graph.get_tensor(outs[True])
    shape = _declared(imp, name) or info.shape
    cond = outside(spec["if"])
    op = graph.add_op("If", [cond, *union], {"then_branch": regions[True].graph,
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
