"""Direct reads of a compiled module's variables from its generated code.

Generated code reads a variable as ``self.hidden4.kernel``. On an ``nn.Module`` each step of that is a
failed normal attribute lookup (Python builds and drops an ``AttributeError``) followed by
``nn.Module.__getattr__``: several times the cost of the read, twice per variable per call, which is a
measurable share of a small model's training step. :func:`install` puts a property per child name on the
module's own class (torch.fx gives every ``GraphModule`` instance a class of its own) and on the plain scope
modules below it. Each property looks the name up in ``_parameters``, ``_buffers`` and ``_modules`` at every
read, so it follows any later change made through the ``nn.Module`` API or to those dicts directly; names
the class already defines (methods, ``training``) are left alone.
"""

from __future__ import annotations

from typing import Any

from torch import nn

_STORES = ("_parameters", "_buffers", "_modules")


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

        def delete(module: nn.Module) -> None:
            d = module.__dict__
            if any(name in d[store] for store in _STORES):
                nn.Module.__delattr__(module, name)
            elif name in d:
                del d[name]
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
    return _plain_scope, (), scope.__dict__


def install(module: nn.Module) -> None:
    """Make ``module``'s children and those of its plain scope modules (``nn.Module`` instances that
    only hold variables and scopes) direct reads. ``module``'s class must be its own (an fx
    ``GraphModule``'s is). Safe to call again after the module changed."""
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
        _add_slots(cls, _children(scope))
        stack.extend(child for child in scope.__dict__["_modules"].values() if child is not None)


__all__ = ["install"]
