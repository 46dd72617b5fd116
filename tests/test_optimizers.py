"""Optimizers vs independent numpy implementations of the textbook update rules (first 3 steps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphdnn.train import FTRL, ExponentialDecay, make_optimizer, trainable

# A fixed least-squares problem: loss = 0.5 * mean_i ||x_i W + b - y_i||^2.
X = np.array([[1.0, -2.0, 0.5], [0.3, 0.8, -1.5], [-1.2, 0.4, 2.0], [0.7, -0.1, 0.9]])
Y = np.array([[1.0, 0.0], [-0.5, 2.0], [0.25, -1.0], [1.5, 0.5]])
W0 = np.array([[0.2, -0.4], [0.6, 0.1], [-0.3, 0.5]])
B0 = np.array([0.05, -0.1])
LR = 0.05
STEPS = 3


def numpy_grads(w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    residual = X @ w + b - Y
    return X.T @ residual / len(X), residual.sum(axis=0) / len(X)


def run_torch(name: str, steps: int = STEPS, **kw: object) -> list[np.ndarray]:
    w = torch.nn.Parameter(torch.tensor(W0))
    b = torch.nn.Parameter(torch.tensor(B0))
    opt = make_optimizer(name, [w, b], LR, **kw)
    x, y = torch.tensor(X), torch.tensor(Y)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((x @ w + b - y) ** 2).sum(dim=1).mean()
        loss.backward()
        opt.step()
    return [w.detach().numpy().copy(), b.detach().numpy().copy()]


def run_numpy(update, steps: int = STEPS) -> list[np.ndarray]:
    """``update(t, params, grads, state)`` mutates params in place; t counts from 1."""
    params = [W0.copy(), B0.copy()]
    states: list[dict] = [{}, {}]
    for t in range(1, steps + 1):
        grads = numpy_grads(*params)
        for p, g, s in zip(params, grads, states):
            update(t, p, g, s)
    return params


def sgd(t, p, g, s):
    p -= LR * g


def momentum(t, p, g, s, mu=0.9):
    # Polyak momentum as torch writes it: v = mu * v + g ; w -= lr * v  (v starts at 0, so v1 = g).
    s["v"] = mu * s.get("v", 0.0) + g
    p -= LR * s["v"]


def nesterov(t, p, g, s, mu=0.9):
    # torch's (and TF's ApplyMomentum use_nesterov) formulation, Sutskever et al. rewritten on the
    # look-ahead point: v = mu * v + g ; w -= lr * (g + mu * v).
    s["v"] = mu * s.get("v", 0.0) + g
    p -= LR * (g + mu * s["v"])


def adagrad(t, p, g, s, eps=1e-10):
    # Duchi et al.: s += g^2 ; w -= lr * g / (sqrt(s) + eps)  (torch: accumulator starts at 0).
    s["s"] = s.get("s", 0.0) + g * g
    p -= LR * g / (np.sqrt(s["s"]) + eps)


def rmsprop(t, p, g, s, rho=0.99, eps=1e-8):
    # Hinton's RMSProp: s = rho * s + (1 - rho) * g^2 ; w -= lr * g / (sqrt(s) + eps).
    s["s"] = rho * s.get("s", 0.0) + (1 - rho) * g * g
    p -= LR * g / (np.sqrt(s["s"]) + eps)


def adam(t, p, g, s, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    # Kingma & Ba with bias correction; AdamW (Loshchilov & Hutter) first decays w by lr * wd.
    if weight_decay:
        p *= 1 - LR * weight_decay
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    m_hat = s["m"] / (1 - b1**t)
    v_hat = s["v"] / (1 - b2**t)
    p -= LR * m_hat / (np.sqrt(v_hat) + eps)


def ftrl_reference(lr=LR, power=-0.5, n0=0.1, l1=0.0, l2=0.0, shrink=0.0):
    """FTRL-Proximal, McMahan et al. (2013) Algorithm 1, one coordinate at a time, with TF's parameters:
    lambda1 = l1, lambda2 = 2 * l2, per-coordinate rate alpha / n**-power, n starting at n0, and TF's
    shrinkage-type L2 added to the gradient of the linear term only."""

    def update(t, p, g, s):
        flat_p, flat_g = p.reshape(-1), g.reshape(-1)
        z = s.setdefault("z", [0.0] * flat_p.size)
        n = s.setdefault("n", [n0] * flat_p.size)
        for i in range(flat_p.size):
            gi = float(flat_g[i])
            g_lin = gi + 2.0 * shrink * float(flat_p[i])
            n_new = n[i] + gi * gi
            sigma = (n_new ** (-power) - n[i] ** (-power)) / lr
            z[i] += g_lin - sigma * float(flat_p[i])
            if abs(z[i]) <= l1:
                flat_p[i] = 0.0
            else:
                flat_p[i] = -(z[i] - math.copysign(l1, z[i])) / (n_new ** (-power) / lr + 2.0 * l2)
            n[i] = n_new

    return update


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        ("sgd", {}, sgd),
        ("momentum", {}, momentum),
        ("nesterov", {}, nesterov),
        ("adagrad", {}, adagrad),
        ("rmsprop", {}, rmsprop),
        ("adam", {}, adam),
        ("adamw", {"weight_decay": 0.1}, lambda t, p, g, s: adam(t, p, g, s, weight_decay=0.1)),
        ("ftrl", {}, ftrl_reference()),
    ],
)
def test_first_three_steps_match_numpy(name, kwargs, reference):
    got = run_torch(name, **kwargs)
    want = run_numpy(reference)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    # the parameters really moved
    assert not np.allclose(got[0], W0)


def test_momentum_override_and_nesterov_flag():
    p = torch.nn.Parameter(torch.zeros(2))
    assert make_optimizer("momentum", [p], 0.1).param_groups[0]["momentum"] == 0.9
    opt = make_optimizer("nesterov", [p], 0.1, momentum=0.95)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.95
    assert make_optimizer("Adam", [p]).param_groups[0]["lr"] == 0.001  # default rate, any case


@pytest.mark.parametrize(
    "config",
    [
        {"l1_regularization_strength": 0.05, "l2_regularization_strength": 0.01},
        {"l2_shrinkage_regularization_strength": 0.1, "l1_regularization_strength": 0.02},
        {"learning_rate_power": -0.3, "initial_accumulator_value": 0.5},
        {"learning_rate_power": 0.0, "l2_regularization_strength": 0.2},
    ],
)
def test_ftrl_variants_match_numpy(config):
    got = run_torch("ftrl", **config)
    want = run_numpy(
        ftrl_reference(
            power=config.get("learning_rate_power", -0.5),
            n0=config.get("initial_accumulator_value", 0.1),
            l1=config.get("l1_regularization_strength", 0.0),
            l2=config.get("l2_regularization_strength", 0.0),
            shrink=config.get("l2_shrinkage_regularization_strength", 0.0),
        )
    )
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_ftrl_exact_zeros_where_linear_within_l1():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50, 4, dtype=torch.float64))
    l1 = 0.3
    opt = FTRL([w], learning_rate=0.1, l1_regularization_strength=l1)
    target = torch.randn(50, 4, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
    z = opt.state[w]["linear"]
    small = z.abs() <= l1
    assert 0 < int(small.sum()) < small.numel()  # a mix, so both branches are exercised
    assert torch.all(w.detach()[small] == 0.0)  # exactly zero, not just tiny
    assert torch.all(w.detach()[~small] != 0.0)


def test_ftrl_strong_l1_gives_an_all_zero_model():
    w = torch.nn.Parameter(torch.tensor([0.5, -2.0, 3.0]))
    opt = make_optimizer("ftrl", [w], 0.5, l1_regularization_strength=100.0)
    w.grad = torch.tensor([1.0, -1.0, 0.5])
    opt.step()
    assert torch.count_nonzero(w) == 0


def test_ftrl_works_with_schedules_and_state_dict():
    def train(split: bool) -> torch.Tensor:
        w = torch.nn.Parameter(torch.tensor(W0))
        opt = FTRL([w], learning_rate=0.2, l1_regularization_strength=0.01)
        sched = ExponentialDecay(opt, decay_steps=1, decay_rate=0.5)
        for step in range(4):
            if split and step == 2:
                saved = opt.state_dict()
                opt = FTRL([w], learning_rate=0.2, l1_regularization_strength=0.01)
                opt.load_state_dict(saved)
            opt.zero_grad()
            (w**2).sum().backward()
            opt.step()
            if not split or step < 2:
                sched.step()
            else:
                opt.param_groups[0]["lr"] = 0.2 * 0.5 ** (step + 1)
        return w.detach()

    torch.testing.assert_close(train(False), train(True), rtol=0, atol=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"learning_rate": 0.0},
        {"learning_rate_power": 0.5},
        {"initial_accumulator_value": -1.0},
        {"l1_regularization_strength": -0.1},
        {"l2_regularization_strength": -0.1},
        {"l2_shrinkage_regularization_strength": -0.1},
    ],
)
def test_ftrl_rejects_bad_arguments(bad):
    args = {"learning_rate": 0.1, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        FTRL([torch.nn.Parameter(torch.zeros(1))], **args)


def test_only_trainable_parameters_reach_the_optimizer():
    frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
    live = torch.nn.Parameter(torch.ones(3))
    for name in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "ftrl"):
        opt = make_optimizer(name, [frozen, live], 0.1)
        params = [p for group in opt.param_groups for p in group["params"]]
        assert len(params) == 1 and params[0] is live
    groups = trainable([{"params": [frozen], "lr": 1.0}, {"params": [frozen, live], "lr": 2.0}])
    assert len(groups) == 1 and groups[0]["params"] == [live] and groups[0]["lr"] == 2.0


def test_make_optimizer_errors():
    live = torch.nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        make_optimizer("lbfgs", [live], 0.1)
    with pytest.raises(ValueError, match="requires_grad"):
        make_optimizer("adam", [torch.nn.Parameter(torch.ones(1), requires_grad=False)], 0.1)
