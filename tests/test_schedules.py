"""Learning-rate schedules vs the textbook formulas at steps 0, 1, 10 and 10,000."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphdnn.train import ExponentialDecay, PiecewiseConstant, PowerDecay, performance_scheduling

CHECKPOINTS = (0, 1, 10, 10_000)


def optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def rates_at(scheduler, steps=CHECKPOINTS) -> dict[int, float]:
    """Step the scheduler like a training loop and read the optimizer's rate at the given steps."""
    scheduler.optimizer.step()  # no gradients: a no-op, but keeps torch's call-order check quiet
    seen, step = {}, 0
    for target in sorted(steps):
        while step < target:
            scheduler.step()
            step += 1
        seen[target] = scheduler.optimizer.param_groups[0]["lr"]
    return seen


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_book_settings(staircase):
    # tf.train.exponential_decay(0.1, global_step, 10000, 1/10): lr0 * rate ** (step / decay_steps)
    got = rates_at(ExponentialDecay(optimizer(0.1), decay_steps=10_000, decay_rate=0.1, staircase=staircase))
    for step in CHECKPOINTS:
        exponent = np.floor(step / 10_000) if staircase else step / 10_000
        assert got[step] == pytest.approx(0.1 * 0.1**exponent, rel=1e-12)
    assert got[10_000] == pytest.approx(0.01)


def test_exponential_decay_staircase_is_flat_between_boundaries():
    got = rates_at(ExponentialDecay(optimizer(1.0), decay_steps=4, decay_rate=0.5, staircase=True), range(9))
    assert [got[s] for s in range(9)] == [1.0] * 4 + [0.5] * 4 + [0.25]


@pytest.mark.parametrize(("s", "c"), [(10, 1.0), (1000, 0.5)])
def test_power_decay(s, c):
    got = rates_at(PowerDecay(optimizer(0.01), decay_steps=s, power=c))
    for step in CHECKPOINTS:
        assert got[step] == pytest.approx(0.01 * (1 + step / s) ** -c, rel=1e-12)


def test_piecewise_constant_uses_tensorflow_boundaries():
    # TF: values[0] while step <= boundaries[0], values[1] while boundaries[0] < step <= boundaries[1], ...
    sched = PiecewiseConstant(optimizer(0.5), boundaries=[5, 1000], values=[1.0, 0.5, 0.1])
    got = rates_at(sched, (*CHECKPOINTS, 5, 6, 1000, 1001))
    want = {0: 1.0, 1: 1.0, 5: 1.0, 6: 0.5, 10: 0.5, 1000: 0.5, 1001: 0.1, 10_000: 0.1}
    assert got == want


def test_piecewise_constant_validates():
    with pytest.raises(ValueError, match="len"):
        PiecewiseConstant(optimizer(), boundaries=[1, 2], values=[1.0])
    with pytest.raises(ValueError, match="increasing"):
        PiecewiseConstant(optimizer(), boundaries=[5, 2], values=[1.0, 2.0, 3.0])


def test_schedules_scale_every_param_group_from_its_own_rate():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}])
    sched = ExponentialDecay(opt, decay_steps=10, decay_rate=0.5)
    opt.step()
    for _ in range(10):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.5])
    assert sched.get_last_lr() == pytest.approx([0.05, 0.5])


def test_schedules_resume_from_state_dict():
    sched = PowerDecay(optimizer(0.1), decay_steps=5, power=2.0)
    rates_at(sched, (7,))
    state = sched.state_dict()
    opt2 = optimizer(0.1)
    resumed = PowerDecay(opt2, decay_steps=5, power=2.0)
    resumed.load_state_dict(state)
    opt2.step()
    resumed.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1 * (1 + 8 / 5) ** -2.0)


def test_performance_scheduling_reduces_on_plateau():
    opt = optimizer(1.0)
    sched = performance_scheduling(opt, factor=0.5, patience=2)
    rates = []
    for metric in [1.0, 0.8, 0.8, 0.8, 0.8, 0.7, 0.9, 0.9, 0.9]:
        opt.step()
        sched.step(metric)
        rates.append(opt.param_groups[0]["lr"])
    # torch reduces once the number of bad epochs exceeds patience (here after the 3rd without progress)
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]


def test_validation_of_decay_arguments():
    with pytest.raises(ValueError):
        ExponentialDecay(optimizer(), decay_steps=0)
    with pytest.raises(ValueError):
        PowerDecay(optimizer(), decay_steps=-1)
    assert math.isclose(rates_at(PowerDecay(optimizer(0.3)), (0,))[0], 0.3)
