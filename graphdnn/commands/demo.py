"""``graphdnn demo``: chapter 11's walkthrough on the bundled digits, narrated step by step.

Build the default DNN by name (He init, batch norm momentum 0.9, ELU), train it (Nesterov, exponential
decay, gradient clipping, L2, max-norm, early stopping; ``--augment`` adds random shifts), save it, then reuse it as a
new program would: load the graph from the file, take ``dnn/hidden3``'s output, add new layers, restore
``hidden[123]`` only, freeze ``hidden[12]``, cache the frozen layers' output and train the rest on it.
Last, export to ONNX and check ONNX Runtime against torch. The last line is ``test accuracy: X.XXXX``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import graphdnn as gd
from graphdnn import initializers as init
from graphdnn import layers, nn
from graphdnn.commands._args import positive_int
from graphdnn.data import load_digits
from graphdnn.errors import GraphDNNError
from graphdnn.recipes import default_dnn
from graphdnn.train import Compose, EarlyStopping, ExponentialDecay, RandomShift, evaluate, fit, predict

__all__ = ["register", "run"]

N_VALID = 288
HIDDEN = (100, 100, 100, 100, 100)
STEPS = 6


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser("demo", help="chapter 11's walkthrough on the bundled digits (about 30 s)",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("--out-dir", type=Path, default=Path("graphdnn-demo"),
                        help="where the checkpoint, ONNX model and learning curves go (default: ./graphdnn-demo)")
    parser.add_argument("--epochs", type=positive_int, default=40, help="max epochs per training (default: 40)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--augment", action="store_true",
                        help="augment the training digits with random 1-pixel shifts (slower to converge)")
    parser.add_argument("--quiet", action="store_true", help="print only the final accuracy line")
    parser.set_defaults(func=run)


class _Narrator:
    """Numbered steps and short lines on stdout (nothing when quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.step, self.start = quiet, 0, time.monotonic()

    def __call__(self, text: str) -> None:
        if not self.quiet:
            print(f"  {text}", flush=True)

    def section(self, title: str) -> None:
        self.step += 1
        if not self.quiet:
            print(f"[{self.step}/{STEPS}] {title} ({time.monotonic() - self.start:.1f}s)", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the walkthrough; returns 0."""
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise GraphDNNError(f"--out-dir {out}: exists and is not a directory; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    say = _Narrator(args.quiet)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread
    try:
        accuracy = _walkthrough(args, out, say)
    finally:
        torch.set_num_threads(threads)
    print(f"test accuracy: {accuracy:.4f}", flush=True)
    return 0


def _walkthrough(args: argparse.Namespace, out: Path, say: _Narrator) -> float:
    say.section("data: the bundled 8x8 digits (no download)")
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in load_digits())
    data = {"train": (x_train[N_VALID:], y_train[N_VALID:]), "valid": (x_train[:N_VALID], y_train[:N_VALID]),
            "test": (x_test, y_test)}
    say(", ".join(f"{k} {len(v[0])}" for k, v in data.items()) + " samples of 64 pixels, 10 classes")

    checkpoint = _train_and_save(args, out, say, data)
    model = _new_program(args, out, say, data, checkpoint)
    accuracy = evaluate(model, *data["test"])["accuracy"]
    _serve(out, say, model, data["test"])
    say(f"done in {time.monotonic() - say.start:.1f}s; files in {out}")
    return accuracy


def _train_and_save(args: argparse.Namespace, out: Path, say: _Narrator, data: dict) -> Path:
    """Build, train and save the default DNN; returns the checkpoint's path."""
    say.section("define the DNN by name: He init, batch norm (momentum 0.9), ELU")
    torch.manual_seed(args.seed)
    steps_per_epoch = -(-len(data["train"][0]) // 32)
    dnn = default_dnn(64, 10, HIDDEN, l2=1e-4, max_norm=1.0, lr=0.05, decay_steps=30 * steps_per_epoch)
    g = dnn.graph
    say(f"graph {g.name!r}: {len(g.operations())} ops, {len(g.variables())} variables, "
        f"{len(g.get_collection('regularization_losses'))} L2 losses in 'regularization_losses'")
    say(f"kernels: {', '.join(v.name for v in g.variables(r'.*/kernel$'))}")
    bn_vars = [v.name.rsplit("/", 1)[1] for v in g.variables("hidden1/batch_normalization/")]
    say(f"hidden1's batch norm: hidden1/batch_normalization/{{{', '.join(bn_vars)}}}")
    say(f"get_tensor_by_name('dnn/hidden4/Elu:0') -> {g.get_tensor_by_name('dnn/hidden4/Elu:0')}")

    say.section("train: Nesterov 0.9, exponential decay, clipping 1.0, L2, max-norm 1.0, early stopping"
                + (", random shifts" if args.augment else ""))
    model = dnn.compile()
    augment = Compose(RandomShift(max_shift=1), image_shape=(1, 8, 8)) if args.augment else None
    history = fit(model, *data["train"], validation_data=data["valid"], epochs=args.epochs, batch_size=32,
                  optimizer=dnn.make_optimizer(model), schedule=lambda o: ExponentialDecay(o, dnn.decay_steps, 0.1),
                  clip_value=1.0, early_stopping=EarlyStopping("val_loss", patience=8), augment=augment,
                  seed=args.seed, progress=not args.quiet)
    scores = evaluate(model, *data["test"])
    say(f"{len(history.epochs)} epochs, best {history.best_epoch} (restored); "
        f"valid accuracy {max(history['val_accuracy']):.4f}, test accuracy {scores['accuracy']:.4f}")
    png = history.plot(out / "learning_curves.png", ["loss", "val_loss", "val_accuracy"],
                       title="default DNN on digits")
    say(f"learning curves: {png}")

    path = out / "my_model_final.safetensors"
    gd.save(model, path)
    say(f"saved graph + variables by name: {path} ({path.stat().st_size // 1024} KiB)")
    return path


def _new_program(args: argparse.Namespace, out: Path, say: _Narrator, data: dict, path: Path) -> gd.CompiledGraph:
    """Everything here comes from the file at ``path``: the graph, the collection, hidden[123]'s values."""
    say.section("reuse in a new program: load, new layers on hidden3, restore hidden[123], freeze hidden[12]")
    torch.manual_seed(args.seed + 1)
    g = gd.load(path, values=False)  # the graph alone, like import_meta_graph
    X, y, _ = (g.get_tensor(n) for n in g.get_collection("my_important_ops"))
    say(f"loaded {len(g.operations())} ops; my_important_ops = {g.get_collection('my_important_ops')}")
    hidden3 = g.get_tensor("dnn/hidden3/Elu:0")
    with g.name_scope("new"):
        he = init.he_normal()
        h4 = layers.dense(hidden3, 20, activation=nn.elu, kernel_initializer=he, name="new_hidden4")
        logits = layers.dense(h4, 10, kernel_initializer=he, name="new_outputs")
    report = gd.restore(g, path, include="hidden[123]")
    say(f"restored {len(report.matched)} variables matching 'hidden[123]'; {len(report.skipped)} left in the file")
    removed = gd.prune(g, [logits])
    frozen = gd.freeze(g, "hidden[12]")
    say(f"pruned {len(removed)} unused ops (hidden4, hidden5, outputs...); froze {len(frozen)} variables")

    say.section("cache the frozen layers once, train hidden3 + new layers on the cache")
    model = gd.compile(g, inputs=[X], outputs=[logits])
    before = {n: g.values[n].detach().clone() for n in frozen}
    cache = gd.cache_frozen(model, data["train"][0], progress=False)
    top, cached = cache
    valid = cache.encode(data["valid"][0]).tensors[0]
    say(f"cached {', '.join(cache.frontier)}: {tuple(cached.tensors[0].shape)}; top model inputs {top.input_names}")
    history = fit(top, cached.tensors[0], data["train"][1], validation_data=(valid, data["valid"][1]),
                  epochs=args.epochs, batch_size=32, optimizer=gd.make_optimizer("nesterov", top, lr=0.02),
                  clip_value=1.0, early_stopping=EarlyStopping("val_loss", patience=8), seed=args.seed,
                  progress=not args.quiet)
    png = history.plot(out / "reuse_learning_curves.png", ["loss", "val_loss", "val_accuracy"],
                       title="reused hidden1-3 + new layers")
    say(f"{len(history.epochs)} epochs on the cache; learning curves: {png}")
    unchanged = all(torch.equal(before[n], g.values[n]) for n in frozen)
    say(f"frozen hidden1/hidden2 bit-identical after training: {unchanged}")
    gd.save(model, out / "my_new_model_final.safetensors")
    return model.eval()


def _serve(out: Path, say: _Narrator, model: gd.CompiledGraph, test: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Export ``model`` to ONNX and compare ONNX Runtime's logits with torch's on the test set."""
    say.section("serve: export to ONNX with the same names, run in ONNX Runtime")
    runner_cls = _optional(lambda: __import__("graphdnn.runtime", fromlist=["OrtRunner"]).OrtRunner)
    if runner_cls is None:
        say("skipped: the ONNX exporter or ONNX Runtime is not available")
        return
    path = out / "my_new_model.onnx"
    gd.export_onnx(model, path)
    runner = runner_cls(path)
    x, y = test
    ort_logits = runner.run({"X": x.numpy()})[runner.output_names[0]]
    torch_logits = predict(model, x).numpy()
    agree = float(np.mean(ort_logits.argmax(1) == torch_logits.argmax(1)))
    say(f"{path.name}: inputs {runner.input_names}, outputs {runner.output_names}")
    say(f"ONNX Runtime vs torch: max |diff| {np.abs(ort_logits - torch_logits).max():.2e}, "
        f"same predictions {agree:.2%}, ORT accuracy {float(np.mean(ort_logits.argmax(1) == y.numpy())):.4f}")


def _optional(get: Callable[[], Any]) -> Any:
    """``get()``, or None when the piece it imports is not installed."""
    try:
        import onnxruntime  # noqa: F401

        return get()
    except ImportError:
        return None
