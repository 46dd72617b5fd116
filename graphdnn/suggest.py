"""Close matches for a misspelt name or pattern ("did you mean ...?"), shared by every function that takes one."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = ["close_matches", "did_you_mean", "scope_prefixes"]


def scope_prefixes(names: Iterable[str]) -> list[str]:
    """Every name and each of its scopes (``"a/b/c"`` gives ``"a"``, ``"a/b"``, ``"a/b/c"``), in first-seen order."""
    seen: dict[str, None] = {}
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            seen.setdefault("/".join(parts[:i]), None)
    return list(seen)


def close_matches(word: str, candidates: Iterable[str], n: int = 3, *, scopes: bool = False) -> list[str]:
    """Up to ``n`` candidates closest to ``word`` (``difflib``), best first. ``scopes`` also offers each
    candidate's scopes, for patterns matched at the start of names (``"hiden1"`` -> ``"hidden1"``)."""
    pool = scope_prefixes(candidates) if scopes else list(dict.fromkeys(candidates))
    if isinstance(word, re.Pattern):
        word = word.pattern
    if not isinstance(word, str) or not word or not pool:
        return []
    folded = [c for c in pool if c.lower() == word.lower() and c != word]  # "x" for "X"
    found = folded + [c for c in difflib.get_close_matches(word, pool, n=n, cutoff=0.6) if c not in folded]
    found = found[:n]
    if not found:  # a long name differing in one scope: compare the last segment too
        tail = word.rsplit("/", 1)[-1]
        found = [c for c in pool if c.rsplit("/", 1)[-1] == tail][:n] if tail != word else []
    return found


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3, *, scopes: bool = False) -> str:
    """``"; did you mean 'x' or 'y'?"`` for the close matches of ``word``, or ``""`` when there is none."""
    found = close_matches(word, candidates, n, scopes=scopes)
    if not found:
        return ""
    return "; did you mean " + " or ".join(repr(f) for f in found) + "?"
