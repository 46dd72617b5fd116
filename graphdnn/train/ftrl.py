"""FTRL-Proximal (McMahan et al., 2013) with TensorFlow's parameters and update rule.

Per coordinate, with ``g`` the gradient, ``n`` the accumulator and ``z`` the linear term (TensorFlow's
``ApplyFtrlV2`` kernel; ``ApplyFtrl`` is the case ``l2_shrinkage == 0``)::

    g_shrunk = g + 2 * l2_shrinkage * w
    n_new    = n + g * g                       # the raw gradient, not g_shrunk
    z       += g_shrunk - (n_new**-p - n**-p) / lr * w
    w        = (sign(z) * l1 - z) / (n_new**-p / lr + 2 * l2)   if |z| > l1   else 0   (exactly)
    n        = n_new

where ``p = learning_rate_power`` (-0.5 gives the paper's per-coordinate ``lr / sqrt(n)``). ``n`` starts at
``initial_accumulator_value`` and ``z`` at 0. In the paper's notation ``lambda1 = l1``, ``lambda2 = 2 * l2``
and ``beta`` is replaced by the initial accumulator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from graphdnn.errors import InputError

__all__ = ["FTRL"]


class FTRL(torch.optim.Optimizer):
    """FTRL-Proximal; with ``l1_regularization_strength > 0`` it yields exact zeros (sparse models).

    The learning rate lives in each param group's ``"lr"`` so torch's LR schedulers work with it.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        learning_rate: float = 0.001,
        learning_rate_power: float = -0.5,
        initial_accumulator_value: float = 0.1,
        l1_regularization_strength: float = 0.0,
        l2_regularization_strength: float = 0.0,
        l2_shrinkage_regularization_strength: float = 0.0,
    ) -> None:
        checks = {
            "learning_rate": (learning_rate, learning_rate > 0.0, "must be > 0"),
            "learning_rate_power": (learning_rate_power, learning_rate_power <= 0.0, "must be <= 0"),
            "initial_accumulator_value": (
                initial_accumulator_value,
                initial_accumulator_value >= 0.0,
                "must be >= 0",
            ),
            "l1_regularization_strength": (
                l1_regularization_strength,
                l1_regularization_strength >= 0.0,
                "must be >= 0",
            ),
            "l2_regularization_strength": (
                l2_regularization_strength,
                l2_regularization_strength >= 0.0,
                "must be >= 0",
            ),
            "l2_shrinkage_regularization_strength": (
                l2_shrinkage_regularization_strength,
                l2_shrinkage_regularization_strength >= 0.0,
                "must be >= 0",
            ),
        }
        for name, (value, ok, rule) in checks.items():
            if not ok:
                raise InputError(f"FTRL: {name} {rule}, got {value}")
        defaults = {
            "lr": learning_rate,
            "learning_rate_power": learning_rate_power,
            "initial_accumulator_value": initial_accumulator_value,
            "l1_regularization_strength": l1_regularization_strength,
            "l2_regularization_strength": l2_regularization_strength,
            "l2_shrinkage_regularization_strength": l2_shrinkage_regularization_strength,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Apply one FTRL-Proximal update to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = float(group["lr"])
            power = float(group["learning_rate_power"])
            l1 = float(group["l1_regularization_strength"])
            l2 = float(group["l2_regularization_strength"])
            shrinkage = float(group["l2_shrinkage_regularization_strength"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("FTRL does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["accumulator"] = torch.full_like(
                        p, group["initial_accumulator_value"], memory_format=torch.preserve_format
                    )
                    state["linear"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                _ftrl_update(p, p.grad, state["accumulator"], state["linear"], lr, power, l1, l2, shrinkage)
        return loss


def _ftrl_update(
    w: Tensor, g: Tensor, n: Tensor, z: Tensor, lr: float, power: float, l1: float, l2: float, shrink: float
) -> None:
    """In-place update of weights ``w``, accumulator ``n`` and linear term ``z`` (see the module doc)."""
    g_shrunk = g + (2.0 * shrink) * w if shrink > 0.0 else g
    n_new = n + g * g
    if power == -0.5:
        root_new, root_old = n_new.sqrt(), n.sqrt()
    else:
        root_new, root_old = n_new.pow(-power), n.pow(-power)
    z.add_(g_shrunk - (root_new - root_old) / lr * w)
    quadratic = root_new / lr + 2.0 * l2
    candidate = (torch.sign(z) * l1 - z) / quadratic
    w.copy_(torch.where(z.abs() > l1, candidate, torch.zeros_like(candidate)))
    n.copy_(n_new)
