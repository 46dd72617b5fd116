"""The callback protocol of ``fit``: override any hook; returning True from ``on_epoch_end`` stops."""

from __future__ import annotations

from typing import Any

__all__ = ["Callback"]


class Callback:
    """No-op base class. ``fit`` calls each hook that exists on a callback object, so duck typing works;
    a plain function is called as ``fn(epoch, logs)`` at the end of every epoch."""

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        """Before the first epoch; ``logs`` holds "model" and "optimizer"."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
        """Before epoch ``epoch`` (1-based)."""

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        """After each optimizer step; ``step`` counts from 1 over the whole run, ``logs`` has "loss"."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool | None:
        """After validation; ``logs`` is the epoch's record. Return True to stop training."""
        return None

    def on_train_end(self, logs: dict[str, Any]) -> None:
        """After the last epoch (and after early stopping restored the best weights)."""
