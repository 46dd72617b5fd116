"""Per-batch cost of ``graphdnn.train.fit`` against a hand-written PyTorch loop doing the same work.

    python benchmarks/fit_overhead.py [--json PATH] [--samples N | --full] [--batches 32 50 200] [--clock cpu]

The model is the book's 784-300-50-50-50-50-10 ReLU DNN compiled from a graph (synthetic MNIST-shaped
data, one thread). Both loops train the *same* module from the same weights with the same optimizer
settings, loss, batch order (``torch.randperm`` from a generator seeded like ``fit(seed=...)``), the same
L2 penalty and max-norm constraint where used, and the same metrics (mean loss and accuracy, accumulated per
batch): what differs is only the loop around the module. Variants:

* ``plain``: Adam, no penalty or constraint;
* ``l2_maxnorm``: Adam, an L2 penalty and a max-norm(1.0) constraint on every kernel;
* ``cached``: hidden1-3 frozen and cached once (``graphdnn.cache_frozen``), SGD on the top; the speed-up of
  training on the cache over full-forward frozen training, for ``fit`` and for the hand-written loop.

Per batch size: the median over interleaved pairs of time(fit epoch) / time(hand-written epoch). Targets:
<= 1.05 at batch 50 and above; the cached speed-up of ``fit`` within 5% of the hand-written one. ``fit`` runs
with its defaults: history and progress bar on (the bar writes to a stream that passes for a terminal, so it
redraws with the running loss).
A cProfile summary of one ``fit`` epoch shows where the per-batch time goes. In the ``plain`` variant ``fit``
also runs with ``progress=False``: the bar's cost (target <= 1%). ``--clock cpu`` times this process's CPU
time instead of elapsed time, which is steadier on a busy shared machine.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import CLOCKS, add_clock, parser, pin_threads, write_json  # noqa: E402

L2_SCALE = 1e-4
VARIANTS = ("plain", "l2_maxnorm", "cached")
MAX_NORM = 1.0


def build(regularized: bool, frozen: bool) -> Any:
    import torch

    import graphdnn as gd
    from graphdnn import initializers as init
    from graphdnn import layers, nn
    from graphdnn import regularizers as reg

    torch.manual_seed(0)
    g = gd.Graph("book")
    X = g.placeholder("X", (None, 784))
    extra: dict[str, Any] = {}
    if regularized:
        extra = {"kernel_regularizer": reg.l2(L2_SCALE), "kernel_constraint": reg.max_norm(MAX_NORM, 1)}
    with g.name_scope("dnn"):
        h = X
        for i, units in enumerate((300, 50, 50, 50, 50), 1):
            h = layers.dense(h, units, activation=nn.relu, kernel_initializer=init.he_normal(), name=f"hidden{i}",
                             **extra)
        logits = layers.dense(h, 10, name="outputs", **extra)
    model = gd.compile(g, inputs=[X], outputs=[logits])
    if frozen:
        gd.freeze(model, "hidden[123]")
    return model


def hand_epoch(model: Any, x: Any, y: Any, batch: int, seed: int, optimizer: str,
               regularized: bool) -> tuple[float, float]:
    """One epoch written out in plain PyTorch: what ``fit`` does for these settings."""
    import torch
    import torch.nn.functional as F

    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=0.001, foreach=True)
    else:
        opt = torch.optim.SGD(params, lr=0.01, foreach=True)
    kernels = [p for name, p in model.named_parameters() if name.endswith("kernel") and p.requires_grad]
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.float64)
    model.train()
    for start in range(0, n, batch):
        idx = order[start:start + batch]
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        if regularized:
            loss = loss + sum(L2_SCALE * k.square().sum() / 2 for k in kernels)
        loss.backward()
        opt.step()
        if regularized:
            with torch.no_grad():
                for k in kernels:
                    norms = k.square().sum(dim=1, keepdim=True).sqrt()
                    k.mul_(torch.where(norms > MAX_NORM, MAX_NORM / norms, torch.ones_like(norms)))
        with torch.no_grad():
            loss_sum += loss.detach() * len(xb)
            correct += (out.argmax(dim=1) == yb).to(torch.float32).mean() * len(xb)
    return float(loss_sum) / n, float(correct) / n


class _Terminal(io.StringIO):
    """Where the progress bar goes: a stream that says it is a terminal, so the bar redraws (at most ten
    times a second, with the running mean loss), the costlier case, without filling this terminal."""

    def isatty(self) -> bool:
        return True


def fit_epoch(model: Any, x: Any, y: Any, batch: int, seed: int, optimizer: str, progress: bool = True) -> float:
    from graphdnn.train import fit

    lr = 0.001 if optimizer == "adam" else 0.01
    history = fit(model, x, y, epochs=1, batch_size=batch, seed=seed, optimizer=optimizer, lr=lr, progress=progress)
    return history["loss"][-1]


clock = time.perf_counter


def interleaved(fns: dict[str, Callable[[int], Any]], repeats: int, reset: Callable[[], None]) -> dict[str, list]:
    """Seconds per call, alternating the order every round; ``reset`` (untimed) restores the weights."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            reset()
            t0 = clock()
            fns[name](r)
            times[name].append(clock() - t0)
    return times


def paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def profile_summary(model: Any, x: Any, y: Any, batch: int, lines: int) -> str:
    stats_out = io.StringIO()
    prof = cProfile.Profile()
    prof.enable()
    fit_epoch(model, x, y, batch, 0, "adam")
    prof.disable()
    pstats.Stats(prof, stream=stats_out).sort_stats("tottime").print_stats(lines)
    text = stats_out.getvalue()
    keep = [ln for ln in text.splitlines() if ln.strip()]
    head = next((i for i, ln in enumerate(keep) if ln.lstrip().startswith("ncalls")), 0)
    return "\n".join(keep[head:head + lines + 1])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=6000, help="training samples (the book's MNIST: 55000)")
    p.add_argument("--full", action="store_true", help="use the full 55,000 samples")
    p.add_argument("--batches", type=int, nargs="+", default=[32, 50, 200])
    p.add_argument("--profile-lines", type=int, default=14)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    add_clock(p)
    args = p.parse_args()
    pin_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    import torch

    samples = 55_000 if args.full else args.samples
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(samples, 784, generator=gen)
    y = torch.randint(0, 10, (samples,), generator=gen)
    # the bar goes to a log-like stream, not this terminal: measured, but quiet
    sys.stderr, real_stderr = _Terminal(), sys.stderr
    try:
        results = run(args, x, y)
    finally:
        sys.stderr = real_stderr
    write_json(args.json, results)


def run(args: Any, x: Any, y: Any) -> dict[str, Any]:
    import torch

    import graphdnn as gd

    samples = len(x)
    results: dict[str, Any] = {"samples": samples, "threads": args.threads, "repeats": args.repeats,
                               "clock": args.clock, "variants": {}}
    out = sys.stdout
    print(f"{samples} samples, {args.threads} thread(s), {args.repeats} interleaved pairs per figure, {args.clock} "
          "clock", file=out)

    for variant, regularized in (("plain", False), ("l2_maxnorm", True)):
        if variant not in args.variants:
            continue
        model = build(regularized, frozen=False)
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def reset(model: Any = model, start: dict = start) -> None:
            model.load_state_dict(start)

        fit_epoch(model, x[:500], y[:500], 50, 0, "adam")  # warm-up
        rows = {}
        for batch in args.batches:
            fns = {
                "fit": lambda r, m=model, b=batch: fit_epoch(m, x, y, b, r, "adam"),
                "hand": lambda r, m=model, b=batch, g=regularized: hand_epoch(m, x, y, b, r, "adam", g),
            }
            if not regularized:
                fns["fit_no_progress"] = lambda r, m=model, b=batch: fit_epoch(m, x, y, b, r, "adam", False)
            times = interleaved(fns, args.repeats, reset)
            ratio = paired(times["fit"], times["hand"])
            row = rows[str(batch)] = {"ratio": ratio, **{f"{k}_s": statistics.median(t) for k, t in times.items()}}
            target = "<= 1.05" if batch >= 50 else "-"
            line = (f"  {variant:10s} batch {batch:4d}: fit {row['fit_s']:.3f}s, hand-written {row['hand_s']:.3f}s "
                    f"-> {ratio:.3f}x (target {target})")
            if "fit_no_progress" in times:
                row["progress_cost"] = paired(times["fit"], times["fit_no_progress"]) - 1
                line += f"; progress bar on/off {1 + row['progress_cost']:.3f}x (target <= 1.01)"
            print(line, file=out)
        results["variants"][variant] = rows
        reset()
        # same work: both loops reach the same weights from the same start
        fit_epoch(model, x, y, 50, 7, "adam")
        ours = {k: v.detach().clone() for k, v in model.state_dict().items()}
        reset()
        hand_epoch(model, x, y, 50, 7, "adam", regularized)
        diff = max(float((ours[k] - v).abs().max()) for k, v in model.state_dict().items())
        results["variants"][variant]["max_weight_difference"] = diff
        print(f"  {variant:10s} same weights after one epoch at batch 50: max |difference| {diff:.2e}", file=out)
        if regularized:
            reset()
            summary = profile_summary(model, x, y, 50, args.profile_lines)
            results["profile_l2_maxnorm_batch50"] = summary
            print("  where one fit epoch (l2_maxnorm, batch 50) spends its time (cProfile, by own time):", file=out)
            print("\n".join("    " + ln for ln in summary.splitlines()), file=out)

    if "cached" not in args.variants:
        return results
    # frozen hidden1-3: full-forward training vs training the top on the cache
    model = build(False, frozen=True)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def reset_frozen() -> None:
        model.load_state_dict(start)

    top, cached = gd.cache_frozen(model, x, batch_size=1000, progress=False)
    h3 = cached.tensors[0]
    with torch.no_grad():  # the hand-written cache: the same frozen layers run once in plain torch
        v = {n: model.variable(n).detach() for n in model.variable_names}
        hand_h3 = x
        for i in (1, 2, 3):
            hand_h3 = torch.relu(torch.addmm(v[f"hidden{i}/bias"], hand_h3, v[f"hidden{i}/kernel"]))
    fit_epoch(top, h3[:500], y[:500], 50, 0, "sgd")
    rows = {}
    for batch in args.batches:
        times = interleaved({
            "fit_full": lambda r, b=batch: fit_epoch(model, x, y, b, r, "sgd"),
            "fit_cached": lambda r, b=batch: fit_epoch(top, h3, y, b, r, "sgd"),
            "hand_full": lambda r, b=batch: hand_epoch(model, x, y, b, r, "sgd", False),
            "hand_cached": lambda r, b=batch: hand_epoch(top, hand_h3, y, b, r, "sgd", False),
        }, args.repeats, reset_frozen)
        ours = paired(times["fit_full"], times["fit_cached"])
        hand = paired(times["hand_full"], times["hand_cached"])
        ratio = paired(times["fit_cached"], times["hand_cached"])
        rows[str(batch)] = {"speedup_fit": ours, "speedup_hand": hand, "speedup_ratio": ours / hand,
                            "cached_ratio": ratio, **{f"{k}_s": statistics.median(t) for k, t in times.items()}}
        print(f"  cached     batch {batch:4d}: speed-up of training on the cache: fit {ours:.2f}x, hand-written "
              f"{hand:.2f}x ({ours / hand:.3f} of it, target >= 0.95); cached epoch fit/hand {ratio:.3f}x", file=out)
    results["variants"]["cached"] = rows
    return results


if __name__ == "__main__":
    main()
