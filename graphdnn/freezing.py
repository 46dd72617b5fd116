"""Freezing by name: ``freeze(model, "hidden[12]")``, ``unfreeze``, trainable-parameter selection.

A frozen variable has the attribute ``frozen`` in the graph (saved with it) and ``requires_grad=False``;
``Graph.trainable_variables`` leaves it out, ``trainable_parameters`` and ``graphdnn.make_optimizer``
never hand it to an optimizer, so its value stays bit-identical however long the rest trains.

**Frozen batch norm keeps its moving statistics.** When every variable of a batch-norm op is frozen
(``gamma``, ``beta``, ``moving_mean``, ``moving_variance``: freeze the layer's whole scope), the op
runs in inference mode even under ``model.train()``: it normalizes with the moving statistics and no
longer updates them (Keras' rule for non-trainable batch norm; TF1 would keep updating them through
UPDATE_OPS). Freezing only ``gamma``/``beta`` keeps the batch statistics and the updates.

Patterns are regexes matched at the start of variable names (TF's scope filter: ``"hidden[12]"``),
or lists of exact names. ``stop_gradient_after`` (from ``graphdnn.surgery``) is the other way to
stop training below a tensor.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from graphdnn.errors import GraphError
from graphdnn.graph import Graph
from graphdnn.surgery import stop_gradient_after

Pattern = str | re.Pattern | Iterable[str] | None


def _split(target: Any) -> tuple[Graph, Any]:
    if isinstance(target, Graph):
        return target, None
    graph = getattr(target, "source_graph", None)
    if isinstance(graph, Graph):
        return graph, target
    raise GraphError(f"expected a Graph or a compiled module, got {type(target).__name__}")


def _matcher(pattern: Pattern):
    if pattern is None:
        return lambda n: True
    if isinstance(pattern, (str, re.Pattern)):
        rx = re.compile(pattern)
        return lambda n: rx.match(n) is not None
    names = set(pattern)
    return names.__contains__


def _hint(pattern: Pattern, graph: Graph) -> str:
    from graphdnn.suggest import did_you_mean

    names = [v.name for v in graph.variables()]
    if isinstance(pattern, (str, re.Pattern)):
        return did_you_mean(pattern.pattern if isinstance(pattern, re.Pattern) else pattern, names, scopes=True)
    unknown = sorted(set(pattern or ()) - set(names))
    return did_you_mean(unknown[0], names) if unknown else ""


def _set(target: Any, pattern: Pattern, frozen: bool) -> list[str]:
    graph, module = _split(target)
    match = _matcher(pattern)
    names = [v.name for v in graph.variables() if match(v.name)]
    if pattern is not None and not isinstance(pattern, (str, re.Pattern)):
        unknown = sorted(set(pattern) - {v.name for v in graph.variables()})
        if unknown:
            raise GraphError(f"{unknown[:10]} are not variables of graph {graph.name!r}{_hint(unknown, graph)} "
                             "(a list holds exact names, a string is a regex)")
    if not names:
        raise GraphError(f"pattern {pattern!r} matches no variable of graph {graph.name!r}"
                         f"{_hint(pattern, graph)}")
    for name in names:
        op = graph.get_operation(name)
        if frozen:
            op.attrs["frozen"] = True
        else:
            op.attrs.pop("frozen", None)
        tensors = [graph.values.get(name)]
        if module is not None and name in module.variable_names:
            tensors.append(module.variable(name))
        for t in tensors:
            if isinstance(t, torch.nn.Parameter):
                t.requires_grad_(not frozen and op.attrs["trainable"])
    _sync_batch_norm(graph, module)
    return names


def freeze(target: Any, pattern: Pattern = None) -> list[str]:
    """Freeze the variables of ``target`` (a Graph or compiled module) whose names match
    ``pattern`` (all when None); returns their names."""
    return _set(target, pattern, True)


def unfreeze(target: Any, pattern: Pattern = None) -> list[str]:
    """Undo ``freeze`` for the variables matching ``pattern``; returns their names."""
    return _set(target, pattern, False)


def frozen_variables(target: Any) -> list[str]:
    """Names of the frozen variables."""
    graph, _ = _split(target)
    return [v.name for v in graph.variables() if v.attrs.get("frozen")]


def _sync_batch_norm(graph: Graph, module: Any) -> None:
    """Mark batch-norm ops whose variables are all frozen (``meta["frozen"]``: inference mode)."""
    for op in graph.operations():
        if op.type != "BatchNormalization":
            continue
        variables = [graph.get_operation(r) for r in op.inputs[1:5] if r is not None]
        variables = [v for v in variables if v.is_variable]
        frozen = bool(variables) and all(v.attrs.get("frozen") for v in variables)
        if frozen:
            op.meta["frozen"] = True
        else:
            op.meta.pop("frozen", None)
        if module is not None:
            _patch_module(module, op.name, frozen)


def _patch_module(module: Any, op_name: str, frozen: bool) -> None:
    """Switch an already compiled batch-norm call between inference mode and ``self.training``."""
    changed = False
    for node in module.graph.nodes:
        if node.meta.get("graphdnn_name") != op_name or "training" not in node.kwargs:
            continue
        current = node.kwargs["training"]
        if frozen and current is not False:
            node.kwargs = {**node.kwargs, "training": False}
            changed = True
        elif not frozen and current is False:
            with module.graph.inserting_before(node), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ``training`` is a plain attribute, not a registered tensor
                flag = module.graph.get_attr("training")
            node.kwargs = {**node.kwargs, "training": flag}
            changed = True
    if changed:
        module.recompile()


def trainable_parameters(target: Any, scope: str | None = None) -> list[torch.nn.Parameter]:
    """The parameters an optimizer should get: trainable, unfrozen, ``requires_grad``, and (with
    ``scope``) whose graph names match that regex at the start (``"hidden[34]|outputs"``)."""
    graph, module = _split(target)
    match = _matcher(scope)
    if module is not None:
        pairs = [(n, module.variable(n)) for n in module.variable_names]
    else:
        pairs = [(n, graph.values.get(n)) for n in (v.name for v in graph.variables())]
    return [t for n, t in pairs if isinstance(t, torch.nn.Parameter) and t.requires_grad and match(n)
            and not graph.get_operation(n).attrs.get("frozen")]


__all__ = ["freeze", "frozen_variables", "stop_gradient_after", "trainable_parameters", "unfreeze"]
