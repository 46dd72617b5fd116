"""Models exported by torch's two exporters, imported by graphdnn: speed, trainable tensors, training.

Four small architectures are defined here (no downloads): a ResNet-like CNN (conv-BN-ReLU, residual
blocks), a BERT-like encoder (embeddings, two post-norm attention layers with an additive padding
mask, pooler; outputs ``last_hidden_state`` and ``pooler_output``), a GPT-2-like decoder (two pre-norm
blocks, causal mask filled with ``finfo.min``, GELU with the tanh approximation) and a 2-layer bidirectional
LSTM followed by a GRU. Their normalization scales and biases are drawn at random, as in a trained model
(fresh ones are all equal, and exporters merge equal initializers). Each is exported with the
TorchScript exporter (``dynamo=False``) and with the default one (``dynamo=True``), with a dynamic batch
axis; the CNN without constant folding (``do_constant_folding=False``, ``optimize=False``), which would fold
batch norm into the convolutions of an eval-mode export and leave nothing of it to train,
and imported with ``graphdnn.load``.

Reported per model and exporter:

* latency ratio graphdnn / original eager module, for inference (``no_grad``, eval mode) and for a
  train step (forward, backward, SGD step), at batch 1 and 16: the median of the per-round ratios of
  interleaved rounds (``_util.interleaved_times``), one intra-op thread; target <= 1.05;
* trainable values (elements) of the import vs those of the original module's parameters; target: equal
  (also the tensor counts: ONNX's LSTM/GRU stack a layer's directions in one ``W``/``R``/``B`` and join its
  two biases, so a recurrent layer has fewer, larger tensors);
* the loss after 5 SGD steps (same initial weights, same batches) of the import and of the
  original; target: within 1e-4;
* the largest difference of the import's outputs from ONNX Runtime on the exported file; target 1e-5;
* for the models of ``--inductor`` (default ``gpt``; ``--inductor ""`` skips it): the import compiled with
  ``backend="inductor"`` (``torch.compile``): its cold start (the first call at each batch size, which
  compiles; inductor's on-disk caches off) and its steady-state inference latency ratio to the original
  eager module.

    python benchmarks/imported_models.py [--json PATH] [--repeats N] [--models cnn,bert,gpt,rnn] [--inductor gpt]
"""

from __future__ import annotations

import copy
import functools
import io
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _util import interleaved_times, parser, pin_threads, write_json  # noqa: E402

import graphdnn as gd  # noqa: E402

RATIO_TARGET, LOSS_TARGET, ORT_TARGET = 1.05, 1e-4, 1e-5
BATCHES = (1, 16)
VOCAB, SEQ, WIDTH, HEADS = 64, 16, 32, 4


# ---------------------------------------------------------------------------------------------- models
class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


class ResNet(nn.Module):
    def __init__(self, c: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(ResBlock(c), ResBlock(c), ResBlock(c))
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(torch.relu(self.bn(self.stem(x)))).mean((2, 3)))


def _heads(z: torch.Tensor) -> torch.Tensor:
    b, t, _ = z.shape
    return z.view(b, t, HEADS, WIDTH // HEADS).transpose(1, 2)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    att = (_heads(q) @ _heads(k).transpose(-2, -1)) / math.sqrt(WIDTH // HEADS) + bias
    y = att.softmax(-1) @ _heads(v)
    return y.transpose(1, 2).reshape(q.shape)


class EncoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(WIDTH, eps=1e-12), nn.LayerNorm(WIDTH, eps=1e-12)
        self.fc1, self.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.o(_attention(self.q(x), self.k(x), self.v(x), bias)))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class Bert(nn.Module):
    """Inputs ids and attention_mask; outputs (last_hidden_state, pooler_output)."""

    def __init__(self) -> None:
        super().__init__()
        self.word, self.pos = nn.Embedding(VOCAB, WIDTH), nn.Embedding(SEQ, WIDTH)
        self.ln = nn.LayerNorm(WIDTH, eps=1e-12)
        self.layers = nn.ModuleList([EncoderLayer(), EncoderLayer()])
        self.pooler = nn.Linear(WIDTH, WIDTH)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.ln(self.word(ids) + self.pos(torch.arange(ids.shape[1])))
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        return x, torch.tanh(self.pooler(x[:, 0]))


class GPTBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.fc, self.out = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)

    @staticmethod
    def gelu(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        q, k, v = self.qkv(self.ln1(x)).split(WIDTH, dim=-1)
        att = (_heads(q) @ _heads(k).transpose(-2, -1)) / math.sqrt(WIDTH // HEADS)
        att = torch.where(causal[:, :, :t, :t], att, torch.tensor(torch.finfo(att.dtype).min))
        y = (att.softmax(-1) @ _heads(v)).transpose(1, 2).reshape(x.shape)
        x = x + self.proj(y)
        return x + self.out(self.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, WIDTH), nn.Embedding(SEQ, WIDTH)
        self.blocks = nn.ModuleList([GPTBlock(), GPTBlock()])
        self.lnf = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.register_buffer("causal", torch.tril(torch.ones(SEQ, SEQ, dtype=torch.bool)).view(1, 1, SEQ, SEQ),
                             persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x, self.causal)
        return self.head(self.lnf(x))


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, WIDTH, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(2 * WIDTH, WIDTH, batch_first=True)
        self.fc = nn.Linear(WIDTH, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)
        h, _ = self.gru(h)
        return self.fc(h[:, -1])


def _ids(g: torch.Generator, b: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, SEQ), generator=g)


def _bert_inputs(g: torch.Generator, b: int) -> tuple[torch.Tensor, ...]:
    mask = torch.ones(b, SEQ, dtype=torch.long)
    mask[:, SEQ - 3:] = 0  # padding at the end
    return _ids(g, b), mask


MODELS: dict[str, dict[str, Any]] = {
    "cnn": {"make": ResNet, "inputs": lambda g, b: (torch.randn(b, 3, 16, 16, generator=g),),
            "loss": lambda out, g, b: F.cross_entropy(out, torch.randint(0, 10, (b,), generator=g)),
            "names": ["x"], "legacy": {"do_constant_folding": False}, "dynamo": {"optimize": False}},
    "bert": {"make": Bert, "inputs": _bert_inputs,
             "loss": lambda out, g, b: F.mse_loss(out[1], torch.randn(b, WIDTH, generator=g)) + out[0].pow(2).mean(),
             "names": ["ids", "mask"], "outputs": ["last_hidden_state", "pooler_output"]},
    "gpt": {"make": GPT, "inputs": lambda g, b: (_ids(g, b),),
            "loss": lambda out, g, b: F.cross_entropy(out.reshape(-1, VOCAB), _ids(g, b).reshape(-1)),
            "names": ["ids"]},
    "rnn": {"make": Recurrent, "inputs": lambda g, b: (torch.randn(b, 12, 8, generator=g),),
            "loss": lambda out, g, b: F.mse_loss(out, torch.randn(b, 4, generator=g)), "names": ["x"]},
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    module = MODELS[name]["make"]().eval()
    with torch.no_grad():  # trained-looking normalization parameters (fresh ones are all equal)
        for m in module.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.9, 1.1)
    return module


# ---------------------------------------------------------------------------------------------- export
def export(name: str, module: nn.Module, dynamo: bool, path: Path) -> float:
    spec = MODELS[name]
    args = spec["inputs"](torch.Generator().manual_seed(0), 2)
    outputs = spec.get("outputs", ["y"])
    axes = {n: {0: "batch"} for n in (*spec["names"], *outputs)}
    kwargs = dict(spec.get("dynamo" if dynamo else "legacy", {}))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = io.StringIO()
        saved = sys.stdout
        sys.stdout = stream  # the dynamo exporter prints its progress
        try:
            torch.onnx.export(module, args, str(path), dynamo=dynamo, input_names=spec["names"], output_names=outputs,
                              dynamic_axes=axes, **kwargs)
        finally:
            sys.stdout = saved
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- measures
def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def _losses(name: str, module: nn.Module, steps: int = 5, lr: float = 0.05) -> list[float]:
    spec = MODELS[name]
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    module.train()
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        inputs = spec["inputs"](g, 16)
        opt.zero_grad()
        loss = spec["loss"](module(*inputs), g, 16)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _ort_diff(name: str, path: Path, imported: nn.Module) -> float:
    spec = MODELS[name]
    inputs = spec["inputs"](torch.Generator().manual_seed(3), 16)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    want = sess.run(None, feeds)
    with torch.no_grad():
        got = _as_tuple(imported.eval()(*inputs))
    return max(float(np.max(np.abs(a.numpy() - b))) for a, b in zip(got, want))


def _infer(module: nn.Module, inputs: tuple) -> None:
    with torch.no_grad():
        module(*inputs)


def _step(name: str, module: nn.Module, opt: torch.optim.Optimizer, inputs: tuple, b: int) -> None:
    opt.zero_grad()
    MODELS[name]["loss"](module(*inputs), torch.Generator().manual_seed(5), b).backward()
    opt.step()


def _calls(name: str, mode: str, modules: dict[str, nn.Module], inputs: tuple, b: int) -> dict[str, Callable[[], Any]]:
    """The function timed for each module: an inference call, or a train step (forward, backward, SGD)."""
    if mode == "inference":
        return {k: functools.partial(_infer, m.eval(), inputs) for k, m in modules.items()}
    return {k: functools.partial(_step, name, m.train(),
                                 torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4), inputs, b)
            for k, m in modules.items()}


#: calls per timed round: short calls are timed in groups, so timer resolution and scheduling matter less
INNER = {"inference": 5, "train_step": 2}


def _latency(name: str, original: nn.Module, imported: nn.Module, repeats: int,
             modes: tuple[str, ...] = ("inference", "train_step")) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    modules = {"original": original, "graphdnn": imported}
    for b in BATCHES:
        inputs = MODELS[name]["inputs"](torch.Generator().manual_seed(4), b)
        for mode in modes:
            times = interleaved_times(_calls(name, mode, modules, inputs, b), repeats, inner=INNER[mode], warmup=3)
            ratios = [a / o for a, o in zip(times["graphdnn"], times["original"])]
            rows[f"{mode}_b{b}"] = {"ratio": statistics.median(ratios), "target": RATIO_TARGET,
                                    "original_ms": 1e3 * statistics.median(times["original"]),
                                    "graphdnn_ms": 1e3 * statistics.median(times["graphdnn"])}
    return rows


def _inductor(name: str, graph: gd.Graph, original: nn.Module, repeats: int) -> dict[str, Any]:
    """Cold start (first call per batch size, inductor's on-disk caches off) and steady-state inference ratio
    of ``backend="inductor"``."""
    import torch._inductor.config

    compiled = gd.compile(graph, backend="inductor").eval()
    cold = {}
    for b in BATCHES:
        inputs = MODELS[name]["inputs"](torch.Generator().manual_seed(4), b)
        start = time.perf_counter()
        with torch.no_grad(), torch._inductor.config.patch(force_disable_caches=True):
            compiled(*inputs)
        cold[f"b{b}"] = time.perf_counter() - start
    return {"cold_start_s": cold, "latency_ratio": _latency(name, original, compiled, repeats, ("inference",))}


def measure(name: str, dynamo: bool, workdir: Path, repeats: int, inductor: bool = False) -> dict[str, Any]:
    module = build(name)
    path = workdir / f"{name}_{'dynamo' if dynamo else 'torchscript'}.onnx"
    export_s = export(name, module, dynamo, path)
    start = time.perf_counter()
    graph = gd.load(path)
    import_s = time.perf_counter() - start
    imported = gd.compile(graph)
    result: dict[str, Any] = {
        "model": name, "exporter": "dynamo" if dynamo else "torchscript", "export_s": export_s, "import_s": import_s,
        "import_summary": graph.meta.get("import_summary", {}).get("text"),
        "trainable_tensors": {"graphdnn": len(graph.trainable_variables()),
                              "original": sum(1 for _ in module.parameters())},
        "trainable_values": {"graphdnn": sum(graph.values[v.name].numel() for v in graph.trainable_variables()),
                             "original": sum(p.numel() for p in module.parameters()), "target": "equal"},
        "ort_max_abs_diff": {"value": _ort_diff(name, path, imported), "target": ORT_TARGET},
    }
    ours = _losses(name, copy.deepcopy(imported))
    theirs = _losses(name, copy.deepcopy(module))
    result["loss_after_5_steps"] = {"graphdnn": ours[-1], "original": theirs[-1],
                                    "max_abs_diff_over_steps": max(abs(a - b) for a, b in zip(ours, theirs)),
                                    "target": LOSS_TARGET}
    result["latency_ratio"] = _latency(name, copy.deepcopy(module), copy.deepcopy(imported), repeats)
    if inductor:
        result["inductor"] = _inductor(name, graph, copy.deepcopy(module), repeats)
    return result


def _fmt(r: dict[str, Any]) -> str:
    t, v, loss = r["trainable_tensors"], r["trainable_values"], r["loss_after_5_steps"]
    lines = [f"{r['model']:5s} {r['exporter']:11s} export {r['export_s']:.1f}s, import {r['import_s']:.2f}s; "
             f"{r['import_summary']}",
             f"      trainable values {v['graphdnn']:,} vs original {v['original']:,} (target: equal), in "
             f"{t['graphdnn']} vs {t['original']} tensors",
             f"      loss after 5 steps {loss['graphdnn']:.5f} vs original {loss['original']:.5f}, largest step "
             f"difference {loss['max_abs_diff_over_steps']:.1e} (target <= {LOSS_TARGET:g})",
             f"      max |graphdnn - ORT| {r['ort_max_abs_diff']['value']:.1e} (target <= {ORT_TARGET:g})"]
    lat = "      latency ratio graphdnn/original (target <= 1.05): " + ", ".join(
        f"{k} {v['ratio']:.2f}" for k, v in r["latency_ratio"].items())
    if "inductor" in r:
        ind = r["inductor"]
        cold = ", ".join(f"{k} {v:.1f}s" for k, v in ind["cold_start_s"].items())
        lat += (f"\n      backend='inductor': cold start {cold}; steady-state ratio (target <= 1.05): "
                + ", ".join(f"{k} {v['ratio']:.2f}" for k, v in ind["latency_ratio"].items()))
    return "\n".join([*lines, lat])


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.set_defaults(repeats=15)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    p.add_argument("--inductor", default="gpt", help="models also measured with backend='inductor' (comma-separated; "
                                                      "'' for none)")
    args = p.parse_args()
    pin_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for dynamo in (False, True):
                r = measure(name, dynamo, Path(tmp), args.repeats, name in args.inductor.split(","))
                print(_fmt(r), flush=True)
                results.append(r)
    write_json(args.json, {"threads": args.threads, "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
