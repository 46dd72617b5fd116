"""The model's penalty and constraint hooks, resolved once per ``fit`` call into a few tensor-list ops.

A compiled graph lists its variables' regularizer and constraint specs. Instead of building the penalty
per variable in the autograd graph and rescaling each constrained variable with its own dozen small ops,
``fit`` compiles them here:

* L1/L2 penalties (TF1 definitions: ``l1 * sum|w| + l2 * sum(w**2) / 2``) add their exact gradient,
  ``l1 * sign(w) + l2 * w``, to ``w.grad`` after ``backward()`` with ``torch._foreach_*`` ops (one op per
  group of variables sharing a scale), and their value to the logged loss without autograd;
* max-norm constraints compute each variable's norms along its axes and rescale all the variables with
  ``torch._foreach_*`` ops: the same ``w * c / max(||w||, c)`` as :func:`graphdnn.train.max_norm_`, bit for
  bit (vectors within the limit are left untouched).

Other modules keep their hooks: ``model.regularization_loss()`` is added to the loss (autograd) and
``model.apply_constraints()`` is called after each step, as are the extra ``regularizers`` and
``constraints`` given to ``fit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .constraints import max_norm_

__all__ = ["StepHooks"]


def _compiled_specs(model: nn.Module, attr: str) -> list[tuple[Tensor, dict[str, Any]]] | None:
    """``(variable, spec)`` pairs of a compiled graph whose hook is the stock one, else None."""
    from graphdnn.compiler import CompiledGraph

    if not isinstance(model, CompiledGraph):
        return None
    stock = {"regularizer": "regularization_loss", "constraint": "apply_constraints"}[attr]
    if getattr(type(model), stock) is not getattr(CompiledGraph, stock):
        return None  # a subclass with its own hook: call it
    return [(model.variable(name), spec) for name, spec in model._specs(attr)]


class _Penalty:
    """L1/L2 penalties applied as gradients: ``groups`` of (kind, scale, variables)."""

    def __init__(self, pairs: list[tuple[Tensor, dict[str, Any]]]) -> None:
        from graphdnn.errors import GraphError

        groups: dict[tuple[str, float], list[Tensor]] = {}
        for weight, spec in pairs:
            if spec.get("type", "l1_l2") != "l1_l2":
                raise GraphError(f"unknown regularizer {spec!r}")
            for kind in ("l1", "l2"):
                if spec.get(kind):
                    groups.setdefault((kind, float(spec[kind])), []).append(weight)
        self.groups = [(kind, scale, ws, [w for w in ws if w.requires_grad]) for (kind, scale), ws in groups.items()]

    def value(self) -> Tensor | None:
        """The penalty's current value (no autograd)."""
        total: Tensor | None = None
        for kind, scale, weights, _ in self.groups:
            if kind == "l1":
                sums = torch._foreach_norm(weights, 1)
                term = torch.stack(sums).sum() * scale
            else:
                norms = torch._foreach_norm(weights, 2)
                term = torch.stack(norms).square().sum() * scale / 2
            total = term if total is None else total + term
        return total

    def add_gradients(self) -> None:
        """``w.grad += l1 * sign(w) + l2 * w`` for every trainable penalized variable."""
        for kind, scale, _, trainable in self.groups:
            if not trainable:
                continue
            for w in trainable:
                if w.grad is None:
                    w.grad = torch.zeros_like(w)
            terms = torch._foreach_sign(trainable) if kind == "l1" else trainable
            torch._foreach_add_([w.grad for w in trainable], torch._foreach_mul(terms, scale))


class _MaxNorm:
    """Max-norm constraints: each variable's norm axes and its bound (a tensor shaped like its norms).

    The scale is ``reciprocal(max(norm, c)) * c``: for norms above ``c`` that is what ``max_norm_`` computes,
    for the others it is ``reciprocal(c) * c``, exactly 1 for bounds such as 1.0 or 2.0; variables whose bound
    does not round-trip that way are rescaled by :func:`graphdnn.train.max_norm_` itself.
    """

    def __init__(self, pairs: list[tuple[Tensor, dict[str, Any]]]) -> None:
        from graphdnn.errors import GraphError

        self.weights: list[Tensor] = []
        self.dims: list[list[int]] = []
        self.limits: list[Tensor] = []
        self.others: list[tuple[Tensor, float, list[int]]] = []
        for weight, spec in pairs:
            if spec.get("type") != "max_norm":
                raise GraphError(f"unknown constraint {spec!r}")
            max_value = float(spec["max_value"])
            if max_value <= 0:
                raise GraphError(f"max_value must be > 0, got {max_value}")
            axes = spec.get("axes")
            dims = list(range(weight.dim())) if axes is None else [a % weight.dim() for a in (
                [axes] if isinstance(axes, int) else axes)]
            limit = torch.full([1 if d in dims else s for d, s in enumerate(weight.shape)], max_value,
                               dtype=weight.dtype, device=weight.device)
            if not torch.equal(limit.reciprocal() * max_value, torch.ones_like(limit)):
                self.others.append((weight, max_value, dims))
                continue
            self.weights.append(weight)
            self.dims.append(dims)
            self.limits.append(limit)

    def apply(self) -> None:
        """``w *= c / max(||w||_axes, c)`` for every variable (under ``torch.no_grad()``)."""
        if self.weights:
            squares = torch._foreach_mul(self.weights, self.weights)
            norms = [s.sum(dim=d, keepdim=True) for s, d in zip(squares, self.dims)]
            torch._foreach_sqrt_(norms)
            torch._foreach_maximum_(norms, self.limits)
            torch._foreach_reciprocal_(norms)
            torch._foreach_mul_(norms, self.limits)
            torch._foreach_mul_(self.weights, norms)
        for weight, max_value, dims in self.others:
            max_norm_(weight, max_value, dims)


class StepHooks:
    """What a training step adds around forward/backward/step: penalties and constraints.

    ``penalty()`` is the part added to the loss (autograd); after ``backward()``, ``add_gradients()`` adds the
    compiled penalties' gradients and returns their value for the logged loss; ``constrain()`` runs after the
    optimizer step. ``direct=False`` keeps every hook on the autograd path (data-parallel training).
    """

    def __init__(self, model: nn.Module, regularizers: Sequence[Callable[[nn.Module], Tensor]] = (),
                 constraints: Sequence[Callable[[nn.Module], object]] = (), *, direct: bool = True) -> None:
        self.model = model
        self.extra_regularizers = list(regularizers)
        self.extra_constraints = list(constraints)
        specs = _compiled_specs(model, "regularizer") if direct else None
        self.compiled_penalty = _Penalty(specs) if specs else None
        self.loss_hook = None if specs is not None else _hook(model, "regularization_loss")
        specs = _compiled_specs(model, "constraint") if direct else None
        self.compiled_constraint = _MaxNorm(specs) if specs else None
        self.constraint_hook = None if specs is not None else _hook(model, "apply_constraints")
        self.has_constraints = bool(self.compiled_constraint or self.constraint_hook or self.extra_constraints)

    def needed(self) -> tuple[Callable[[], Tensor | None] | None, Callable[[], Tensor | None] | None,
                              Callable[[], None] | None]:
        """``(penalty, add_gradients, constrain)``, each None where it would do nothing: what a step calls."""
        return (self.penalty if self.loss_hook is not None or self.extra_regularizers else None,
                self.add_gradients if self.compiled_penalty is not None else None,
                self.constrain if self.has_constraints else None)

    def penalty(self) -> Tensor | None:
        """The penalty terms that go through autograd (None when there is none)."""
        terms = []
        if self.loss_hook is not None:
            value = self.loss_hook()
            if value is not None:
                terms.append(value)
        terms.extend(fn(self.model) for fn in self.extra_regularizers)
        if not terms:
            return None
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total if isinstance(total, Tensor) else torch.as_tensor(total)

    def add_gradients(self) -> Tensor | None:
        """Add the compiled penalties' gradients; return their value (None without compiled penalties)."""
        if self.compiled_penalty is None:
            return None
        with torch.no_grad():
            self.compiled_penalty.add_gradients()
            return self.compiled_penalty.value()

    def constrain(self) -> None:
        """Apply every constraint in place."""
        if not self.has_constraints:
            return
        with torch.no_grad():
            if self.compiled_constraint is not None:
                self.compiled_constraint.apply()
            if self.constraint_hook is not None:
                self.constraint_hook()
            for fn in self.extra_constraints:
                fn(self.model)


def _hook(model: nn.Module, name: str) -> Callable[[], Any] | None:
    hook = getattr(model, name, None)
    return hook if callable(hook) else None
