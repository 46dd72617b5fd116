"""A small dependency-free progress bar for training loops.

On a terminal it redraws one line in place (at most every ``min_interval`` seconds); on anything else
(a file, a pipe, a CI log) it writes nothing until :meth:`close`, then one final line. ``enabled=False``
makes every method a no-op.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


def _format_value(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ProgressBar:
    """``total`` steps, an optional ``desc`` prefix and ``key=value`` postfix stats."""

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        width: int = 24,
        stream: TextIO | None = None,
        enabled: bool = True,
        min_interval: float = 0.1,
        tty: bool | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.width = width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.min_interval = min_interval
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if tty is None and callable(isatty) else bool(tty)
        self.count = 0
        self.stats: dict[str, float | int | str] = {}
        self._start = time.monotonic()
        self._last_draw = -float("inf")
        self._closed = False

    def update(self, n: int = 1, **stats: float | int | str) -> None:
        """Advance by ``n`` steps and merge ``stats`` into the postfix."""
        if not self.enabled or self._closed:
            return
        self.count += n
        self.stats.update(stats)
        now = time.monotonic()
        if self.tty and now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self.stream.write("\r" + self.render() + "\x1b[K")
            self.stream.flush()

    def tick(self) -> bool:
        """Advance by one step without drawing; True when the line is due for a redraw, which the caller
        then makes with ``update(0, **stats)`` (so costly stats are computed only when shown)."""
        if not self.enabled or self._closed:
            return False
        self.count += 1
        return self.tty and time.monotonic() - self._last_draw >= self.min_interval

    def due(self) -> bool:
        """Whether the next :meth:`update` would redraw the line: compute costly stats only then."""
        if not (self.enabled and self.tty) or self._closed:
            return False
        return time.monotonic() - self._last_draw >= self.min_interval

    def set_stats(self, **stats: float | int | str) -> None:
        """Merge ``stats`` into the postfix without advancing."""
        self.stats.update(stats)

    def render(self) -> str:
        """The current line, without any control characters."""
        elapsed = time.monotonic() - self._start
        parts = [self.desc] if self.desc else []
        if self.total:
            done = min(self.count, self.total)
            filled = int(self.width * done / self.total)
            parts.append(f"[{'=' * filled}{'.' * (self.width - filled)}] {done}/{self.total}")
        else:
            parts.append(f"{self.count}")
        parts.append(f"{elapsed:.1f}s")
        parts.extend(f"{key}={_format_value(value)}" for key, value in self.stats.items())
        return " ".join(parts)

    def close(self, **stats: float | int | str) -> None:
        """Write the final line (with ``stats`` merged in) and a newline; later calls do nothing."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        self.stats.update(stats)
        prefix = "\r" if self.tty else ""
        suffix = "\x1b[K\n" if self.tty else "\n"
        self.stream.write(prefix + self.render() + suffix)
        self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
