"""Data-parallel training under ``torchrun``: process groups, DDP wrapping, global-batch sharding.

``fit`` uses this module by itself when a process group is initialized with more than one rank::

    torchrun --nproc_per_node 2 train.py      # in train.py:
    with gd.train.distributed.process_group():        # gloo on CPU, NCCL on GPU
        model = gd.compile(graph, ...).to(gd.train.distributed.device())
        gd.train.fit(model, x, y, batch_size=64, seed=0)   # every rank gets the same x, y
        gd.train.distributed.save_on_main(model, "model.safetensors")

Semantics: ``batch_size`` is the *global* batch. Every rank draws the same shuffled order (the seed
is shared) and takes its contiguous share of each global batch (:class:`GlobalBatchSampler`), and
each rank's mean loss is weighted by its share, so DDP's gradient average is exactly the gradient of
the mean loss over the global batch: training equals single-process training on the same global
batches (batch norm excepted: it normalizes with each rank's own batch statistics, as plain DDP does).
``torch.utils.data.DistributedSampler`` is not used for in-memory arrays because it pads the epoch and
strides through it, which changes the batches; it remains the right tool for a ``DataLoader`` passed
as ``data=``, whose batches ``fit`` takes to be per-rank already.

Frozen variables have ``requires_grad=False``, so DDP neither registers nor synchronizes them.
Progress is printed by rank 0 only; epoch logs are reduced over ranks so every rank sees the same
numbers and early stopping / callbacks stop all ranks together. :func:`save_on_main` saves from rank 0
between barriers.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.fx as fx
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from graphdnn.errors import InputError

from .batches import TensorBatches
from .callbacks import Callback

__all__ = [
    "DistributedRun",
    "GlobalBatchSampler",
    "SaveCheckpoint",
    "ShardedTensorBatches",
    "barrier",
    "default_backend",
    "device",
    "init_process_group",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "local_rank",
    "parameters_agree",
    "prepare",
    "process_group",
    "rank",
    "save_on_main",
    "unused_parameters",
    "world_size",
    "wrap",
]


# ------------------------------------------------------------------------------ environment
def launched_by_torchrun() -> bool:
    """True when the torchrun environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) is set."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def is_distributed() -> bool:
    """True inside an initialized process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, and in any single process."""
    return rank() == 0


def local_rank() -> int:
    """The rank on this machine (torchrun's ``LOCAL_RANK``; 0 if unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def default_backend() -> str:
    """``"nccl"`` when CUDA is available (one GPU per local rank), else ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def device() -> torch.device:
    """The device this rank should train on: ``cuda:<LOCAL_RANK>`` under NCCL, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def init_process_group(backend: str | None = None, timeout_s: float = 300.0) -> bool:
    """Join the process group described by the torchrun environment; return True if this call
    created it (False when it already existed or the environment is not torchrun's)."""
    if not dist.is_available() or dist.is_initialized() or not launched_by_torchrun():
        return False
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


@contextlib.contextmanager
def process_group(backend: str | None = None, timeout_s: float = 300.0) -> Iterator[None]:
    """Initialize the process group (if launched by torchrun) for the block and destroy it after;
    outside torchrun the block runs as a single process. A block that ends normally waits for every rank
    first: a rank that tears the group down while a peer still talks to it can abort that peer (gloo:
    "terminate called without an active exception")."""
    created = init_process_group(backend, timeout_s)
    try:
        yield
        if created and dist.is_initialized():
            barrier()
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


_rank, _world_size = rank, world_size


# ------------------------------------------------------------------------------------ DDP
def _stop_gradient(module: fx.GraphModule, node: fx.Node) -> bool:
    if getattr(node.target, "__name__", "") == "stop_gradient":
        return True
    graph, name = getattr(module, "source_graph", None), node.meta.get("graphdnn_name")
    if graph is None or not isinstance(name, str):
        return False
    op_name = name.rsplit(":", 1)[0]
    return op_name in graph and graph.get_operation(op_name).type == "StopGradient"


def unused_parameters(model: nn.Module, output: int | None = None) -> list[str]:
    """Trainable parameters of an fx module that no gradient reaches from its outputs (or from
    output ``output`` alone): not read by the forward, or only behind a stop-gradient. DDP needs
    ``find_unused_parameters=True`` for them. Other modules are assumed to use every parameter."""
    if not isinstance(model, fx.GraphModule):
        return []
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    out = next(n for n in model.graph.nodes if n.op == "output")
    roots: Any = out.args[0]
    if isinstance(roots, (tuple, list)) and isinstance(output, int):
        roots = roots[output]
    stack: list[fx.Node] = []
    fx.node.map_arg(roots, stack.append)
    reached: set[str] = set()
    seen: set[fx.Node] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "get_attr":
            reached.add(str(node.target))
        if _stop_gradient(model, node):
            continue
        stack.extend(node.all_input_nodes)
    return sorted(trainable - reached)


def wrap(model: nn.Module, *, output: int | None = None, find_unused_parameters: bool | None = None,
         **ddp_kwargs: Any) -> DistributedDataParallel:
    """``model`` in ``DistributedDataParallel``. ``find_unused_parameters`` None decides from the
    graph (:func:`unused_parameters`), so the costly search runs only when some parameter needs it.
    On CUDA the model must already be on this rank's device."""
    if find_unused_parameters is None:
        find_unused_parameters = bool(unused_parameters(model, output))
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda" and "device_ids" not in ddp_kwargs:
        ddp_kwargs["device_ids"] = [param.device]
    return DistributedDataParallel(model, find_unused_parameters=find_unused_parameters, **ddp_kwargs)


# ------------------------------------------------------------------------------- batching
class GlobalBatchSampler(Sampler[list[int]]):
    """Index lists of this rank's share of each global batch of ``batch_size`` samples.

    The order is ``torch.randperm(n, generator=generator)`` drawn afresh each pass (as the
    single-process batches draw it) when ``shuffle``, else ``0..n-1``; every rank must get a generator
    in the same state. A global batch is split into ``world_size`` contiguous parts whose sizes differ
    by at most one (``torch.tensor_split``). Usable as a ``DataLoader``'s ``batch_sampler``."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                 rank: int | None = None, world_size: int | None = None) -> None:
        if batch_size <= 0:
            raise InputError(f"GlobalBatchSampler: batch_size must be > 0, got {batch_size}")
        self.n, self.batch_size, self.shuffle, self.generator = n, batch_size, shuffle, generator
        self.rank = _rank() if rank is None else rank
        self.world_size = _world_size() if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise InputError(f"GlobalBatchSampler: rank {self.rank} is not in [0, world_size={self.world_size})")

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for start in range(0, self.n, self.batch_size):
            part = torch.tensor_split(order[start : start + self.batch_size], self.world_size)[self.rank]
            yield part.tolist()


class ShardedTensorBatches:
    """This rank's share of the global batches that a :class:`TensorBatches` would yield."""

    def __init__(self, batches: TensorBatches, rank: int, world_size: int) -> None:
        self.x, self.y = batches.x, batches.y
        self.sampler = GlobalBatchSampler(len(batches.x), batches.batch_size, shuffle=batches.shuffle,
                                          generator=batches.generator, rank=rank, world_size=world_size)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        for part in self.sampler:
            index = torch.as_tensor(part, dtype=torch.long)
            yield self.x[index], (None if self.y is None else self.y[index])


# ------------------------------------------------------------------------------- fit's helper
class DistributedRun:
    """What ``fit`` needs to train one rank: the DDP-wrapped forward, sharding and reductions."""

    def __init__(self, model: nn.Module, output: int | None = None,
                 find_unused_parameters: bool | None = None) -> None:
        self.rank, self.world_size = rank(), world_size()
        self.is_main = self.rank == 0
        if isinstance(model, DistributedDataParallel):
            self.forward_model, self.module = model, model.module
        else:
            self.module = model
            self.forward_model = wrap(model, output=output, find_unused_parameters=find_unused_parameters)
        param = next(self.module.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")

    def shared_seed(self, seed: int | None) -> int:
        """``seed``, or one drawn on rank 0 and broadcast, so every rank shuffles alike."""
        if seed is not None:
            return seed
        value = torch.randint(0, 2**62, (1,), dtype=torch.int64).to(self.device)
        dist.broadcast(value, 0)
        return int(value.item())

    def shard(self, batches: Any) -> Any:
        """In-memory batches become this rank's share; other batch sources are per-rank already."""
        return ShardedTensorBatches(batches, self.rank, self.world_size) if isinstance(batches, TensorBatches) \
            else batches

    def global_count(self, n: int) -> int:
        """The number of samples in this step's global batch."""
        count = torch.tensor([n], dtype=torch.int64, device=self.device)
        dist.all_reduce(count)
        return int(count.item())

    def reduce_sums(self, sums: Mapping[str, Tensor], seen: int, keys: Sequence[str]) -> tuple[dict[str, Tensor], int]:
        """Epoch sums of ``keys`` (0 where a rank has none) and sample counts, added over ranks."""
        zero = torch.zeros((), dtype=torch.float64)
        flat = torch.stack([sums.get(k, zero).to(self.device, torch.float64).reshape(()) for k in keys]
                           + [torch.tensor(float(seen), dtype=torch.float64, device=self.device)])
        dist.all_reduce(flat)
        return {k: flat[i].cpu() for i, k in enumerate(keys)}, int(round(float(flat[-1])))

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any."""
        value = torch.tensor([int(flag)], dtype=torch.int64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


def prepare(model: nn.Module, distributed: bool | None, output: int | str | None,
            find_unused_parameters: bool | None = None) -> DistributedRun | None:
    """A :class:`DistributedRun` when ``fit`` should train data-parallel, else None.

    ``distributed`` None means: when a process group of several ranks is initialized or ``model``
    is already a DDP module; True requires it; False trains this process alone."""
    active = is_distributed()
    if distributed is None:
        distributed = active or isinstance(model, DistributedDataParallel)
    if not distributed:
        if isinstance(model, DistributedDataParallel):
            raise InputError("fit(distributed=False) got a DistributedDataParallel model; pass model.module")
        return None
    if not active:
        if isinstance(model, DistributedDataParallel):
            raise RuntimeError("fit got a DistributedDataParallel model but no process group of several ranks")
        raise RuntimeError("fit(distributed=True) needs an initialized process group of several ranks: launch "
                           "with torchrun and call graphdnn.train.distributed.init_process_group() first")
    return DistributedRun(model, output if isinstance(output, int) else None, find_unused_parameters)


# ----------------------------------------------------------------------------- checkpoints
def save_on_main(obj: Any, path: str | os.PathLike, **save_kwargs: Any) -> Path | None:
    """Save ``obj`` (a graph or compiled module, or the module inside a DDP wrapper) from rank 0
    with :func:`graphdnn.checkpoint.save`, between barriers: no rank runs ahead of a save, and
    every rank may read the file once this returns. Returns the path written (None off rank 0)."""
    from graphdnn.checkpoint import save

    if isinstance(obj, DistributedDataParallel):
        obj = obj.module
    barrier()
    written = save(obj, path, **save_kwargs) if is_main_process() else None
    barrier()
    return written


class SaveCheckpoint(Callback):
    """Save the model every ``every`` epochs (and at the end of training) from rank 0.

    ``path`` may hold ``{epoch}``; ``save_kwargs`` go to :func:`graphdnn.checkpoint.save`
    (``max_shard_size=`` for shards). Works in a single process as well."""

    def __init__(self, path: str | os.PathLike, every: int = 1, **save_kwargs: Any) -> None:
        if every <= 0:
            raise InputError(f"SaveCheckpoint: every must be > 0 (epochs), got {every}")
        self.path, self.every, self.save_kwargs = str(path), every, save_kwargs
        self.model: nn.Module | None = None
        self.saved: list[Path] = []
        self._epoch = self._last_epoch = 0

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.model = logs["model"]

    def _save(self, epoch: int) -> None:
        assert self.model is not None
        written = save_on_main(self.model, self.path.format(epoch=epoch), **self.save_kwargs)
        if written is not None:
            self.saved.append(written)
        self._last_epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        if epoch % self.every == 0:
            self._save(epoch)
        self._epoch = epoch

    def on_train_end(self, logs: dict[str, Any]) -> None:
        if self._epoch and self._epoch != self._last_epoch:
            self._save(self._epoch)


def parameters_agree(model: nn.Module) -> bool:
    """True when every parameter and buffer of ``model`` is bitwise equal on all ranks."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    tensors = [t.detach().reshape(-1).to(torch.float64) for t in (*model.parameters(), *model.buffers())]
    if not is_distributed() or not tensors:
        return True
    mine = torch.cat(tensors)
    low, high = mine.clone(), mine.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))
