"""Where the layers above the graph IR plug into it, so that the IR imports none of them.

``Graph`` needs a few things defined higher up: the operator set (``Graph.add_op`` checks an op type and infers
its outputs' shapes), the regularizer penalty ops (``Graph.variable(regularizer=...)``), the JSON form
(``Graph.to_json``/``from_json``) and the drawing of variable values (``Graph.from_json(initialize=True)``).
Each is a named hook here. The module that implements a hook installs it when it is imported
(:func:`install`); the package's facade (``graphdnn/__init__.py``) says which module that is
(:func:`provide`), so the first use of a hook imports it, and a program that never builds an op never loads
the operator set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphdnn.errors import GraphDNNError

__all__ = ["FROM_JSON", "INITIALIZE", "OPS", "REGULARIZER", "TO_JSON", "get", "install", "provide"]

#: ``(op_type, domain, version) -> definition`` and ``(graph, op, definition, count) -> output infos``.
OPS = "ops"
#: ``(graph, variable, spec) -> loss tensor``: the penalty ops of a regularizer spec.
REGULARIZER = "regularizer"
#: ``(graph, indent) -> str`` and ``(text) -> Graph``.
TO_JSON, FROM_JSON = "to_json", "from_json"
#: ``(graph) -> names``: give the variables that have no value one drawn from their initializers.
INITIALIZE = "initialize"

_HOOKS: dict[str, Any] = {}
_LOADERS: dict[str, Callable[[], object]] = {}


def install(name: str, hook: Any) -> None:
    """Make ``hook`` the implementation of ``name`` (called by the implementing module when imported)."""
    _HOOKS[name] = hook


def provide(name: str, loader: Callable[[], object]) -> None:
    """Say how to load the implementation of ``name``: ``loader()`` imports the module that installs it."""
    _LOADERS[name] = loader


def get(name: str) -> Any:
    """The implementation of hook ``name``, loading it on first use."""
    hook = _HOOKS.get(name)
    if hook is None:
        loader = _LOADERS.get(name)
        if loader is not None:
            loader()
        hook = _HOOKS.get(name)
        if hook is None:
            raise GraphDNNError(f"nothing implements the graph's {name!r} hook: import the module that installs it")
    return hook
