"""Sequence operators (ONNX ``seq(tensor)`` values are Python lists of tensors in compiled code)."""

from __future__ import annotations

import torch

from graphdnn.ops.registry import register
from graphdnn.ops.static import as_ints


def _position(seq: list[torch.Tensor], position, default: int, inserting: bool = False) -> int:
    pos = default if position is None else as_ints(position)[0]
    n = len(seq)
    if pos < 0:
        pos += n
    if not (0 <= pos <= n if inserting else 0 <= pos < n):
        raise IndexError(f"sequence position {pos} is out of range for a sequence of {n} tensors")
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
