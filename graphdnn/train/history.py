"""The per-epoch record that ``fit`` returns."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from graphdnn.errors import UnknownNameError

from .plot import plot_learning_curves

__all__ = ["History"]


@dataclass
class History:
    """``history[key]`` is one value per completed epoch for "loss", each metric, "val_" + each, "lr".

    ``epochs`` holds the 1-based epoch numbers; ``stopped_early`` and ``best_epoch`` (1-based, or None)
    report early stopping.
    """

    epochs: list[int] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    stopped_early: bool = False
    best_epoch: int | None = None

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record one epoch's ``logs``."""
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: object) -> bool:
        return key in self.history

    def keys(self) -> list[str]:
        """The recorded quantities."""
        return list(self.history)

    def to_dict(self) -> dict[str, list[float]]:
        """A plain ``{key: [values]}`` copy, with "epoch" included."""
        return {"epoch": [float(e) for e in self.epochs], **{k: list(v) for k, v in self.history.items()}}

    def plot(self, path: str | os.PathLike[str], keys: Sequence[str] | None = None, title: str | None = None) -> Path:
        """Write the learning curves to a PNG at ``path`` (default: every key but "lr")."""
        chosen = [k for k in self.history if k != "lr"] if keys is None else list(keys)
        missing = [k for k in chosen if k not in self.history]
        if missing:
            raise UnknownNameError(f"History has no {missing}; it has {self.keys()}: pick keys= among those")
        return plot_learning_curves({k: self.history[k] for k in chosen}, path, self.epochs, title=title)
