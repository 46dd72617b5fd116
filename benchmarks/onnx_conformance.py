"""ONNX conformance of graphdnn: import -> graphdnn.compile -> run in torch, on ONNX's own test data.

The suites, the cases and the isolated runner are ``graphdnn.converters.onnx_conformance``; this script runs
them and reports per suite (and per op type for the node suite), against the pass targets below.

    python benchmarks/onnx_conformance.py [--suite S ...] [--filter REGEX] [--json PATH] [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
from graphdnn.converters.onnx_conformance import SUITES, collect, run_cases  # noqa: E402

#: Pass targets, reported beside the figures.
TARGETS = {"light": 9, "pytorch-converted": 80, "pytorch-operator": 33, "simple": 20, "node": 1300}


# ------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------
def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per suite: passed/total, per op type (node suite) and the failing cases with reasons."""
    out: dict[str, Any] = {}
    by_suite: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_suite[r["suite"]].append(r)
    for suite, rs in by_suite.items():
        per_op: dict[str, Counter] = defaultdict(Counter)
        for r in rs:
            per_op[r["op_type"]][r["status"]] += 1
        out[suite] = {
            "passed": sum(r["status"] == "pass" for r in rs),
            "total": len(rs),
            "target": TARGETS.get(suite),
            "per_op": {op: {"passed": c["pass"], "total": sum(c.values())} for op, c in sorted(per_op.items())},
            "failures": {r["name"]: f"{r['status']}: {r['message']}" for r in rs if r["status"] != "pass"},
        }
    return out


def format_report(summary: dict[str, Any], verbose: bool = False) -> str:
    lines = []
    for suite, s in summary.items():
        if verbose or suite == "node":
            for op, c in s["per_op"].items():
                if suite != "node" or c["passed"] != c["total"] or verbose:
                    lines.append(f"  {suite:18s} {op:45s} {c['passed']:4d}/{c['total']:<4d}")
        if verbose:
            for name, why in s["failures"].items():
                lines.append(f"  {suite:18s} FAIL {name}: {why}")
    lines.append("")
    for suite, s in summary.items():
        target = f"(target {s['target']})" if s["target"] is not None else ""
        lines.append(f"{suite:18s} {s['passed']:5d}/{s['total']:<5d} {target}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=SUITES, help="suite(s) to run (default: all)")
    parser.add_argument("--filter", help="only cases whose name (or node op type) matches this regex")
    parser.add_argument("--json", help="write the summary and every case's result to this file")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--max-opset", type=int, default=None,
                        help="what-if: accept ONNX opsets up to N (overrides registry.MAX_ONNX_OPSET in the workers)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every failing case")
    parser.add_argument("--min-passed", type=int, default=None,
                        help="exit 1 when fewer cases than this pass in all (a regression gate for CI)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    cases = collect(args.suite or SUITES, args.filter)
    results = run_cases(cases, jobs=args.jobs, timeout=args.timeout, max_opset=args.max_opset)
    summary = summarize(results)
    print(format_report(summary, verbose=args.verbose))
    elapsed = time.perf_counter() - start
    print(f"({elapsed:.1f} s, {len(cases)} cases)")
    if args.json:
        from graphdnn.ops import registry

        payload = {"onnx_version": onnx.__version__, "max_onnx_opset": args.max_opset or registry.MAX_ONNX_OPSET,
                   "what_if_max_opset": args.max_opset is not None, "seconds": round(elapsed, 1),
                   "summary": summary, "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    passed = sum(s["passed"] for s in summary.values())
    if args.min_passed is not None and passed < args.min_passed:
        print(f"FAILED: {passed} cases passed, fewer than --min-passed {args.min_passed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
