"""Build and compile time of graphs of 100, 1,000 and 10,000 dense layers (width 8).

    python benchmarks/graph_scaling.py [--json PATH] [--sizes 100 1000 10000]

Time per node should stay roughly flat; 10,000 layers (50,000 ops with their variables) must build
and compile in under 10 s on the reference 2-core machine. CPU time is printed beside wall time:
on a busy machine it is the steadier figure.
"""

from __future__ import annotations

import argparse
import time

import torch
from _util import dense_chain, write_json

import graphdnn as gd


def measure(depth: int) -> dict[str, float]:
    cpu_start = time.process_time()
    start = time.perf_counter()
    g, out = dense_chain(depth)
    built = time.perf_counter()
    model = gd.compile(g, outputs=[out])
    compiled = time.perf_counter()
    cpu = time.process_time() - cpu_start
    with torch.no_grad():
        model(torch.randn(2, 8))
    ran = time.perf_counter()
    nodes = g.nx.number_of_nodes()
    return {
        "layers": depth,
        "nodes": nodes,
        "build_s": built - start,
        "compile_s": compiled - built,
        "total_s": compiled - start,
        "total_cpu_s": cpu,
        "first_run_s": ran - compiled,
        "us_per_node": (compiled - start) / nodes * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    measure(10)  # warm up imports and the registry
    rows = [measure(n) for n in args.sizes]
    base = rows[0]["us_per_node"]
    for r in rows:
        r["per_node_vs_smallest"] = r["us_per_node"] / base
        print(f"{r['layers']:6d} layers {r['nodes']:6d} nodes: build {r['build_s']:6.2f} s, compile "
              f"{r['compile_s']:6.2f} s, total {r['total_s']:6.2f} s (cpu {r['total_cpu_s']:6.2f} s), "
              f"{r['us_per_node']:7.1f} us/node "
              f"({r['per_node_vs_smallest']:.2f}x the smallest)")
    largest = rows[-1]
    if largest["layers"] >= 10000:
        print(f"10,000 layers in {largest['total_s']:.2f} s (target < 10 s): "
              f"{'ok' if largest['total_s'] < 10 else 'ABOVE TARGET'}")
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
