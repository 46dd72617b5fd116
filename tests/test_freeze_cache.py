"""Freezing by regex, stop-gradient surgery, frozen batch norm, and frozen-layer caching, checked
against full-forward training and handwritten torch."""

import pytest
import torch
import torch.nn.functional as F

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.errors import GraphError


def build(seed=0, n_in=20, dropout=False, batch_norm=False):
    torch.manual_seed(seed)
    g = gd.Graph("dnn")
    X = g.placeholder("X", (None, n_in))
    y = g.placeholder("y", (None,), "int64")
    with g.name_scope("dnn"):
        h = X
        for i in range(1, 5):
            h = layers.dense(h, 16, activation=None if batch_norm and i == 2 else nn.relu, name=f"hidden{i}")
            if batch_norm and i == 2:
                h = nn.relu(layers.batch_normalization(h, momentum=0.9, name="bn2"))
            if dropout and i == 1:
                h = layers.dropout(h, 0.5, name="drop1")
        logits = layers.dense(h, 5, name="outputs")
    loss = nn.reduce_mean(nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
    return g, gd.compile(g, inputs=[X, y], outputs=[loss])


def data(n=300, n_in=20, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=gen), torch.randint(0, 5, (n,), generator=gen)


def test_freeze_sets_flags_and_optimizer_gets_only_trainable():
    g, model = build()
    names = gd.freeze(model, "hidden[12]")
    assert names == ["hidden1/kernel", "hidden1/bias", "hidden2/kernel", "hidden2/bias"]
    assert not model.variable("hidden1/kernel").requires_grad and model.variable("hidden3/kernel").requires_grad
    assert g.get_collection("trainable_variables") == [f"{s}/{v}" for s in ("hidden3", "hidden4", "outputs")
                                                       for v in ("kernel", "bias")]
    opt = gd.make_optimizer("adam", model, lr=0.01)
    given = {id(p) for group in opt.param_groups for p in group["params"]}
    assert given == {id(model.variable(n)) for n in g.get_collection("trainable_variables")}
    assert [id(p) for p in gd.trainable_parameters(model, "hidden[34]")] == [
        id(model.variable(n)) for n in ("hidden3/kernel", "hidden3/bias", "hidden4/kernel", "hidden4/bias")]
    gd.unfreeze(g, "hidden1")
    assert model.variable("hidden1/kernel").requires_grad and not g.get_operation("hidden1/kernel").attrs.get("frozen")
    with pytest.raises(GraphError, match="matches no variable"):
        gd.freeze(g, "nothing_like_this")


def test_frozen_variables_stay_bit_identical_under_training():
    g, model = build()
    gd.freeze(model, "hidden[12]")
    frozen = {n: model.variable(n).detach().clone() for n in ("hidden1/kernel", "hidden2/bias")}
    other = model.variable("hidden3/kernel").detach().clone()
    opt = gd.make_optimizer("adam", model, lr=0.01, weight_decay=0.1)
    x, y = data()
    for _ in range(5):
        opt.zero_grad()
        model(x, y).backward()
        opt.step()
    assert all(torch.equal(model.variable(n), v) for n, v in frozen.items())
    assert not torch.equal(model.variable("hidden3/kernel"), other)


def test_stop_gradient_after_a_named_tensor():
    g, model = build()
    x, y = data()
    before = model(x, y)
    stopped = gd.stop_gradient_after(g, "dnn/hidden2/Relu:0")
    assert stopped.name == "dnn/hidden2/Relu/StopGradient:0"
    assert g.get_operation("dnn/hidden3/MatMul").inputs[0] == stopped.name
    model = gd.compile(g, inputs=["X", "y"], outputs=["loss:0"])
    loss = model(x, y)
    torch.testing.assert_close(loss, before, rtol=0, atol=0)
    loss.backward()
    assert model.variable("hidden1/kernel").grad is None and model.variable("hidden2/bias").grad is None
    assert model.variable("hidden3/kernel").grad is not None


def test_frozen_batch_norm_keeps_moving_statistics():
    g, model = build(batch_norm=True)            # compiled before freezing: the module is patched
    x, y = data()
    model.train()
    model(x, y)                                  # unfrozen: training mode updates the statistics
    moved = model.variable("bn2/moving_mean").clone()
    assert moved.abs().max() > 0
    gd.freeze(model, "hidden[12]|bn2")
    assert g.get_operation("dnn/bn2/FusedBatchNorm").meta["frozen"] is True
    train_loss = model(x, y)                     # still model.train()
    assert torch.equal(model.variable("bn2/moving_mean"), moved)
    torch.testing.assert_close(train_loss, model.eval()(x, y), rtol=0, atol=0)   # inference mode
    fresh = gd.compile(g, inputs=["X", "y"], outputs=["loss:0"]).train()         # compiled after freezing
    fresh(x, y)
    assert torch.equal(model.variable("bn2/moving_mean"), moved)
    gd.unfreeze(model, "bn2")
    model.train()(x, y)
    assert not torch.equal(model.variable("bn2/moving_mean"), moved)


def test_cached_training_equals_full_forward_training():
    x, y = data(n=500)
    g_full, full = build(seed=3)
    g_cached, model = build(seed=3)
    for target in (full, model):
        gd.freeze(target, "hidden[123]")
    cache = gd.cache_frozen(model, (x, y), batch_size=64, progress=False)
    top, cached = cache
    assert cache.frontier == ["dnn/hidden3/Relu:0"]
    assert top.input_names == ["dnn/hidden3/Relu:0", "y:0"]
    assert set(top.variable_names) == {"hidden4/kernel", "hidden4/bias", "outputs/kernel", "outputs/bias"}
    # the cache holds the frozen part's output, computed independently with plain torch
    v = g_cached.values
    h = x
    for i in (1, 2, 3):
        h = F.relu(h @ v[f"hidden{i}/kernel"] + v[f"hidden{i}/bias"])
    torch.testing.assert_close(cached.tensors[0], h.detach(), atol=1e-6, rtol=0)
    assert cached.tensors[1] is y

    opt_full = torch.optim.SGD(gd.trainable_parameters(full), lr=0.1, momentum=0.9)
    opt_top = torch.optim.SGD(gd.trainable_parameters(top), lr=0.1, momentum=0.9)
    full.train()
    top.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(5))
    for i in range(0, len(x), 32):
        idx = order[i:i + 32]
        opt_full.zero_grad()
        full(x[idx], y[idx]).backward()
        opt_full.step()
        opt_top.zero_grad()
        top(*cached[idx]).backward()
        opt_top.step()
    for name in ("hidden4/kernel", "hidden4/bias", "outputs/kernel", "outputs/bias", "hidden1/kernel"):
        torch.testing.assert_close(g_cached.values[name], g_full.values[name], atol=1e-5, rtol=0)
    assert not torch.equal(g_cached.values["hidden4/kernel"], build(seed=3)[0].values["hidden4/kernel"])


def test_cache_memory_mapped_and_dataloader_and_validation(tmp_path):
    x, y = data(n=130)
    g, model = build()
    gd.freeze(model, "hidden[12]")
    in_memory = gd.cache_frozen(model, (x, y), batch_size=50, progress=False)
    on_disk = gd.cache_frozen(model, (x, y), batch_size=50, memory_limit=0, directory=tmp_path, progress=False)
    assert on_disk.dataset.directory is not None and list(on_disk.dataset.directory.glob("frontier_*.bin"))
    torch.testing.assert_close(on_disk.dataset.tensors[0], in_memory.dataset.tensors[0], rtol=0, atol=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    from_loader = in_memory.encode(loader)
    torch.testing.assert_close(from_loader.tensors[0], in_memory.dataset.tensors[0], rtol=0, atol=0)
    assert torch.equal(from_loader.tensors[1], y)
    batches = list(in_memory.dataset.batches(50, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b[0]) for b in batches] == [50, 50, 30]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(y.tolist())


def test_cache_refuses_randomness_and_training_batch_norm():
    x, y = data(n=40)
    g, model = build(dropout=True)
    gd.freeze(model, "hidden[12]")
    with pytest.raises(GraphError, match="randomness .*drop1"):
        gd.cache_frozen(model, (x, y), progress=False)
    top, cached = gd.cache_frozen(model, (x, y), progress=False, allow_random=True)
    top_below, _ = gd.cache_frozen(model, (x, y), frontier=["dnn/hidden1/Relu:0"], progress=False)
    assert top_below.input_names[0] == "dnn/hidden1/Relu:0"

    g, model = build(batch_norm=True)
    gd.freeze(model, "hidden[12]")
    assert gd.cache_frozen(model, (x, y), progress=False).frontier == ["dnn/hidden2/BiasAdd:0"]  # bn2 trains
    gd.freeze(model, "bn2/gamma|bn2/beta")       # moving statistics would still update in training
    with pytest.raises(GraphError, match="batch norm in training mode .*bn2"):
        gd.cache_frozen(model, (x, y), progress=False)
    gd.freeze(model, "bn2")
    cache = gd.cache_frozen(model, (x, y), progress=False)
    assert cache.frontier == ["dnn/Relu:0"]          # relu(bn2(...)) sits in the name scope dnn

    g, model = build()
    with pytest.raises(GraphError, match="nothing to cache"):
        gd.cache_frozen(model, (x, y), progress=False)
    with pytest.raises(GraphError, match="trainable variable 'hidden1/kernel'"):
        gd.cache_frozen(model, (x, y), frontier=["dnn/hidden2/Relu:0"], progress=False)
