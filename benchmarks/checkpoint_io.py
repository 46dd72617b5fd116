"""Checkpoint I/O against raw safetensors, measured in the same run on the same files.

    python benchmarks/checkpoint_io.py --size-mb 1024 --json out.json

Ratios (medians of interleaved pairs): graphdnn save / ``save_file``; full ``graphdnn.load`` /
``load_file``; restore of ~10% of the variables selected by regex into a graph the program already
holds / ``safe_open`` of the same keys. Safetensors maps files lazily, so each read is also timed
"touched" (every byte read once), which is what a program that uses the values pays.
Peak RSS of that restore is measured in a fresh subprocess against its interpreter baseline.
Targets: <= 1.1, <= 1.1, <= 1.2, and RSS <= 1.5x the selected bytes.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import paired_ratios, parser, pin_threads, write_json  # noqa: E402

N_VARS = 50


def build(size_mb: int):
    import torch

    import graphdnn as gd

    g = gd.Graph("bench")
    rows = max(1, size_mb * 2**20 // 4 // N_VARS // 1024)
    for i in range(N_VARS):
        g.variable(f"layer{i:02d}/kernel", value=torch.rand(rows, 1024))
    return g, rows * 1024 * 4


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
    p.add_argument("--size-mb", type=int, default=1024, help="total float32 variable size")
    p.add_argument("--dir", type=Path, default=None, help="folder for the files (default: a temp folder)")
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
    results["save"] = paired_ratios(lambda: gd.save(g, ours), lambda: save_file(tensors, raw), args.repeats)
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
    print(f"{total / 2**20:.0f} MiB in {N_VARS} float32 variables, {args.threads} thread(s), median of "
          f"{args.repeats} interleaved pairs")
    print(f"  graph alone (load values=False): {results['graph_only_load']['ours_s'] * 1e3:.2f} ms")
    for key, target in (("save", 1.1), ("save_fsync", 1.1), ("load", 1.1), ("load_touched", 1.1),
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
