"""String operators. String tensors are numpy arrays of ``str`` (object dtype) in compiled code."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from graphdnn.errors import ArgumentTypeError, GraphError, InputError
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
        raise InputError(f"StringNormalizer takes a [C] or [1, C] tensor, not {list(words.shape)}")
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


def _strings(x: np.ndarray, op: str) -> np.ndarray:
    words = np.asarray(x, dtype=object)
    if any(not isinstance(w, str) for w in words.reshape(-1)):
        raise ArgumentTypeError(f"{op} takes a string tensor")
    return words


@register("StringConcat", since=20)
def string_concat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise ``x + y`` with numpy broadcasting."""
    a, b = _strings(x, "StringConcat"), _strings(y, "StringConcat")
    return np.asarray(np.frompyfunc(str.__add__, 2, 1)(a, b), dtype=object)


@register("StringSplit", since=20, num_outputs=2)
def string_split(
    x: np.ndarray, *, delimiter: str | None = None, maxsplit: int | None = None
) -> tuple[np.ndarray, torch.Tensor]:
    """Split every element on ``delimiter`` (unset or "": runs of whitespace, trimmed, as ``str.split()``)
    at most ``maxsplit`` times. Returns the substrings [*x.shape, most substrings], padded with "", and
    their counts [*x.shape] (int64). An empty element split on an explicit delimiter is one empty
    substring, as in Python and the ONNX reference (ONNX Runtime counts 0 there)."""
    words = _strings(x, "StringSplit")
    sep = delimiter or None
    limit = -1 if maxsplit is None else maxsplit
    parts = [w.split(sep, limit) for w in words.reshape(-1)]
    counts = [len(p) for p in parts]
    width = max(counts, default=0)
    out = np.full((len(parts), width), "", dtype=object)
    for i, p in enumerate(parts):
        out[i, : len(p)] = p
    return out.reshape(*words.shape, width), torch.tensor(counts, dtype=torch.int64).reshape(words.shape)


@register("RegexFullMatch", since=20)
def regex_full_match(x: np.ndarray, *, pattern: str = "") -> torch.Tensor:
    """Whether each element matches ``pattern`` entirely. The pattern is RE2 syntax, run with Python's
    ``re`` as the ONNX reference does: the common syntax agrees; RE2-only forms (``\\pL`` classes...) fail."""
    words = _strings(x, "RegexFullMatch")
    regex = re.compile(pattern)
    hits = [regex.fullmatch(w) is not None for w in words.reshape(-1)]
    return torch.tensor(hits, dtype=torch.bool).reshape(words.shape)


def _ngram_table(
    pool: Sequence, ngram_counts: Sequence[int], min_gram_length: int, max_gram_length: int
) -> dict[tuple, int]:
    """{n-gram tuple: its ordinal in the pool} for the n-grams of allowed lengths. ``ngram_counts[i]``
    is where the (i+1)-grams start in the flat ``pool``."""
    table: dict[tuple, int] = {}
    ordinal = 0
    for i, start in enumerate(ngram_counts):
        size = i + 1
        end = ngram_counts[i + 1] if i + 1 < len(ngram_counts) else len(pool)
        count = max(end - start, 0) // size
        if min_gram_length <= size <= max_gram_length:
            for j in range(count):
                table[tuple(pool[start + j * size : start + (j + 1) * size])] = ordinal + j
        ordinal += count
    return table


@register("TfIdfVectorizer", since=9)
def tfidf_vectorizer(
    x,
    *,
    max_gram_length: int,
    max_skip_count: int,
    min_gram_length: int,
    mode: str,
    ngram_counts: Sequence[int],
    ngram_indexes: Sequence[int],
    pool_int64s: Sequence[int] | None = None,
    pool_strings: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Count the pool's n-grams in each row of ``x`` ([C] or [N, C] ints or strings): every n-gram of
    length ``min_gram_length..max_gram_length`` whose items are ``skip + 1`` apart, for each
    ``skip <= max_skip_count`` (1-grams counted once), adds 1 at ``ngram_indexes[its pool ordinal]``.
    TF gives the counts; IDF the n-gram's weight where its count > 0; TFIDF weight * count (no weights:
    1). ``weights[i]`` weighs the i-th pool n-gram, as the specification and ONNX Runtime have it (the
    ONNX Python reference indexes it by output coordinate instead)."""
    if mode not in ("TF", "IDF", "TFIDF"):
        raise GraphError(f"TfIdfVectorizer: mode must be TF, IDF or TFIDF, not {mode!r}")
    pool = list(pool_strings) if pool_strings else list(pool_int64s or [])
    table = _ngram_table(pool, ngram_counts, min_gram_length, max_gram_length)
    size = max(ngram_indexes) + 1
    items = x.tolist() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=object).tolist()
    rank = x.dim() if isinstance(x, torch.Tensor) else np.ndim(x)
    if rank > 2:
        raise InputError(f"TfIdfVectorizer takes a [C] or [N, C] input, not rank {rank}")
    rows = items if rank == 2 else [items if rank == 1 else [items]]
    counts = torch.zeros(len(rows), size, dtype=torch.float32)
    for r, row in enumerate(rows):
        for skip in range(max_skip_count + 1):
            step = skip + 1
            lengths = range(max(min_gram_length, 1 if skip == 0 else 2), max_gram_length + 1)
            for start in range(len(row)):
                for length in lengths:
                    end = start + (length - 1) * step
                    if end >= len(row):
                        break
                    ordinal = table.get(tuple(row[start : end + 1 : step]))
                    if ordinal is not None:
                        counts[r, ngram_indexes[ordinal]] += 1
    if mode != "TF":
        scale = torch.ones(size)
        if weights:  # weights[i] belongs to the i-th pool n-gram, i.e. to output ngram_indexes[i]
            scale[torch.tensor(list(ngram_indexes[: len(weights)]))] = torch.tensor(
                list(weights[: len(ngram_indexes)]), dtype=torch.float32)
        counts = scale * ((counts > 0).float() if mode == "IDF" else counts)
    return counts if rank == 2 else counts[0]
