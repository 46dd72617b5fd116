"""``fit``, ``evaluate`` and ``predict``: a Keras-like loop over any ``torch.nn.Module``.

Hooks used when the model has them (compiled graphdnn graphs do): ``model.regularization_loss()`` is added
to the loss at every step, and ``model.apply_constraints()`` (max-norm) runs after every optimizer step; a
compiled graph's L1/L2 penalties and max-norm constraints are applied by equivalent multi-tensor ops instead
(see :mod:`graphdnn.train.hooks`). Training steps run in ``model.train()`` mode, validation and prediction in
``model.eval()``; each function puts the model back in the mode it found it in.

Reading order: :func:`fit` sets a run up (data, optimizer, schedule, early stopping); :func:`_train` runs
its epochs; :class:`_TrainStep` is one optimizer step; :func:`_train_epoch` is one pass over the batches
(per-batch values stay on the device until the epoch ends); :class:`_EpochEnd` validates, schedules,
records, stops early and calls the epoch-end callbacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from graphdnn.errors import ArgumentTypeError, InputError, UnknownNameError

from .batches import (
    ArrayLike,
    DataSource,
    TensorBatches,
    as_tensor,
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
from .hooks import StepHooks
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


def _make_early_stopping(
    spec: EarlyStopping | int | Mapping[str, Any] | None, default_monitor: str
) -> EarlyStopping | None:
    if spec is None or isinstance(spec, EarlyStopping):
        return spec
    if isinstance(spec, bool):
        raise ArgumentTypeError("early_stopping takes a patience (int), a dict of EarlyStopping arguments or one")
    if isinstance(spec, int):
        return EarlyStopping(monitor=default_monitor, patience=spec)
    return EarlyStopping(**{"monitor": default_monitor, **dict(spec)})


def _make_schedule(schedule: Schedule | None, optimizer: Optimizer) -> LRScheduler | ReduceLROnPlateau | None:
    if schedule is None or isinstance(schedule, (LRScheduler, ReduceLROnPlateau)):
        if schedule is not None and schedule.optimizer is not optimizer:
            raise InputError("the schedule was built for another optimizer than the one fit uses; pass that optimizer "
                             "as optimizer=, or a function optimizer -> scheduler as schedule=")
        return schedule
    if callable(schedule):
        return schedule(optimizer)
    raise ArgumentTypeError(f"schedule must be an LR scheduler or a function optimizer -> scheduler: {schedule!r}")


def _rng_scope(seed: int | None, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Seed torch's global RNG for the run (dropout, augmentation) without leaking the change outside."""
    if seed is None:
        return contextlib.nullcontext()
    devices = [device.index or 0] if device.type == "cuda" else []
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=devices))
    if device.type in ("cpu", "cuda"):  # seed just the generators forked above (torch.manual_seed seeds all)
        torch.default_generator.manual_seed(seed)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
    else:
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
    verbose: int | None = None,
    validation_split: float = 0.0,
    seed: int | None = None,
    distributed: bool | None = None,
    find_unused_parameters: bool | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return the per-epoch :class:`History`.

    Data: ``x``/``y`` arrays (numpy or torch; floating ``x`` is cast to the model's dtype), or ``data=``, an
    ``(x, y)`` pair, a dataset of two aligned tensors (a ``TensorDataset``, a frozen-layer cache holding one
    input and the labels) or any iterable of ``(x, y)`` batches (a ``DataLoader``). ``validation_data`` likewise.
    ``optimizer`` is a name for :func:`make_optimizer` (with ``lr`` and ``optimizer_kwargs``) or an
    instance. ``schedule`` is an LR scheduler or a function ``optimizer -> scheduler``, stepped after every
    batch or every epoch (``schedule_interval``); a ``ReduceLROnPlateau`` is stepped every epoch with the
    monitored value (the early-stopping monitor, else "val_loss" or "loss"). Per step: ``augment`` the
    training inputs, forward, loss + ``model.regularization_loss()`` + each of ``regularizers``, backward,
    ``clip_value`` then ``clip_norm``, optimizer step, ``model.apply_constraints()`` and ``constraints``.

    ``validation_split`` (Keras') holds out that fraction of ``x``/``y``, the last samples before shuffling,
    as ``validation_data``. ``verbose`` 0 hides the progress bar (Keras' name for ``progress=False``).
    Labels are required; ``x`` and ``y`` must have as many samples, and the default loss takes class
    indices (whole-valued floating labels are accepted): otherwise an ``InputError`` says what is wrong.

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
    _check_arguments(epochs, schedule_interval)
    if verbose is not None:
        progress = progress and verbose > 0
    if validation_split:
        x, y, data, validation_data = _split_validation(x, y, data, validation_data, validation_split)
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
    opt = _optimizer(model, optimizer, lr, optimizer_kwargs)
    scheduler = _make_schedule(schedule, opt)
    default_monitor = "val_loss" if validation_data is not None else "loss"
    stopper = _make_early_stopping(early_stopping, default_monitor)
    if stopper is not None:
        stopper.reset()  # an instance may come from an earlier run
    step = _TrainStep(model, forward, opt, loss_fn, metric_fns, output, device, float_dtype,
                      StepHooks(model, regularizers, constraints, direct=run is None),
                      augment, clip_value, clip_norm, run)
    batch_scheduler = scheduler if scheduler is not None and not isinstance(scheduler, ReduceLROnPlateau) \
        and schedule_interval == "batch" else None
    ending = _EpochEnd(model, scheduler if batch_scheduler is None else None, stopper,
                       stopper.monitor if stopper is not None else default_monitor, validation_data,
                       loss_fn, metric_fns, max(batch_size, 256), output, callbacks, run)

    rng_seed = seed if run is None or seed is None else seed + run.rank  # own dropout masks per rank
    with _kept_mode(model), _rng_scope(rng_seed, device):
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        batches = make_batches(x, y, data, batch_size=batch_size, shuffle=shuffle, generator=generator,
                               float_dtype=float_dtype, what="fit")
        if isinstance(batches, TensorBatches) and batches.y is None:
            raise InputError(_NO_LABELS)
        if run is not None:
            batches = run.shard(batches)
        step.place(batches)
        return _train(step, ending, batches, epochs, batch_scheduler, callbacks, stopper, progress)


def _check_arguments(epochs: int, schedule_interval: str) -> None:
    if epochs < 0:
        raise InputError(f"epochs must be >= 0, got {epochs}")
    if schedule_interval not in ("batch", "epoch"):
        raise InputError(f"schedule_interval must be 'batch' or 'epoch', got {schedule_interval!r}")


def _optimizer(model: nn.Module, optimizer: str | Optimizer, lr: float | None,
               optimizer_kwargs: Mapping[str, Any] | None) -> Optimizer:
    """``optimizer`` itself (an instance takes no ``lr``/``optimizer_kwargs``), or one made by name."""
    if isinstance(optimizer, Optimizer):
        if lr is not None or optimizer_kwargs:
            raise InputError("lr and optimizer_kwargs apply to an optimizer given by name, not an instance")
        return optimizer
    return make_optimizer(optimizer, model.parameters(), lr, **dict(optimizer_kwargs or {}))


def _train(step: _TrainStep, ending: _EpochEnd, batches: Iterable[Any], epochs: int, batch_scheduler: Any,
           callbacks: Sequence[Any], stopper: EarlyStopping | None, progress: bool) -> History:
    """The epochs of a run: the train-begin callbacks, per epoch a training pass (:func:`_train_epoch`) and its
    end (:class:`_EpochEnd`), then the best weights back (early stopping) and the train-end callbacks."""
    history = History()
    model, opt = step.model, step.opt
    batch_end = [hook for hook in (getattr(cb, "on_batch_end", None) for cb in callbacks) if callable(hook)]
    _call(callbacks, "on_train_begin", {"model": model, "optimizer": opt})
    for epoch in range(1, epochs + 1):
        epoch_lr = float(opt.param_groups[0]["lr"])
        _call(callbacks, "on_epoch_begin", epoch, {})
        bar = ProgressBar(_safe_len(batches), f"epoch {epoch}/{epochs}", enabled=progress)
        logs = _train_epoch(step, batches, bar, batch_scheduler, batch_end)
        if ending(epoch, logs, epoch_lr, history, bar):
            history.stopped_early = True
            break
    if stopper is not None:
        history.best_epoch = stopper.best_epoch if stopper.best_epoch >= 1 else None
        if stopper.restore_best:
            stopper.restore(model)
    _call(callbacks, "on_train_end", {"history": history})
    return history


_NO_LABELS = ("fit needs labels: pass y (fit(model, x, y)), data=(x, y), or batches of (x, y); a model that "
              "computes its own loss takes the labels as an input: train it with a loop of your own")


def _split_validation(x: Any, y: Any, data: Any, validation_data: Any, fraction: float) -> tuple[Any, Any, Any, Any]:
    """Keras' ``validation_split``: the last ``fraction`` of the samples (before shuffling) become validation data."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"validation_split must be in (0, 1), got {fraction}")
    if validation_data is not None:
        raise InputError("pass validation_split or validation_data, not both")
    if data is not None:
        tensors = getattr(data, "tensors", data)
        if not (isinstance(tensors, (tuple, list)) and len(tensors) == 2):
            raise InputError("validation_split needs in-memory x and y (or data=(x, y)), not a stream of batches")
        x, y, data = tensors[0], tensors[1], None
    if y is None:
        raise InputError(_NO_LABELS)
    xt, yt = as_tensor(x), as_tensor(y)
    if len(xt) != len(yt):
        raise InputError(f"x has {len(xt)} samples but y has {len(yt)}; pass one label per sample")
    held = int(len(xt) * fraction)
    if held == 0 or held == len(xt):
        raise InputError(f"validation_split={fraction} of {len(xt)} samples leaves no training or validation data")
    keep = len(xt) - held
    return xt[:keep], yt[:keep], None, (xt[keep:], yt[keep:])


class _TrainStep:
    """One optimizer step on a batch, with everything that does not change between steps resolved once.

    Calling it runs: ``augment``, forward, data loss, penalties (autograd part), backward, the compiled
    penalties' gradients, ``clip_value`` then ``clip_norm``, optimizer step, constraints. It returns the
    objective (data loss + penalties, detached), the detached output and the batch's sample count.
    """

    def __init__(self, model: nn.Module, forward: nn.Module, opt: Optimizer, loss_fn: LossFn,
                 metric_fns: Sequence[tuple[str, MetricFn]], output: int | str | None, device: torch.device,
                 float_dtype: torch.dtype, hooks: StepHooks, augment: Callable[[Tensor], Tensor] | None,
                 clip_value: float | None, clip_norm: float | None, run: Any) -> None:
        self.model, self.forward, self.opt, self.loss_fn = model, forward, opt, loss_fn
        self.metric_fns, self.output, self.device, self.float_dtype = list(metric_fns), output, device, float_dtype
        self.hooks, self.augment, self.clip_value, self.clip_norm, self.run = hooks, augment, clip_value, clip_norm, run
        self.params = [p for group in opt.param_groups for p in group["params"]]
        self.count = 0  # steps taken over the whole run
        self.penalty, self.add_gradients, self.constrain = hooks.needed()  # resolved once, None: nothing to do
        self.placed = False  # whether batches come on the device, floating ones in the model's dtype

    def place(self, batches: Any) -> None:
        """Tell the step whether ``batches`` yield ``(x, y)`` tuples of tensors already where the model
        computes (in-memory data prepared by ``make_batches``), so that no batch needs checking or moving."""
        x, y = (batches.x, batches.y) if isinstance(batches, TensorBatches) else (None, None)
        self.placed = (x is not None and y is not None and x.device == self.device and y.device == self.device
                       and (not x.is_floating_point() or x.dtype == self.float_dtype))

    def __call__(self, batch: Any) -> tuple[Tensor, Tensor, Tensor | None, int]:
        if self.placed:
            xb, yb = batch
        else:
            xb, yb = split_batch(batch)
            if yb is None:
                raise InputError(_NO_LABELS)
            if xb.device != self.device or (xb.is_floating_point() and xb.dtype != self.float_dtype):
                xb = xb.to(device=self.device, dtype=self.float_dtype if xb.is_floating_point() else xb.dtype)
            if yb.device != self.device:
                yb = yb.to(self.device)
        if self.augment is not None:
            xb = self.augment(xb)
        run = self.run
        self.opt.zero_grad(set_to_none=True)
        out = self.forward(xb)
        if type(out) is not Tensor:
            out = select_output(out, self.output)
        n = xb.shape[0]
        # an empty share of a tiny global batch still joins DDP's gradient reduction, adding zero
        objective = self.loss_fn(out, yb) if n or run is None else out.sum() * 0.0
        data_loss = objective
        if run is not None:  # weight the rank's mean by its share: DDP's average is the global mean
            data_loss = objective * (n * run.world_size / max(run.global_count(n), 1))
        penalty = self.penalty() if self.penalty is not None else None
        if penalty is not None:
            objective = objective + penalty
            data_loss = data_loss + penalty
        data_loss.backward()
        objective = objective.detach()
        if self.add_gradients is not None:
            compiled_penalty = self.add_gradients()
            if compiled_penalty is not None:
                objective = objective + compiled_penalty
        if self.clip_value is not None:
            clip_gradients_by_value(self.params, self.clip_value)
        if self.clip_norm is not None:
            clip_gradients_by_global_norm(self.params, self.clip_norm)
        self.opt.step()
        if self.constrain is not None:
            self.constrain()
        self.count += 1
        return objective, out.detach(), yb, n


def _train_epoch(step: _TrainStep, batches: Iterable[Any], bar: ProgressBar, scheduler: Any,
                 batch_end: Sequence[Callable[[int, dict[str, Any]], Any]]) -> dict[str, Tensor | int]:
    """Run one pass over ``batches`` in train mode; return the epoch's sample-weighted sums and count.

    Per batch, the loss and each metric stay tensors in lists (no device synchronisation); they are
    reduced once at the end. The bar shows the running mean loss only when it redraws (a terminal,
    at most ten times a second).
    """
    step.model.train()
    run = step.run
    values: dict[str, list[Tensor]] = {"loss": [], **{name: [] for name, _ in step.metric_fns}}
    counts: list[int] = []
    shown, shown_sum = 0, 0.0
    for batch in batches:
        objective, out, yb, n = step(batch)
        if scheduler is not None:
            scheduler.step()
        if n or run is None:
            counts.append(n)
            values["loss"].append(objective)
            with torch.no_grad():
                for name, fn in step.metric_fns:
                    values[name].append(fn(out, yb))
        if bar.tick() and counts:
            shown_sum += float(_weighted_sum(values["loss"][shown:], counts[shown:]))
            shown = len(counts)
            bar.update(0, loss=shown_sum / max(sum(counts), 1))
        for hook in batch_end:
            hook(step.count, {"loss": objective})
    sums = {name: _weighted_sum(vals, counts) for name, vals in values.items() if vals}
    seen = sum(counts)
    if run is not None:
        sums, seen = run.reduce_sums(sums, seen, list(values))
    if seen == 0:
        raise InputError("fit: the training data yielded no batch; pass at least one sample (x/y or data=)")
    return {**sums, "seen": seen}


def _weighted_sum(values: Sequence[Tensor], counts: Sequence[int]) -> Tensor:
    """``sum(value * count)`` in float64 over per-batch scalar tensors, in one reduction."""
    stacked = torch.stack([v if v.dim() == 0 else v.reshape(()) for v in values]).to(torch.float64)
    return stacked @ torch.tensor(counts, dtype=torch.float64, device=stacked.device)


class _EpochEnd:
    """After a training pass: validation, the epoch-level schedule, history, the bar's last line, early
    stopping and the epoch-end callbacks. Calling it returns True when training should stop."""

    def __init__(self, model: nn.Module, scheduler: LRScheduler | ReduceLROnPlateau | None,
                 stopper: EarlyStopping | None, monitor: str, validation_data: DataSource | None, loss_fn: LossFn,
                 metric_fns: Sequence[tuple[str, MetricFn]], eval_batch_size: int, output: int | str | None,
                 callbacks: Sequence[Any], run: Any) -> None:
        self.model, self.scheduler, self.stopper, self.monitor = model, scheduler, stopper, monitor
        self.validation_data, self.loss_fn, self.metric_fns = validation_data, loss_fn, list(metric_fns)
        self.eval_batch_size, self.output, self.callbacks, self.run = eval_batch_size, output, callbacks, run

    def __call__(self, epoch: int, sums: dict[str, Any], epoch_lr: float, history: History, bar: ProgressBar) -> bool:
        seen = sums.pop("seen")
        logs = {name: float(value) / seen for name, value in sums.items()}
        if self.validation_data is not None:
            scores = evaluate(self.model, data=self.validation_data, loss=self.loss_fn,
                              metrics=[fn for _, fn in self.metric_fns], batch_size=self.eval_batch_size,
                              output=self.output)
            logs.update({f"val_{name}": value for name, value in scores.items()})
        logs["lr"] = epoch_lr
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(_monitored(logs, self.monitor))
        elif self.scheduler is not None:
            self.scheduler.step()
        history.append(epoch, logs)
        bar.close(**{k: v for k, v in logs.items() if k != "lr"})
        stop = False
        if self.stopper is not None:
            stop = self.stopper.update(_monitored(logs, self.monitor), self.model, epoch)
        for cb in self.callbacks:
            hook = getattr(cb, "on_epoch_end", None)
            hook = hook if callable(hook) else cb if callable(cb) else None
            stop = (hook is not None and hook(epoch, dict(logs)) is True) or stop
        if self.run is not None:
            stop = self.run.any(stop)  # all ranks stop together, or the others would wait forever
        return stop


def _accumulate(sums: dict[str, Tensor], key: str, value: Tensor) -> None:
    value = value.detach().to(torch.float64)
    sums[key] = sums[key] + value if key in sums else value


def _monitored(logs: Mapping[str, float], monitor: str) -> float:
    if monitor not in logs:
        raise UnknownNameError(f"cannot monitor {monitor!r}: the epoch logs have {sorted(logs)}; monitor one of "
                               "them, or pass validation_data= (or validation_split=) for the val_* entries")
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
                raise InputError("evaluate needs labels: pass y, or batches of (x, y)")
            xb = xb.to(device=device, dtype=float_dtype if xb.is_floating_point() else xb.dtype)
            yb = yb.to(device)
            out = select_output(model(xb), output)
            n = len(xb)
            seen += n
            _accumulate(sums, "loss", loss_fn(out, yb) * n)
            for name, fn in metric_fns:
                _accumulate(sums, name, fn(out, yb) * n)
    if seen == 0:
        raise InputError("evaluate: the data yielded no batch; pass at least one sample (x/y or data=)")
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
        raise InputError("predict: the input holds no sample; pass at least one (x or data=)")
    return torch.cat(outputs)
