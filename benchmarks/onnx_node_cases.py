"""Run ONNX's node conformance cases against graphdnn's op registry and report pass counts.

The cases, the registry evaluation and the comparison are ``graphdnn.converters.onnx_node_cases``; this
script runs them all in forked workers and reports per op type.

    python benchmarks/onnx_node_cases.py [--filter REGEX] [--json PATH] [--jobs N] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphdnn.converters.onnx_node_cases import iter_node_cases, run_cases  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------
def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-op-type pass counts."""
    per_op: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        per_op[r["op_type"]][r["status"]] += 1
    passed = sum(1 for r in results if r["status"] == "pass")
    return {
        "passed": passed,
        "total": len(results),
        "per_op": {
            op: {"passed": c["pass"], "total": sum(c.values()), **{k: v for k, v in c.items() if k != "pass"}}
            for op, c in sorted(per_op.items())
        },
    }


def format_report(results: list[dict[str, Any]], verbose: bool = False) -> str:
    summary = summarize(results)
    lines = []
    for op, c in summary["per_op"].items():
        mark = "ok " if c["passed"] == c["total"] else "   "
        lines.append(f"{mark}{op:45s} {c['passed']:4d}/{c['total']:<4d}")
    if verbose:
        lines.append("")
        for r in results:
            if r["status"] != "pass":
                lines.append(f"{r['status']:7s} {r['name']}: {r['message']}")
    lines.append("")
    pct = 100.0 * summary["passed"] / max(summary["total"], 1)
    lines.append(f"passed {summary['passed']}/{summary['total']} node cases ({pct:.1f}%)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", help="only cases whose name (or first op type) matches this regex")
    parser.add_argument("--json", help="write every case's result and the summary to this file")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every failing case")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cases = list(iter_node_cases(args.filter))
    results = run_cases(cases, jobs=args.jobs, timeout=args.timeout)
    print(format_report(results, verbose=args.verbose))
    print(f"({time.perf_counter() - start:.1f} s)")
    if args.json:
        payload = {"summary": summarize(results), "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
