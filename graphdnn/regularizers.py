"""Weight penalties and constraints: the specs attached to variables, and the same formulas on plain tensors.

A regularizer spec (:func:`l1`, :func:`l2`, :func:`l1_l2`) given to ``Graph.variable`` (``layers.dense(...,
kernel_regularizer=...)``) adds, as in TF1, ops computing the penalty under ``<variable>/Regularizer/`` and
puts their result in the ``regularization_losses`` collection; ``fit`` adds the collection's total to the
loss. Conventions are TF1's (``tf.contrib.layers``): ``l1(s) = s * sum|w|`` and ``l2(s) = s * sum(w**2) / 2``
(``tf.nn.l2_loss``). Keras' ``l2(k) = k * sum(w**2)`` is ``l2(2 * k)``.

A constraint spec (:func:`max_norm`) is applied to the variable in place after every optimizer step:
``max_norm(c, axes)`` rescales ``w`` to ``w * c / max(||w||_axes, c)`` like ``tf.clip_by_norm``.

For plain PyTorch weights the same formulas are functions (:func:`l1_penalty`, :func:`l2_penalty`,
:func:`max_norm_`, :func:`clip_by_norm`), TF1's callable regularizers (:func:`l1_regularizer`...) and the
:class:`MaxNorm` constraint; ``graphdnn.train`` re-exports them.

Axis convention. graphdnn stores dense kernels TensorFlow-style as ``[in, out]``. TensorFlow's
``clip_by_norm(w, clip_norm, axes=1)`` takes the L2 norm over axis 1, so it gives one norm per *row*:
row ``i`` holds the weights leaving input unit ``i`` towards every neuron. That is what the book does
(``axes=1``, "each row vector ends up with a maximum norm of 1.0") and it is the default. The max-norm of
Srivastava et al. (2014) and Keras's ``MaxNorm(axis=0)`` bound each neuron's *incoming* weights, a column of
an ``[in, out]`` kernel: use ``axes=0`` for that. For a plain ``torch.nn.Linear.weight`` (``[out, in]``)
the roles swap: the book's behaviour is ``axes=0`` and per-neuron is ``axes=1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from graphdnn import graph_hooks
from graphdnn.errors import GraphError
from graphdnn.graph import REGULARIZATION_LOSSES

if TYPE_CHECKING:
    from graphdnn.graph import Graph, Tensor

__all__ = [
    "MaxNorm",
    "Regularizer",
    "Spec",
    "add_loss",
    "apply_constraint",
    "clip_by_norm",
    "l1",
    "l1_l2",
    "l1_l2_regularizer",
    "l1_penalty",
    "l1_regularizer",
    "l2",
    "l2_penalty",
    "l2_regularizer",
    "max_norm",
    "max_norm_",
    "penalty",
    "total_penalty",
]

Spec = dict[str, Any]
#: A callable regularizer: weight -> penalty (TF1's ``tf.contrib.layers`` regularizers).
Regularizer = Callable[[torch.Tensor], torch.Tensor]
Axes = int | Sequence[int] | None


# ------------------------------------------------------------------------------ specs
def l1(scale: float = 0.01) -> Spec:
    """The spec of ``scale * sum(|w|)``."""
    return {"type": "l1_l2", "l1": float(scale), "l2": 0.0}


def l2(scale: float = 0.01) -> Spec:
    """The spec of ``scale * sum(w**2) / 2``."""
    return {"type": "l1_l2", "l1": 0.0, "l2": float(scale)}


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> Spec:  # noqa: F811 - same names as the specs
    """The spec of the sum of both penalties."""
    return {"type": "l1_l2", "l1": float(l1), "l2": float(l2)}


def max_norm(max_value: float = 1.0, axes: int | list[int] = 1) -> Spec:
    """The spec of the max-norm constraint (see :func:`max_norm_`)."""
    axes_list = [axes] if isinstance(axes, int) else list(axes)
    return {"type": "max_norm", "max_value": float(max_value), "axes": axes_list}


# ------------------------------------------------------------------------ graph ops
def add_loss(graph: Graph, variable: Tensor, spec: Spec) -> Tensor:
    """Build the penalty ops of ``spec`` on ``variable`` and add the result to the collection."""
    if spec.get("type") != "l1_l2":
        raise GraphError(f"variable {variable.op_name!r}: unknown regularizer {spec!r}")
    name = variable.op_name
    terms = []
    if spec["l1"]:
        total = graph.add_op("ReduceSum", [graph.add_op("Abs", [variable], name=f"{name}/Regularizer/Abs",
                                                        scoped=False).out()],
                             {"keepdims": 0}, name=f"{name}/Regularizer/L1Sum", scoped=False).out()
        terms.append(_scaled(graph, total, spec["l1"], f"{name}/Regularizer/l1"))
    if spec["l2"]:
        square = graph.add_op("Mul", [variable, variable], name=f"{name}/Regularizer/Square", scoped=False).out()
        total = graph.add_op("ReduceSum", [square], {"keepdims": 0}, name=f"{name}/Regularizer/L2Sum",
                             scoped=False).out()
        terms.append(_scaled(graph, total, spec["l2"] / 2.0, f"{name}/Regularizer/l2"))
    loss = terms[0]
    if len(terms) == 2:
        loss = graph.add_op("Add", terms, name=f"{name}/Regularizer/l1_l2", scoped=False).out()
    graph.add_to_collection(REGULARIZATION_LOSSES, loss)
    return loss


def _scaled(graph: Graph, x: Tensor, scale: float, name: str) -> Tensor:
    literal = {"dtype": x.dtype or "float32", "shape": [], "data": [scale]}
    c = graph.add_op("Constant", [], {"value": literal}, name=f"{name}/scale", scoped=False).out()
    return graph.add_op("Mul", [x, c], name=name, scoped=False).out()


# ``Graph.variable(regularizer=spec)`` builds the penalty with add_loss
graph_hooks.install(graph_hooks.REGULARIZER, add_loss)


# --------------------------------------------------------------- penalties on tensors
def _check(scale: float, name: str) -> float:
    if scale < 0:
        raise GraphError(f"{name} must be >= 0, got {scale}")
    return float(scale)


def l1_penalty(weight: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * sum(|w|)``."""
    return _check(scale, "scale") * weight.abs().sum()


def l2_penalty(weight: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * sum(w**2) / 2`` (``scale * tf.nn.l2_loss(w)``)."""
    return _check(scale, "scale") * weight.square().sum() / 2


def penalty(spec: Spec, weight: torch.Tensor) -> torch.Tensor:
    """The penalty of ``spec`` on ``weight`` computed directly (same formula as the graph ops)."""
    total = weight.new_zeros(())
    if spec.get("l1"):
        total = total + l1_penalty(weight, spec["l1"])
    if spec.get("l2"):
        total = total + l2_penalty(weight, spec["l2"])
    return total


def l1_regularizer(scale: float) -> Regularizer:
    """TF1 ``tf.contrib.layers.l1_regularizer``: ``w -> scale * sum(|w|)``."""
    _check(scale, "scale")
    return lambda weight: l1_penalty(weight, scale)


def l2_regularizer(scale: float) -> Regularizer:
    """TF1 ``tf.contrib.layers.l2_regularizer``: ``w -> scale * sum(w**2) / 2``."""
    _check(scale, "scale")
    return lambda weight: l2_penalty(weight, scale)


def l1_l2_regularizer(scale_l1: float = 1.0, scale_l2: float = 1.0) -> Regularizer:
    """TF1 ``tf.contrib.layers.l1_l2_regularizer``: the sum of the L1 and L2 penalties."""
    _check(scale_l1, "scale_l1")
    _check(scale_l2, "scale_l2")
    return lambda weight: l1_penalty(weight, scale_l1) + l2_penalty(weight, scale_l2)


def total_penalty(pairs: Iterable[tuple[torch.Tensor, Regularizer]]) -> torch.Tensor:
    """Sum of ``regularizer(weight)`` over ``(weight, regularizer)`` pairs (TF's REGULARIZATION_LOSSES)."""
    total: torch.Tensor | None = None
    for weight, regularizer in pairs:
        term = regularizer(weight)
        total = term if total is None else total + term
    return torch.zeros(()) if total is None else total


# -------------------------------------------------------------- constraints on tensors
def _dims(tensor: torch.Tensor, axes: Axes) -> list[int]:
    if axes is None:
        return list(range(tensor.dim()))
    dims = [axes] if isinstance(axes, int) else list(axes)
    return [d % tensor.dim() for d in dims]


def _scale(tensor: torch.Tensor, clip_norm: float, axes: Axes) -> torch.Tensor:
    norms = tensor.detach().square().sum(dim=_dims(tensor, axes), keepdim=True).sqrt()
    over = norms > clip_norm
    ones = torch.ones_like(norms)
    return torch.where(over, clip_norm / torch.where(over, norms, ones), ones)


def clip_by_norm(tensor: torch.Tensor, clip_norm: float, axes: Axes = None) -> torch.Tensor:
    """TensorFlow's ``clip_by_norm``: slices along ``axes`` with L2 norm above ``clip_norm`` scaled to it.

    Slices already within the limit are returned bit-for-bit unchanged. ``axes=None`` uses the whole tensor.
    """
    if clip_norm <= 0:
        raise GraphError(f"clip_norm must be > 0, got {clip_norm}")
    return tensor * _scale(tensor, clip_norm, axes)


def max_norm_(weight: torch.Tensor, max_value: float = 1.0, axes: Axes = 1) -> torch.Tensor:
    """In place, under ``torch.no_grad()``: ``weight = clip_by_norm(weight, max_value, axes)``; return it."""
    if max_value <= 0:
        raise GraphError(f"max_value must be > 0, got {max_value}")
    with torch.no_grad():
        weight.mul_(_scale(weight, max_value, axes))
    return weight


@dataclass(frozen=True)
class MaxNorm:
    """A max-norm constraint to call on a weight after every optimizer step (book: 1.0, ``axes=1``)."""

    max_value: float = 1.0
    axes: int | tuple[int, ...] | None = 1

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        return max_norm_(weight, self.max_value, self.axes)


def apply_constraint(spec: Spec, weight: torch.Tensor) -> None:
    """Apply a constraint spec to ``weight`` in place."""
    if spec.get("type") != "max_norm":
        raise GraphError(f"unknown constraint {spec!r}")
    max_norm_(weight, spec["max_value"], spec["axes"])
