"""Control-flow bodies: graphs nested in an op's attributes (If's branches, Loop's and Scan's body).

A body is a ``Graph`` stored as the attribute's value. Its signature sits in
``body.meta["body"]``: ``inputs`` (placeholders for the formal inputs, in ONNX order),
``captures`` (one placeholder per outer-scope value the op's bodies read) and ``outputs``. The op
itself receives the captured outer values as its last ``op.meta["captures"]`` inputs, in the order
of the ``captures`` placeholders: captured values stay ordinary inputs, so the outer graph sees the
dependency (pruning, topological order, gradients into outer variables). Every body of one op has
the same capture list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphdnn.errors import GraphError

if TYPE_CHECKING:
    from graphdnn.graph import Graph, Op

SIGNATURE_KEY = "body"
CAPTURES_KEY = "captures"


def is_graph(value: Any) -> bool:
    from graphdnn.graph import Graph

    return isinstance(value, Graph)


def subgraph_attrs(op: Op) -> dict[str, Graph]:
    """The op's graph-valued attributes (name -> body)."""
    return {k: v for k, v in op.attrs.items() if is_graph(v)}


def has_subgraphs(op: Op) -> bool:
    return any(is_graph(v) for v in op.attrs.values())


def captures(op: Op) -> int:
    """How many of the op's trailing inputs are outer values captured by its bodies."""
    return int(op.meta.get(CAPTURES_KEY, 0))


def set_signature(body: Graph, inputs: list[str], captured: list[str], outputs: list[str]) -> None:
    body.meta[SIGNATURE_KEY] = {"inputs": list(inputs), "captures": list(captured), "outputs": list(outputs)}


def signature(body: Graph) -> tuple[list[str], list[str], list[str]]:
    """(formal input refs, capture refs, output refs) of ``body``."""
    sig = body.meta.get(SIGNATURE_KEY)
    if not isinstance(sig, dict):
        raise GraphError(f"graph {body.name!r} is used as a control-flow body but has no signature "
                         f"(meta[{SIGNATURE_KEY!r}] with inputs, captures and outputs)")
    return list(sig["inputs"]), list(sig["captures"]), list(sig["outputs"])


def ensure_stateless(body: Graph) -> None:
    """Bodies hold no variables (checkpoints store one flat set of weights): raise if ``body`` does."""
    held = [v.name for v in body.variables()]
    if held:
        raise GraphError(f"control-flow body {body.name!r} holds variables {held[:5]}; bodies hold none, read the "
                         "weights from the outer graph instead")
