"""The callback protocol of ``fit``: override any hook; returning True from ``on_epoch_end`` stops.
Two ready-made loggers: :class:`CSVLogger` (one row per epoch) and :class:`TensorBoard` (scalars through
``torch.utils.tensorboard``, which needs the ``tensorboard`` package)."""

from __future__ import annotations

import csv
import os
from typing import Any

__all__ = ["CSVLogger", "Callback", "TensorBoard"]


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


class CSVLogger(Callback):
    """Write each epoch's logs (loss, metrics, validation scores, lr) as a CSV row to ``path`` (Keras'
    ``CSVLogger``); ``append`` adds to an existing file instead of replacing it. The file is flushed after
    every epoch, so it can be read while training runs."""

    def __init__(self, path: str | os.PathLike[str], separator: str = ",", append: bool = False) -> None:
        self.path, self.separator, self.append = os.fspath(path), separator, append
        self._file: Any = None
        self._writer: Any = None
        self._keys: list[str] = []

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a" if self.append else "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer, self._keys = None, []
        if exists:
            with open(self.path, newline="", encoding="utf-8") as f:
                self._keys = next(csv.reader(f, delimiter=self.separator), [])[1:]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if self._file is None:
            self.on_train_begin({})
        if self._writer is None:
            self._keys = self._keys or sorted(logs)
            self._writer = csv.DictWriter(self._file, ["epoch", *self._keys], delimiter=self.separator,
                                          extrasaction="ignore")
            if self._file.tell() == 0:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: logs.get(k, "") for k in self._keys}})
        self._file.flush()

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None


class TensorBoard(Callback):
    """Log each epoch's values as TensorBoard scalars under ``log_dir`` (``torch.utils.tensorboard``), and
    the training loss every ``batch_interval`` steps when given. Needs the ``tensorboard`` package."""

    def __init__(self, log_dir: str | os.PathLike[str] = "runs", batch_interval: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            from graphdnn.errors import GraphDNNError

            raise GraphDNNError("TensorBoard logging needs the tensorboard package, which graphdnn does not install: "
                                f"pip install tensorboard ({exc})") from None
        self.writer = SummaryWriter(log_dir=os.fspath(log_dir))
        self.batch_interval = batch_interval

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
        if self.batch_interval and step % self.batch_interval == 0:
            self.writer.add_scalar("batch/loss", float(logs["loss"]), step)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        for key, value in logs.items():
            self.writer.add_scalar(f"epoch/{key}", float(value), epoch)
        self.writer.flush()

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self.writer.close()
