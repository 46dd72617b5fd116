"""``fit``, ``evaluate`` and ``predict``: a Keras-like loop over any ``torch.nn.Module``.

Hooks used when the model has them (compiled graphdnn graphs do): ``model.regularization_loss()`` is added
to the loss at every step, and ``model.apply_constraints()`` (max-norm) runs after every optimizer step.
Training steps run in ``model.train()`` mode, validation and prediction in ``model.eval()``; each function
puts the model back in the mode it found it in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from .batches import (
    ArrayLike,
    DataSource,
    make_batches,
    model_device,
    resolve_output,
    select_output,
    split_batch,
)
from .callbacks import Callback
from .clipping import clip_gradients_by_global_norm, clip_gradients_by_value
from .distributed import prepare as _prepare_distributed
from .early_stopping import EarlyStopping
from .history import History
from .losses import LossFn, MetricFn, get_loss, get_metric
from .optimizers import make_optimizer
from .progress import ProgressBar

__all__ = ["evaluate", "fit", "predict"]

Schedule = LRScheduler | ReduceLROnPlateau | Callable[[Optimizer], Any]


@contextlib.contextmanager
def _kept_mode(model: nn.Module) -> Any:
    was_training = model.training
    try:
        yield
    finally:
        model.train(was_training)


def _regularization(model: nn.Module, extra: Sequence[Callable[[nn.Module], Tensor]]) -> Tensor | None:
    terms = []
    hook = getattr(model, "regularization_loss", None)
    if callable(hook):
        value = hook()
        if value is not None:
            terms.append(value)
    terms.extend(fn(model) for fn in extra)
    if not terms:
        return None
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total if isinstance(total, Tensor) else torch.as_tensor(total)


def _apply_constraints(model: nn.Module, extra: Sequence[Callable[[nn.Module], object]]) -> None:
    hook = getattr(model, "apply_constraints", None)
    with torch.no_grad():
        if callable(hook):
            hook()
        for fn in extra:
            fn(model)


def _make_early_stopping(
    spec: EarlyStopping | int | Mapping[str, Any] | None, default_monitor: str
) -> EarlyStopping | None:
    if spec is None or isinstance(spec, EarlyStopping):
        return spec
    if isinstance(spec, bool):
        raise TypeError("early_stopping takes a patience (int), a dict of EarlyStopping arguments or one")
    if isinstance(spec, int):
        return EarlyStopping(monitor=default_monitor, patience=spec)
    return EarlyStopping(**{"monitor": default_monitor, **dict(spec)})


def _make_schedule(schedule: Schedule | None, optimizer: Optimizer) -> LRScheduler | ReduceLROnPlateau | None:
    if schedule is None or isinstance(schedule, (LRScheduler, ReduceLROnPlateau)):
        if schedule is not None and schedule.optimizer is not optimizer:
            raise ValueError("the schedule was built for another optimizer than the one fit uses")
        return schedule
    if callable(schedule):
        return schedule(optimizer)
    raise TypeError(f"schedule must be an LR scheduler or a function optimizer -> scheduler: {schedule!r}")


def _rng_scope(seed: int | None, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Seed torch's global RNG for the run (dropout, augmentation) without leaking the change outside."""
    if seed is None:
        return contextlib.nullcontext()
    devices = [device.index or 0] if device.type == "cuda" else []
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=devices))
    torch.manual_seed(seed)
    return stack


def fit(
    model: nn.Module,
    x: ArrayLike | None = None,
    y: ArrayLike | None = None,
    *,
    data: DataSource | None = None,
    loss: str | LossFn = "sparse_softmax_cross_entropy",
    optimizer: str | Optimizer = "adam",
    lr: float | None = None,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    schedule: Schedule | None = None,
    schedule_interval: Literal["batch", "epoch"] = "batch",
    epochs: int = 10,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_data: DataSource | None = None,
    metrics: Sequence[str | MetricFn] = ("accuracy",),
    callbacks: Sequence[Callback | Callable[[int, dict[str, float]], Any]] = (),
    clip_value: float | None = None,
    clip_norm: float | None = None,
    early_stopping: EarlyStopping | int | Mapping[str, Any] | None = None,
    augment: Callable[[Tensor], Tensor] | None = None,
    regularizers: Sequence[Callable[[nn.Module], Tensor]] = (),
    constraints: Sequence[Callable[[nn.Module], object]] = (),
    output: int | str | None = None,
    progress: bool = True,
    seed: int | None = None,
    distributed: bool | None = None,
    find_unused_parameters: bool | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return the per-epoch :class:`History`.

    Data: ``x``/``y`` arrays (numpy or torch; floating ``x`` is cast to the model's dtype), or ``data=``, an
    ``(x, y)`` pair or any iterable of ``(x, y)`` batches (a ``DataLoader``). ``validation_data`` likewise.
    ``optimizer`` is a name for :func:`make_optimizer` (with ``lr`` and ``optimizer_kwargs``) or an
    instance. ``schedule`` is an LR scheduler or a function ``optimizer -> scheduler``, stepped after every
    batch or every epoch (``schedule_interval``); a ``ReduceLROnPlateau`` is stepped every epoch with the
    monitored value (the early-stopping monitor, else "val_loss" or "loss"). Per step: ``augment`` the
    training inputs, forward, loss + ``model.regularization_loss()`` + each of ``regularizers``, backward,
    ``clip_value`` then ``clip_norm``, optimizer step, ``model.apply_constraints()`` and ``constraints``.

    ``early_stopping`` is a patience, a dict of :class:`EarlyStopping` arguments or one; the best weights
    are restored at the end. ``callbacks`` are :class:`Callback`-like objects (any subset of its hooks) or
    functions ``fn(epoch, logs)``; returning True at the end of an epoch stops training. ``output`` picks
    the scored output of a model that returns several (an index, a mapping key, or one of the model's
    ``output_names``). ``seed`` makes the run reproducible (shuffling, dropout, augmentation drawn
    from the global RNG) without changing the global RNG state outside the call.

    Data-parallel training (see :mod:`graphdnn.train.distributed`): ``distributed`` None trains
    data-parallel when a process group of several ranks is initialized (launch with ``torchrun``) or
    ``model`` is a ``DistributedDataParallel``; True requires that, False trains this process alone.
    Then ``batch_size`` is the global batch: each rank takes its share of ``x``/``y`` (a ``data=``
    iterable is taken to be per-rank already), the result equals single-process training on the same
    global batches, logs are reduced over ranks, only rank 0 shows progress, and the seed (drawn on
    rank 0 if None) is shared. ``find_unused_parameters`` None lets DDP search only when the graph
    has trainable parameters that no gradient reaches.

    Recorded per epoch: "loss" (the mean training objective, regularization included), each metric on the
    training batches, "val_loss" and "val_<metric>" (data loss only, eval mode), and "lr", the first param
    group's learning rate at the start of the epoch.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if schedule_interval not in ("batch", "epoch"):
        raise ValueError(f"schedule_interval must be 'batch' or 'epoch', got {schedule_interval!r}")
    run = _prepare_distributed(model, distributed, resolve_output(getattr(model, "module", model), output),
                               find_unused_parameters)
    forward = model
    if run is not None:
        model, forward = run.module, run.forward_model
        seed = run.shared_seed(seed)
        progress = progress and run.is_main
    device, float_dtype = model_device(model)
    loss_fn = get_loss(loss)
    metric_fns = [get_metric(m) for m in metrics]
    output = resolve_output(model, output)

    if isinstance(optimizer, Optimizer):
        if lr is not None or optimizer_kwargs:
            raise ValueError("lr and optimizer_kwargs apply to an optimizer given by name, not an instance")
        opt = optimizer
    else:
        opt = make_optimizer(optimizer, model.parameters(), lr, **dict(optimizer_kwargs or {}))
    scheduler = _make_schedule(schedule, opt)
    plateau = isinstance(scheduler, ReduceLROnPlateau)
    default_monitor = "val_loss" if validation_data is not None else "loss"
    stopper = _make_early_stopping(early_stopping, default_monitor)
    if stopper is not None:
        stopper.reset()  # an instance may come from an earlier run
    monitor = stopper.monitor if stopper is not None else default_monitor

    history = History()
    rng_seed = seed if run is None or seed is None else seed + run.rank  # own dropout masks per rank
    with _kept_mode(model), _rng_scope(rng_seed, device):
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        batches = make_batches(
            x,
            y,
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            float_dtype=float_dtype,
            what="fit",
        )
        if run is not None:
            batches = run.shard(batches)
        _call(callbacks, "on_train_begin", {"model": model, "optimizer": opt})
        step = 0
        for epoch in range(1, epochs + 1):
            epoch_lr = float(opt.param_groups[0]["lr"])
            _call(callbacks, "on_epoch_begin", epoch, {})
            total = _safe_len(batches)
            bar = ProgressBar(total, f"epoch {epoch}/{epochs}", enabled=progress)
            model.train()
            sums: dict[str, Tensor] = {}
            seen = 0
            for batch in batches:
                xb, yb = split_batch(batch)
                xb = xb.to(device=device, dtype=float_dtype if xb.is_floating_point() else xb.dtype)
                yb = yb.to(device) if yb is not None else None
                if augment is not None:
                    xb = augment(xb)
                opt.zero_grad(set_to_none=True)
                out = select_output(forward(xb), output)
                n = len(xb)
                # an empty share of a tiny global batch still joins DDP's gradient reduction, adding zero
                objective = loss_fn(out, yb) if n or run is None else out.sum() * 0.0
                data_loss = objective
                if run is not None:  # weight the rank's mean by its share: DDP's average is the global mean
                    data_loss = objective * (n * run.world_size / max(run.global_count(n), 1))
                penalty = _regularization(model, regularizers)
                if penalty is not None:
                    objective = objective + penalty
                    data_loss = data_loss + penalty
                data_loss.backward()
                params = [p for group in opt.param_groups for p in group["params"]]
                if clip_value is not None:
                    clip_gradients_by_value(params, clip_value)
                if clip_norm is not None:
                    clip_gradients_by_global_norm(params, clip_norm)
                opt.step()
                _apply_constraints(model, constraints)
                step += 1
                if scheduler is not None and not plateau and schedule_interval == "batch":
                    scheduler.step()
                seen += n
                if n or run is None:
                    with torch.no_grad():
                        _accumulate(sums, "loss", objective.detach() * n)
                        for name, fn in metric_fns:
                            _accumulate(sums, name, fn(out.detach(), yb) * n)
                if bar.enabled and bar.tty and seen:
                    bar.update(1, loss=float(sums["loss"]) / seen)
                else:
                    bar.update(1)
                _call(callbacks, "on_batch_end", step, {"loss": objective.detach()})
            if run is not None:
                sums, seen = run.reduce_sums(sums, seen, ["loss", *(name for name, _ in metric_fns)])
            if seen == 0:
                raise ValueError("fit: the training data yielded no batch")
            logs = {name: float(value) / seen for name, value in sums.items()}
            if validation_data is not None:
                scores = evaluate(
                    model,
                    data=validation_data,
                    loss=loss_fn,
                    metrics=[fn for _, fn in metric_fns],
                    batch_size=max(batch_size, 256),
                    output=output,
                )
                logs.update({f"val_{name}": value for name, value in scores.items()})
            logs["lr"] = epoch_lr
            if scheduler is not None and (plateau or schedule_interval == "epoch"):
                if plateau:
                    scheduler.step(_monitored(logs, monitor))
                else:
                    scheduler.step()
            history.append(epoch, logs)
            bar.close(**{k: v for k, v in logs.items() if k != "lr"})
            stop = False
            if stopper is not None:
                stop = stopper.update(_monitored(logs, monitor), model, epoch)
            for cb in callbacks:
                hook = getattr(cb, "on_epoch_end", None)
                hook = hook if callable(hook) else cb if callable(cb) else None
                stop = (hook is not None and hook(epoch, dict(logs)) is True) or stop
            if run is not None:
                stop = run.any(stop)  # all ranks stop together, or the others would wait forever
            if stop:
                history.stopped_early = True
                break
        if stopper is not None:
            history.best_epoch = stopper.best_epoch if stopper.best_epoch >= 1 else None
            if stopper.restore_best:
                stopper.restore(model)
        _call(callbacks, "on_train_end", {"history": history})
    return history


def _accumulate(sums: dict[str, Tensor], key: str, value: Tensor) -> None:
    value = value.detach().to(torch.float64)
    sums[key] = sums[key] + value if key in sums else value


def _monitored(logs: Mapping[str, float], monitor: str) -> float:
    if monitor not in logs:
        raise KeyError(f"cannot monitor {monitor!r}: the epoch logs have {sorted(logs)}")
    return logs[monitor]


def _safe_len(batches: Iterable[Any]) -> int | None:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None


def _call(callbacks: Sequence[Any], hook: str, *args: Any) -> None:
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if callable(method):
            method(*args)


def evaluate(
    model: nn.Module,
    x: ArrayLike | None = None,
    y: ArrayLike | None = None,
    *,
    data: DataSource | None = None,
    loss: str | LossFn = "sparse_softmax_cross_entropy",
    metrics: Sequence[str | MetricFn] = ("accuracy",),
    batch_size: int = 256,
    output: int | str | None = None,
) -> dict[str, float]:
    """Mean data loss and metrics of ``model`` (in eval mode, no gradients) over ``x``/``y`` or ``data``."""
    device, float_dtype = model_device(model)
    output = resolve_output(model, output)
    loss_fn = get_loss(loss)
    metric_fns = [get_metric(m) for m in metrics]
    batches = make_batches(
        x,
        y,
        data,
        batch_size=batch_size,
        shuffle=False,
        generator=None,
        float_dtype=float_dtype,
        what="evaluate",
    )
    sums: dict[str, Tensor] = {}
    seen = 0
    with _kept_mode(model), torch.no_grad():
        model.eval()
        for batch in batches:
            xb, yb = split_batch(batch)
            if yb is None:
                raise ValueError("evaluate needs labels: pass y, or batches of (x, y)")
            xb = xb.to(device=device, dtype=float_dtype if xb.is_floating_point() else xb.dtype)
            yb = yb.to(device)
            out = select_output(model(xb), output)
            n = len(xb)
            seen += n
            _accumulate(sums, "loss", loss_fn(out, yb) * n)
            for name, fn in metric_fns:
                _accumulate(sums, name, fn(out, yb) * n)
    if seen == 0:
        raise ValueError("evaluate: the data yielded no batch")
    return {name: float(value) / seen for name, value in sums.items()}


def predict(
    model: nn.Module,
    x: ArrayLike | DataSource,
    batch_size: int = 256,
    *,
    output: int | str | None = None,
) -> Tensor:
    """The model's outputs for ``x`` (an array, or an iterable of batches), concatenated, on the CPU."""
    device, float_dtype = model_device(model)
    output = resolve_output(model, output)
    if isinstance(x, Tensor) or hasattr(x, "__array__"):
        batches = make_batches(
            x,
            None,
            None,
            batch_size=batch_size,
            shuffle=False,
            generator=None,
            float_dtype=float_dtype,
            what="predict",
        )
    else:
        batches = x
    outputs = []
    with _kept_mode(model), torch.no_grad():
        model.eval()
        for batch in batches:
            xb, _ = split_batch(batch)
            xb = xb.to(device=device, dtype=float_dtype if xb.is_floating_point() else xb.dtype)
            outputs.append(select_output(model(xb), output).cpu())
    if not outputs:
        raise ValueError("predict: no input")
    return torch.cat(outputs)
