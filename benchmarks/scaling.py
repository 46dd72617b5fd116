"""Scaling: per-stage time for graphs of 100, 1,000 and 10,000 dense layers, and restore time
against the bytes selected from a sharded checkpoint.

    python benchmarks/scaling.py [--json PATH] [--sizes 100 1000 10000] [--repeats 3]

Part 1 times build, compile, save (safetensors + graph JSON), load (``graphdnn.load``), ONNX export
and ONNX import for a chain of N dense+relu layers (width 8); time per graph node should stay flat.
Part 2 saves 16 variables of 4 MiB in 8 MiB shards and restores 1/16 .. all of them by name
(``include=``), beside plain safetensors reading the same tensors into the same targets (the ratio
is ours / plain). Medians over ``--repeats``; CPU time (``time.process_time``) is printed beside wall
time because shared 2-core machines are noisy.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _util import dense_chain, parser, pin_threads, write_json
from safetensors import safe_open

import graphdnn as gd

WIDTH = 8
RESTORE_VARS, RESTORE_NUMEL = 16, 2**20  # 16 x 4 MiB float32


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``repeats`` calls, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), result


def graph_stages(depth: int, repeats: int, folder: Path) -> dict[str, Any]:
    ckpt, onnx_path = folder / f"chain{depth}.safetensors", folder / f"chain{depth}.onnx"
    row: dict[str, Any] = {"layers": depth}
    stages: list[tuple[str, Callable[[], Any]]] = []
    state: dict[str, Any] = {}

    def do_build() -> None:
        state["graph"], state["out"] = dense_chain(depth, WIDTH)

    stages = [
        ("build", do_build),
        ("compile", lambda: gd.compile(state["graph"], outputs=[state["out"]])),
        ("save", lambda: gd.save(state["graph"], ckpt)),
        ("load", lambda: gd.load(ckpt)),
        ("export_onnx", lambda: gd.export_onnx(state["graph"], str(onnx_path), outputs=[state["out"]])),
        ("import_onnx", lambda: gd.load(onnx_path)),
    ]
    for name, fn in stages:
        wall, cpu, _ = _timed(fn, repeats)
        row[f"{name}_s"], row[f"{name}_cpu_s"] = wall, cpu
    nodes = state["graph"].nx.number_of_nodes()
    row["nodes"] = nodes
    for name, _ in stages:
        row[f"{name}_us_per_node"] = row[f"{name}_cpu_s"] / nodes * 1e6
    row["checkpoint_bytes"], row["onnx_bytes"] = ckpt.stat().st_size, onnx_path.stat().st_size
    return row


def restore_scaling(repeats: int, folder: Path) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    source = gd.Graph()
    for i in range(RESTORE_VARS):
        source.variable(f"v{i:02d}/kernel", value=torch.randn(RESTORE_NUMEL, generator=gen), scoped=False)
    index = gd.save(source, folder / "restore.safetensors", max_shard_size=2 * RESTORE_NUMEL * 4)
    shard_of = {}
    for shard in sorted(folder.glob("restore-*-of-*.safetensors")):
        with safe_open(shard, framework="pt") as f:
            shard_of.update(dict.fromkeys(f.keys(), shard))
    del source
    target = gd.Graph()
    for i in range(RESTORE_VARS):
        target.variable(f"v{i:02d}/kernel", value=torch.zeros(RESTORE_NUMEL), scoped=False)
    rows = []
    for count in (1, 2, 4, 8, 16):
        names = [f"v{i:02d}/kernel" for i in range(count)]

        def ours(names: list[str] = names) -> None:
            gd.restore(target, index, include=names, strict=False)

        def plain(names: list[str] = names) -> None:
            by_shard: dict[Path, list[str]] = {}
            for n in names:
                by_shard.setdefault(shard_of[n], []).append(n)
            with torch.no_grad():
                for shard, group in by_shard.items():
                    with safe_open(shard, framework="pt") as f:
                        for n in group:
                            target.values[n].copy_(f.get_tensor(n))

        ours(), plain()  # warm the page cache for both
        w_ours, c_ours, _ = _timed(ours, repeats)
        w_plain, c_plain, _ = _timed(plain, repeats)
        nbytes = count * RESTORE_NUMEL * 4
        rows.append({"variables": count, "bytes": nbytes, "restore_s": w_ours, "restore_cpu_s": c_ours,
                     "plain_s": w_plain, "plain_cpu_s": c_plain, "ratio_cpu": c_ours / max(c_plain, 1e-9),
                     "ms_per_mib": w_ours * 1e3 / (nbytes / 2**20)})
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(repeats=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    args = p.parse_args()
    pin_threads(args.threads)
    results: dict[str, Any] = {"graphs": [], "restore": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        graph_stages(10, 1, folder)  # warm up imports and the op registry
        stages = ("build", "compile", "save", "load", "export_onnx", "import_onnx")
        print("layers  nodes  " + "  ".join(f"{s:>18}" for s in stages) + "   (wall s / cpu us per node)")
        for depth in args.sizes:
            row = graph_stages(depth, args.repeats, folder)
            results["graphs"].append(row)
            cells = [f"{row[f'{s}_s']:7.3f}s {row[f'{s}_us_per_node']:7.1f}us" for s in stages]
            print(f"{depth:6d} {row['nodes']:6d}  " + "  ".join(f"{c:>18}" for c in cells), flush=True)
        base = results["graphs"][0]
        for row in results["graphs"]:
            row["per_node_vs_smallest"] = {s: row[f"{s}_us_per_node"] / base[f"{s}_us_per_node"] for s in stages}
        print("cpu time per node, relative to the smallest graph:")
        for row in results["graphs"]:
            rel = row["per_node_vs_smallest"]
            print(f"{row['layers']:6d} layers: " + ", ".join(f"{s} {rel[s]:.2f}x" for s in stages))
        print("restore from 8 MiB shards by name (include=), against plain safetensors into the same targets:")
        for r in restore_scaling(args.repeats, folder):
            results["restore"].append(r)
            print(f"  {r['variables']:2d} vars {r['bytes'] / 2**20:5.0f} MiB: {r['restore_s'] * 1e3:7.1f} ms "
                  f"(cpu {r['restore_cpu_s'] * 1e3:7.1f} ms, {r['ms_per_mib']:.2f} ms/MiB), plain "
                  f"{r['plain_s'] * 1e3:7.1f} ms (cpu {r['plain_cpu_s'] * 1e3:7.1f}), cpu ratio {r['ratio_cpu']:.2f}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
