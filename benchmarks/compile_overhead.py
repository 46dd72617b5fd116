"""Compiled graph vs handwritten eager PyTorch: train-step time for the book's MLP and inference
latency of a deep narrow net, as ratios of medians of interleaved, paired measurements.

    python benchmarks/compile_overhead.py [--json PATH] [--repeats N]

Targets: train-step ratio <= 1.03 for the MLPs (ReLU; BN+ELU) at batch 50 and 512; inference
ratio <= 1.0 for the 20-layer, width-64 net at batch 1 (straight-line code skips the per-module
call overhead a handwritten nn.Module pays). One thread, so the other core's noise matters less.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as tnn
import torch.nn.functional as F

import graphdnn as gd
from graphdnn import layers, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import paired_median, write_json  # noqa: E402


def book_mlp(bn: bool) -> tuple[gd.Graph, str]:
    g = gd.Graph()
    X = g.placeholder("X", (None, 784))
    h = X
    with g.name_scope("dnn"):
        for i, width in enumerate((300, 100), start=1):
            h = layers.dense(h, width, name=f"hidden{i}")
            h = nn.elu(layers.batch_normalization(h, momentum=0.9, name=f"bn{i}")) if bn else nn.relu(h)
        logits = layers.dense(h, 10, name="outputs")
    return g, logits.name


class HandMLP(tnn.Module):
    def __init__(self, bn: bool) -> None:
        super().__init__()
        self.bn = bn
        self.fc1, self.fc2, self.out = tnn.Linear(784, 300), tnn.Linear(300, 100), tnn.Linear(100, 10)
        self.bn1 = tnn.BatchNorm1d(300, eps=1e-3, momentum=0.1)
        self.bn2 = tnn.BatchNorm1d(100, eps=1e-3, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn:
            x = F.elu(self.bn1(self.fc1(x)))
            x = F.elu(self.bn2(self.fc2(x)))
        else:
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
        return self.out(x)


def deep_narrow(depth: int = 20, width: int = 64) -> tuple[gd.Graph, str]:
    g = gd.Graph()
    h = g.placeholder("X", (None, width))
    for i in range(depth):
        h = layers.dense(h, width, activation=nn.relu, name=f"layer{i}")
    return g, h.name


def hand_deep_narrow(depth: int = 20, width: int = 64) -> tnn.Module:
    mods: list[tnn.Module] = []
    for _ in range(depth):
        mods += [tnn.Linear(width, width), tnn.ReLU()]
    return tnn.Sequential(*mods)


def paired_ratio(a: Callable[[], None], b: Callable[[], None], iters: int, repeats: int) -> dict[str, float]:
    """Median over ``repeats`` of time(a)/time(b), each pair measured back to back, order alternating."""
    ratio, ta, tb = paired_median(a, b, repeats, iters, warmup=max(3, iters // 5))
    return {"ratio": ratio, "graphdnn_s": ta, "eager_s": tb}


def train_step(model: tnn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results: dict[str, dict[str, float]] = {}
    for bn in (False, True):
        for batch in (50, 512):
            g, out = book_mlp(bn)
            ours = gd.compile(g, outputs=[out]).train()
            hand = HandMLP(bn).train()
            x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
            a = train_step(ours, torch.optim.SGD(ours.parameters(), lr=1e-3), x, y)
            b = train_step(hand, torch.optim.SGD(hand.parameters(), lr=1e-3), x, y)
            iters = 40 if batch == 50 else 10
            key = f"train_mlp_{'bn_elu' if bn else 'relu'}_batch{batch}"
            results[key] = paired_ratio(a, b, iters, args.repeats)
    g, out = deep_narrow()
    ours, hand = gd.compile(g, outputs=[out]).eval(), hand_deep_narrow().eval()
    x1 = torch.randn(1, 64)

    def infer(m: tnn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                m(x1)

        return run

    results["infer_deep_narrow_20x64_batch1"] = paired_ratio(infer(ours), infer(hand), 300, args.repeats)
    targets = {k: (1.0 if k.startswith("infer") else 1.03) for k in results}
    for key, r in results.items():
        r["target"] = targets[key]
        flag = "ok" if r["ratio"] <= targets[key] else "ABOVE TARGET"
        print(f"{key:38s} ratio {r['ratio']:.3f} (graphdnn {r['graphdnn_s'] * 1e6:9.1f} us, "
              f"eager {r['eager_s'] * 1e6:9.1f} us)  target <= {targets[key]}  {flag}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
