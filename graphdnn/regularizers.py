"""Weight penalties and constraints attached to variables when the graph is defined.

A regularizer spec adds, as in TF1, ops computing the penalty under ``<variable>/Regularizer/`` and
puts their result in the ``regularization_losses`` collection; ``fit`` adds the collection's total
to the loss. Conventions are TF1's (``tf.contrib.layers``): ``l1(s) = s * sum|w|`` and
``l2(s) = s * sum(w**2) / 2`` (``tf.nn.l2_loss``). Keras' ``l2(k) = k * sum(w**2)`` is ``l2(2 * k)``.

A constraint spec is applied to the variable in place after every optimizer step:
``max_norm(c, axes)`` rescales ``w`` to ``w * c / max(||w||_axes, c)`` like ``tf.clip_by_norm``.
For a dense kernel stored ``[in, out]`` the book's ``axes=1`` bounds the norm of each input unit's
outgoing weights (each row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from graphdnn.errors import GraphError

if TYPE_CHECKING:
    from graphdnn.graph import Graph, Tensor

Spec = dict[str, Any]


def l1(scale: float = 0.01) -> Spec:
    return {"type": "l1_l2", "l1": float(scale), "l2": 0.0}


def l2(scale: float = 0.01) -> Spec:
    return {"type": "l1_l2", "l1": 0.0, "l2": float(scale)}


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> Spec:  # noqa: F811 - same names as the specs
    return {"type": "l1_l2", "l1": float(l1), "l2": float(l2)}


def max_norm(max_value: float = 1.0, axes: int | list[int] = 1) -> Spec:
    axes_list = [axes] if isinstance(axes, int) else list(axes)
    return {"type": "max_norm", "max_value": float(max_value), "axes": axes_list}


def add_loss(graph: Graph, variable: Tensor, spec: Spec) -> Tensor:
    """Build the penalty ops of ``spec`` on ``variable`` and add the result to the collection."""
    from graphdnn.graph import REGULARIZATION_LOSSES

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


def penalty(spec: Spec, weight: torch.Tensor) -> torch.Tensor:
    """The penalty of ``spec`` on ``weight`` computed directly (same formula as the graph ops)."""
    from graphdnn.train.regularizers import l1_penalty, l2_penalty

    total = weight.new_zeros(())
    if spec.get("l1"):
        total = total + l1_penalty(weight, spec["l1"])
    if spec.get("l2"):
        total = total + l2_penalty(weight, spec["l2"])
    return total


def apply_constraint(spec: Spec, weight: torch.Tensor) -> None:
    """Apply a constraint spec to ``weight`` in place."""
    from graphdnn.train.constraints import max_norm_

    if spec.get("type") != "max_norm":
        raise GraphError(f"unknown constraint {spec!r}")
    max_norm_(weight, spec["max_value"], spec["axes"])
