"""Reuse a saved model in a new program: new layers, partial restore, freezing, caching (chapter 11, 4-6).

1. Train chapter 11's default DNN (``graphdnn.recipes.default_dnn``) on the bundled digits and save it.
2. New program: load the graph alone (TF's ``import_meta_graph``), fetch ``my_important_ops``, take
   ``dnn/hidden3``'s output, add ``new_hidden4`` (20) and ``new_outputs`` (10), restore only variables
   matching ``hidden[123]``, freeze ``hidden[12]``.
3. Cache the frozen layers' output once, train the rest on the cache, and check the frozen layers did
   not move. Run: ``python examples/reuse_freeze_cache.py`` (seconds, deterministic).
"""

import tempfile
from pathlib import Path

import torch

import graphdnn as gd
from graphdnn import initializers as init
from graphdnn import layers, nn
from graphdnn.data import load_digits
from graphdnn.recipes import default_dnn
from graphdnn.train import evaluate, fit


def train_and_save(path: Path, data: tuple[torch.Tensor, ...]) -> None:
    x_train, y_train, x_test, y_test = data
    dnn = default_dnn(64, 10, hidden=(50, 50, 50, 50), decay_steps=None)
    model = dnn.compile()
    fit(model, x_train, y_train, epochs=6, seed=0, progress=False, **dnn.fit_kwargs(model))
    print(f"original model: test accuracy {evaluate(model, x_test, y_test)['accuracy']:.4f}")
    gd.save(model, path)


def reuse(path: Path, data: tuple[torch.Tensor, ...]) -> tuple[float, bool]:
    x_train, y_train, x_test, y_test = data
    g = gd.load(path, values=False)                              # the graph only, like import_meta_graph
    X, y, accuracy = (g.get_tensor(n) for n in g.get_collection("my_important_ops"))
    print("operations:", len(g.operations()), "- e.g.", [op.name for op in g.operations()[:4]])
    hidden3 = g.get_tensor("dnn/hidden3/Elu:0")
    with g.name_scope("new"):
        h4 = layers.dense(hidden3, 20, activation=nn.elu, kernel_initializer=init.he_normal(), name="new_hidden4")
        logits = layers.dense(h4, 10, name="new_outputs")
    report = gd.restore(g, path, include="hidden[123]")          # only hidden1-3 come from the file
    print(f"restored {len(report.matched)} variables; the others keep their fresh initial values")
    gd.prune(g, [logits])                                        # drop hidden4, hidden5 and the old outputs
    frozen = gd.freeze(g, "hidden[12]")                          # train only hidden3 and the new layers
    before = {n: g.values[n].detach().clone() for n in frozen}

    model = gd.compile(g, inputs=[X], outputs=[logits])
    cache = gd.cache_frozen(model, x_train, progress=False)     # run hidden1-2 once over the training set
    top, cached = cache
    print(f"cached {cache.frontier} {tuple(cached.tensors[0].shape)}; the top model reads {top.input_names}")
    fit(top, cached.tensors[0], y_train, epochs=6, optimizer=gd.make_optimizer("nesterov", top, lr=0.05),
        clip_value=1.0, seed=0, progress=False)
    acc = evaluate(model, x_test, y_test)["accuracy"]           # the full model shares the trained variables
    unchanged = all(torch.equal(before[n], g.values[n]) for n in frozen)
    return acc, unchanged


def main() -> None:
    torch.manual_seed(42)
    torch.set_num_threads(1)
    data = tuple(torch.from_numpy(a) for a in load_digits())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "my_model_final.safetensors"
        train_and_save(path, data)
        acc, unchanged = reuse(path, data)
    print(f"reuse_freeze_cache: new model test accuracy {acc:.4f}, frozen hidden1-2 unchanged: {unchanged}")


if __name__ == "__main__":
    main()
