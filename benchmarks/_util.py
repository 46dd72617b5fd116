"""Shared benchmark helpers: thread pinning, paired timings, medians, --json output; interleaved timings and
bootstrap CIs come from ``graphdnn.testing``."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graphdnn.testing import bootstrap_median_ci, ci_verdict, interleaved_times

#: ``--clock`` choices: elapsed time, or this process's CPU time (steadier on a busy shared machine).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def add_clock(p: argparse.ArgumentParser) -> None:
    """The ``--clock`` option (``wall`` default)."""
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (steadier on a busy shared machine)")


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


__all__ = ["bootstrap_median_ci", "ci_verdict", "dense_chain", "interleaved_times", "paired_median",
           "paired_ratios", "parser", "pin_threads", "timed", "write_json"]
