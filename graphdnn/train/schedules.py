"""Learning-rate schedules from chapter 11, as ``torch.optim.lr_scheduler.LRScheduler`` subclasses.

``step`` below is the number of ``scheduler.step()`` calls so far (torch's ``last_epoch``): call
``step()`` after every batch for TensorFlow's ``global_step`` behaviour, or after every epoch.
``lr0`` is each param group's learning rate when the scheduler was created.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from graphdnn.errors import InputError

__all__ = [
    "ExponentialDecay",
    "PiecewiseConstant",
    "PowerDecay",
    "performance_scheduling",
]


class _ClosedForm(LRScheduler):
    """A schedule whose rate is a function of the step only (so ``step(epoch)`` and resuming work)."""

    def _rate(self, lr0: float, step: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self._rate(float(lr0), self.last_epoch) for lr0 in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


class PiecewiseConstant(_ClosedForm):
    """``values[i]`` while ``boundaries[i-1] < step <= boundaries[i]`` (TensorFlow's rule; absolute rates).

    ``len(values)`` must be ``len(boundaries) + 1``; the values replace every group's rate.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        boundaries: Sequence[int],
        values: Sequence[float],
        last_epoch: int = -1,
    ) -> None:
        if len(values) != len(boundaries) + 1:
            raise InputError(f"PiecewiseConstant: need len(values) == len(boundaries) + 1 (one rate per interval), got "
                             f"{len(values)} values and {len(boundaries)} boundaries")
        if list(boundaries) != sorted(boundaries):
            raise InputError(f"PiecewiseConstant: boundaries must be increasing steps, got {list(boundaries)}")
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]
        super().__init__(optimizer, last_epoch)

    def _rate(self, lr0: float, step: int) -> float:
        return self.values[bisect.bisect_left(self.boundaries, step)]


class ExponentialDecay(_ClosedForm):
    """``lr0 * decay_rate ** (step / decay_steps)``, the exponent floored with ``staircase``.

    The book: ``lr0 = 0.1``, ``decay_steps = 10_000``, ``decay_rate = 1/10``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        decay_steps: int = 10_000,
        decay_rate: float = 0.1,
        staircase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        if decay_steps <= 0 or decay_rate <= 0:
            raise InputError(f"ExponentialDecay: decay_steps and decay_rate must be > 0, got "
                             f"decay_steps={decay_steps}, decay_rate={decay_rate}")
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        super().__init__(optimizer, last_epoch)

    def _rate(self, lr0: float, step: int) -> float:
        exponent = step / self.decay_steps
        if self.staircase:
            exponent = math.floor(exponent)
        return lr0 * self.decay_rate**exponent


class PowerDecay(_ClosedForm):
    """Power scheduling ``lr0 * (1 + step / decay_steps) ** -power`` (``s`` and ``c`` in the book)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        decay_steps: int = 10_000,
        power: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        if decay_steps <= 0:
            raise InputError(f"PowerDecay: decay_steps must be > 0, got {decay_steps}")
        self.decay_steps = decay_steps
        self.power = power
        super().__init__(optimizer, last_epoch)

    def _rate(self, lr0: float, step: int) -> float:
        return lr0 * (1.0 + step / self.decay_steps) ** -self.power


def performance_scheduling(
    optimizer: torch.optim.Optimizer,
    factor: float = 0.5,
    patience: int = 5,
    mode: Literal["min", "max"] = "min",
    min_lr: float = 0.0,
    threshold: float = 1e-4,
) -> ReduceLROnPlateau:
    """Performance scheduling: multiply the rate by ``factor`` after ``patience`` epochs without progress.

    Returns torch's ``ReduceLROnPlateau``; call ``scheduler.step(metric)`` once per epoch (``fit`` feeds it
    the early-stopping monitor, ``val_loss`` by default).
    """
    return ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience, min_lr=min_lr, threshold=threshold)
