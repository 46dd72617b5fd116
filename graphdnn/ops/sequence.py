"""Sequence and optional operators.

In compiled code an ONNX ``seq(tensor)`` value is a Python list of tensors and an ``optional(T)``
value is a value of type ``T`` or ``None``; the graph spells their types ``seq(float32)``,
``optional(seq(float32))`` (see ``graphdnn.dtypes.value_type_name``).
"""

from __future__ import annotations

from typing import Any

import torch

from graphdnn.dtypes import format_value_type, is_container_type, parse_value_type, value_type_name
from graphdnn.errors import InputError, OutOfRangeError
from graphdnn.ops.registry import register
from graphdnn.ops.static import as_ints


def _position(seq: list[torch.Tensor], position, default: int, inserting: bool = False) -> int:
    pos = default if position is None else as_ints(position)[0]
    n = len(seq)
    if pos < 0:
        pos += n
    if not (0 <= pos <= n if inserting else 0 <= pos < n):
        raise OutOfRangeError(f"sequence position {pos} is out of range for a sequence of {n} tensors")
    return pos


@register("SequenceEmpty", since=11)
def sequence_empty(*, dtype: int | None = None) -> list[torch.Tensor]:
    return []


@register("SequenceConstruct", since=11)
def sequence_construct(*inputs: torch.Tensor) -> list[torch.Tensor]:
    return list(inputs)


@register("SequenceInsert", since=11, static_inputs=(2,))
def sequence_insert(seq: list[torch.Tensor], tensor: torch.Tensor, position=None) -> list[torch.Tensor]:
    out = list(seq)
    out.insert(_position(seq, position, len(seq), inserting=True), tensor)
    return out


@register("SequenceErase", since=11, static_inputs=(1,))
def sequence_erase(seq: list[torch.Tensor], position=None) -> list[torch.Tensor]:
    out = list(seq)
    del out[_position(seq, position, len(seq) - 1)]
    return out


@register("SequenceAt", since=11, static_inputs=(1,))
def sequence_at(seq: list[torch.Tensor], position) -> torch.Tensor:
    return seq[_position(seq, position, 0)]


@register("SequenceLength", since=11)
def sequence_length(seq: list[torch.Tensor]) -> torch.Tensor:
    return torch.tensor(len(seq), dtype=torch.int64)


@register("ConcatFromSequence", since=11)
def concat_from_sequence(seq: list[torch.Tensor], *, axis: int, new_axis: int = 0) -> torch.Tensor:
    return torch.stack(seq, dim=axis) if new_axis else torch.cat(seq, dim=axis)


@register("SplitToSequence", since=11, static_inputs=(1,))
def split_to_sequence(x: torch.Tensor, split=None, *, axis: int = 0, keepdims: int = 1) -> list[torch.Tensor]:
    """No ``split``: pieces of size 1 (squeezed unless ``keepdims``); a scalar: pieces of that size
    (the last may be shorter); a 1-D list: those sizes."""
    if split is None:
        parts = list(torch.split(x, 1, dim=axis))
        return parts if keepdims else [p.squeeze(axis) for p in parts]
    sizes = as_ints(split)
    scalar = not isinstance(split, (list, tuple)) and not (isinstance(split, torch.Tensor) and split.dim() == 1)
    return list(torch.split(x, sizes[0] if scalar else sizes, dim=axis))


# ---- optionals ----------------------------------------------------------------------------------
def _value_type(graph: Any, op: Any) -> str | None:
    """The type string of ``op``'s first input (``float32[2,?]`` for a tensor), None when unknown."""
    ref = op.inputs[0] if op.inputs else None
    if ref is None:
        return None
    t = graph.get_tensor(ref)
    if t.dtype is None or is_container_type(t.dtype):
        return t.dtype
    return format_value_type(("tensor", t.dtype, t.shape))


def _infer_optional(graph: Any, op: Any) -> list[tuple[Any, str | None]]:
    inner = _value_type(graph, op) or op.attrs.get("type")
    return [(None, value_type_name(f"optional({inner})") if inner else None)]


def _infer_has_element(graph: Any, op: Any) -> list[tuple[Any, str | None]]:
    return [((), "bool")]


def _infer_get_element(graph: Any, op: Any) -> list[tuple[Any, str | None]]:
    spelled = _value_type(graph, op)
    if spelled is None:
        return [(None, None)]
    vtype = parse_value_type(spelled)
    if vtype[0] == "optional":
        vtype = vtype[1]
    if vtype[0] == "tensor":
        return [(vtype[2], vtype[1])]
    return [(None, format_value_type(vtype))]


@register("Optional", since=15, infer=_infer_optional)
def optional(value: Any = None, *, type: str | None = None) -> Any:
    """An optional holding ``value``, or the empty optional (``None``) of ``type`` without one."""
    return value


@register("OptionalHasElement", since=15, infer=_infer_has_element)
def optional_has_element(value: Any = None) -> torch.Tensor:
    """A bool scalar: whether the optional holds a value (from opset 18 a tensor or sequence input
    counts as a full optional; an omitted input as an empty one)."""
    return torch.tensor(value is not None)


@register("OptionalGetElement", since=15, infer=_infer_get_element)
def optional_get_element(value: Any) -> Any:
    """The optional's value (from opset 18 a tensor or sequence input is returned as is)."""
    if value is None:
        raise InputError("OptionalGetElement: the optional input is empty")
    return value
