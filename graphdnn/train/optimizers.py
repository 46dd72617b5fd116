"""Optimizers by name, as in chapter 11: plain SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam, AdamW, FTRL.

All but FTRL are ``torch.optim`` classes with torch's own update rules (which differ in details from
TensorFlow 1's: e.g. TF's RMSProp starts its mean square at 1 and adds epsilon inside the square root,
TF's AdaGrad starts its accumulator at 0.1). Extra keyword arguments go to the optimizer's constructor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from graphdnn.errors import ArgumentTypeError, InputError

from .ftrl import FTRL

__all__ = ["DEFAULT_LEARNING_RATES", "OPTIMIZER_NAMES", "make_optimizer", "trainable"]

DEFAULT_LEARNING_RATES: dict[str, float] = {
    "sgd": 0.01,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adagrad": 0.01,
    "rmsprop": 0.001,
    "adam": 0.001,
    "adamw": 0.001,
    "ftrl": 0.01,
}
OPTIMIZER_NAMES: tuple[str, ...] = tuple(DEFAULT_LEARNING_RATES)


def trainable(params: Iterable[Tensor] | Iterable[dict[str, Any]]) -> list[Any]:
    """Keep only tensors with ``requires_grad=True`` (in plain lists and in param-group dicts).

    Param groups left empty are dropped.
    """
    items = list(params)
    if items and all(isinstance(item, dict) for item in items):
        groups = []
        for group in items:
            kept = [p for p in group["params"] if p.requires_grad]
            if kept:
                groups.append({**group, "params": kept})
        return groups
    if any(isinstance(item, dict) for item in items):
        raise ArgumentTypeError("params must be all tensors or all param-group dicts, not a mix")
    return [p for p in items if p.requires_grad]


def _foreach_devices(params: list[Any]) -> bool:
    """Whether every tensor is on a device with multi-tensor (``torch._foreach_*``) optimizer kernels."""
    tensors = [p for group in params for p in group["params"]] if params and isinstance(params[0], dict) else params
    return all(t.device.type in ("cpu", "cuda") for t in tensors)


def _parameters(params: Any, scope: str | None) -> Any:
    """What ``make_optimizer`` optimizes: a graph's or compiled module's trainable, unfrozen variables (matching
    ``scope``), any other module's parameters, or the given tensors / param groups."""
    from graphdnn.graph import Graph

    if isinstance(params, Graph) or hasattr(params, "source_graph"):
        from graphdnn.errors import GraphError
        from graphdnn.freezing import _hint, _split, trainable_parameters

        kept = trainable_parameters(params, scope)
        if not kept:
            graph = _split(params)[0]
            if scope and not graph.variables(scope):
                raise GraphError(f"scope {scope!r} matches no variable of graph {graph.name!r}{_hint(scope, graph)}")
            raise GraphError(f"no trainable parameter{' matches ' + repr(scope) if scope else ''}: everything is "
                             "frozen")
        return kept
    if scope is not None:
        raise ArgumentTypeError("scope= selects the variables of a Graph or compiled module by name; filter "
                                "the tensors yourself for other parameters")
    if isinstance(params, torch.nn.Module):
        return params.parameters()
    return params


def make_optimizer(
    name: str,
    params: Any,
    lr: float | None = None,
    *,
    scope: str | None = None,
    **kw: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` over ``params``: a Graph or compiled module (its trainable, unfrozen
    variables, those matching the regex ``scope`` when given: ``"hidden[34]|outputs"``), any ``nn.Module``,
    or tensors / param-group dicts (those with ``requires_grad``).

    ``lr`` defaults to ``DEFAULT_LEARNING_RATES[name]``. "momentum" is SGD with momentum 0.9, "nesterov"
    adds Nesterov's look-ahead (both overridable with ``momentum=``); "ftrl" takes :class:`FTRL`'s
    TensorFlow-named keywords. The torch optimizers use their multi-tensor implementation (``foreach=True``)
    on CPU and CUDA unless ``foreach`` or ``fused`` is given.
    """
    key = name.lower()
    if key not in DEFAULT_LEARNING_RATES:
        raise InputError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZER_NAMES)}")
    rate = DEFAULT_LEARNING_RATES[key] if lr is None else float(lr)
    kept = trainable(_parameters(params, scope))
    if not kept:
        raise InputError(f"make_optimizer({name!r}): no parameter has requires_grad=True")
    if key != "ftrl" and "foreach" not in kw and "fused" not in kw and _foreach_devices(kept):
        kw["foreach"] = True  # one multi-tensor kernel per update, not a Python loop over the parameters
    if key == "sgd":
        return torch.optim.SGD(kept, lr=rate, **kw)
    if key in ("momentum", "nesterov"):
        kw.setdefault("momentum", 0.9)
        return torch.optim.SGD(kept, lr=rate, nesterov=key == "nesterov", **kw)
    if key == "adagrad":
        return torch.optim.Adagrad(kept, lr=rate, **kw)
    if key == "rmsprop":
        return torch.optim.RMSprop(kept, lr=rate, **kw)
    if key == "adam":
        return torch.optim.Adam(kept, lr=rate, **kw)
    if key == "adamw":
        return torch.optim.AdamW(kept, lr=rate, **kw)
    return FTRL(kept, learning_rate=rate, **kw)
