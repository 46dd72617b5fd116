"""Lossless, versioned JSON for graphs (ops, attributes, shapes, collections, opset, scopes).

Variable *values* are not in the JSON: checkpoints store them beside it. A declared signature
(``Graph.signature``: the model's inputs and outputs) is kept in ``meta`` and checked on reading.
Reading validates every field, so a hostile or corrupted document gives a ``FileFormatError``
naming what is wrong; nothing read is ever evaluated.
"""

from __future__ import annotations

import json
from typing import Any

from graphdnn import graph_hooks
from graphdnn.bulk import paused_gc
from graphdnn.errors import FileFormatError, GraphError
from graphdnn.graph import SIGNATURE, Graph, Op, ValueInfo
from graphdnn.names import json_lone_surrogate, split_tensor_name
from graphdnn.ops.registry import GRAPHDNN_DOMAIN, MAX_ONNX_OPSET, is_known
from graphdnn.subgraphs import ensure_stateless, has_subgraphs, subgraph_attrs

FORMAT = "graphdnn-graph"
VERSION = 1
#: How a graph-valued attribute (a control-flow body) is written: ``{BODY_TAG: <graph dict>}``.
BODY_TAG = "graphdnn.body"
_MAX_DEPTH = 32
_BUILTIN = {(GRAPHDNN_DOMAIN, "Variable"), (GRAPHDNN_DOMAIN, "Placeholder")}


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    """The graph as a JSON-safe dict."""
    ops = []
    for op in graph.operations():
        entry: dict[str, Any] = {
            "name": op.name,
            "type": op.type,
            "inputs": list(op.inputs),
            "attrs": _attrs_to_json(op),
            "outputs": [{"shape": None if o.shape is None else list(o.shape), "dtype": o.dtype} for o in op.outputs],
        }
        if op.domain:
            entry["domain"] = op.domain
        if op.meta:
            entry["meta"] = op.meta
        ops.append(entry)
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "opset": dict(graph.opset),
        "ops": ops,
        "collections": {k: list(v) for k, v in graph.collections.items()},
        "scopes": sorted(graph.layer_scopes),
        "meta": graph.meta,
        **({"aliases": dict(graph.aliases)} if graph.aliases else {}),
    }


def _attrs_to_json(op: Op) -> dict[str, Any]:
    if not has_subgraphs(op):
        return op.attrs
    out = dict(op.attrs)
    for key, body in subgraph_attrs(op).items():
        ensure_stateless(body)
        out[key] = {BODY_TAG: graph_to_dict(body)}
    return out


def _attrs_from_json(attrs: dict[str, Any], source: str, op_name: str, depth: int) -> dict[str, Any]:
    bodies = {k: v[BODY_TAG] for k, v in attrs.items() if isinstance(v, dict) and BODY_TAG in v}
    if not bodies:
        return attrs
    _need(depth < _MAX_DEPTH, source, "op %r: control-flow bodies nested deeper than %d", op_name, _MAX_DEPTH)
    out = dict(attrs)
    for key, doc in bodies.items():
        body = out[key] = graph_from_dict(doc, f"{source} (op {op_name!r}, body {key!r})", depth + 1)
        sig = body.meta.get("body")
        fields = ("inputs", "captures", "outputs")
        _need(isinstance(sig, dict) and all(isinstance(sig.get(f), list) for f in fields), source,
              "op %r: body %r has no signature (inputs, captures, outputs)", op_name, key)
        for ref in (r for f in fields for r in sig[f]):
            _need(isinstance(ref, str) and _has_tensor(body, ref), source,
                  "op %r: body %r names %r in its signature, which it does not have", op_name, key, ref)
    return out


def _has_tensor(graph: Graph, ref: str) -> bool:
    """Whether tensor ``ref`` (``op:i``, or a bare op name for output 0) exists in ``graph``."""
    producer, index = split_tensor_name(ref)
    return producer in graph.nx and index < len(graph.nx.nodes[producer]["op"].outputs)


def graph_to_json(graph: Graph, indent: int | None = None) -> str:
    """Serialize ``graph`` (without variable values) to a JSON string."""
    try:
        with paused_gc():
            text = json.dumps(graph_to_dict(graph), indent=indent, ensure_ascii=False, allow_nan=True)
    except TypeError as exc:
        raise GraphError(f"graph {graph.name!r} holds an attribute that is not JSON data: {exc}") from exc
    if (where := json_lone_surrogate(text)) is not None:
        raise GraphError(f"graph {graph.name!r}: {where} holds a lone surrogate, which is not Unicode text and "
                         "cannot be saved; use a valid string")
    return text


def graph_from_json(text: str | bytes, source: str = "<json>") -> Graph:
    """Rebuild a graph from ``graph_to_json`` output; variables get no values (see ``graphdnn.initialize``)."""
    try:
        with paused_gc():
            doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FileFormatError(f"{source}: the graph metadata is not valid JSON ({exc})") from exc
    if (where := json_lone_surrogate(text, doc)) is not None:
        raise FileFormatError(f"{source}: malformed graph: {where} holds a lone surrogate, which is not Unicode text")
    with paused_gc():
        return graph_from_dict(doc, source)


def _need(cond: bool, source: str, what: str, *args: Any) -> None:
    """Raise a FileFormatError unless ``cond``; ``what % args`` is only formatted on failure."""
    if not cond:
        raise FileFormatError(f"{source}: malformed graph: {what % args if args else what}")


def _shape(value: Any, source: str, op_name: str) -> tuple[int | None, ...] | None:
    if value is None:
        return None
    _need(isinstance(value, list) and all(d is None or (isinstance(d, int) and d >= 0) for d in value),
          source, "op %r: shape must be a list of non-negative ints or nulls", op_name)
    return tuple(value)


def graph_from_dict(doc: Any, source: str = "<json>", depth: int = 0) -> Graph:
    """Rebuild a graph from ``graph_to_dict`` output, validating every field."""
    _need(isinstance(doc, dict), source, "top level is not an object")
    _need(doc.get("format") == FORMAT, source, f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    version = doc.get("version")
    _need(isinstance(version, int), source, "version missing")
    if version > VERSION:
        raise FileFormatError(f"{source}: graph format version {version} is newer than this graphdnn "
                              f"understands ({VERSION}); upgrade graphdnn")
    graph = Graph(str(doc.get("name", "graph")))
    opset = doc.get("opset", {})
    _need(isinstance(opset, dict) and all(isinstance(k, str) and isinstance(v, int) for k, v in opset.items()),
          source, "opset must map domains to ints")
    if opset.get("", 0) > MAX_ONNX_OPSET:
        raise FileFormatError(f"{source}: ONNX opset {opset['']} is newer than graphdnn supports ({MAX_ONNX_OPSET})")
    graph.opset.update(opset)
    ops = doc.get("ops")
    _need(isinstance(ops, list), source, "ops must be a list")
    unknown: dict[str, list[str]] = {}
    parsed = []
    for i, entry in enumerate(ops):
        _need(isinstance(entry, dict), source, "op #%d is not an object", i)
        name, op_type, domain = entry.get("name"), entry.get("type"), entry.get("domain", "")
        _need(isinstance(name, str) and name != "", source, "op #%d has no name", i)
        _need(isinstance(op_type, str) and isinstance(domain, str), source, "op %r: bad type/domain", name)
        if (domain, op_type) not in _BUILTIN and not is_known(op_type, domain):
            unknown.setdefault(f"{domain + '::' if domain else ''}{op_type}", []).append(name)
        inputs = entry.get("inputs", [])
        _need(isinstance(inputs, list) and all(r is None or isinstance(r, str) for r in inputs),
              source, "op %r: inputs must be a list of tensor names", name)
        attrs = entry.get("attrs", {})
        _need(isinstance(attrs, dict), source, "op %r: attrs must be an object", name)
        attrs = _attrs_from_json(attrs, source, name, depth)
        outs = entry.get("outputs", [])
        _need(isinstance(outs, list) and all(isinstance(o, dict) for o in outs), source,
              "op %r: outputs must be a list of objects", name)
        infos = [ValueInfo(_shape(o.get("shape"), source, name), o.get("dtype")) for o in outs]
        meta = entry.get("meta", {})
        _need(isinstance(meta, dict), source, "op %r: meta must be an object", name)
        parsed.append(Op(name, op_type, inputs, attrs, infos, domain, meta))
    if unknown:
        listed = "; ".join(f"{t} (ops {', '.join(map(repr, names[:5]))})" for t, names in sorted(unknown.items()))
        raise FileFormatError(f"{source}: unsupported op types: {listed}")
    for op in parsed:
        _need(op.name not in graph.nx, source, "duplicate op name %r", op.name)
        for ref in op.inputs:
            if ref is None:
                continue
            producer, index = split_tensor_name(ref)
            _need(producer in graph.nx, source, "op %r reads %r, which no earlier op produces", op.name, ref)
            _need(index < len(graph.nx.nodes[producer]["op"].outputs), source,
                  "op %r reads %r, beyond its producer's outputs", op.name, ref)
        if op.is_variable:
            _need(isinstance(op.attrs.get("shape"), list) and isinstance(op.attrs.get("dtype"), str)
                  and isinstance(op.attrs.get("trainable"), bool), source,
                  "variable %r needs shape, dtype and trainable", op.name)
        graph.insert_op(op)
    collections = doc.get("collections", {})
    _need(isinstance(collections, dict), source, "collections must be an object")
    for key, names in collections.items():
        _need(isinstance(names, list) and all(isinstance(n, str) for n in names), source,
              f"collection {key!r} must be a list of names")
        graph.collections[key] = list(names)
    scopes = doc.get("scopes", [])
    _need(isinstance(scopes, list) and all(isinstance(s, str) for s in scopes), source, "scopes must be names")
    graph.layer_scopes = graph.layer_scopes | set(scopes)
    meta = doc.get("meta", {})
    _need(isinstance(meta, dict), source, "meta must be an object")
    _check_signature(meta.get(SIGNATURE), graph, source)
    graph.meta.update(meta)
    aliases = doc.get("aliases", {})
    _need(isinstance(aliases, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()),
          source, "aliases must map names to tensor names")
    for alias, ref in aliases.items():
        _need(_has_tensor(graph, ref), source, f"alias {alias!r} points at {ref!r}, which does not exist")
    graph.aliases.update(aliases)
    return graph


def _check_signature(sig: Any, graph: Graph, source: str) -> None:
    """A declared signature (``Graph.signature``) names existing tensors."""
    if sig is None:
        return
    _need(isinstance(sig, dict) and set(sig) == {"inputs", "outputs"}
          and all(isinstance(sig[k], list) for k in ("inputs", "outputs")), source,
          "the signature must be {'inputs': [...], 'outputs': [...]}")
    for ref in (*sig["inputs"], *sig["outputs"]):
        _need(isinstance(ref, str) and _has_tensor(graph, ref), source,
              "the signature names %r, which the graph does not have", ref)


graph_hooks.install(graph_hooks.TO_JSON, graph_to_json)
graph_hooks.install(graph_hooks.FROM_JSON, graph_from_json)
