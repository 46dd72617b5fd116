"""``graphdnn inspect FILE...``: what a model file holds, in any format ``graphdnn.load`` reads.

For a graph: the summary table (scope, output shape, parameters, trainable), then every variable as a
tree by scope with shape, dtype, parameter count and status (trainable, frozen, state), and totals.
``--ops`` lists the operations; ``--json`` prints the same as JSON. Weights-only files (a PyTorch state
dict, plain safetensors, ``.npz``, Keras weights) show their tensors.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from graphdnn.commands._model import Model, open_model
from graphdnn.errors import GraphDNNError
from graphdnn.summary import format_bytes, format_shape, summary, summary_data, variable_records, variable_tree

__all__ = ["describe", "register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``inspect`` subcommand."""
    parser = subparsers.add_parser("inspect", help="variables, shapes, parameter counts and ops of model files",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("files", nargs="+", metavar="FILE", help="model files (.safetensors, .onnx, TF checkpoint "
                        "or .meta, .keras/.h5, .pt ...)")
    parser.add_argument("--ops", action="store_true", help="also list every operation")
    parser.add_argument("--depth", type=int, default=None, help="cut summary scopes to this many levels")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run)


def describe(model: Model, ops: bool = False, depth: int | None = None) -> dict[str, Any]:
    """The JSON-ready description of an opened model file."""
    source = model.graph if model.graph is not None else model.tensors
    records = variable_records(source)
    totals = {"params": sum(r.numel for r in records), "bytes": sum(r.nbytes for r in records)}
    for kind in ("trainable", "frozen", "state"):
        totals[kind] = sum(r.numel for r in records if r.status == kind)
    doc: dict[str, Any] = {"file": str(model.path), "format": model.format,
                           "graph": model.graph.name if model.graph is not None else None,
                           "variables": [vars(r) for r in records], "totals": totals}
    if model.graph is not None:
        g = model.graph
        doc["summary"] = summary_data(g, depth)["rows"]
        doc["inputs"] = [op.output() for op in g.placeholders()]
        doc["collections"] = dict(g.collections)
        doc["num_ops"] = len(g.operations())
        if ops:
            doc["operations"] = [{"name": op.name, "type": op.type, "domain": op.domain,
                                  "inputs": list(op.inputs),
                                  "outputs": [{"shape": None if o.shape is None else list(o.shape), "dtype": o.dtype}
                                              for o in op.outputs]} for op in g.operations()]
    return doc


def _text(model: Model, doc: dict[str, Any], ops: bool, depth: int | None) -> str:
    t = doc["totals"]
    head = f"{model.path} ({model.format})"
    lines = [head, "-" * len(head)]
    if model.graph is not None:
        g = model.graph
        lines += [f"graph {g.name!r}: {doc['num_ops']} ops, {len(doc['variables'])} variables; "
                  f"inputs {', '.join(doc['inputs']) or '-'}"]
        lines += [f"collection {k}: {', '.join(v)}" for k, v in g.collections.items() if v]
        lines += ["", summary(g, depth), "", "Variables:"]
    else:
        lines += [f"{len(doc['variables'])} named tensors (weights only, no graph)", ""]
    lines.append(variable_tree(variable_records(model.graph if model.graph is not None else model.tensors))
                 or "  (none)")
    split = f" (trainable {t['trainable']:,}, frozen {t['frozen']:,}, state {t['state']:,})" if model.graph else ""
    lines.append(f"total: {t['params']:,} parameters in {len(doc['variables'])} tensors, {format_bytes(t['bytes'])}"
                 + split)
    if ops and model.graph is not None:
        lines += ["", "Operations:"]
        for op in model.graph.operations():
            shapes = ", ".join(format_shape(o.shape) for o in op.outputs)
            ins = ", ".join(r or "-" for r in op.inputs)
            lines.append(f"  {op.name}  {op.type}({ins}) -> {shapes}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Describe each file; a file that cannot be read is one error line, and the exit status is 1."""
    docs, status = [], 0
    for i, path in enumerate(args.files):
        try:
            model = open_model(path)
            doc = describe(model, args.ops, args.depth)
        except (GraphDNNError, OSError) as exc:
            if len(args.files) == 1:
                raise
            from graphdnn.cli import one_line

            print(f"graphdnn inspect: error: {one_line(exc)}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            docs.append(doc)
        else:
            print(("\n" if i else "") + _text(model, doc, args.ops, args.depth))
    if args.json:
        print(json.dumps(docs[0] if len(args.files) == 1 else docs, indent=2, default=str))
    return status
