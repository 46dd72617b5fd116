"""One rank of the 2-process gloo test (``tests/test_distributed.py``), launched with torchrun's
environment variables. Also holds the model and the training recipe the test's single-process
reference uses, so both sides train the same way."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import graphdnn as gd
from graphdnn import layers, nn, regularizers
from graphdnn.freezing import freeze
from graphdnn.train import History, distributed, fit

FROZEN = "hidden1"
EPOCHS, BATCH = 3, 32


def build_graph(seed: int = 0) -> gd.Graph:
    """A small regularized MLP; ``hidden1`` gets frozen."""
    torch.manual_seed(seed)
    g = gd.Graph()
    x = g.placeholder("X", (None, 6))
    with g.name_scope("dnn"):
        h = layers.dense(x, 16, activation=nn.relu, name="hidden1")
        h = layers.dense(h, 12, activation=nn.tanh, name="hidden2",
                         kernel_regularizer=regularizers.l2(1e-3))
        layers.dense(h, 3, name="outputs")
    return g


def compile_model(graph: gd.Graph) -> gd.CompiledGraph:
    model = gd.compile(graph, inputs=["X"], outputs=["dnn/outputs/BiasAdd:0"])
    freeze(model, FROZEN)
    return model


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: object) -> History:
    """The recipe both sides run: Adam, global batch 32 (101 samples: the last global batch is 5,
    split 3/2 over two ranks), shuffled with seed 7."""
    return fit(model, x, y, optimizer="adam", lr=1e-2, epochs=EPOCHS, batch_size=BATCH, seed=7,
               progress=False, **kwargs)  # type: ignore[arg-type]


def main(workdir: Path) -> None:
    with distributed.process_group(timeout_s=60):
        assert distributed.is_distributed(), "expected a 2-rank process group"
        rank = distributed.rank()
        graph = gd.load(workdir / "init.safetensors")
        data = load_file(workdir / "data.safetensors")
        model = compile_model(graph)
        saver = distributed.SaveCheckpoint(workdir / "ckpt" / "model.safetensors", every=EPOCHS,
                                           max_shard_size=400)
        history = train(model, data["x"], data["y"], callbacks=[saver])
        agree = distributed.parameters_agree(model)
        save_file({k: v.detach().contiguous() for k, v in model.graph_state_dict().items()},
                  workdir / f"rank{rank}.safetensors")
        (workdir / f"rank{rank}.json").write_text(json.dumps(
            {"history": history.history, "agree": agree, "saved": [str(p) for p in saver.saved]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
