"""Early stopping on a monitored metric, keeping (and finally restoring) the best weights."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from graphdnn.errors import InputError

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Stop after ``patience`` epochs in a row without a gain larger than ``min_delta`` on ``monitor``.

    ``mode="auto"`` maximizes monitors whose name contains "acc" and minimizes the rest. Each improvement
    stores a CPU copy of ``model.state_dict()``; :meth:`restore` loads it back (``fit`` does so at the end
    when ``restore_best`` is true).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 10,
        mode: Literal["auto", "min", "max"] = "auto",
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        if patience < 0 or min_delta < 0:
            raise InputError(f"EarlyStopping: patience and min_delta must be >= 0, got patience={patience}, "
                             f"min_delta={min_delta}")
        if mode not in ("auto", "min", "max"):
            raise InputError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = patience
        self.mode: Literal["min", "max"] = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.best_state: dict[str, Tensor] | None = None
        self.wait = 0
        self.seen = 0
        self.should_stop = False

    def is_improvement(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta``."""
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, model: nn.Module | None = None, epoch: int | None = None) -> bool:
        """Record one epoch's ``value``; snapshot ``model`` if it improved. Return whether to stop now."""
        value = float(value)
        epoch = self.seen if epoch is None else epoch
        self.seen += 1
        if self.is_improvement(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if model is not None:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.should_stop = False
        else:
            self.wait += 1
            self.should_stop = self.wait >= self.patience
        return self.should_stop

    def restore(self, model: nn.Module) -> bool:
        """Load the best snapshot into ``model``; return False when there is none."""
        if self.best_state is None:
            return False
        with torch.no_grad():
            model.load_state_dict(self.best_state)
        return True
