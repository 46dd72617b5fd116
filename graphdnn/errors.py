"""The project's exceptions: every error graphdnn raises on bad input derives from ``GraphDNNError``."""

from __future__ import annotations


class GraphDNNError(Exception):
    """Base class of every error graphdnn raises about a model, a file or a name."""


class GraphError(GraphDNNError, ValueError):
    """A graph is malformed: a dangling reference, a duplicate name, incompatible shapes."""


class UnknownOpError(GraphDNNError, KeyError):
    """An operator type (or a version of it) that the op registry does not know."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FileFormatError(GraphDNNError, ValueError):
    """A file is truncated, corrupted, of an unknown format, or holds something graphdnn refuses."""


class RestoreError(GraphDNNError, ValueError):
    """Restoring named tensors failed: missing names, unexpected names or shape mismatches."""
