"""``graphdnn inspect FILE...``: what a model file holds, in any format ``graphdnn.load`` reads.

For a graph: the summary table (scope, output shape, parameters, trainable), then every variable as a
tree by scope with shape, dtype, parameter count and status (trainable, frozen, state), and totals.
A TF checkpoint's tensors are all listed, grouped (the graph's variables, optimizer slots such as
``global_step`` and ``*/Momentum``, other tensors), as TF's ``inspect_checkpoint`` does.
``--ops`` lists the operations; ``--json`` prints the same as JSON. Weights-only files (a PyTorch state
dict, plain safetensors, ``.npz``, Keras weights) show their tensors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from graphdnn.commands._args import add_max_bytes
from graphdnn.commands._model import Model, open_model
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
    add_max_bytes(parser)
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
        if g.signature is not None:
            doc["signature"] = g.signature
        if isinstance(g.meta.get("import_summary"), dict):
            doc["import_summary"] = g.meta["import_summary"]
        doc["collections"] = dict(g.collections)
        doc["num_ops"] = len(g.operations())
    checkpoint = _checkpoint_tensors(model)
    if checkpoint is not None:
        doc["checkpoint"] = checkpoint
        if ops:
            doc["operations"] = [{"name": op.name, "type": op.type, "domain": op.domain,
                                  "inputs": list(op.inputs),
                                  "outputs": [{"shape": None if o.shape is None else list(o.shape), "dtype": o.dtype}
                                              for o in op.outputs]} for op in g.operations()]
    return doc


_GROUPS = ("variables", "optimizer slots", "other tensors")


def _checkpoint_tensors(model: Model) -> dict[str, Any] | None:
    """Every tensor of the TF checkpoint beside a TF graph (as TF's ``inspect_checkpoint`` lists them),
    grouped: the graph's variables, optimizer slots (``global_step``, ``*/Momentum``, ...), other tensors."""
    if model.format not in ("TensorFlow checkpoint", "TensorFlow meta graph"):
        return None
    from graphdnn.converters.tf_checkpoint import TFCheckpointReader, is_optimizer_slot, resolve_checkpoint_prefix
    from graphdnn.errors import FileFormatError

    try:
        prefix = resolve_checkpoint_prefix(model.path)
    except FileFormatError:
        return None
    if not Path(prefix + ".index").is_file():
        return None
    reader = TFCheckpointReader(prefix)
    known = set(model.graph.values) if model.graph is not None else set()
    groups: dict[str, list[dict[str, Any]]] = {name: [] for name in _GROUPS}
    for name in sorted(reader.names()):
        group = "optimizer slots" if is_optimizer_slot(name) else ("variables" if name in known else "other tensors")
        shape = list(reader.shape(name))
        groups[group].append({"name": name, "shape": shape, "dtype": str(reader.dtype(name)),
                              "size": int(np.prod(shape, dtype=np.int64))})
    return {"prefix": prefix, "tensors": len(reader), "groups": groups}


def _checkpoint_lines(checkpoint: dict[str, Any]) -> list[str]:
    lines = ["", f"Checkpoint {checkpoint['prefix']}: {checkpoint['tensors']} tensors"]
    for group, entries in checkpoint["groups"].items():
        if entries:
            width = max(len(e["name"]) for e in entries)
            lines.append(f"  {group} ({len(entries)}):")
            lines += [f"    {e['name']:<{width}}  {format_shape(tuple(e['shape'])):<14} {e['dtype']}" for e in entries]
    return lines


def _text(model: Model, doc: dict[str, Any], ops: bool, depth: int | None) -> str:
    t = doc["totals"]
    head = f"{model.path} ({model.format})"
    lines = [head, "-" * len(head)]
    if model.graph is not None:
        g = model.graph
        lines += [f"graph {g.name!r}: {doc['num_ops']} ops, {len(doc['variables'])} variables; "
                  f"inputs {', '.join(doc['inputs']) or '-'}"]
        if "signature" in doc:
            lines.append(f"signature: ({', '.join(doc['signature']['inputs'])}) -> "
                         f"({', '.join(doc['signature']['outputs'])})")
        if "import_summary" in doc:
            lines.append(f"imported: {doc['import_summary'].get('text')}")
        lines += [f"collection {k}: {', '.join(v)}" for k, v in g.collections.items() if v]
        lines += ["", summary(g, depth), "", "Variables:"]
    else:
        lines += [f"{len(doc['variables'])} named tensors (weights only, no graph)", ""]
    lines.append(variable_tree(variable_records(model.graph if model.graph is not None else model.tensors))
                 or "  (none)")
    split = f" (trainable {t['trainable']:,}, frozen {t['frozen']:,}, state {t['state']:,})" if model.graph else ""
    lines.append(f"total: {t['params']:,} parameters in {len(doc['variables'])} tensors, {format_bytes(t['bytes'])}"
                 + split)
    if "checkpoint" in doc:
        lines += _checkpoint_lines(doc["checkpoint"])
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
            model = open_model(path, max_bytes=args.max_bytes)
            doc = describe(model, args.ops, args.depth)
        except Exception as exc:
            if len(args.files) == 1 or getattr(args, "traceback", False):
                raise
            from graphdnn.cli import error_line

            print(f"graphdnn inspect: error: {error_line(exc)}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            docs.append(doc)
        else:
            print(("\n" if i else "") + _text(model, doc, args.ops, args.depth))
    if args.json:
        print(json.dumps(docs[0] if len(args.files) == 1 else docs, indent=2, default=str))
    return status
