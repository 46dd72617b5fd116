"""``paused_gc``: bulk work (serializing, compiling, importing a graph of many thousand ops) makes
millions of small objects, and CPython's cyclic garbage collector would walk the whole heap again
and again while they are made. Nothing made there is garbage, so collection waits until the end."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block (re-enabled after, if it was on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
