"""Chapter 11's practical guidelines as ready-made, named DNNs: ``default_dnn`` and ``train_default_dnn``.

Three variants, all built by name with ``graphdnn.layers`` (placeholders ``X``/``y``; hidden layers in
scopes ``dnn/hidden1``, ``dnn/hidden2``...; variables ``hidden1/kernel``...; logits ``dnn/outputs``):

* ``"default"``: He initialization, batch norm (momentum 0.9) then ELU in every hidden layer, L2 on the
  kernels, Nesterov momentum 0.9 with exponential decay, gradient clipping, early stopping;
* ``"fast"``: the same without batch norm and with leaky ReLU (alpha 0.01), for fast inference;
* ``"sparse"``: the default plus L1 on the kernels and FTRL-Proximal (L1 on the kernels only), which
  yields exact zeros; ``zero_small_weights`` then sets the remaining tiny weights to zero.

A hidden layer is one name: batch norm sits in the layer's scope (``hidden1/batch_normalization/gamma``,
op ``dnn/hidden1/batch_normalization/FusedBatchNorm``) and so does the activation (``dnn/hidden1/Elu``),
so ``restore(..., include="hidden[123]")`` and ``freeze(..., "hidden[12]")`` take whole layers.
The kernel has no bias when batch norm follows (beta plays that role).

Training in a few lines (a documented snippet; ``train_default_dnn`` does the same)::

    dnn = default_dnn(64, 10, hidden=(100, 100, 100))
    model = dnn.compile()                                   # X -> logits
    history = graphdnn.train.fit(model, x, y, validation_data=(xv, yv), epochs=50, **dnn.fit_kwargs(model))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch

from graphdnn import initializers as init
from graphdnn import layers, nn
from graphdnn import regularizers as reg
from graphdnn.compiler import CompiledGraph, compile  # noqa: A004
from graphdnn.errors import GraphError
from graphdnn.graph import Graph, Tensor

__all__ = ["DNN", "VARIANTS", "default_dnn", "train_default_dnn", "zero_small_weights"]

Variant = Literal["default", "fast", "sparse"]
VARIANTS: tuple[str, ...] = ("default", "fast", "sparse")
_ACTIVATIONS = {"elu": nn.elu, "leaky_relu": partial(nn.leaky_relu, alpha=0.01), "relu": nn.relu, "selu": nn.selu}


@dataclass
class DNN:
    """A DNN built by ``default_dnn``: its graph, named tensors and the suggested training settings.

    ``fit_kwargs(model)`` turns the settings into keyword arguments of ``graphdnn.train.fit``.
    """

    graph: Graph
    X: Tensor
    y: Tensor
    logits: Tensor
    loss: Tensor
    accuracy: Tensor
    hidden: list[Tensor]
    variant: str
    optimizer: str
    lr: float
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    decay_steps: int | None = None
    decay_rate: float = 0.1
    clip_value: float | None = 1.0
    patience: int | None = 10
    zero_threshold: float | None = None

    @property
    def input_name(self) -> str:
        """The input tensor's name (``X:0``)."""
        return self.X.name

    @property
    def output_name(self) -> str:
        """The logits' name (``dnn/outputs/BiasAdd:0``)."""
        return self.logits.name

    def compile(self) -> CompiledGraph:
        """The model ``X -> logits`` (train with ``fit``; ``eval()`` for inference)."""
        return compile(self.graph, inputs=[self.X], outputs=[self.logits])

    def make_optimizer(self, model: CompiledGraph | None = None) -> torch.optim.Optimizer:
        """The recipe's optimizer, from ``graphdnn.make_optimizer`` over the trainable, unfrozen parameters.
        For FTRL, its L1 strength (``optimizer_kwargs["l1_regularization_strength"]``) applies to kernels only."""
        from graphdnn.freezing import trainable_parameters
        from graphdnn.train.optimizers import make_optimizer

        target = model if model is not None else self.graph
        kwargs = dict(self.optimizer_kwargs)
        l1 = kwargs.pop("l1_regularization_strength", 0.0) if self.optimizer == "ftrl" else 0.0
        if not l1:
            return make_optimizer(self.optimizer, target, self.lr, **kwargs)
        params = trainable_parameters(target)
        if not params:
            raise GraphError("no trainable parameter: everything is frozen")
        kernels = {id(p) for p in trainable_parameters(target, r".*/kernel$")}
        groups = [{"params": [p for p in params if id(p) in kernels], "l1_regularization_strength": l1},
                  {"params": [p for p in params if id(p) not in kernels]}]
        return make_optimizer(self.optimizer, [g for g in groups if g["params"]], self.lr, **kwargs)

    def fit_kwargs(self, model: CompiledGraph | None = None) -> dict[str, Any]:
        """``optimizer``, ``schedule``, ``clip_value`` and ``early_stopping`` for ``graphdnn.train.fit``
        (early stopping monitors ``val_loss`` when fit gets validation data, else ``loss``)."""
        from graphdnn.train.schedules import ExponentialDecay

        kwargs: dict[str, Any] = {"optimizer": self.make_optimizer(model), "clip_value": self.clip_value}
        if self.decay_steps:
            kwargs["schedule"] = partial(ExponentialDecay, decay_steps=self.decay_steps, decay_rate=self.decay_rate)
        if self.patience is not None:
            kwargs["early_stopping"] = self.patience
        return kwargs

    def zero_small_weights(self, threshold: float | None = None) -> int:
        """Set kernel weights with ``|w| < threshold`` (default ``zero_threshold``) to exactly 0;
        returns how many kernel weights are zero afterwards."""
        t = self.zero_threshold if threshold is None else threshold
        if t is None:
            raise GraphError(f"variant {self.variant!r} has no zero_threshold; pass threshold=")
        return zero_small_weights(self.graph, t)


def zero_small_weights(graph: Graph, threshold: float, pattern: str = r".*/kernel$") -> int:
    """Zero the entries below ``threshold`` in magnitude of the variables matching ``pattern`` (kernels);
    returns the number of zero entries they hold afterwards."""
    zeros = 0
    with torch.no_grad():
        for op in graph.variables(pattern):
            value = graph.values[op.name]
            value.masked_fill_(value.abs() < threshold, 0.0)
            zeros += int((value == 0).sum())
    return zeros


def default_dnn(
    n_inputs: int,
    n_outputs: int,
    hidden: Sequence[int] = (100, 100, 100, 100, 100),
    *,
    variant: Variant = "default",
    activation: str | None = None,
    batch_norm: bool | None = None,
    momentum: float = 0.9,
    l2: float | None = None,
    l1: float | None = None,
    dropout: float = 0.0,
    max_norm: float | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
    decay_steps: int | None = 10_000,
    clip_value: float | None = 1.0,
    patience: int | None = 10,
    name: str = "dnn",
    graph: Graph | None = None,
) -> DNN:
    """Build chapter 11's default DNN (``variant`` "default", "fast" or "sparse"; see the module doc).

    ``activation`` ("elu", "leaky_relu", "relu", "selu": LeCun init instead of He), ``batch_norm``,
    ``l2``/``l1`` (TF1 scales on the kernels), ``optimizer``, ``lr`` and ``optimizer_kwargs`` (merged into
    the variant's) override the variant's choices. ``dropout`` > 0 adds dropout after each hidden
    activation; ``max_norm`` bounds each kernel row's norm after every step. ``decay_steps`` None disables
    the exponential decay (lr / 10 every ``decay_steps`` steps). Builds into ``graph`` (a new
    ``Graph(name)`` by default; ``name`` is also the op scope): ``X`` (None, n_inputs) float32 and ``y``
    (None,) int64 placeholders, ``loss/loss``, ``eval/accuracy``, and the collection
    ``my_important_ops`` = X, y, accuracy."""
    if variant not in VARIANTS:
        raise GraphError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if not hidden or any(int(u) <= 0 for u in hidden):
        raise GraphError(f"hidden must be a non-empty sequence of positive layer sizes, got {tuple(hidden)}")
    fast, sparse = variant == "fast", variant == "sparse"
    act_name = activation or ("leaky_relu" if fast else "elu")
    if act_name not in _ACTIVATIONS:
        raise GraphError(f"unknown activation {act_name!r}; expected one of {', '.join(_ACTIVATIONS)}")
    use_bn = (not fast) if batch_norm is None else batch_norm
    l2 = (0.0 if sparse else 1e-4) if l2 is None else l2
    l1 = (1e-4 if sparse else 0.0) if l1 is None else l1
    kernel_reg = reg.l1_l2(l1, l2) if (l1 or l2) else None
    opt = optimizer or ("ftrl" if sparse else "nesterov")
    rate = lr if lr is not None else {"ftrl": 1.0, "adam": 0.001}.get(opt, 0.05)
    opt_kwargs = {"l1_regularization_strength": 1e-3} if opt == "ftrl" and sparse else {}
    opt_kwargs.update(optimizer_kwargs or {})

    g = graph if graph is not None else Graph(name)
    X = g.placeholder("X", (None, n_inputs))
    y = g.placeholder("y", (None,), "int64")
    kernel_init = init.lecun_normal() if act_name == "selu" else init.he_normal()
    dense = partial(layers.dense, kernel_initializer=kernel_init, kernel_regularizer=kernel_reg,
                    kernel_constraint=reg.max_norm(max_norm, axes=1) if max_norm else None)
    bn = partial(layers.batch_normalization, momentum=momentum)
    hidden_out: list[Tensor] = []
    with g.name_scope(name):
        h = X
        for i, units in enumerate(hidden, start=1):
            scope = f"hidden{i}"
            h = dense(h, int(units), use_bias=not use_bn, name=scope)
            with g.variable_scope(scope):  # batch norm, activation and dropout belong to the layer
                if use_bn:
                    h = bn(h, name="batch_normalization")
                h = _ACTIVATIONS[act_name](h)
                hidden_out.append(h)
                if dropout:
                    h = layers.dropout(h, dropout, name="dropout")
        logits = layers.dense(h, n_outputs, kernel_initializer=kernel_init, kernel_regularizer=kernel_reg,
                              name="outputs")
    with g.name_scope("loss"):
        loss = nn.reduce_mean(nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
    with g.name_scope("eval"):
        accuracy = nn.reduce_mean(nn.cast(nn.in_top_k(logits, y), "float32"), name="accuracy")
    for t in (X, y, accuracy):
        g.add_to_collection("my_important_ops", t)
    return DNN(
        graph=g, X=X, y=y, logits=logits, loss=loss, accuracy=accuracy, hidden=hidden_out, variant=variant,
        optimizer=opt, lr=rate, optimizer_kwargs=opt_kwargs, decay_steps=decay_steps, clip_value=clip_value,
        patience=patience, zero_threshold=1e-3 if sparse else None,
    )


def train_default_dnn(
    x: Any,
    y: Any,
    *,
    validation_data: tuple[Any, Any] | None = None,
    hidden: Sequence[int] = (100, 100, 100),
    variant: Variant = "default",
    epochs: int = 50,
    batch_size: int = 32,
    seed: int | None = 42,
    progress: bool = True,
    **options: Any,
) -> tuple[DNN, CompiledGraph, Any]:
    """Build ``default_dnn`` for ``x`` (n, features) / integer ``y`` and train it with ``graphdnn.train.fit``
    using the variant's settings (``options`` go to ``default_dnn``). The sparse variant's tiny kernel
    weights are zeroed at the end. Returns ``(dnn, model, history)``, the model in eval mode."""
    from graphdnn.train.fit import fit

    x_t, y_t = torch.as_tensor(x), torch.as_tensor(y)
    n_outputs = int(y_t.max()) + 1
    if validation_data is not None:
        n_outputs = max(n_outputs, int(torch.as_tensor(validation_data[1]).max()) + 1)
    if seed is not None:
        torch.manual_seed(seed)
    dnn = default_dnn(int(x_t.shape[1]), n_outputs, hidden, variant=variant, **options)
    model = dnn.compile()
    history = fit(model, x_t, y_t, validation_data=validation_data, epochs=epochs, batch_size=batch_size,
                  seed=seed, progress=progress, **dnn.fit_kwargs(model))
    if dnn.zero_threshold is not None:
        dnn.zero_small_weights()
    return dnn, model.eval(), history
