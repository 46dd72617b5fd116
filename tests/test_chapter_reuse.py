"""Chapter 11, "reusing pretrained layers", across two processes: one trains and saves the
5-hidden-layer DNN, a fresh one loads the graph, builds new_hidden4/new_outputs on hidden3's output,
restores only hidden[123], freezes hidden[12] and trains. Checked with plain safetensors."""

import json
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

COMMON = """
import json, sys
import numpy as np
import torch
import graphdnn as gd
from graphdnn import layers, nn
from graphdnn import initializers as init
from graphdnn.data import load_digits

torch.set_num_threads(1)
torch.manual_seed(0)
x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in load_digits())

def train(model, opt, epochs, batch=32):
    gen = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = model(x_train[idx], y_train[idx])
            loss.backward()
            opt.step()
"""

PROCESS_1 = COMMON + """
g = gd.Graph("book")
X = g.placeholder("X", (None, 64))
y = g.placeholder("y", (None,), "int64")
with g.name_scope("dnn"):
    h = X
    for i in range(1, 6):
        h = layers.dense(h, 50, activation=nn.relu, kernel_initializer=init.he_normal(), name=f"hidden{i}")
    logits = layers.dense(h, 10, name="outputs")
with g.name_scope("loss"):
    loss = nn.reduce_mean(nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
with g.name_scope("eval"):
    accuracy = nn.reduce_mean(nn.cast(nn.in_top_k(logits, y), "float32"), name="accuracy")
for t in (X, y, accuracy):
    g.add_to_collection("my_important_ops", t)
model = gd.compile(g, inputs=[X, y], outputs=[loss])
train(model, torch.optim.SGD(model.parameters(), lr=0.1), epochs=5)
gd.save(model, sys.argv[1])
print(json.dumps({"saved": sys.argv[1]}))
"""

PROCESS_2 = COMMON + """
path, out = sys.argv[1], sys.argv[2]
g = gd.load(path, values=False)                      # import_meta_graph: the graph, no values yet
X, y, _ = (g.get_tensor(n) for n in g.get_collection("my_important_ops"))
hidden3 = g.get_tensor("dnn/hidden3/Relu:0")
with g.name_scope("new"):
    h4 = layers.dense(hidden3, 20, activation=nn.relu, kernel_initializer=init.he_normal(), name="new_hidden4")
    logits = layers.dense(h4, 10, name="new_outputs")
    loss = nn.reduce_mean(nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
    accuracy = nn.reduce_mean(nn.cast(nn.in_top_k(logits, y), "float32"), name="accuracy")
report = gd.restore(g, path, include="hidden[123]")
gd.prune(g, [loss, accuracy])                          # drop hidden4, hidden5, outputs and the old loss
gd.freeze(g, "hidden[12]")
model = gd.compile(g, inputs=[X, y], outputs=[loss])
opt = gd.make_optimizer("momentum", model, lr=0.05)
trained = sorted(n for group in opt.param_groups for p in group["params"]
                 for n in model.variable_names if model.variable(n) is p)
train(model, opt, epochs=10)
model.eval()
acc = gd.compile(g, inputs=[X, y], outputs=[accuracy]).eval()(x_test, y_test).item()
gd.save(model, out)
print(json.dumps({"matched": report.matched, "missing": report.missing, "skipped": len(report.skipped),
                  "trained": trained, "accuracy": acc, "ops": [op.name for op in g.operations()]}))
"""


def run(script, *args):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_process_reuse_restore_freeze_train(tmp_path):
    first, second = tmp_path / "my_model_final.safetensors", tmp_path / "my_new_model_final.safetensors"
    run(PROCESS_1, first)
    result = run(PROCESS_2, first, second)

    assert sorted(result["matched"]) == sorted(f"hidden{i}/{v}" for i in (1, 2, 3) for v in ("kernel", "bias"))
    assert result["missing"] == [] and result["skipped"] == 6        # hidden4, hidden5, outputs
    assert result["trained"] == sorted(["hidden3/kernel", "hidden3/bias", "new_hidden4/kernel",
                                        "new_hidden4/bias", "new_outputs/kernel", "new_outputs/bias"])
    assert not any(n.startswith(("hidden4", "hidden5", "outputs", "dnn/hidden4", "loss/")) for n in result["ops"])
    assert result["accuracy"] > 0.8                                  # chance is 0.1

    before, after = load_file(first), load_file(second)              # independent reader
    for name in ("hidden1/kernel", "hidden1/bias", "hidden2/kernel", "hidden2/bias"):
        assert torch.equal(before[name], after[name]), name           # frozen: bit-identical
    assert not torch.equal(before["hidden3/kernel"], after["hidden3/kernel"])   # restored, then trained
    assert {"new_hidden4/kernel", "new_outputs/bias"} <= set(after)
    assert "hidden4/kernel" not in after
