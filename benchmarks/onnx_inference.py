"""ONNX Runtime latency of graphdnn's export vs ``torch.onnx.export`` of the same handwritten module.

Models: the book's 784-300-100-10 MLP with ReLU, and with batch norm + ELU (inference form), the
same weights on both sides. For each batch size (1, 64, 1024) the two ONNX sessions are timed
back to back in alternating order and the median of the paired ratios is reported, so machine noise
hits both alike; torch eager is timed in a separate interleaved pass (its idle threads would
otherwise slow whichever session runs after it). The baseline is the
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) with default constant folding.
Also reported: torch eager (the handwritten module under ``torch.inference_mode``) vs ORT on
graphdnn's export, to show what serving with ORT gains.

    python benchmarks/onnx_inference.py [--json PATH] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as tnn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _util import paired_median  # noqa: E402

import graphdnn as gd  # noqa: E402
from graphdnn import layers, nn  # noqa: E402

BATCHES = (1, 64, 1024)


def build(kind: str) -> tuple[gd.Graph, Any, tnn.Module]:
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


def _session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    # no spin-waiting: idle ORT threads would otherwise steal the CPU from the run timed next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def _interleaved(fns: dict[str, Any], repeats: int, inner: int) -> dict[str, float]:
    """Median seconds per call of each function, interleaved run by run in a rotating order."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    names = list(fns)
    for r in range(repeats):
        # rotate the order each round: whatever runs right after torch (whose idle threads may still
        # spin) or first in a round must not always be the same session
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - start) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def run(repeats: int = 30) -> dict[str, Any]:
    results: dict[str, Any] = {"torch": torch.__version__, "onnxruntime": ort.__version__,
                               "threads": torch.get_num_threads(), "points": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("relu", "bn_elu"):
            g, logits, ref = build(kind)
            ours = f"{tmp}/{kind}_graphdnn.onnx"
            base = f"{tmp}/{kind}_torch.onnx"
            gd.export_onnx(g, ours, outputs=[logits])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(ref, (torch.zeros(1, 784),), base, input_names=["X"], output_names=["logits"],
                                  dynamic_axes={"X": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
            s_ours, s_base = _session(ours), _session(base)
            for batch in BATCHES:
                x = np.random.default_rng(batch).standard_normal((batch, 784)).astype(np.float32)
                xt = torch.from_numpy(x)
                a = s_ours.run(None, {"X": x})[0]
                b = s_base.run(None, {"X": x})[0]
                with torch.inference_mode():
                    e = ref(xt).numpy()
                np.testing.assert_allclose(a, e, atol=1e-4, rtol=1e-4)
                np.testing.assert_allclose(b, e, atol=1e-4, rtol=1e-4)

                def eager(xt=xt, ref=ref):
                    with torch.inference_mode():
                        return ref(xt)

                inner = max(1, 2000 // (batch * 4 + 50))
                ours_run = partial(s_ours.run, None, {"X": x})
                base_run = partial(s_base.run, None, {"X": x})
                # the two ONNX sessions alone, back to back: torch's idle threads must not sit between them
                ratio, t_ours, t_base = paired_median(ours_run, base_run, repeats, inner)
                t_eager = _interleaved({"ort_graphdnn": ours_run, "torch_eager": eager}, repeats, inner)
                point = {"model": kind, "batch": batch, "ort_graphdnn": round(t_ours * 1e6, 2),
                         "ort_torch_export": round(t_base * 1e6, 2),
                         "torch_eager": round(t_eager["torch_eager"] * 1e6, 2),
                         "ratio_graphdnn_vs_torch_export": round(ratio, 3),
                         "speedup_ort_vs_eager": round(t_eager["torch_eager"] / t_eager["ort_graphdnn"], 2)}
                results["points"].append(point)
                print(f"{kind:7s} batch {batch:5d}: ORT graphdnn {point['ort_graphdnn']:9.1f} us | ORT torch.onnx "
                      f"{point['ort_torch_export']:9.1f} us | ratio {point['ratio_graphdnn_vs_torch_export']:.3f} | "
                      f"eager {point['torch_eager']:9.1f} us (ORT {point['speedup_ort_vs_eager']:.2f}x)")
    results["max_ratio"] = max(p["ratio_graphdnn_vs_torch_export"] for p in results["points"])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    results = run(args.repeats)
    print(f"worst ratio (graphdnn export / torch.onnx.export, ORT latency): {results['max_ratio']:.3f} (target <= 1.0)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
