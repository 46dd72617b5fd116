"""Max-norm on plain PyTorch weights: another name for the constraint functions of :mod:`graphdnn.regularizers`
(defined there with the ``max_norm`` spec attached to graph variables; the axis convention is explained
there)."""

from __future__ import annotations

from graphdnn.regularizers import MaxNorm, clip_by_norm, max_norm_

__all__ = ["MaxNorm", "clip_by_norm", "max_norm_"]
