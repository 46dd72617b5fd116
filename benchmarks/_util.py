"""Shared benchmark helpers: thread pinning, interleaved paired timings, medians, bootstrap CIs, --json output."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pin_threads(n: int = 1) -> None:
    """Use ``n`` intra-op threads so timings on small, shared machines are stable."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    torch.set_num_threads(n)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired_ratios(ours: Callable[[], Any], baseline: Callable[[], Any], repeats: int,
                  setup: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Run the two variants interleaved (alternating which goes first) ``repeats`` times; return the
    median of the per-pair ratios ours/baseline and the median times."""
    a, b = [], []
    for i in range(repeats):
        pair = [(ours, a), (baseline, b)]
        for fn, out in pair if i % 2 == 0 else reversed(pair):
            if setup is not None:
                setup()
            out.append(timed(fn))
    ratios = [x / y for x, y in zip(a, b)]
    return {"ratio": statistics.median(ratios), "ours_s": statistics.median(a), "baseline_s": statistics.median(b),
            "ratios": ratios}


def paired_median(a: Callable[[], Any], b: Callable[[], Any], repeats: int, inner: int = 1,
                  warmup: int = 3) -> tuple[float, float, float]:
    """(median of time(a)/time(b), median time of a, median time of b) per call: each round times
    ``inner`` calls of a and of b back to back, alternating which goes first."""
    for _ in range(warmup):
        a()
        b()
    ratios, ta, tb = [], [], []
    for r in range(repeats):
        times = {}
        for name, fn in ((("a", a), ("b", b)) if r % 2 == 0 else (("b", b), ("a", a))):
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name] = (time.perf_counter() - start) / inner
        ratios.append(times["a"] / times["b"])
        ta.append(times["a"])
        tb.append(times["b"])
    return statistics.median(ratios), statistics.median(ta), statistics.median(tb)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("--repeats", type=int, default=5, help="interleaved pairs per measurement")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return p


def dense_chain(depth: int, width: int = 8) -> tuple[Any, Any]:
    """(graph, output) of ``depth`` dense+relu layers of ``width`` units in scope ``net``: the graph
    the scaling benchmarks grow."""
    import graphdnn as gd
    from graphdnn import layers, nn

    g = gd.Graph()
    h = g.placeholder("X", (None, width))
    with g.name_scope("net"):
        for i in range(depth):
            h = layers.dense(h, width, activation=nn.relu, name=f"layer{i}")
    return g, h


def write_json(path: str | os.PathLike[str] | None, results: Any) -> None:
    if path is not None:
        Path(path).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def interleaved_times(fns: Mapping[str, Callable[[], Any]], repeats: int, inner: int = 1, warmup: int = 3,
                      seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each function, one value per round.

    Each round times ``inner`` calls of every function back to back. The order changes every round: each block
    of ``len(fns)!`` rounds runs through all orders, shuffled (plain shuffles beyond 4 functions), so running
    first, or right after a given function, is spread evenly over the functions.
    """
    names = list(fns)
    rng = np.random.default_rng(seed)
    all_orders = list(itertools.permutations(names)) if len(names) <= 4 else None
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in names}
    block: list[tuple[str, ...]] = []
    for _ in range(repeats):
        if all_orders is None:
            order = tuple(names[i] for i in rng.permutation(len(names)))
        else:
            if not block:
                block = [all_orders[i] for i in rng.permutation(len(all_orders))]
            order = block.pop()
        for name in order:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - start) / inner)
    return times


def bootstrap_median_ci(values: Sequence[float], n_resamples: int = 2000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of ``values`` (fixed seed, so reproducible)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("need a non-empty 1-d sequence of values")
    rng = np.random.default_rng(seed)
    medians = np.median(arr[rng.integers(0, arr.size, size=(n_resamples, arr.size))], axis=1)
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(medians, [tail, 1.0 - tail])
    return float(lo), float(hi)


def ci_verdict(lo: float, hi: float, ref: float = 1.0) -> str:
    """Verdict on a time ratio ours/baseline from its CI: 'faster', 'slower' or 'equal within noise'."""
    if hi < ref:
        return "faster"
    if lo > ref:
        return "slower"
    return "equal within noise"
