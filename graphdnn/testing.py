"""Tools for checking and measuring graphdnn, shared by its test suite and its benchmarks.

* ``run_isolated``: run cases in forked workers with a per-case time limit (SIGALRM); a worker that
  crashes is replaced and its case reported as ``crash``, so one bad case never stops a run (the ONNX
  conformance runners in ``graphdnn.converters.onnx_conformance`` and ``onnx_node_cases`` use it).
* ``interleaved_times``, ``bootstrap_median_ci``, ``ci_verdict``: timing comparisons on shared, noisy
  machines: rounds in a balanced changing order, a bootstrap confidence interval of the median ratio and
  its verdict.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import signal
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphdnn.errors import InputError

__all__ = ["bootstrap_median_ci", "ci_verdict", "describe_exception", "interleaved_times", "run_isolated"]

#: ``run_one(i) -> (status, message)`` for case ``i``.
RunOne = Callable[[int], tuple[str, str]]


class _CaseTimeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise _CaseTimeout()


def _worker(run_one: RunOne, indices: list[int], timeout: float, out: Any, setup: Callable[[], None] | None) -> None:
    if setup is not None:
        setup()
    signal.signal(signal.SIGALRM, _alarm)
    for idx in indices:
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            status, msg = run_one(idx)
        except _CaseTimeout:
            status, msg = "timeout", f"took more than {timeout:g} s"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.put((idx, status, msg, time.perf_counter() - start))


def describe_exception(exc: BaseException) -> str:
    """``Type: first line of the message at file:line`` (where it was raised) for a case report."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg[:300]}{where}"


def run_isolated(count: int, run_one: RunOne, *, jobs: int = 1, timeout: float = 60.0,
                 order: Sequence[int] | None = None,
                 setup: Callable[[], None] | None = None) -> list[tuple[str, str, float]]:
    """``(status, message, seconds)`` of ``run_one(i)`` for ``i`` in ``range(count)``, in order.
    ``order`` is the order cases are handed out (round robin over ``jobs`` workers); ``setup`` runs
    once in each worker."""
    results: dict[int, tuple[str, str, float]] = {}
    ctx = mp.get_context("fork")
    # A SimpleQueue writes each result to the pipe before ``put`` returns, so a worker that dies on
    # the next case has not lost the results it reported (a Queue's feeder thread would have).
    out = ctx.SimpleQueue()
    jobs = max(1, min(jobs, count)) if count else 1
    handed = list(order) if order is not None else list(range(count))

    def start(chunk: list[int]) -> Any:
        p = ctx.Process(target=_worker, args=(run_one, chunk, timeout, out, setup), daemon=True)
        p.start()
        return p

    workers = [(start(chunk), chunk) for chunk in (handed[w::jobs] for w in range(jobs)) if chunk]

    def drain(block: bool) -> None:
        deadline = time.monotonic() + (1.0 if block else 0.0)
        while True:
            if not out.empty():
                idx, status, msg, secs = out.get()
                results[idx] = (status, msg, secs)
                deadline = 0.0
            elif time.monotonic() >= deadline:
                return
            else:
                time.sleep(0.005)

    while len(results) < count:
        drain(block=True)
        alive = []
        for p, chunk in workers:
            if p.is_alive():
                alive.append((p, chunk))
                continue
            drain(block=False)
            left = [i for i in chunk if i not in results]
            if not left:
                continue
            results[left[0]] = ("crash", f"worker died (exit code {p.exitcode})", 0.0)
            if left[1:]:
                alive.append((start(left[1:]), left[1:]))
        workers = alive
        if not workers and len(results) < count:
            drain(block=False)
            for i in range(count):
                results.setdefault(i, ("crash", "no worker left", 0.0))
    for p, _ in workers:
        p.join(timeout=1.0)
    return [results[i] for i in range(count)]


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
        raise InputError(f"bootstrap_median_ci needs a non-empty 1-d sequence of values, got shape {arr.shape}")
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
