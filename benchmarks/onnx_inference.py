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
torch [out, in]). The models, the exports and the check are ``graphdnn.converters.ort_parity``.

Also reported: torch eager (the handwritten module under ``torch.inference_mode``) vs ORT on
graphdnn's export, timed in a separate interleaved pass (torch's idle threads would otherwise slow
whichever session runs after it), to show what serving with ORT gains.

    python benchmarks/onnx_inference.py [--json PATH] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from _util import bootstrap_median_ci, ci_verdict, interleaved_times  # noqa: E402
from graphdnn.converters.ort_parity import (  # noqa: E402
    IGNORED_ATTRIBUTES,
    KINDS,
    export_pair,
    ort_session,
    structural_check,
)

BATCHES = (1, 64, 1024)
SESSIONS = ("ours", "ours_copy", "torch")
# creation order of the three sessions, one per point in turn: each file is created first equally often
CREATION_ORDERS = list(itertools.permutations(SESSIONS))
BOOTSTRAP = {"resamples": 2000, "level": 0.95, "seed": 0}


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
                sessions = {name: ort_session(paths[name], threads) for name in order}
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
