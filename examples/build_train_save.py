"""Build the book's DNN by name, train it, save it, load it back (chapter 11, workflows 1-3).

Placeholders ``X``/``y``; under scope ``dnn``: ``hidden1``/``hidden2`` with He init, batch norm (momentum
0.9) and ELU, then ``outputs``; loss and accuracy by name; Nesterov momentum with gradient clipping and
early stopping on the bundled 8x8 digits. Saved as one safetensors file (graph + variables), reloaded in
a "new program" and checked to predict the same. Run: ``python examples/build_train_save.py`` (seconds).
"""

import tempfile
from functools import partial
from pathlib import Path

import torch

import graphdnn as gd
from graphdnn import initializers as init
from graphdnn import layers, nn
from graphdnn.data import load_digits
from graphdnn.summary import summary
from graphdnn.train import EarlyStopping, evaluate, fit, predict


def build() -> tuple[gd.Graph, gd.Tensor]:
    g = gd.Graph("book_dnn")
    X = g.placeholder("X", (None, 64))
    y = g.placeholder("y", (None,), "int64")
    dense = partial(layers.dense, kernel_initializer=init.he_normal())
    bn = partial(layers.batch_normalization, momentum=0.9)   # the book's partial(batch_norm, ...)
    with g.name_scope("dnn"):
        h1 = nn.elu(bn(dense(X, 64, name="hidden1")))
        h2 = nn.elu(bn(dense(h1, 32, name="hidden2")))
        logits = dense(h2, 10, name="outputs")
    with g.name_scope("loss"):
        nn.reduce_mean(nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
    with g.name_scope("eval"):
        accuracy = nn.reduce_mean(nn.cast(nn.in_top_k(logits, y), "float32"), name="accuracy")
    for t in (X, y, accuracy):
        g.add_to_collection("my_important_ops", t)
    return g, logits


def main() -> None:
    torch.manual_seed(42)
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in load_digits())
    g, logits = build()
    model = gd.compile(g, inputs=["X"], outputs=[logits])      # a torch.fx GraphModule
    print(summary(model))
    history = fit(model, x_train[200:], y_train[200:], validation_data=(x_train[:200], y_train[:200]), epochs=15,
                  optimizer="nesterov", lr=0.05, clip_value=1.0, early_stopping=EarlyStopping("val_loss", patience=4),
                  seed=42, progress=False)
    accuracy = evaluate(model, x_test, y_test)["accuracy"]
    print(f"trained {len(history.epochs)} epochs, test accuracy {accuracy:.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "my_model_final.safetensors"
        gd.save(model, path)                                    # graph + variables, one file
        print(f"saved {path.name}: {path.stat().st_size // 1024} KiB")
        restored = gd.load(path)                                # a new program: the graph comes from the file
        print("my_important_ops:", restored.get_collection("my_important_ops"))
        again = gd.compile(restored, inputs=["X"], outputs=["dnn/outputs/BiasAdd:0"]).eval()
        same = torch.equal(predict(again, x_test), predict(model, x_test))
    print(f"build_train_save: test accuracy {accuracy:.4f}, reloaded model identical: {same}")


if __name__ == "__main__":
    main()
