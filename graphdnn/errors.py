"""The project's exceptions: every error graphdnn raises on bad input derives from ``GraphDNNError``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


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


class UninitializedError(GraphDNNError, KeyError):
    """Variables have no value (a graph loaded with ``values=False``, or built without drawing values): the
    message lists them and how to give them one (``graphdnn.initialize`` or ``graphdnn.restore``)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InputError(GraphDNNError, ValueError):
    """A value given to a model or to training does not fit: a feed of the wrong shape or dtype, an unknown
    input name, missing or malformed labels."""


class CorruptFileError(FileFormatError):
    """A file is damaged or lies about its content in a way its reader did not foresee (the reader's
    own exception is kept as ``__cause__``)."""


@contextmanager
def reading_file(path: str | os.PathLike | None, what: str = "model file") -> Iterator[None]:
    """Turn any unexpected exception raised while reading ``path`` into a ``CorruptFileError`` naming it.

    ``GraphDNNError`` subclasses pass through (the same object; its message gains a ``<path>: `` prefix when
    it names no file), and so do ``MemoryError`` (memory ran out: not a statement about the file), an
    ``OSError`` of a failed system call on ``path`` itself or on no file (it is missing or unreadable, the
    disk is full) and ``KeyboardInterrupt``/``SystemExit``; a failure on another file, one the content
    names, is the content's fault: a ``CorruptFileError``."""
    try:
        yield
    except GraphDNNError as exc:
        _name_the_file(exc, path)
        raise
    except MemoryError:
        raise
    except OSError as exc:
        if exc.errno is None:  # h5py and others report damaged content as an OSError without errno
            raise CorruptFileError(_corrupt_message(path, what, exc)) from exc
        other = exc.filename
        if isinstance(other, (str, bytes, os.PathLike)) and path is not None and not _same_file(other, path):
            raise CorruptFileError(f"{_label(path)}: cannot read {_short(os.fsdecode(other))!r}, which the {what} "
                                   f"refers to ({exc.strerror or exc})") from exc
        raise
    except RecursionError as exc:
        raise CorruptFileError(f"{_label(path)}: the {what} is nested too deeply to read; it is corrupted or "
                               "hostile") from exc
    except Exception as exc:  # noqa: BLE001 - re-raised as a project error with the original as its cause
        raise CorruptFileError(_corrupt_message(path, what, exc)) from exc


def _name_the_file(exc: GraphDNNError, path: str | os.PathLike | None) -> None:
    if path is None or isinstance(path, (bytes, bytearray)) or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return
    label = _label(path)
    if label not in exc.args[0] and os.path.basename(label) not in exc.args[0]:
        exc.args = (f"{label}: {exc.args[0]}",)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _same_file(a: str | bytes | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.abspath(os.fsdecode(a)) == os.path.abspath(os.fsdecode(b))
    except (TypeError, ValueError):
        return False


def _label(path: str | os.PathLike | None) -> str:
    return "<in memory>" if path is None or isinstance(path, (bytes, bytearray)) else str(os.fspath(path))


def _corrupt_message(path: str | os.PathLike | None, what: str, exc: BaseException) -> str:
    detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    detail = f"{type(exc).__name__}: {detail[:300]}" if detail else type(exc).__name__
    return (f"{_label(path)}: the {what} is corrupted or malformed ({detail}); re-export or re-download it, "
            "and do not trust its content")


class ExternalReferenceError(FileFormatError):
    """A file asks graphdnn to read data outside it that it will not read: HDF5 external storage, virtual
    datasets or external links, ONNX external data outside the model's folder (or the folder allowed)."""


class ResourceLimitError(GraphDNNError):
    """Loading a file would allocate more memory than its load's budget allows (``graphdnn.budget``);
    the message names the tensor or op, the size and the budget, and how to raise it (``max_bytes=``)."""


class ArgumentTypeError(GraphDNNError, TypeError):
    """An argument, attribute or input of the wrong kind: the message names it, the type it got and the types
    accepted."""


class UnknownNameError(GraphDNNError, KeyError):
    """A name that is not there: a metric to monitor that the logs lack, a history key never recorded; the
    message lists the names that are there."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class OutOfRangeError(GraphDNNError, IndexError):
    """An index (a sequence position, a feature id) outside the range its tensor or sequence holds."""
