"""Chapter 11's reuse flow on a model trained in TensorFlow 1: import the meta graph, build new layers
on ``dnn/hidden4/Relu:0``, restore ``hidden[123]`` from the TF checkpoint, freeze ``hidden[12]``, train."""

from pathlib import Path

import numpy as np
import torch

import graphdnn as gd
from graphdnn import initializers as init
from graphdnn import layers, nn
from graphdnn.data import load_digits

PREFIX = Path(__file__).parent / "fixtures" / "foreign" / "tf1_dnn" / "my_model_final.ckpt"


def test_reuse_tf1_model_new_layers_restore_freeze_train():
    torch.manual_seed(0)
    expected = np.load(PREFIX.parent / "expected.npz")
    g = gd.load(str(PREFIX) + ".meta", values=False)                  # import_meta_graph: no values yet
    X, y, _ = (g.get_tensor(n) for n in g.get_collection("my_important_ops"))
    hidden4 = g.get_tensor("dnn/hidden4/Relu:0")
    with g.name_scope("new"):
        h5 = layers.dense(hidden4, 20, activation=nn.relu, kernel_initializer=init.he_normal(), name="new_hidden5")
        logits = layers.dense(h5, 10, name="new_outputs")
        loss = nn.reduce_mean(nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
    report = gd.restore(g, PREFIX, include="hidden[1234]/")            # TF checkpoint, read without TF
    assert sorted(report.matched) == sorted(f"hidden{i}/{v}" for i in (1, 2, 3, 4) for v in ("kernel", "bias"))
    assert "hidden1/kernel/Momentum" in report.skipped                  # optimizer slots are listed, not read
    gd.prune(g, [loss])                                                 # drop hidden5, outputs, the old loss
    assert "hidden5/kernel" not in g and "dnn/outputs/BiasAdd" not in g
    gd.freeze(g, "hidden[12]/")
    model = gd.compile(g, inputs=[X, y], outputs=[loss])
    opt = gd.make_optimizer("momentum", model, lr=0.05)
    frozen = {n: g.values[n].detach().clone() for n in ("hidden1/kernel", "hidden2/bias")}
    for n in frozen:
        assert np.array_equal(frozen[n].numpy(), expected["variable:" + n])   # bit-identical restore
    x_train, y_train, _, _ = (torch.from_numpy(a) for a in load_digits())
    model.train()
    losses = []
    for _epoch in range(3):
        for i in range(0, 512, 32):
            opt.zero_grad()
            value = model(x_train[i:i + 32], y_train[i:i + 32])
            value.backward()
            opt.step()
            losses.append(value.item())
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    for n, before in frozen.items():
        assert torch.equal(g.values[n].detach(), before), n
    assert not np.array_equal(g.values["hidden3/kernel"].detach().numpy(), expected["variable:hidden3/kernel"])
