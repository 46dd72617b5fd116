"""String operators. String tensors are numpy arrays of ``str`` (object dtype) in compiled code."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphdnn.ops.registry import register


@register("StringNormalizer", since=10)
def string_normalizer(
    x: np.ndarray,
    *,
    case_change_action: str = "NONE",
    is_case_sensitive: int = 0,
    locale: str = "",
    stopwords: Sequence[str] | None = None,
) -> np.ndarray:
    """Drop ``stopwords`` (compared case-sensitively or not), then change case. Input ``[C]`` or
    ``[1, C]``; an output with nothing left holds one empty string, as the specification says."""
    words = np.asarray(x, dtype=object)
    if words.ndim not in (1, 2) or (words.ndim == 2 and words.shape[0] != 1):
        raise ValueError(f"StringNormalizer takes a [C] or [1, C] tensor, not {list(words.shape)}")
    stops = set(stopwords or ())
    if is_case_sensitive:
        kept = [w for w in words.reshape(-1) if w not in stops]
    else:
        folded = {s.casefold() for s in stops}
        kept = [w for w in words.reshape(-1) if w.casefold() not in folded]
    if case_change_action == "LOWER":
        kept = [w.lower() for w in kept]
    elif case_change_action == "UPPER":
        kept = [w.upper() for w in kept]
    out = np.array(kept or [""], dtype=object)
    return out.reshape(1, -1) if words.ndim == 2 else out
