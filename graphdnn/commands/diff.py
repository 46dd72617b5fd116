"""``graphdnn diff A B``: how two model or weights files differ, tensor by tensor.

Lists the names only in A, the names only in B, the tensors whose shapes (or dtypes) differ and, for
every tensor in both with the same shape, the largest absolute difference. The exit status is 0 when
the files hold the same names and shapes and no difference exceeds ``--atol`` (default 0), else 1.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from graphdnn.commands._args import add_max_bytes
from graphdnn.commands._model import open_model

__all__ = ["compare", "register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``diff`` subcommand."""
    parser = subparsers.add_parser("diff", help="names, shapes and largest differences between two model files",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("a", metavar="A", help="a model or weights file")
    parser.add_argument("b", metavar="B", help="another model or weights file")
    parser.add_argument("--atol", type=float, default=0.0, help="differences up to this count as equal (default 0)")
    parser.add_argument("--all", action="store_true", help="also list tensors that are equal")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_max_bytes(parser)
    parser.set_defaults(func=run)


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16) or t.dtype.is_floating_point:
        return t.to(torch.float64).numpy()
    if t.is_complex():
        return t.to(torch.complex128).numpy()
    return t.to(torch.int64 if t.dtype != torch.bool else torch.bool).numpy()


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``only_a``, ``only_b``, ``shape`` (name, shape A, shape B), ``dtype`` (name, A, B) and ``max_abs``
    (name -> largest absolute difference, for tensors in both with one shape)."""
    both = [n for n in a if n in b]
    report: dict[str, Any] = {"only_a": [n for n in a if n not in b], "only_b": [n for n in b if n not in a],
                              "shape": [], "dtype": [], "max_abs": {}}
    for name in both:
        x, y = a[name], b[name]
        if tuple(x.shape) != tuple(y.shape):
            report["shape"].append((name, list(x.shape), list(y.shape)))
            continue
        if x.dtype != y.dtype:
            report["dtype"].append((name, str(x.dtype).replace("torch.", ""), str(y.dtype).replace("torch.", "")))
        xa, ya = _numpy(x), _numpy(y)
        if x.numel() == 0:
            report["max_abs"][name] = 0.0
        elif xa.dtype == np.bool_ or ya.dtype == np.bool_:
            report["max_abs"][name] = float(np.any(xa != ya))
        else:
            report["max_abs"][name] = float(np.max(np.abs(xa - ya)))
    return report


def run(args: argparse.Namespace) -> int:
    """Print the differences; 0 when equal within ``--atol``, 1 otherwise."""
    a, b = open_model(args.a, max_bytes=args.max_bytes), open_model(args.b, max_bytes=args.max_bytes)
    report = compare(a.named_tensors(), b.named_tensors())
    differ = {n: d for n, d in report["max_abs"].items() if not d <= args.atol}
    same = not (report["only_a"] or report["only_b"] or report["shape"] or differ)
    if args.json:
        print(json.dumps(report | {"a": str(a.path), "b": str(b.path), "equal": same}, indent=2))
        return 0 if same else 1
    print(f"A: {a.path} ({a.format}), {len(report['only_a']) + len(report['max_abs']) + len(report['shape'])} tensors")
    print(f"B: {b.path} ({b.format}), {len(report['only_b']) + len(report['max_abs']) + len(report['shape'])} tensors")
    for title, names in (("only in A", report["only_a"]), ("only in B", report["only_b"])):
        if names:
            print(f"{title} ({len(names)}):")
            print("\n".join(f"  {n}" for n in names))
    if report["shape"]:
        print(f"shapes differ ({len(report['shape'])}):")
        print("\n".join(f"  {n}: {tuple(x)} vs {tuple(y)}" for n, x, y in report["shape"]))
    if report["dtype"]:
        print(f"dtypes differ ({len(report['dtype'])}):")
        print("\n".join(f"  {n}: {x} vs {y}" for n, x, y in report["dtype"]))
    shown = report["max_abs"] if args.all else differ
    if shown:
        print(f"max |A - B| per tensor ({len(differ)} of {len(report['max_abs'])} differ):")
        width = max(len(n) for n in shown)
        print("\n".join(f"  {n:<{width}}  {d:.6g}" for n, d in sorted(shown.items(), key=lambda kv: -kv[1])))
    worst = max(report["max_abs"].values(), default=0.0)
    print("same names, shapes and values" + (f" (within {args.atol:g})" if args.atol else "") if same
          else f"files differ; largest |A - B| = {worst:.6g}")
    return 0 if same else 1
