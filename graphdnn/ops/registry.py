"""The op registry: each operator is defined once, keyed by (domain, op type, since_version).

An op definition is its torch *lowering*: a plain function called with the op's input tensors
positionally (``None`` for an omitted optional input) and its attributes as keyword arguments,
named exactly as in the ONNX specification. It returns one tensor or a tuple of tensors. Ops that
behave differently in training (BatchNormalization, Dropout) declare ``uses_training=True`` and
receive ``training=<bool>`` as an extra keyword. Compiled modules call these functions directly
from generated code, so a lowering must be traceable by ``torch.fx``/``torch.compile``: plain torch
calls, no Python-side inspection of tensor values unless the op truly needs it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphdnn.errors import UnknownOpError
from graphdnn.opset import DEFAULT_OPSET, GRAPHDNN_DOMAIN, MAX_ONNX_OPSET, MIN_ONNX_OPSET, ONNX_DOMAIN

__all__ = ["DEFAULT_OPSET", "GRAPHDNN_DOMAIN", "MAX_ONNX_OPSET", "MIN_ONNX_OPSET", "ONNX_DOMAIN", "OpDef", "is_known",
           "known_ops", "lookup", "register"]


@dataclass(frozen=True)
class OpDef:
    """One version of one operator."""

    op_type: str
    domain: str
    since_version: int
    lower: Callable[..., Any]
    #: 1: the lowering returns a tensor. n > 1: it returns an n-tuple. None: the node decides how
    #: many outputs it has, and the lowering receives ``_outputs=k`` and returns a k-tuple.
    num_outputs: int | None = 1
    uses_training: bool = False
    #: Optional shape/dtype inference ``infer(graph, op) -> list[(shape, dtype)]`` for ops whose
    #: output shape depends on input *values* (Reshape with a constant shape, ConstantOfShape...).
    infer: Callable[..., Any] | None = None
    #: Indices of inputs the lowering needs as Python values (shapes, axes...); see ``ops.static``.
    static_inputs: tuple[int, ...] = ()
    #: For ops that differentiate part of their own graph (ONNX ``Gradient``): ``region(op) ->
    #: (input value names, output value names)``; the lowering receives ``_region``, a module compiled
    #: from the same graph that computes those outputs from those inputs.
    region: Callable[..., Any] | None = None


_REGISTRY: dict[tuple[str, str], list[OpDef]] = {}


def register(
    op_type: str,
    since: int = 1,
    domain: str = ONNX_DOMAIN,
    *,
    num_outputs: int | None = 1,
    uses_training: bool = False,
    infer: Callable[..., Any] | None = None,
    static_inputs: tuple[int, ...] = (),
    region: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` as the lowering of ``op_type`` from opset ``since`` on."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        versions = _REGISTRY.setdefault((domain, op_type), [])
        opdef = OpDef(op_type, domain, since, fn, num_outputs, uses_training, infer, tuple(static_inputs), region)
        keys = [v.since_version for v in versions]
        pos = bisect.bisect_left(keys, since)
        if pos < len(keys) and keys[pos] == since:
            versions[pos] = opdef
        else:
            versions.insert(pos, opdef)
        return fn

    return wrap


def lookup(op_type: str, domain: str = ONNX_DOMAIN, opset: int | None = None) -> OpDef:
    """The definition of ``op_type`` in force at ``opset`` (the newest one when ``opset`` is None)."""
    _ensure_loaded()
    versions = _REGISTRY.get((domain, op_type))
    if not versions:
        where = f"domain {domain!r}" if domain else "the ONNX domain"
        raise UnknownOpError(f"unknown op type {op_type!r} in {where}; graphdnn has no lowering for it")
    if opset is None:
        return versions[-1]
    candidates = [v for v in versions if v.since_version <= opset]
    if not candidates:
        raise UnknownOpError(
            f"op {op_type!r} is not defined at opset {opset} (graphdnn knows it from opset "
            f"{versions[0].since_version} on)"
        )
    return candidates[-1]


def is_known(op_type: str, domain: str = ONNX_DOMAIN) -> bool:
    """Whether any version of ``op_type`` is registered."""
    _ensure_loaded()
    return (domain, op_type) in _REGISTRY


def known_ops() -> list[tuple[str, str]]:
    """Every registered (domain, op type)."""
    _ensure_loaded()
    return sorted(_REGISTRY)


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import graphdnn.ops  # noqa: F401  (registers the built-in ops)
