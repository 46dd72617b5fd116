"""A memory budget per load: what a file may make graphdnn allocate is bounded by the file's size.

A model file of a few bytes can ask for gigabytes: ``ConstantOfShape([1e9])``, a sparse tensor with
huge dims, a TF ``Const`` whose one value repeats over 2^28 elements, a deflated zip member that
expands a thousand times. Every such allocation is *charged* to the ``LoadBudget`` current for the
load before it is made; going over raises ``ResourceLimitError`` naming the tensor, the size and the
budget, instead of exhausting the machine's memory.

The budget of a load is ``FACTOR`` times the bytes of the model's files (external data and
checkpoint data included, as they are read) plus ``FLOOR`` (256 MiB), unless the caller passes
``max_bytes=`` (to ``graphdnn.load``, ``load_onnx``, ``load_tf``, ``read_named_tensors``...), which
sets it outright: raise it for a trusted file that legitimately expands (a large constant made by a
small op), or lower it where memory is scarce. Charges add up over the whole load; nothing is
refunded, so the budget also bounds the work done.

The budget is made current with ``load_scope`` and found by deep code (constant folding, sparse
densification, container readers) through a context variable, with no parameter plumbing; with no
budget current, ``charge`` does nothing (graphs built in code are the user's own business). A graph
that was loaded keeps its budget's limit: constant folding when it is compiled is charged to a fresh
budget of the same size (``compile_scope``).
"""

from __future__ import annotations

import contextvars
import math
import os
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from graphdnn.errors import FileFormatError, InputError, ResourceLimitError

__all__ = ["FACTOR", "FLOOR", "PY_ELEMENT_BYTES", "LoadBudget", "charge", "charge_tensor", "compile_scope", "current",
           "load_scope", "remember", "tensor_bytes"]

#: The default budget is ``FACTOR`` x the bytes of the model's files + ``FLOOR``.
FACTOR = 16
FLOOR = 256 << 20
#: Bytes charged per element of a tensor held as a Python list (an 8-byte slot and a boxed number).
PY_ELEMENT_BYTES = 32

_CURRENT: contextvars.ContextVar[LoadBudget | None] = contextvars.ContextVar("graphdnn_load_budget", default=None)
_LOADED: weakref.WeakKeyDictionary[Any, tuple[str, int, int | None]] = weakref.WeakKeyDictionary()


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


class LoadBudget:
    """The allocations one load may make: ``limit`` bytes in all, ``used`` so far.

    ``source_bytes`` (the bytes of the files read) sets the default limit, ``FACTOR * source_bytes +
    FLOOR``; ``max_bytes`` replaces it."""

    def __init__(self, source: str, source_bytes: int = 0, max_bytes: int | None = None) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
            raise InputError(f"max_bytes must be a non-negative number of bytes, not {max_bytes!r}")
        self.source = source
        self.source_bytes = max(0, int(source_bytes))
        self.max_bytes = max_bytes
        self.used = 0
        self._files: set[str] = set()

    @property
    def limit(self) -> int:
        """The most bytes this load may allocate."""
        return self.max_bytes if self.max_bytes is not None else FACTOR * self.source_bytes + FLOOR

    def add_source(self, nbytes: int) -> None:
        """More of the model's bytes were read (external data, a checkpoint's data files): with no
        ``max_bytes``, the limit grows by ``FACTOR`` times as much."""
        self.source_bytes += max(0, int(nbytes))

    def add_files(self, *paths: str | os.PathLike | None) -> None:
        """``add_source`` the sizes of the regular files among ``paths`` not counted yet."""
        for p in paths:
            if p is None or isinstance(p, (bytes, bytearray)):
                continue
            try:
                key = os.path.realpath(p)
                if key not in self._files and os.path.isfile(key):
                    self._files.add(key)
                    self.add_source(os.path.getsize(key))
            except (OSError, ValueError, TypeError):
                continue

    def charge(self, nbytes: int, what: str) -> None:
        """Record an allocation of ``nbytes`` for ``what`` (a tensor, an op, an archive member) about to be
        made; raises ``ResourceLimitError`` when it would take the load over its limit."""
        nbytes = max(0, int(nbytes))
        if self.used + nbytes > self.limit:
            how = ("set by max_bytes" if self.max_bytes is not None
                   else f"{FACTOR} x the model's {_size(self.source_bytes)} + {_size(FLOOR)}")
            already = f", {_size(self.used)} being used already" if self.used else ""
            suggest = 1 << max(30, math.ceil(math.log2(self.used + nbytes)))
            raise ResourceLimitError(
                f"{what} needs {_size(nbytes)} ({nbytes} bytes){already}, over the memory budget of loading "
                f"{self.source}, {_size(self.limit)} ({how}); if the file is trusted, pass max_bytes= (CLI: "
                f"--max-bytes) to allow more (e.g. graphdnn.load(path, max_bytes={suggest}))")
        self.used += nbytes

    def __repr__(self) -> str:
        return f"LoadBudget({self.source!r}, used={self.used}, limit={self.limit})"


def current() -> LoadBudget | None:
    """The budget of the load in progress, or None outside any load."""
    return _CURRENT.get()


def charge(nbytes: int, what: str) -> None:
    """Charge ``nbytes`` for ``what`` to the current load's budget (nothing outside a load)."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.charge(nbytes, what)


def tensor_bytes(shape: Iterable[Any], itemsize: int, what: str) -> int:
    """Bytes of a dense tensor of ``shape`` with ``itemsize``-byte elements (exact: Python integers);
    a dimension that is not a non-negative integer raises ``FileFormatError`` naming ``what``."""
    dims = list(shape)
    count = 1
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) and not hasattr(d, "__index__"):
            raise FileFormatError(f"{what}: dimension {d!r} of shape {dims} is not an integer")
        d = int(d.__index__())
        if d < 0:
            raise FileFormatError(f"{what}: negative dimension {d} in shape {dims}; the file is corrupted")
        count *= d
    return count * int(itemsize)


def charge_tensor(shape: Iterable[Any], itemsize: int, what: str, *, per_element: int = 0) -> int:
    """Validate ``shape`` (``tensor_bytes``) and charge a tensor of it, plus ``per_element`` bytes per
    element (e.g. ``PY_ELEMENT_BYTES`` when the values also become a Python list); returns the count of
    elements."""
    count = tensor_bytes(shape, 1, what)
    charge(count * (int(itemsize) + per_element), what)
    return count


@contextmanager
def _current(budget: LoadBudget) -> Iterator[LoadBudget]:
    """Make ``budget`` current for the ``with`` block; a ``MemoryError`` raised inside becomes a
    ``ResourceLimitError`` naming its source."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    except MemoryError as exc:
        raise ResourceLimitError(f"{budget.source}: memory ran out while loading ({exc or 'MemoryError'}); the file "
                                 "asks for more memory than this machine has: it is hostile, or needs a larger "
                                 "machine") from exc
    finally:
        _CURRENT.reset(token)


@contextmanager
def load_scope(source: str | os.PathLike | None, *files: str | os.PathLike | None, source_bytes: int = 0,
               max_bytes: int | None = None) -> Iterator[LoadBudget]:
    """Make a budget current for the ``with`` block: the one of an enclosing load when there is one and
    ``max_bytes`` is None (a loader called by ``graphdnn.load``), else a new one; either way the sizes of
    ``source`` and ``files`` (when they are files) and ``source_bytes`` count towards its limit. A
    ``MemoryError`` raised inside becomes a ``ResourceLimitError``: a load never half-succeeds for want
    of memory."""
    label = "<in memory>" if source is None or isinstance(source, (bytes, bytearray)) else str(os.fspath(source))
    outer = _CURRENT.get()
    if outer is not None and max_bytes is None:
        outer.add_files(source, *files)
        outer.add_source(source_bytes)
        yield outer
        return
    budget = LoadBudget(label, source_bytes, max_bytes)
    budget.add_files(source, *files)
    with _current(budget):
        yield budget


def remember(graph: Any, budget: LoadBudget | None = None) -> None:
    """Record on a loaded ``graph`` the size of its load's budget (the current one by default), for
    ``compile_scope``."""
    budget = budget or _CURRENT.get()
    if budget is not None:
        try:
            _LOADED[graph] = (budget.source, budget.source_bytes, budget.max_bytes)
        except TypeError:  # not weak-referenceable: nothing to remember it by
            pass


@contextmanager
def compile_scope(graph: Any) -> Iterator[LoadBudget | None]:
    """While compiling ``graph``: the current budget, else, for a graph that was loaded, a fresh budget
    as large as its load's (constant folding of a loaded graph is bounded like its load), else none."""
    outer = _CURRENT.get()
    known = _LOADED.get(graph) if outer is None else None
    if known is None:
        yield outer
        return
    with _current(LoadBudget(*known)) as budget:
        yield budget
