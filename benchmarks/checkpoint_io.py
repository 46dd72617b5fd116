"""Checkpoint I/O against raw safetensors, measured in the same run on the same files.

    python benchmarks/checkpoint_io.py                                  # short run: 128 MB
    python benchmarks/checkpoint_io.py --size-mb 512 --json out.json   # 512 MB of 4096x4096 kernels

Save is measured for two models on disk (``--dir``, else a temporary folder) and on tmpfs
(``/dev/shm``, where the disk's noise is out of the picture): ``rows``, 50 contiguous float32
variables, and ``dense``, a chain of 4096x4096 dense layers (``[in, out]`` kernels, held row-major as the
file holds them, so they are written without a copy). ``save_file`` is given the same tensors;
``save_<where>_rows_vs_atomic`` also reports the ratio against ``save_file`` into a temporary file renamed
over the target (the price of an atomic save: the old file's pages are freed at the rename, and both
files exist until then).

Ratios (medians of interleaved pairs): graphdnn save / ``save_file``; full ``graphdnn.load`` /
``load_file``; restore of ~10% of the variables selected by regex into a graph the program already
holds / ``safe_open`` of the same keys. Safetensors maps files lazily, so each read is also timed
"touched" (every byte read once), which is what a program that uses the values pays.
Peak RSS of that restore is measured in a fresh subprocess against its interpreter baseline.
Targets: save <= 1.05 on tmpfs and <= 1.1 on disk; load <= 1.1, restore <= 1.2 (on disk, ``rows``), and RSS
<= 1.5x the selected bytes.

Why the kernels are row-major: ``dense_layout`` times a dense layer with its kernel held row-major over
the same kernel held column-major (``nn.Linear``'s order, which would need one reordering copy at every save
and load), for a few kernel shapes and batches: inference and a training step, with geometric means. Neither
order wins everywhere (MKL picks different kernels); below 1 the row-major kernel computes faster.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import paired_median, paired_ratios, parser, pin_threads, write_json  # noqa: E402

N_VARS = 50
DENSE = 4096
TMPFS = Path("/dev/shm")


def build(size_mb: int):
    import torch

    import graphdnn as gd

    g = gd.Graph("bench")
    rows = max(1, size_mb * 2**20 // 4 // N_VARS // 1024)
    for i in range(N_VARS):
        g.variable(f"layer{i:02d}/kernel", value=torch.rand(rows, 1024))
    return g, rows * 1024 * 4


def build_dense(size_mb: int):
    """A chain of DENSE x DENSE dense layers (64 MiB kernels) of about ``size_mb``."""
    import graphdnn as gd
    from graphdnn import layers

    g = gd.Graph("dense")
    h = g.placeholder("X", (None, DENSE))
    for i in range(max(1, round(size_mb * 2**20 / (DENSE * DENSE * 4)))):
        h = layers.dense(h, DENSE, name=f"dense{i}")
    return g


LAYOUT_SHAPES = ((1024, 1024), (768, 3072), (4096, 4096))  # [in, out] kernels of the layout catalogue


def layout_costs(batches: list[int], repeats: int) -> dict:
    """Time of a dense layer (``x @ W + b``) with ``W`` held row-major (graphdnn's order, the file's) over ``W``
    held column-major (``nn.Linear``'s), per kernel shape and batch: inference, and a training step's
    forward + backward (medians of interleaved pairs), with their geometric means."""
    import math

    import torch
    import torch.nn.functional as F

    points, logs = [], {"forward": [], "forward_backward": []}
    for n_in, n_out in LAYOUT_SHAPES:
        rows = torch.randn(n_in, n_out)
        cols = rows.t().contiguous().t()
        bias = torch.zeros(n_out)
        for batch in batches:
            x = torch.randn(batch, n_in, requires_grad=True)

            def forward(w, x=x, bias=bias):
                with torch.no_grad():
                    return F.linear(x, w.t(), bias)

            def train(w, x=x, bias=bias):
                F.linear(x, w.t(), bias).relu().sum().backward()
                w.grad = x.grad = None

            point = {"in": n_in, "out": n_out, "batch": batch}
            for key, fn in (("forward", forward), ("forward_backward", train)):
                r, c = rows.clone().requires_grad_(key != "forward"), cols.clone().requires_grad_(key != "forward")
                ratio, _, _ = paired_median(lambda fn=fn, r=r: fn(r), lambda fn=fn, c=c: fn(c), repeats, warmup=1)
                point[key] = ratio
                logs[key].append(math.log(ratio))
            points.append(point)
    return {"points": points, **{f"{k}_geomean": math.exp(sum(v) / len(v)) for k, v in logs.items()}}


def save_pairs(g, folder: Path, repeats: int, dense: bool) -> dict:
    """graphdnn.save / save_file of the same tensors, interleaved."""
    from safetensors.torch import save_file

    import graphdnn as gd

    ours, raw = folder / "bench-ours.safetensors", folder / "bench-raw.safetensors"
    rowmajor = {k: v.detach().contiguous() for k, v in g.values.items()}  # already contiguous: no copy
    try:
        out = {"save": paired_ratios(lambda: gd.save(g, ours), lambda: save_file(rowmajor, raw), repeats)}
        if not dense:
            def atomic_save_file():
                save_file(rowmajor, folder / "bench-raw.tmp")
                os.replace(folder / "bench-raw.tmp", raw)

            out["vs_atomic"] = paired_ratios(lambda: gd.save(g, ours), atomic_save_file, repeats)
        return out
    finally:
        for f in (ours, raw):
            f.unlink(missing_ok=True)


def selection() -> str:
    return "layer(0[0-4])/"            # 5 of 50 variables: 10%


def _hwm_reset() -> int:
    """Reset the peak-RSS mark to the current RSS (Linux), return it in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(mode: str, ours: str, raw: str) -> None:
    """Restore (or raw-read) the selection and touch every byte of it; print peak RSS growth above the
    interpreter baseline (imports done)."""
    import re

    import torch
    from safetensors import safe_open

    import graphdnn as gd
    import graphdnn.checkpoint
    import graphdnn.formats
    import graphdnn.restoring  # noqa: F401  (the package imports on first use: import what the restore runs now)

    graphdnn.formats.formats()  # the format registry, read once per process
    base = _hwm_reset()
    if mode == "graphdnn":
        g = gd.load(ours, values=False)
        gd.restore(g, ours, include=selection())
        values = list(g.values.values())
    else:
        with safe_open(raw, "pt") as f:
            values = [f.get_tensor(k) for k in f.keys() if re.match(selection(), k)]
    with torch.no_grad():
        checksum = sum(float(v.sum()) for v in values)
    held = sum(v.numel() * v.element_size() for v in values)
    peak = _status("VmHWM")
    print(json.dumps({"rss_growth": peak - base, "selected_bytes": held, "checksum": checksum}))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=int, default=128, help="total float32 variable size of each model")
    p.add_argument("--dir", type=Path, default=None, help="folder for the files on disk (default: a temp folder)")
    p.add_argument("--where", nargs="+", choices=["disk", "tmpfs"], default=["disk", "tmpfs"],
                   help="where to measure save")
    p.add_argument("--layout-batches", type=int, nargs="*", default=[16, 128, 256],
                   help="batches of the kernel-layout timing (none: skip it)")
    p.add_argument("--child", nargs=3, help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    pin_threads(args.threads)
    import re

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    import graphdnn as gd

    folder = Path(args.dir or tempfile.mkdtemp(prefix="graphdnn-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    ours, raw = folder / "ours.safetensors", folder / "raw.safetensors"
    g, per_var = build(args.size_mb)
    tensors = {k: v.detach() for k, v in g.values.items()}
    total = per_var * N_VARS
    results: dict = {"size_bytes": total, "variables": N_VARS, "threads": args.threads}
    dense = build_dense(args.size_mb)
    results["dense_size_bytes"] = sum(v.numel() * v.element_size() for v in dense.values.values())
    places = {"disk": folder, "tmpfs": TMPFS}
    for where in args.where:
        if where == "tmpfs" and not TMPFS.is_dir():
            print("  (no /dev/shm here: tmpfs skipped)")
            continue
        for model, graph in (("rows", g), ("dense", dense)):
            pairs = save_pairs(graph, places[where], args.repeats, dense=model == "dense")
            for key, r in pairs.items():
                results[f"save_{where}_{model}" + ("" if key == "save" else f"_{key}")] = r
    del dense
    if args.layout_batches:
        results["dense_layout"] = layout_costs(args.layout_batches, args.repeats)
    results["save"] = results.get("save_disk_rows") or paired_ratios(lambda: gd.save(g, ours),
                                                                     lambda: save_file(tensors, raw), args.repeats)
    results["save_fsync"] = paired_ratios(lambda: gd.save(g, ours, fsync=True), lambda: save_file(tensors, raw),
                                          args.repeats)
    keys = [k for k in g.values if re.match(selection(), k)]

    def touch(values):  # safetensors maps files lazily: "touched" variants read every byte once
        with torch.no_grad():
            return sum(float(v.sum()) for v in values)

    state: dict = {}

    def fresh_target():  # untimed: the program already holds its graph (TF's import_meta_graph step)
        state["target"] = gd.load(ours, values=False)

    def restore():
        gd.restore(state["target"], ours, include=selection())
        return state["target"].values.values()

    def raw_read():
        with safe_open(raw, "pt") as f:
            return [f.get_tensor(k) for k in keys]

    results["load"] = paired_ratios(lambda: gd.load(ours), lambda: load_file(raw), args.repeats)
    results["load_touched"] = paired_ratios(lambda: touch(gd.load(ours).values.values()),
                                            lambda: touch(load_file(raw).values()), args.repeats)
    results["restore_10pct"] = paired_ratios(restore, raw_read, args.repeats, setup=fresh_target)
    results["restore_10pct_touched"] = paired_ratios(lambda: touch(restore()), lambda: touch(raw_read()),
                                                     args.repeats, setup=fresh_target)
    results["graph_only_load"] = paired_ratios(lambda: gd.load(ours, values=False), lambda: None, 1)

    for mode in ("graphdnn", "raw"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, str(ours), str(raw)],
                             capture_output=True, text=True, check=True).stdout
        rss = json.loads(out.strip().splitlines()[-1])
        rss["ratio_to_selected"] = rss["rss_growth"] / rss["selected_bytes"]
        results[f"restore_rss_{mode}"] = rss
    print(f"{total / 2**20:.0f} MiB in {N_VARS} float32 variables (rows), "
          f"{results['dense_size_bytes'] / 2**20:.0f} MiB of {DENSE}x{DENSE} kernels (dense), {args.threads} "
          f"thread(s), median of {args.repeats} interleaved pairs")
    for key in [k for k in results if k.startswith("save_") and k != "save_fsync"]:
        r = results[key]
        target = "" if "_vs_" in key else f" (target <= {1.05 if 'tmpfs' in key else 1.1})"
        print(f"  {key:32s} graphdnn {r['ours_s']:.3f}s / raw {r['baseline_s']:.3f}s = {r['ratio']:.3f}{target}")
    layout = results.get("dense_layout")
    if layout:
        print("  dense_layout: x @ W + b, W row-major / W column-major, inference | training step")
        for q in layout["points"]:
            print(f"    [{q['in']}, {q['out']}] batch {q['batch']:4d}: {q['forward']:.3f} | "
                  f"{q['forward_backward']:.3f}")
        print(f"    geometric mean: {layout['forward_geomean']:.3f} | {layout['forward_backward_geomean']:.3f}")
    print(f"  graph alone (load values=False): {results['graph_only_load']['ours_s'] * 1e3:.2f} ms")
    for key, target in (("save_fsync", 1.1), ("load", 1.1), ("load_touched", 1.1),
                        ("restore_10pct", 1.2), ("restore_10pct_touched", 1.2)):
        r = results[key]
        print(f"  {key:22s} graphdnn {r['ours_s']:.3f}s / raw {r['baseline_s']:.3f}s = {r['ratio']:.3f} "
              f"(target <= {target})")
    for mode in ("graphdnn", "raw"):
        r = results[f"restore_rss_{mode}"]
        print(f"  restore RSS ({mode}): +{r['rss_growth'] / 2**20:.0f} MiB for {r['selected_bytes'] / 2**20:.0f} MiB "
              f"selected = {r['ratio_to_selected']:.2f}x (target <= 1.5)")
    write_json(args.json, results)
    if args.dir is None:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
