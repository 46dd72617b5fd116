"""Weights from other frameworks, no TensorFlow or Keras needed (chapter 11, "reusing pretrained layers").

1. A TF1 model (``.meta`` + checkpoint): import it with TF's names, fetch ``dnn/hidden4/Relu:0``.
2. A Keras 3 CNN (``.keras``): rebuild it; it takes NHWC images, exactly as Keras did.
3. A PyTorch ``nn.Module``: load its state dict into a graph built by name (Linear weights are
   transposed, batch-norm settings adopted), and the book's ``original_w``/``original_b``.

Run from the repository root: ``python examples/foreign_weights.py`` (a few seconds, deterministic).
"""

from pathlib import Path

import numpy as np
import torch
from graphdnn.converters.named_tensors import load_weights

import graphdnn as gd
from graphdnn import layers, nn

FOREIGN = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "foreign"


def tf1_checkpoint() -> None:
    expected = np.load(FOREIGN / "tf1_dnn" / "expected.npz")
    graph = gd.load(FOREIGN / "tf1_dnn" / "my_model_final.ckpt.meta")
    print(graph.meta["tf_import"]["summary"])
    print("  optimizer slots left out:", len(graph.meta["tf_import"]["optimizer_slots"]))
    model = gd.compile(graph, inputs=["X:0"], outputs=["dnn/hidden4/Relu:0"]).eval()
    got = model(torch.from_numpy(expected["input:X"])).detach().numpy()
    diff = float(np.abs(got - expected["tensor:dnn/hidden4/Relu:0"]).max())
    print("  dnn/hidden4/Relu:0 max |graphdnn - TF| =", diff)


def keras_cnn() -> None:
    expected = np.load(FOREIGN / "keras" / "cnn_expected.npz")
    graph = gd.load(FOREIGN / "keras" / "cnn.keras")
    model = gd.compile(graph, outputs=graph.meta["keras_import"]["outputs"] + ["concat"]).eval()
    logits, concat = model(torch.from_numpy(expected["input"]))          # NHWC in
    print(f"keras cnn: {len(graph.operations())} ops, input {graph.get_tensor('image:0').shape}")
    print("  logits max |graphdnn - Keras| =", float(np.abs(logits.detach().numpy() - expected["output"]).max()))
    print("  layer 'concat' max diff       =", float(np.abs(concat.detach().numpy() - expected["layer:concat"]).max()))


def pytorch_module() -> None:
    torch.manual_seed(42)
    net = torch.nn.Sequential()
    net.add_module("hidden1", torch.nn.Linear(8, 6))
    net.add_module("bn1", torch.nn.BatchNorm1d(6))
    net.add_module("relu", torch.nn.ReLU())
    net.add_module("outputs", torch.nn.Linear(6, 3))
    net.train()(torch.randn(32, 8))                                        # some running statistics
    net.eval()
    g = gd.Graph("from_torch")
    x = g.placeholder("X", (None, 8))
    h = nn.relu(layers.batch_normalization(layers.dense(x, 6, name="hidden1"), name="bn1"))
    out = layers.dense(h, 3, name="outputs")
    report = load_weights(g, net)
    print(report.table())
    xs = torch.randn(4, 8)
    with torch.no_grad():
        got = gd.compile(g, inputs=[x], outputs=[out]).eval()(xs)
        print("  max |graphdnn - torch| =", float((got - net(xs)).abs().max()))


def book_original_weights() -> None:
    g = gd.Graph()
    x = g.placeholder("X", (None, 2))
    hidden1 = layers.dense(x, 3, name="hidden1")
    original_w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    original_b = np.array([7.0, 8.0, 9.0], np.float32)
    load_weights(g, {"hidden1/kernel": original_w, "hidden1/bias": original_b})
    out = gd.compile(g, inputs=[x], outputs=[hidden1])(torch.tensor([[10.0, 11.0]]))
    print("hidden1 on [[10, 11]] ->", out.tolist())


if __name__ == "__main__":
    tf1_checkpoint()
    keras_cnn()
    pytorch_module()
    book_original_weights()
