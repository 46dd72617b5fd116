"""Frozen-layer caching: run the frozen bottom of a model once, train the top on the cached values.

``top, data = cache_frozen(model, (X_train, y_train))`` finds the *frontier* (the outputs of the
frozen, data-dependent part that the rest of the model reads), runs that part once in eval mode
under ``torch.no_grad()`` in batches, stores the frontier values (in memory, or in memory-mapped
files above ``memory_limit`` bytes) and returns the top model compiled to take them as inputs::

    cache = graphdnn.cache_frozen(model, (X_train, y_train))      # model(X, y) -> loss
    top, data = cache                                              # top(h3, y) -> loss
    for h3, yb in data.batches(50, shuffle=True): ...
    valid = cache.encode((X_valid, y_valid))                       # the same for validation data

The top model's inputs are the frontier tensors, then the model inputs the top still reads (the
labels), and the cached dataset yields them in that order, followed by any aligned tensors of ``data``
beyond the model's inputs (the labels of a model computing logits, named "labels"), so
``fit(top, data=dataset)`` trains on them. Both models share the graph's variables.
A frozen part with training-time randomness (dropout...) or batch norm in training mode would cache
values that differ from what training sees: that is refused unless ``allow_random`` /
``allow_batch_norm_training`` (freeze a batch-norm layer entirely to run it in inference mode).
"""

from __future__ import annotations

import os
import shutil
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphdnn.atomic import locked_folder
from graphdnn.compiler import CompiledGraph, compile, needed_ops  # noqa: A004
from graphdnn.errors import GraphError
from graphdnn.graph import Graph, Op, Tensor

RANDOM_OPS = frozenset({"Dropout", "AlphaDropout", "GaussianNoise", "GaussianDropout", "RandomNormal", "RandomUniform",
                        "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"})


class CachedDataset(torch.utils.data.Dataset):
    """Aligned tensors (first dimension = samples), named after the top model's inputs."""

    def __init__(self, tensors: Sequence[torch.Tensor], names: Sequence[str], directory: Path | None = None) -> None:
        self.tensors, self.names, self.directory = list(tensors), list(names), directory

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield batches by slicing (in order) or gathering (``shuffle``), much faster than a DataLoader."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for i in range(0, stop, batch_size):
            if order is None:
                yield tuple(t[i:i + batch_size] for t in self.tensors)
            else:
                idx = order[i:i + batch_size]
                yield tuple(t[idx] for t in self.tensors)


class FrozenCache:
    """The result of ``cache_frozen``: ``top``, ``dataset``, ``bottom``, ``frontier``; unpacks as
    ``top, dataset``; ``encode(data)`` caches more data (validation) through the same bottom."""

    def __init__(self, top: CompiledGraph, bottom: CompiledGraph, frontier: list[str], bottom_inputs: list[str],
                 passthrough: list[str], model_inputs: list[str], options: dict[str, Any]) -> None:
        self.top, self.bottom, self.frontier = top, bottom, frontier
        self.bottom_inputs, self.passthrough, self.model_inputs = bottom_inputs, passthrough, model_inputs
        self.options = options
        self.dataset: CachedDataset | None = None

    def __iter__(self) -> Iterator[Any]:
        yield self.top
        yield self.dataset

    def encode(self, data: Any, **overrides: Any) -> CachedDataset:
        """Run the bottom over ``data`` (same layout as the model's inputs) and cache the frontier."""
        return _run(self, data, {**self.options, **overrides})


def _classify(graph: Graph, inputs: list[str], outputs: list[str]) -> tuple[list[str], list[Op]]:
    """Auto frontier: data-dependent tensors computed only from frozen variables and constants."""
    ops = needed_ops(graph, inputs, outputs)
    frozen_refs, data_refs = set(inputs), set(inputs)
    region: list[Op] = []
    for op in ops:
        refs = [op.output(i) for i in range(len(op.outputs))]
        if op.is_variable:
            if op.attrs.get("frozen") or not op.attrs["trainable"]:
                frozen_refs.update(refs)
            continue
        if op.type == "Constant":
            frozen_refs.update(refs)
            continue
        ins = [r for r in op.inputs if r is not None]
        if ins and all(r in frozen_refs for r in ins):
            frozen_refs.update(refs)
            if any(r in data_refs for r in ins):
                data_refs.update(refs)
                region.append(op)
    region_names = {op.name for op in region}
    frontier: list[str] = []
    for op in ops:
        if op.name in region_names or op.is_variable:
            continue
        frontier += [r for r in op.inputs if r in data_refs and r not in inputs and r not in frontier]
    frontier += [r for r in outputs if r in data_refs and r not in inputs and r not in frontier]
    return frontier, region


def _check_region(graph: Graph, ops: list[Op], allow_random: bool, allow_bn: bool) -> None:
    for op in ops:
        if op.is_variable and op.attrs["trainable"] and not op.attrs.get("frozen"):
            raise GraphError(f"the frozen part depends on trainable variable {op.name!r}; freeze it, or choose a "
                             "frontier below it (caching would stop its training)")
    random_ops = [op.name for op in ops if op.type in RANDOM_OPS]
    if random_ops and not allow_random:
        raise GraphError(f"the frozen part holds training-time randomness ({', '.join(random_ops[:5])}): cached "
                         "values would differ from what training sees; give frontier= names below those ops, or "
                         "pass allow_random=True to cache their eval-mode output")
    bn = [op.name for op in ops if op.type == "BatchNormalization" and not op.meta.get("frozen")]
    if bn and not allow_bn:
        raise GraphError(f"the frozen part holds batch norm in training mode ({', '.join(bn[:5])}); freeze the whole "
                         "layer (gamma, beta and moving statistics) so it runs in inference mode, or pass "
                         "allow_batch_norm_training=True to cache its eval-mode output")


def cache_frozen(
    model: Any,
    data: Any,
    *,
    frontier: Sequence[Tensor | str] | None = None,
    inputs: Sequence[Tensor | str] | None = None,
    outputs: Sequence[Tensor | str] | None = None,
    batch_size: int = 1024,
    memory_limit: int = 2**30,
    directory: str | Path | None = None,
    progress: bool = True,
    allow_random: bool = False,
    allow_batch_norm_training: bool = False,
) -> FrozenCache:
    """Cache the frozen bottom of ``model`` (a compiled module, or a Graph with ``inputs`` and
    ``outputs``) over ``data`` (a tensor, a tuple of tensors in the model's input order, a
    ``TensorDataset`` or a ``DataLoader``; tensors after the model's inputs, such as labels, are carried
    into the dataset as they are). ``frontier`` overrides the automatic frontier. Frontier
    values above ``memory_limit`` bytes go to memory-mapped files in a new ``graphdnn-cache-*`` folder
    inside ``directory`` (default: the system's temporary folder, and then removed with the dataset).
    The folder is locked while its dataset lives; folders left by finished or killed programs are
    removed when the next cache is made in the same place."""
    if isinstance(model, Graph):
        graph = model
        if inputs is None or outputs is None:
            raise GraphError("cache_frozen(graph, ...) needs inputs= and outputs= (or pass a compiled module)")
    elif isinstance(getattr(model, "source_graph", None), Graph):
        graph = model.source_graph
        inputs = model.input_names if inputs is None else inputs
        outputs = model.output_names if outputs is None else outputs
    else:
        raise GraphError(f"cache_frozen needs a compiled module or a Graph, not {type(model).__name__}")
    ins = [graph.get_tensor(t).name if not isinstance(t, Tensor) else t.name for t in inputs]
    outs = [graph.get_tensor(t).name if not isinstance(t, Tensor) else t.name for t in outputs]
    if frontier is None:
        front, _ = _classify(graph, ins, outs)
        if not front:
            raise GraphError("nothing to cache: no frozen layer reads the model's inputs (freeze some layers first, "
                             "or pass frontier=[...])")
    else:
        front = [graph.get_tensor(t).name if not isinstance(t, Tensor) else t.name for t in frontier]
    region = needed_ops(graph, ins, front)
    _check_region(graph, region, allow_random, allow_batch_norm_training)
    top_ops = needed_ops(graph, front + ins, outs)
    read = {r for op in top_ops for r in op.inputs}
    passthrough = [i for i in ins if (i in read or i in outs) and i not in front]
    bottom_read = {r for op in region for r in op.inputs}
    bottom_inputs = [i for i in ins if i in bottom_read or i in front]
    top = compile(graph, inputs=front + passthrough, outputs=outs)
    bottom = compile(graph, inputs=bottom_inputs, outputs=front)
    options = {"batch_size": batch_size, "memory_limit": memory_limit, "directory": directory, "progress": progress}
    cache = FrozenCache(top, bottom, front, bottom_inputs, passthrough, ins, options)
    cache.dataset = _run(cache, data, options)
    return cache


# ---------------------------------------------------------------------------------- running
def _tensors(data: Any, n_inputs: int) -> list[torch.Tensor] | None:
    if isinstance(data, (torch.Tensor, np.ndarray)):
        data = (data,)
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    if isinstance(data, (tuple, list)) and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in data):
        tensors = [torch.from_numpy(t) if isinstance(t, np.ndarray) else torch.as_tensor(t) for t in data]
        if len(tensors) < n_inputs or len({len(t) for t in tensors}) != 1:
            raise GraphError(f"data: expected {n_inputs} aligned tensors (one per model input), got shapes "
                             f"{[tuple(t.shape) for t in tensors]}")
        return tensors
    return None


class _Store:
    """Preallocated (memory or memory-mapped) storage for one cached column."""

    def __init__(self, n: int, first: torch.Tensor, disk: Path | None, index: int) -> None:
        shape, dtype = (n, *first.shape[1:]), first.dtype
        if disk is None:
            self.tensor = torch.empty(shape, dtype=dtype)
        else:
            nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * first.element_size())
            mm = np.memmap(disk / f"frontier_{index}.bin", dtype=np.uint8, mode="w+", shape=(nbytes,))
            flat = torch.from_numpy(mm)[: int(np.prod(shape, dtype=np.int64)) * first.element_size()]
            self.tensor = flat.view(dtype).reshape(shape)


def _run(cache: FrozenCache, data: Any, options: dict[str, Any]) -> CachedDataset:
    from graphdnn.train.progress import ProgressBar

    n_in = len(cache.model_inputs)
    tensors = _tensors(data, n_in)
    position = {name: i for i, name in enumerate(cache.model_inputs)}
    bottom = cache.bottom.eval()
    bs = int(options["batch_size"])
    if tensors is not None:
        n = len(tensors[0])
        batches: Any = ((i, [tensors[position[b]][i:i + bs] for b in cache.bottom_inputs]) for i in range(0, n, bs))
        total = -(-n // bs)
        passthrough = [tensors[position[p]] for p in cache.passthrough]
        extra = tensors[n_in:]
    else:  # a DataLoader or any iterable of batches in the model's input order
        n = len(data.dataset) if hasattr(data, "dataset") and hasattr(data.dataset, "__len__") else None
        total = len(data) if hasattr(data, "__len__") else None
        collected: list[list[torch.Tensor]] = [[] for _ in cache.passthrough]
        extras: list[list[torch.Tensor]] = []

        def gen() -> Iterator[tuple[int, list[torch.Tensor]]]:
            start = 0
            for batch in data:
                batch = [torch.as_tensor(b) for b in (batch if isinstance(batch, (tuple, list)) else (batch,))]
                for col, p in zip(collected, cache.passthrough):
                    col.append(batch[position[p]])
                while len(extras) < len(batch) - n_in:
                    extras.append([])
                for col, b in zip(extras, batch[n_in:]):  # labels beyond the model's inputs
                    col.append(b)
                yield start, [batch[position[b]] for b in cache.bottom_inputs]
                start += len(batch[0])

        batches = gen()
    stores: list[_Store] | None = None
    chunks: list[list[torch.Tensor]] = [[] for _ in cache.frontier]
    directory = None
    bar = ProgressBar(total, desc="caching frozen layers", enabled=bool(options["progress"]))
    with torch.no_grad():
        for start, feed in batches:
            out = bottom(*feed)
            out = list(out) if isinstance(out, tuple) else [out]
            if n is not None and stores is None:
                per_sample = sum(o[0].numel() * o.element_size() for o in out) if len(out[0]) else 0
                if n * per_sample > options["memory_limit"]:
                    directory, lock = locked_folder(options["directory"], "graphdnn-cache-")
                stores = [_Store(n, o, directory, i) for i, o in enumerate(out)]
            if stores is not None:
                for s, o in zip(stores, out):
                    s.tensor[start:start + len(o)] = o
            else:
                for c, o in zip(chunks, out):
                    c.append(o)
            bar.update(1)
    bar.close()
    columns = [s.tensor for s in stores] if stores is not None else [torch.cat(c) for c in chunks]
    if tensors is None:
        passthrough = [torch.cat(c) for c in collected]
        extra = [torch.cat(c) for c in extras]
        if n is not None and columns and len(columns[0]) != len(passthrough[0] if passthrough else columns[0]):
            raise GraphError("the DataLoader yielded a different number of samples than its dataset holds")
    extra_names = ["labels" if i == 0 else f"labels_{i}" for i in range(len(extra))]
    dataset = CachedDataset(columns + passthrough + extra, cache.frontier + cache.passthrough + extra_names, directory)
    if directory is not None:  # the folder stays locked while the dataset lives; once free, the next cache removes it
        weakref.finalize(dataset, os.close, lock)
        if options["directory"] is None:
            weakref.finalize(dataset, shutil.rmtree, directory, True)
    return dataset


__all__ = ["RANDOM_OPS", "CachedDataset", "FrozenCache", "cache_frozen"]
