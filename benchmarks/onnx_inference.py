"""ONNX Runtime latency of graphdnn's export vs ``torch.onnx.export`` of the same handwritten module.

Models: the book's 784-300-100-10 MLP with ReLU, and with batch norm + ELU (inference form), the
same weights on both sides. The baseline is the TorchScript exporter (``torch.onnx.export(...,
dynamo=False)``) with default constant folding.

For each batch size (1, 64, 1024) three sessions are timed in the same interleaved rounds: graphdnn's
file, a byte-identical copy of it (the A/A control) and the torch export. The order changes every
round and the sessions are created in a different order at every point. Reported per point: the
median of the per-round ratios graphdnn/torch and graphdnn/copy, each with a 95% bootstrap CI of the
median, and a verdict ("faster" if the CI lies below 1, "slower" if above, else "equal within
noise"). The A/A ratio shows how far from 1.0 the harness reads when both sides are the same file.

Structural check: the graphs ORT actually runs (default optimization level, saved through
``SessionOptions.optimized_model_filepath``) are compared node by node: op type, domain and
attributes (schema defaults filled in), ignoring transA/transB (graphdnn keeps kernels [in, out],
torch [out, in]).

Also reported: torch eager (the handwritten module under ``torch.inference_mode``) vs ORT on
graphdnn's export, timed in a separate interleaved pass (torch's idle threads would otherwise slow
whichever session runs after it), to show what serving with ORT gains.

    python benchmarks/onnx_inference.py [--json PATH] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnx  # noqa: E402
import onnx.defs  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as tnn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _util import bootstrap_median_ci, ci_verdict, interleaved_times  # noqa: E402

import graphdnn as gd  # noqa: E402
from graphdnn import layers, nn  # noqa: E402

BATCHES = (1, 64, 1024)
KINDS = ("relu", "bn_elu")
SESSIONS = ("ours", "ours_copy", "torch")
# creation order of the three sessions, one per point in turn: each file is created first equally often
CREATION_ORDERS = list(itertools.permutations(SESSIONS))
IGNORED_ATTRIBUTES = ("transA", "transB")
BOOTSTRAP = {"resamples": 2000, "level": 0.95, "seed": 0}


def build(kind: str) -> tuple[gd.Graph, Any, tnn.Module]:
    """The graphdnn graph, its logits and the equivalent handwritten torch module (eval mode)."""
    torch.manual_seed(0)
    g = gd.Graph(f"book_{kind}")
    X = g.placeholder("X", (None, 784))
    bn = partial(layers.batch_normalization, momentum=0.9)
    with g.name_scope("dnn"):
        if kind == "relu":
            h = layers.dense(X, 300, activation=nn.relu, name="hidden1")
            h = layers.dense(h, 100, activation=nn.relu, name="hidden2")
        else:
            h = nn.elu(bn(layers.dense(X, 300, name="hidden1"), name="bn1"))
            h = nn.elu(bn(layers.dense(h, 100, name="hidden2"), name="bn2"))
        logits = layers.dense(h, 10, name="outputs")
    for v in g.variables():
        if "moving" in v.name:
            g.set_value(v.name, torch.rand(v.attrs["shape"]) + 0.5)
    return g, logits, Handwritten(g, kind).eval()


class Handwritten(tnn.Module):
    """The same MLP written with torch.nn, holding copies of the graph's weights."""

    def __init__(self, g: gd.Graph, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.fc = tnn.ModuleList(tnn.Linear(i, o) for i, o in ((784, 300), (300, 100), (100, 10)))
        self.bn = tnn.ModuleList(tnn.BatchNorm1d(c, eps=1e-3) for c in (300, 100))
        with torch.no_grad():
            for fc, scope in zip(self.fc, ("hidden1", "hidden2", "outputs")):
                fc.weight.copy_(g.values[f"{scope}/kernel"].T)
                fc.bias.copy_(g.values[f"{scope}/bias"])
            if kind != "relu":
                for b, scope in zip(self.bn, ("bn1", "bn2")):
                    b.weight.copy_(g.values[f"{scope}/gamma"])
                    b.bias.copy_(g.values[f"{scope}/beta"])
                    b.running_mean.copy_(g.values[f"{scope}/moving_mean"])
                    b.running_var.copy_(g.values[f"{scope}/moving_variance"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(2):
            x = self.fc[i](x)
            x = F.relu(x) if self.kind == "relu" else F.elu(self.bn[i](x))
        return self.fc[2](x)


def export_pair(kind: str, workdir: str | Path) -> tuple[Path, Path, tnn.Module]:
    """Export ``kind`` with graphdnn and with ``torch.onnx.export``; return both paths and the torch module."""
    g, logits, ref = build(kind)
    ours = Path(workdir) / f"{kind}_graphdnn.onnx"
    base = Path(workdir) / f"{kind}_torch.onnx"
    gd.export_onnx(g, str(ours), outputs=[logits])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ref, (torch.zeros(1, 784),), str(base), input_names=["X"], output_names=["logits"],
                          dynamic_axes={"X": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return ours, base, ref


def _session(path: str | Path, threads: int, optimized_path: str | Path | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # no spin-waiting: idle ORT threads would otherwise steal the CPU from the run timed next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
        opts.log_severity_level = 3  # the "hardware specific optimizations" warning is expected here
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@functools.cache
def _ort_contrib_defaults() -> dict[tuple[str, str], dict[str, Any]]:
    """Attribute defaults of ORT's non-ONNX-domain ops (e.g. com.microsoft FusedGemm), latest version."""
    out: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    try:
        schemas = ort.capi.onnxruntime_pybind11_state.get_all_operator_schema()
    except AttributeError:  # minimal builds: no schemas, compare the explicit attributes only
        return {}
    for schema in schemas:
        if schema.domain in ("", "ai.onnx"):
            continue
        defaults = {}
        for name, attr in schema.attributes.items():
            raw = getattr(attr, "_default_value", b"")
            if raw:
                proto = onnx.AttributeProto.FromString(raw)
                if proto.type != onnx.AttributeProto.UNDEFINED:
                    defaults[name] = _jsonable(onnx.helper.get_attribute_value(proto))
        key = (schema.name, schema.domain)
        if key not in out or out[key][0] < schema.since_version:
            out[key] = (schema.since_version, defaults)
    return {k: v for k, (_, v) in out.items()}


def _schema_defaults(op_type: str, domain: str, opset: int) -> dict[str, Any]:
    """Attribute defaults from the op's schema (ONNX's, or ORT's for its own domains)."""
    if domain in ("", "ai.onnx"):
        try:
            schema = onnx.defs.get_schema(op_type, opset, "")
        except onnx.defs.SchemaError:
            return {}
        return {name: _jsonable(onnx.helper.get_attribute_value(a.default_value))
                for name, a in schema.attributes.items() if a.default_value.type != onnx.AttributeProto.UNDEFINED}
    return dict(_ort_contrib_defaults().get((op_type, domain), {}))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value).tolist()
    if isinstance(value, (int, float, str)):
        return value
    return repr(value)


def optimized_ops(path: str | Path, optimized_path: str | Path, threads: int = 1) -> list[dict[str, Any]]:
    """The nodes of the graph ORT runs for ``path`` (default optimization level), in order: op type, domain and
    attributes with the schema defaults filled in, so explicit and implicit defaults compare equal."""
    _session(path, threads, optimized_path)
    model = onnx.load(str(optimized_path))
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    ops = []
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        attrs = _schema_defaults(node.op_type, domain, opsets.get(domain, 1))
        attrs.update({a.name: _jsonable(onnx.helper.get_attribute_value(a)) for a in node.attribute})
        ops.append({"op_type": node.op_type, "domain": domain, "attrs": dict(sorted(attrs.items()))})
    return ops


def structural_check(ours: str | Path, base: str | Path, workdir: str | Path, threads: int = 1) -> dict[str, Any]:
    """Compare the optimized ORT graphs of graphdnn's and torch's exports, ignoring ``IGNORED_ATTRIBUTES``."""
    ops_ours = optimized_ops(ours, Path(workdir) / f"{Path(ours).stem}.optimized.onnx", threads)
    ops_base = optimized_ops(base, Path(workdir) / f"{Path(base).stem}.optimized.onnx", threads)

    def key(ops: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
        return [(op["op_type"], op["domain"], {k: v for k, v in op["attrs"].items() if k not in IGNORED_ATTRIBUTES})
                for op in ops]

    identical = key(ops_ours) == key(ops_base)
    return {"optimized_graphs_identical": identical, "ignored_attributes": list(IGNORED_ATTRIBUTES),
            "graphdnn": ops_ours, "torch_export": ops_base}


def _median_ci(ratios: list[float]) -> tuple[float, float, float]:
    lo, hi = bootstrap_median_ci(ratios, n_resamples=BOOTSTRAP["resamples"], level=BOOTSTRAP["level"],
                                 seed=BOOTSTRAP["seed"])
    return statistics.median(ratios), lo, hi


def run(repeats: int = 30, threads: int | None = None) -> dict[str, Any]:
    """Time every (model, batch) point and run the structural check; return the JSON-ready results."""
    threads = torch.get_num_threads() if threads is None else threads
    results: dict[str, Any] = {"torch": torch.__version__, "onnxruntime": ort.__version__, "threads": threads,
                               "repeats": repeats, "bootstrap": dict(BOOTSTRAP), "structure": {}, "points": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            ours, base, ref = export_pair(kind, tmp)
            copy = Path(tmp) / f"{kind}_graphdnn_copy.onnx"
            shutil.copyfile(ours, copy)
            assert copy.read_bytes() == ours.read_bytes()
            paths = {"ours": ours, "ours_copy": copy, "torch": base}
            structure = structural_check(ours, base, tmp, threads)
            results["structure"][kind] = structure
            print(f"{kind:7s} optimized ORT graphs identical (ignoring {'/'.join(IGNORED_ATTRIBUTES)}): "
                  f"{structure['optimized_graphs_identical']} "
                  f"[{', '.join(op['op_type'] for op in structure['graphdnn'])}]")
            for batch in BATCHES:
                index = len(results["points"])
                order = CREATION_ORDERS[index % len(CREATION_ORDERS)]
                sessions = {name: _session(paths[name], threads) for name in order}
                x = np.random.default_rng(batch).standard_normal((batch, 784)).astype(np.float32)
                xt = torch.from_numpy(x)
                with torch.inference_mode():
                    e = ref(xt).numpy()
                for s in sessions.values():
                    np.testing.assert_allclose(s.run(None, {"X": x})[0], e, atol=1e-4, rtol=1e-4)

                def eager(xt=xt, ref=ref):
                    with torch.inference_mode():
                        return ref(xt)

                inner = max(1, 2000 // (batch * 4 + 50))
                fns = {name: partial(sessions[name].run, None, {"X": x}) for name in SESSIONS}
                # the three ONNX sessions alone: torch's idle threads must not sit between them
                t = interleaved_times(fns, repeats, inner, seed=index)
                ratios = [a / b for a, b in zip(t["ours"], t["torch"])]
                aa = [a / b for a, b in zip(t["ours"], t["ours_copy"])]
                ratio, lo, hi = _median_ci(ratios)
                aa_ratio, aa_lo, aa_hi = _median_ci(aa)
                t_eager = {k: statistics.median(v) for k, v in interleaved_times(
                    {"ort_graphdnn": fns["ours"], "torch_eager": eager}, repeats, inner, seed=index).items()}
                point = {"model": kind, "batch": batch, "inner": inner, "session_creation_order": list(order),
                         "ort_graphdnn": round(statistics.median(t["ours"]) * 1e6, 2),
                         "ort_graphdnn_copy": round(statistics.median(t["ours_copy"]) * 1e6, 2),
                         "ort_torch_export": round(statistics.median(t["torch"]) * 1e6, 2),
                         "torch_eager": round(t_eager["torch_eager"] * 1e6, 2),
                         "ratio_graphdnn_vs_torch_export": round(ratio, 3),
                         "ratio_ci95": [round(lo, 3), round(hi, 3)], "verdict": ci_verdict(lo, hi),
                         "aa_ratio_graphdnn_vs_copy": round(aa_ratio, 3),
                         "aa_ci95": [round(aa_lo, 3), round(aa_hi, 3)], "aa_verdict": ci_verdict(aa_lo, aa_hi),
                         "speedup_ort_vs_eager": round(t_eager["torch_eager"] / t_eager["ort_graphdnn"], 2),
                         "round_ratios": [round(r, 4) for r in ratios], "round_aa_ratios": [round(r, 4) for r in aa]}
                results["points"].append(point)
                print(f"{kind:7s} batch {batch:5d}: ORT graphdnn {point['ort_graphdnn']:9.1f} us | copy "
                      f"{point['ort_graphdnn_copy']:9.1f} us | torch.onnx {point['ort_torch_export']:9.1f} us | "
                      f"ratio {ratio:.3f} [{lo:.3f}, {hi:.3f}] {point['verdict']} | "
                      f"A/A {aa_ratio:.3f} [{aa_lo:.3f}, {aa_hi:.3f}] | "
                      f"eager {point['torch_eager']:9.1f} us (ORT {point['speedup_ort_vs_eager']:.2f}x)")
                del sessions, fns
    points = results["points"]
    results["max_ratio"] = max(p["ratio_graphdnn_vs_torch_export"] for p in points)
    results["max_ci_upper"] = max(p["ratio_ci95"][1] for p in points)
    results["n_slower"] = sum(p["verdict"] == "slower" for p in points)
    results["n_faster"] = sum(p["verdict"] == "faster" for p in points)
    results["aa_max_abs_deviation"] = round(max(abs(p["aa_ratio_graphdnn_vs_copy"] - 1) for p in points), 3)
    results["aa_n_not_equal"] = sum(p["aa_verdict"] != "equal within noise" for p in points)
    results["optimized_graphs_identical"] = all(s["optimized_graphs_identical"] for s in results["structure"].values())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds per point")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="intra-op threads for ORT and torch eager (default: torch.get_num_threads())")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args.repeats, args.threads)
    print(f"summary (graphdnn export / torch.onnx.export, ORT latency; target <= 1.0): worst ratio "
          f"{results['max_ratio']:.3f}, worst 95% CI upper bound {results['max_ci_upper']:.3f}, "
          f"{results['n_slower']}/{len(results['points'])} points slower, {results['n_faster']} faster; "
          f"A/A control: max |ratio - 1| {results['aa_max_abs_deviation']:.3f}, "
          f"{results['aa_n_not_equal']} A/A points not equal within noise; "
          f"optimized graphs identical: {results['optimized_graphs_identical']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
