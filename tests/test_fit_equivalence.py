"""``fit`` trains exactly as a hand-written PyTorch loop does: same batches, dropout masks, penalties,
constraints, optimizer updates and batch-norm statistics, hence the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn import regularizers as reg
from graphdnn.train import fit, max_norm_
from graphdnn.train.hooks import StepHooks

L2, BOUND, DROP, MOMENTUM, EPS = 0.01, 1.0, 0.3, 0.99, 1e-3


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_model() -> gd.CompiledGraph:
    """12 -> dense(16, L2, max-norm) -> batch norm -> relu -> dropout -> dense(5, L2, max-norm)."""
    torch.manual_seed(0)
    g = gd.Graph()
    X = g.placeholder("X", (None, 12))
    with g.name_scope("net"):
        h = layers.dense(X, 16, kernel_regularizer=reg.l2(L2), kernel_constraint=reg.max_norm(BOUND, 1),
                         name="hidden")
        h = nn.relu(layers.batch_normalization(h, momentum=MOMENTUM, epsilon=EPS, name="bn"))
        h = layers.dropout(h, DROP, name="drop")
        logits = layers.dense(h, 5, kernel_regularizer=reg.l2(L2), kernel_constraint=reg.max_norm(BOUND, 1),
                              name="out")
    return gd.compile(g, inputs=[X], outputs=[logits])


def data(n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 12, generator=gen) * 2.0  # large inputs: the max-norm bound is reached
    return x, torch.randint(0, 5, (n,), generator=gen)


def hand_training(state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch: int,
                  seed: int, lr: float) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The same network and training written out in plain PyTorch (TF1 L2, TF clip_by_norm max-norm)."""
    v = {k: t.detach().clone() for k, t in state.items()}
    params = {k: torch.nn.Parameter(v[k]) for k in ("hidden.kernel", "hidden.bias", "bn.gamma", "bn.beta",
                                                    "out.kernel", "out.bias")}
    kernels = [params["hidden.kernel"], params["out.kernel"]]
    opt = torch.optim.Adam(params.values(), lr=lr)
    torch.manual_seed(seed)  # dropout masks
    order_gen = torch.Generator().manual_seed(seed)  # shuffling
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=order_gen)
        total = 0.0
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            h = torch.addmm(params["hidden.bias"], xb, params["hidden.kernel"])
            h = F.batch_norm(h, v["bn.moving_mean"], v["bn.moving_variance"], params["bn.gamma"], params["bn.beta"],
                             training=True, momentum=1 - MOMENTUM, eps=EPS)
            h = F.dropout(torch.relu(h), DROP, training=True)
            logits = torch.addmm(params["out.bias"], h, params["out.kernel"])
            loss = F.cross_entropy(logits, yb) + sum(L2 * k.square().sum() / 2 for k in kernels)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for k in kernels:
                    norms = k.square().sum(dim=1, keepdim=True).sqrt()
                    k.mul_(BOUND / torch.maximum(norms, torch.full_like(norms, BOUND)))
            total += float(loss.detach()) * len(xb)
        losses.append(total / len(x))
    return {**{k: p.detach() for k, p in params.items()}, "bn.moving_mean": v["bn.moving_mean"],
            "bn.moving_variance": v["bn.moving_variance"]}, losses


def test_fit_matches_a_hand_written_loop_with_l2_max_norm_dropout_and_batch_norm():
    model = small_model()
    x, y = data()
    start = {k: t.detach().clone() for k, t in model.state_dict().items()}
    expected, losses = hand_training(start, x, y, epochs=2, batch=16, seed=3, lr=0.02)
    history = fit(model, x, y, epochs=2, batch_size=16, seed=3, lr=0.02, progress=False)
    got = model.state_dict()
    assert sorted(got) == sorted(expected)
    for key, want in expected.items():
        assert not torch.equal(want, start[key]), f"{key} did not train"
        torch.testing.assert_close(got[key], want, rtol=0, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")
    # the constraint was active: some rows sit exactly on the bound
    row_norms = got["hidden.kernel"].square().sum(dim=1).sqrt()
    assert (row_norms > BOUND - 1e-5).any() and (row_norms <= BOUND + 1e-5).all()
    torch.testing.assert_close(torch.tensor(history["loss"]), torch.tensor(losses), rtol=1e-5, atol=0)


def test_same_seed_same_weights_and_a_tensor_dataset_batches_like_arrays():
    x, y = data()
    runs = []
    for source in ({"x": x, "y": y}, {"data": TensorDataset(x, y)}):
        model = small_model()
        history = fit(model, **source, epochs=2, batch_size=32, seed=5, progress=False)
        runs.append(({k: t.clone() for k, t in model.state_dict().items()}, history.to_dict()))
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0])
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("bound", [1.0, 1.3, 0.7, 2.0])
def test_compiled_max_norm_is_bit_identical_to_max_norm_(bound):
    torch.manual_seed(2)
    g = gd.Graph()
    X = g.placeholder("X", (None, 6))
    h = layers.dense(X, 7, kernel_constraint=reg.max_norm(bound, 1), name="rows")
    h = layers.dense(h, 5, kernel_constraint=reg.max_norm(bound, 0), name="cols")
    model = gd.compile(g, inputs=[X], outputs=[h])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # most vectors above the bound, a few below
        model.get_parameter("rows.kernel")[0].mul_(0.01)
    expected = {k: t.detach().clone() for k, t in model.state_dict().items()}
    max_norm_(expected["rows.kernel"], bound, 1)
    max_norm_(expected["cols.kernel"], bound, 0)
    StepHooks(model).constrain()
    for key, want in expected.items():
        assert torch.equal(model.state_dict()[key], want), key


def test_compiled_penalty_adds_the_autograd_gradient_of_the_l2_penalty():
    model = small_model().eval()  # no dropout: both passes see the same function
    x, _ = data(8)
    model(x).sum().backward()
    data_only = {k: p.grad.clone() for k, p in model.named_parameters()}
    value = StepHooks(model).add_gradients()
    direct = {k: p.grad.clone() for k, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    (model(x).sum() + model.regularization_loss()).backward()
    for key, p in model.named_parameters():
        assert torch.equal(direct[key], p.grad), key
    assert not torch.equal(direct["hidden.kernel"], data_only["hidden.kernel"])
    assert torch.equal(direct["hidden.bias"], data_only["hidden.bias"])  # no penalty on biases
    kernels = [model.get_parameter(k).detach() for k in ("hidden.kernel", "out.kernel")]
    torch.testing.assert_close(value, sum(L2 * k.square().sum() / 2 for k in kernels), rtol=1e-6, atol=0)
