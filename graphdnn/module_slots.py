"""Direct reads of a compiled module's variables from its generated code.

Generated code reads a variable as ``self.hidden4.kernel``. On an ``nn.Module`` each step of that is a
failed normal attribute lookup (Python builds and drops an ``AttributeError``) followed by
``nn.Module.__getattr__``: several times the cost of the read, twice per variable per call, which is a
measurable share of a small model's training step. :func:`install` puts a property per child name on the
module's own class (torch.fx gives every ``GraphModule`` instance a class of its own) and on the plain scope
modules below it. Each property looks the name up in ``_parameters``, ``_buffers`` and ``_modules`` at every
read, so it follows any later change made through the ``nn.Module`` API or to those dicts directly; names
the class already defines (methods, ``training``) are left alone.

:func:`install` also makes those three dicts :class:`Store` objects, which count their changes in one
process-wide :data:`EPOCH`. That lets a compiled module read all its variables in one step
(:func:`gather_reads`, :class:`BatchedReads`): the tuple read last time is reused while no store changed
(``functional_call``, ``load_state_dict(assign=True)``, parametrizations and pruning all change one).
A variable that something other than a counting store supplies (a parametrization's property, a plain
attribute, a store replaced by a plain dict) is read afresh at every call.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_STORES = ("_parameters", "_buffers", "_modules")

#: Changes made to any :class:`Store` so far (one counter for all modules: stores change rarely).
EPOCH = [0]


class Store(dict):
    """A module's ``_parameters``, ``_buffers`` or ``_modules`` dict that counts each change in
    :data:`EPOCH` (after making it, so a read racing with it is retried, never kept stale)."""

    __slots__ = ()

    def __reduce_ex__(self, protocol: Any) -> Any:  # copies and pickles are plain dicts
        return dict, (dict(self),)


def _counted(name: str) -> Callable[..., Any]:
    change = getattr(dict, name)

    def counted(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return change(self, *args, **kwargs)
        finally:
            EPOCH[0] += 1

    counted.__name__ = counted.__qualname__ = name
    return counted


for _name in ("__setitem__", "__delitem__", "pop", "popitem", "setdefault", "update", "clear", "__ior__"):
    setattr(Store, _name, _counted(_name))  # every dict method that changes the dict


class _Slot(property):
    """A child of an ``nn.Module`` read without ``__getattr__``; assignment and deletion go through
    ``nn.Module``'s own rules."""

    def __init__(self, name: str) -> None:
        def get(module: nn.Module) -> Any:  # nn.Module.__getattr__'s order, unrolled: it runs at every read
            d = module.__dict__
            value = d["_parameters"].get(name)
            if value is not None:
                return value
            value = d["_buffers"].get(name)
            if value is not None:
                return value
            value = d["_modules"].get(name)
            if value is not None:
                return value
            if name in d:  # a plain attribute set after the name left the stores
                return d[name]
            return nn.Module.__getattr__(module, name)  # a registered None, or the usual AttributeError

        def set_(module: nn.Module, value: Any) -> None:
            d = module.__dict__
            if isinstance(value, (nn.Parameter, nn.Module)) or any(name in d[store] for store in _STORES):
                nn.Module.__setattr__(module, name, value)
            else:  # what object.__setattr__ would do, which this property shadows
                d[name] = value
                EPOCH[0] += 1

        def delete(module: nn.Module) -> None:
            d = module.__dict__
            if any(name in d[store] for store in _STORES):
                nn.Module.__delattr__(module, name)
            elif name in d:
                del d[name]
                EPOCH[0] += 1
            else:
                raise AttributeError(f"{type(module).__name__!r} object has no attribute {name!r}")

        super().__init__(get, set_, delete, f"child {name!r} of the module")


def _children(module: nn.Module) -> list[str]:
    return [name for store in _STORES for name in module.__dict__[store]]


def _add_slots(cls: type, names: list[str]) -> None:
    for name in names:
        if name.isidentifier() and not hasattr(cls, name):
            setattr(cls, name, _Slot(name))


def _plain_scope() -> nn.Module:
    return nn.Module.__new__(nn.Module)


def _reduce_scope(scope: nn.Module, protocol: int) -> tuple:
    """Pickle and copy a scope as the plain ``nn.Module`` it was: its class, made for it alone, has no
    importable name (a compiled module gives its copies their own properties again)."""
    return _plain_scope, (), {k: dict(v) if type(v) is Store else v for k, v in scope.__dict__.items()}


def _track(module: nn.Module) -> None:
    d = module.__dict__
    for store in _STORES:
        if type(d[store]) is dict:
            d[store] = Store(d[store])
            EPOCH[0] += 1


def install(module: nn.Module) -> None:
    """Make ``module``'s children and those of its plain scope modules (``nn.Module`` instances that
    only hold variables and scopes) direct reads. ``module``'s class must be its own (an fx
    ``GraphModule``'s is). Safe to call again after the module changed."""
    _track(module)
    _add_slots(type(module), _children(module))
    stack = [child for child in module.__dict__["_modules"].values() if child is not None]
    while stack:
        scope = stack.pop()
        cls = type(scope)
        if cls is nn.Module:
            cls = type("Module", (nn.Module,), {"__module__": nn.Module.__module__, "_graphdnn_scope": True,
                                                "__reduce_ex__": _reduce_scope})
            scope.__class__ = cls
        elif not cls.__dict__.get("_graphdnn_scope"):
            continue  # a module of another kind: not ours to change
        _track(scope)
        _add_slots(cls, _children(scope))
        stack.extend(child for child in scope.__dict__["_modules"].values() if child is not None)


# -- all variables in one read -----------------------------------------------------------------
_CACHE = "_graphdnn_read_cache"
_PATHS = "_graphdnn_read_paths"
#: The method generated code reads all batched variables with (:class:`BatchedReads`, :func:`gathered`).
READS = "_graphdnn_reads"


def _slot(owner: Any, name: str) -> bool:
    """Whether ``owner.name`` is read through a slot of ``owner``'s class."""
    return isinstance(owner, nn.Module) and isinstance(type(owner).__dict__.get(name), _Slot)


def _slotted(module: nn.Module, path: str) -> bool:
    """Whether each step of ``path`` below ``module`` is read by a slot."""
    owner: Any = module
    for name in path.split("."):
        if not _slot(owner, name):
            return False
        owner = getattr(owner, name)
    return True


def _direct(owner: Any, name: str) -> bool:
    """Whether ``owner.name`` is read by a slot from one of ``owner``'s stores, all of them counting changes."""
    if not _slot(owner, name) or name in owner.__dict__:
        return False
    stores = [owner.__dict__[store] for store in _STORES]
    return all(type(s) is Store for s in stores) and any(name in s for s in stores)


def _refresh(module: nn.Module) -> tuple:
    """Read every batched path; keep the tuple when all of them come from counting stores."""
    epoch = EPOCH[0]
    d = module.__dict__
    values = []
    steady = True
    for path in d[_PATHS]:
        owner: Any = module
        for name in path.split("."):
            steady = steady and _direct(owner, name)
            owner = getattr(owner, name)
        values.append(owner)
    result = tuple(values)
    if not torch.compiler.is_compiling():  # torch.compile traces reads, and keeps no side effect of them
        d[_CACHE] = (epoch, id(d), result if steady else None)
    return result


def gathered(module: nn.Module) -> tuple:
    """The batched variables of ``module``, read afresh only after a store changed (a method of compiled
    modules, :data:`READS`: a property would turn a missing variable's ``AttributeError`` into one about
    itself, through ``nn.Module.__getattr__``)."""
    d = module.__dict__
    cached = d.get(_CACHE)
    # the instance dict's id: a shallow copy of the module (its __dict__ copied) reads its own variables
    if cached is not None and cached[0] == EPOCH[0] and cached[1] == id(d) and cached[2] is not None:
        return cached[2]
    return _refresh(module)


class BatchedReads:
    """A code transformer maker for ``graph.on_generate_code``: it replaces the generated lines
    ``<name> = self.<path>`` of ``reads`` (``(name, path)`` pairs) by one ``<names>, = self._graphdnn_reads()``.
    When any of those lines is not found as expected, the code is left as it is; ``applied`` tells."""

    def __init__(self, reads: list[tuple[str, str]]) -> None:
        self.reads = reads
        self.applied = False

    def __call__(self, previous: Callable | None) -> Callable[[list[str]], list[str]]:
        def transform(body: list[str]) -> list[str]:
            body = previous(body) if previous is not None else body
            lines = {f"{name} = self.{path}" for name, path in self.reads}
            kept: list[str] = []
            found: set[str] = set()
            dropped = False  # what fx writes after a dropped line: its end, or ``;  x = None`` on its own
            for line in body:
                if line in lines and line not in found:
                    found.add(line)
                    dropped = True
                    continue
                if dropped and line.startswith(";"):
                    line = line[1:].lstrip()
                if not (dropped and line == "\n"):
                    kept.append(line)
                dropped = False
            self.applied = bool(self.reads) and found == lines
            if not self.applied:
                return body
            return [_unpack([name for name, _ in self.reads]), *kept]

        return transform

    def install(self, module: nn.Module) -> None:
        """Give ``module`` the paths its freshly generated code unpacks from :data:`READS`."""
        d = module.__dict__
        d[_PATHS] = tuple(path for _, path in self.reads) if self.applied else ()
        d.pop(_CACHE, None)


def _unpack(names: list[str]) -> str:
    """The line ``a, b, c = self._graphdnn_reads()``, wrapped in parentheses when long."""
    targets = ", ".join(names) + ("," if len(names) == 1 else "")
    if len(targets) <= 100:
        return f"{targets} = self.{READS}()\n"
    lines = textwrap.wrap(targets, 100, break_long_words=False, break_on_hyphens=False)
    return "(" + "\n ".join(lines) + f") = self.{READS}()\n"


def gather_reads(module: nn.Module, nodes: list[Any]) -> list[tuple[str, str]]:
    """``(name, path)`` of the fx ``get_attr`` nodes whose every step is a slot of ``module``: the reads
    :class:`BatchedReads` can gather."""
    return [(node.name, node.target) for node in nodes
            if node.op == "get_attr" and isinstance(node.target, str) and _slotted(module, node.target)]


__all__ = ["EPOCH", "READS", "BatchedReads", "Store", "gather_reads", "gathered", "install"]
