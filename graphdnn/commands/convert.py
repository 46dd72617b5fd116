"""``graphdnn convert SRC DST``: between formats, chosen by the file names.

Reads everything ``graphdnn inspect`` reads (graphdnn ``.safetensors``, ``.onnx``, a TensorFlow checkpoint
or ``.meta``, ``.keras``/``.h5``, and the weights-only ``.pt``/``.pth``, ``.npz``, plain safetensors,
Keras ``.weights.h5``); writes a graphdnn ``.safetensors`` (graph + variables, or just tensors) or an
``.onnx`` model. ``--include``/``--exclude`` select variables (regexes matched at the start of the name,
as in ``graphdnn.restore``), ``--rename PAT=REPL`` renames ops and variables (first matching rule,
``re.sub``). ``--graph MODEL`` loads SRC's weights into MODEL's graph (layouts converted, as in
``graphdnn.converters.named_tensors.load_weights``) and writes that model.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from graphdnn.commands._args import add_max_bytes
from graphdnn.commands._model import Model, open_model, parse_rename
from graphdnn.errors import GraphDNNError
from graphdnn.graph import Graph
from graphdnn.restoring import renamer
from graphdnn.suggest import did_you_mean

__all__ = ["register", "run"]

WRITES = (".safetensors", ".onnx")


def register(subparsers: Any) -> None:
    """Add the ``convert`` subcommand."""
    parser = subparsers.add_parser("convert", help="convert a model between formats (by file extension)",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("src", metavar="SRC", help="the model or weights file to read")
    parser.add_argument("dst", metavar="DST", help="the file to write: .safetensors or .onnx")
    parser.add_argument("--include", metavar="RE", help="keep only variables matching RE (e.g. 'hidden[123]')")
    parser.add_argument("--exclude", metavar="RE", help="drop variables matching RE")
    parser.add_argument("--rename", metavar="PAT=REPL", action="append", default=[],
                        help="rename ops and variables with a regex (repeatable; the first matching rule applies)")
    parser.add_argument("--graph", metavar="MODEL", help="load SRC's weights into MODEL's graph, write that model")
    parser.add_argument("--output", metavar="NAME", action="append", default=None,
                        help="for .onnx: a tensor to export as an output (repeatable; default: the graph's outputs)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="write the result even when --include/--exclude select nothing or --graph loads nothing")
    add_max_bytes(parser)
    parser.set_defaults(func=run)


def _selected(names: list[str], include: str | None, exclude: str | None, allow_empty: bool = False) -> list[str]:
    inc = re.compile(include) if include else None
    exc = re.compile(exclude) if exclude else None
    keep = [n for n in names if (inc is None or inc.match(n)) and not (exc is not None and exc.match(n))]
    if names and not keep and not allow_empty:
        what = f"--include {include!r}" if include and not any(inc.match(n) for n in names) else "--include/--exclude"
        hint = did_you_mean(include, names, scopes=True) if include else ""
        raise GraphDNNError(f"{what} selects none of the {len(names)} variables{hint}; "
                            "pass --allow-missing to write an empty result")
    return keep


def _into_graph(args: argparse.Namespace, src: Model, rules: list[tuple[str, str]]) -> Graph:
    from graphdnn.converters.named_tensors import load_weights

    graph = open_model(args.graph, need_graph=True, max_bytes=args.max_bytes).graph
    source = src.graph.values if src.graph is not None else src.tensors
    report = load_weights(graph, source, rename=renamer(rules) if rules else None, include=args.include,
                          exclude=args.exclude, strict=False)
    print(f"loaded {len(report.matched)} variables from {src.path} into {args.graph}; "
          f"{len(report.missing)} missing, {len(report.unexpected)} unused")
    if not report.matched and not args.allow_missing:
        sample = ", ".join(sorted(report.unexpected)[:3]) or "none"
        raise GraphDNNError(f"{src.path}: none of its tensors matches a variable of {args.graph} (its names: "
                            f"{sample}...); use --rename PAT=REPL to map them, or --allow-missing to write "
                            f"{args.graph}'s own weights anyway")
    return graph


def run(args: argparse.Namespace) -> int:
    """Convert; prints what was written."""
    dst = Path(args.dst)
    kind = next((s for s in WRITES if dst.name.lower().endswith(s)), None)
    if kind is None:
        raise GraphDNNError(f"{dst}: convert writes {' or '.join(WRITES)}; choose one of those extensions")
    rules = parse_rename(args.rename)
    for flag in ("include", "exclude"):
        try:
            re.compile(getattr(args, flag) or "")
        except re.error as exc:
            raise GraphDNNError(f"--{flag} {getattr(args, flag)!r} is not a valid regex ({exc})") from None
    src = open_model(args.src, max_bytes=args.max_bytes)
    if args.graph:
        graph: Graph | None = _into_graph(args, src, rules)
        tensors = dict(graph.values)
    elif src.graph is not None:
        graph = src.graph
        if rules:
            rename = renamer(rules)
            mapping = {op.name: rename(op.name) for op in graph.operations() if rename(op.name) != op.name}
            graph.rename_ops(mapping)
        names = [op.name for op in graph.variables()]
        keep = _selected(names, args.include, args.exclude, args.allow_missing)
        tensors = {n: graph.values[n] for n in keep if n in graph.values}
        if len(keep) < len(names):
            if kind == ".onnx":
                raise GraphDNNError(f"{dst}: an ONNX model needs every variable, but --include/--exclude leave out "
                                    f"{len(names) - len(keep)}; write .safetensors for a partial set of weights")
            graph = None  # a subset of the weights: tensors only (restore them with graphdnn.restore)
    else:
        if kind == ".onnx":
            raise GraphDNNError(f"{args.src}: the tensors of a {src.format} file have no graph to export to ONNX; "
                                "pass --graph MODEL (a model whose variables they fill)")
        rename = renamer(rules)
        everything = src.named_tensors()
        renamed = {rename(n): v for n, v in everything.items()}
        if len(renamed) < len(everything):
            raise GraphDNNError("--rename maps two tensors to one name; make the rules more specific")
        graph = None
        tensors = {n: renamed[n] for n in _selected(list(renamed), args.include, args.exclude, args.allow_missing)}
    return _write(dst, kind, graph, tensors, args.output)


def _write(dst: Path, kind: str, graph: Graph | None, tensors: dict[str, torch.Tensor],
           outputs: list[str] | None) -> int:
    import graphdnn as gd

    if kind == ".onnx":
        gd.export_onnx(graph, dst, outputs=outputs)
        print(f"wrote {dst}: ONNX, {len(tensors)} initializers, names kept")
        return 0
    if graph is not None:
        gd.save(graph, dst)
        print(f"wrote {dst}: graph '{graph.name}' ({len(graph.operations())} ops) and {len(tensors)} variables")
    else:
        gd.save({n: t.detach() for n, t in tensors.items()}, dst)
        print(f"wrote {dst}: {len(tensors)} tensors without a graph (restore them with graphdnn.restore)")
    return 0
