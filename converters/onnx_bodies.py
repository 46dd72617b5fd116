"""Control-flow bodies (If/Loop/Scan/SequenceMap graphs) to ONNX ``GraphProto`` attributes.

A body is exported like a model (``build_model`` on the body graph, its formal inputs and its
outputs); then its capture placeholders, which ``graphdnn.subgraphs`` keeps as explicit inputs,
turn back into what ONNX expects: plain references to the outer values by their names.
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto

from graphdnn.graph import Graph
from graphdnn.subgraphs import signature


def body_attribute(key: str, body: Graph, outer_names: list[str], opset: int) -> AttributeProto:
    """The GRAPH attribute ``key`` holding ``body``; ``outer_names`` are the exported value names
    of the outer values the op captures, in the order of the body's capture placeholders."""
    from graphdnn.converters.onnx_export import build_model, value_names

    inputs, captured, outputs = signature(body)
    if len(captured) != len(outer_names):
        raise ValueError(f"body {body.name!r} has {len(captured)} capture placeholders, the op passes "
                         f"{len(outer_names)} captured values")
    model = build_model(body, inputs=inputs + captured, outputs=outputs, opset=opset, fuse_gemm=False)
    graph = model.graph
    names = value_names(body)
    renames = {names[ref]: outer for ref, outer in zip(captured, outer_names)}
    keep = [vi for vi in graph.input if vi.name not in renames]
    del graph.input[:]
    graph.input.extend(keep)
    for vi in graph.input:  # a body's dims are its own: no symbolic names shared with the outer graph
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.ClearField("dim_param")
    _rename(graph, renames)
    return onnx.helper.make_attribute(key, graph)


def _rename(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    """Replace value references in ``graph`` and the bodies nested in it (outer names, as read)."""
    if not renames:
        return
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    defined |= {o for node in graph.node for o in node.output}
    live = {k: v for k, v in renames.items() if k not in defined}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in live:
                node.input[i] = live[name]
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                _rename(attr.g, live)
    for out in graph.output:
        if out.name in live:
            out.name = live[out.name]
