"""Data-parallel training of a graphdnn model with DDP, launched by torchrun.

    torchrun --nproc_per_node 2 examples/distributed_train.py [--out DIR] [--epochs N]

Every rank builds the same graph (rank 0's initial values are broadcast anyway), freezes
``hidden1`` by name and calls ``fit`` on the whole digits dataset: ``fit`` sees the process group,
wraps the module in ``DistributedDataParallel`` (gloo on CPU, NCCL with one GPU per rank), gives each
rank its share of every global batch of 64, prints progress on rank 0 only, and reduces the epoch
logs over the ranks. Rank 0 writes a sharded checkpoint (``SaveCheckpoint``, between barriers); then
every rank restores it by name and checks that its parameters equal everyone else's.
Without torchrun (``python examples/distributed_train.py``) the same script trains in one process.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.data import load_digits
from graphdnn.freezing import freeze
from graphdnn.train import distributed, evaluate, fit


def build() -> gd.Graph:
    torch.manual_seed(42)
    g = gd.Graph()
    x = g.placeholder("X", (None, 64))
    with g.name_scope("dnn"):
        h = layers.dense(x, 128, activation=nn.relu, name="hidden1")
        h = layers.dense(h, 64, activation=nn.relu, name="hidden2")
        layers.dense(h, 10, name="outputs")
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    with distributed.process_group():
        rank, world = distributed.rank(), distributed.world_size()
        out = args.out or Path(tempfile.gettempdir()) / "graphdnn-distributed-example"
        x, y = load_digits(split=False)
        model = gd.compile(build(), inputs=["X"], outputs=["dnn/outputs/BiasAdd:0"]).to(distributed.device())
        frozen = freeze(model, "hidden1")
        before = {n: model.variable(n).detach().clone() for n in frozen}
        saver = distributed.SaveCheckpoint(out / "model.safetensors", every=args.epochs, max_shard_size="40KB")
        history = fit(model, x, y, epochs=args.epochs, batch_size=64, lr=3e-3, seed=0, callbacks=[saver])

        distributed.barrier()  # the checkpoint is complete on disk for every rank
        index = out / "model.safetensors.index.json"
        restored = gd.compile(gd.load(index), inputs=["X"], outputs=["dnn/outputs/BiasAdd:0"])
        same_as_saved = all(torch.equal(restored.variable(n).cpu(), model.variable(n).detach().cpu())
                            for n in model.variable_names)
        agree = distributed.parameters_agree(model)
        frozen_kept = all(torch.equal(before[n], model.variable(n).detach()) for n in frozen)
        scores = evaluate(model, x, y)
        if distributed.is_main_process():
            shards = len(list(out.glob("model-*-of-*.safetensors")))
            print(f"{world} rank(s); final loss {history['loss'][-1]:.4f}, accuracy {scores['accuracy']:.3f}")
            print(f"checkpoint: {index} ({shards} shards)")
        print(f"rank {rank}: parameters agree across ranks: {agree}; frozen hidden1 unchanged: {frozen_kept}; "
              f"checkpoint matches: {same_as_saved}", flush=True)
        if not (agree and frozen_kept and same_as_saved):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
