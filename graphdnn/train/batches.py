"""Turning ``(x, y)`` arrays or data loaders into batches for ``fit``, ``evaluate`` and ``predict``."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from graphdnn.errors import ArgumentTypeError, InputError

__all__ = [
    "ArrayLike",
    "DataSource",
    "TensorBatches",
    "as_tensor",
    "make_batches",
    "model_device",
    "resolve_output",
    "select_output",
    "split_batch",
]

ArrayLike = Tensor | np.ndarray
DataSource = Iterable[Any] | tuple[ArrayLike, ArrayLike]


def model_device(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the model's first parameter or buffer and its first floating dtype (else CPU, float32)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    first = next(tensors, None)
    device = first.device if first is not None else torch.device("cpu")
    floating = next((t.dtype for t in itertools.chain([first] if first is not None else [], tensors)
                     if t.is_floating_point()), torch.float32)
    return device, floating


def as_tensor(value: ArrayLike, float_dtype: torch.dtype | None = None) -> Tensor:
    """``value`` as a tensor; floating arrays are cast to ``float_dtype`` when given."""
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if float_dtype is not None and tensor.is_floating_point() and tensor.dtype != float_dtype:
        tensor = tensor.to(float_dtype)
    return tensor


class TensorBatches:
    """Mini-batches of in-memory ``x`` (and optional ``y``); reshuffled on every pass when ``shuffle``.

    A shuffled pass draws ``torch.randperm(len(x), generator=generator)`` and yields the samples in that
    order: it gathers the whole pass once into contiguous tensors (up to ``gather_limit`` bytes, else one
    ``index_select`` per batch) and yields slices of them, so a batch costs no per-sample indexing.
    """

    gather_limit = 1 << 28

    def __init__(
        self,
        x: Tensor,
        y: Tensor | None,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if batch_size <= 0:
            raise InputError(f"batch_size must be > 0, got {batch_size}")
        if y is not None and len(x) != len(y):
            raise InputError(f"x has {len(x)} samples but y has {len(y)}; pass one label per sample")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.generator = shuffle, generator

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        n, size = len(self.x), self.batch_size
        columns = [self.x] if self.y is None else [self.x, self.y]
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            if sum(c.numel() * c.element_size() for c in columns) <= self.gather_limit:
                columns = [c.index_select(0, order.to(c.device)) for c in columns]
            else:
                for start in range(0, n, size):
                    index = order[start : start + size]
                    batch = [c.index_select(0, index.to(c.device)) for c in columns]
                    yield batch[0], (batch[1] if len(batch) > 1 else None)
                return
        for start in range(0, n, size):
            yield columns[0][start : start + size], (columns[1][start : start + size] if len(columns) > 1 else None)


def make_batches(
    x: ArrayLike | None,
    y: ArrayLike | None,
    data: DataSource | None,
    *,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    float_dtype: torch.dtype | None,
    what: str,
) -> Iterable[Any]:
    """Batches from exactly one of ``x``/``y`` arrays or ``data``: an ``(x, y)`` pair, a dataset holding two
    aligned tensors (``TensorDataset``, a frozen-layer cache of one input and the labels) batched like arrays,
    or any iterable of batches such as a ``DataLoader``, used as is."""
    if data is not None and x is not None:
        raise InputError(f"{what}: pass either x/y or data, not both")
    if data is None and x is None:
        raise InputError(f"{what}: no data (pass x and y, or data=)")
    tensors = getattr(data, "tensors", None)  # a TensorDataset or a cached dataset of (inputs, labels)
    if isinstance(data, torch.utils.data.Dataset) and isinstance(tensors, (list, tuple)) and len(tensors) == 2:
        x, y = tensors
    elif isinstance(data, torch.utils.data.Dataset) and isinstance(tensors, (list, tuple)) and what != "predict":
        names = getattr(data, "names", None)
        held = f" ({', '.join(names)})" if names else ""
        if len(tensors) == 1:
            raise InputError(f"{what}: the dataset holds no labels, only inputs{held}; cache the labels with the "
                             "inputs (cache_frozen(model, (X, y))) or pass y")
        raise InputError(f"{what}: the dataset holds {len(tensors)} tensors{held}; {what} feeds a model one input "
                         "and scores it against labels: pass data=(x, y)")
    elif isinstance(data, tuple) and len(data) == 2:
        x, y = data
    elif data is not None:
        return data
    assert x is not None
    xt = as_tensor(x, float_dtype)
    yt = None if y is None else as_tensor(y)
    return TensorBatches(xt, yt, batch_size, shuffle, generator)


def split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """``(x, y)`` from a batch that is a tensor or a sequence ``(x, y[, ...])``."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Sequence) and 1 <= len(batch) <= 3:
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise ArgumentTypeError(f"a batch must be a tensor or an (x, y) pair, got {type(batch).__name__}")


def resolve_output(model: nn.Module, output: int | str | None) -> int | str | None:
    """Turn an output *name* into its position when the model lists ``output_names`` (compiled graphs)."""
    names = getattr(model, "output_names", None)
    if isinstance(output, str) and isinstance(names, Sequence) and names:
        for candidate in (output, output + ":0"):
            if candidate in names:
                return list(names).index(candidate)
        from graphdnn.suggest import did_you_mean

        raise InputError(f"output {output!r} is not among the model's outputs {list(names)}"
                         f"{did_you_mean(output, names)}")
    return output


def select_output(out: Any, output: int | str | None) -> Tensor:
    """The tensor to score from a model's return value: a tensor, or one element of a sequence
    (``output`` index, default 0) or of a mapping (``output`` key; optional if it has one entry)."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        if output is None:
            if len(out) != 1:
                raise InputError(f"the model returned outputs {list(out)}; choose one with output=")
            return next(iter(out.values()))
        return out[output]
    if isinstance(out, Sequence):
        if isinstance(output, str):
            raise InputError(f"the model returned {len(out)} unnamed outputs; select one by index, not {output!r}")
        return out[0 if output is None else output]
    raise ArgumentTypeError(f"cannot score a model output of type {type(out).__name__}")
