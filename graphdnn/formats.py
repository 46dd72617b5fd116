"""Model file formats as plugins: what a file is (told by its bytes, then its name) and which functions read
and write it.

A format is a :class:`Format`: a name, a description for messages, file suffixes, a cheap content sniffer
(magic bytes), and the functions that load and save it, given as ``"module:function"`` references that
are imported only when used. Formats come from the entry points of group ``graphdnn.formats``, each naming a
``Format`` (or a sequence of them) in a light module, so telling what a file is imports no reader::

    [project.entry-points."graphdnn.formats"]
    myformat = "mypackage.formats:MYFORMAT"

graphdnn's own converters register ONNX, Keras, TensorFlow and the weights-only kinds this way; the
graphdnn checkpoint (safetensors) is built in. :func:`register` adds one at run time.

``graphdnn.load``, ``graphdnn.save`` and ``graphdnn.export_onnx`` dispatch through this registry.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphdnn.errors import FileFormatError, GraphDNNError

__all__ = ["GROUP", "SAFETENSORS", "Format", "Probe", "by_suffix", "claimed", "formats", "get", "register", "reset",
           "sniff", "supported", "tensor_reader"]

#: The entry-point group formats register under.
GROUP = "graphdnn.formats"


class Probe:
    """The first and last bytes and the size of one file, read once and shared by every sniffer."""

    HEAD = 64

    def __init__(self, path: Path, head: bytes, tail: bytes, size: int) -> None:
        self.path, self.head, self.tail, self.size = path, head, tail, size
        self._zip_names: list[str] | None | bool = False

    @classmethod
    def open(cls, path: str | os.PathLike) -> Probe | None:
        """A probe of the file at ``path``, or None when it cannot be read."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                head = f.read(cls.HEAD)
                size = os.fstat(f.fileno()).st_size
                f.seek(max(size - 8, 0))
                tail = f.read(8)
        except OSError:
            return None
        return cls(path, head, tail, size)

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (fewer at the end of the file; none when it cannot be read)."""
        if offset + n <= len(self.head):
            return self.head[offset:offset + n]
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return f.read(n)
        except OSError:
            return b""

    def zip_names(self) -> list[str] | None:
        """The member names of a zip archive (read once), or None when the file is not a readable zip."""
        if self._zip_names is False:
            self._zip_names = None
            if self.head[:4] == b"PK\x03\x04":
                import zipfile

                try:
                    with zipfile.ZipFile(self.path) as archive:
                        self._zip_names = archive.namelist()
                except (zipfile.BadZipFile, OSError, ValueError):
                    pass
        return self._zip_names  # type: ignore[return-value]


@dataclass(frozen=True)
class Format:
    """One file format.

    ``name`` is the key :func:`sniff` returns; ``description`` completes "``path``: ..." in messages ("an ONNX
    model"); ``title`` names the format's importer in messages ("ONNX"); ``label`` lists it among what
    ``graphdnn.load`` reads. ``sniff(probe) -> bool`` tells it by content and must stay cheap (no reader
    imported); ``claims(path) -> bool`` recognises what is not one file (a folder, a checkpoint prefix).
    ``load`` and ``save`` are ``"module:function"`` references: ``load(path, **options) -> Graph`` and
    ``save(obj, path, **options)``. ``content`` is ``"model"`` (a graph), ``"weights"`` (named tensors without
    a graph: ``reader`` names the function that loads them into a graph) or ``"array"`` (``reader`` reads it).
    ``rename_hint`` is the advice when the bytes show this format under a name without its suffix and it
    cannot be read so. ``hooks`` are other functions by role (``"read_tensors"``: the file's named tensors for
    ``graphdnn.restore``; ``"holds_tensors"``: whether a path is such a file). Lower ``priority`` sniffs first.
    """

    name: str
    description: str
    suffixes: tuple[str, ...] = ()
    sniff: Callable[[Probe], bool] | None = None
    claims: Callable[[Path], bool] | None = None
    load: str | None = None
    save: str | None = None
    content: str = "model"
    reader: str = "graphdnn.load"
    title: str = ""
    label: str = ""
    rename_hint: str | None = None
    hooks: Mapping[str, str] = field(default_factory=dict)
    priority: int = 50

    def function(self, role: str) -> Callable[..., Any]:
        """The function for ``role`` (``"load"``, ``"save"`` or a hook), imported now."""
        ref = getattr(self, role) if role in ("load", "save") else self.hooks.get(role)
        if not ref:
            raise GraphDNNError(f"the {self.title or self.name} format has no {role} function")
        module, _, attr = ref.partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
                raise FileFormatError(f"the {self.title or self.name} {_ROLE_WORDS.get(role, role)} ({module}) is "
                                      "unavailable in this installation; convert the file elsewhere, or install a "
                                      "graphdnn that ships it") from None
            raise
        fn = getattr(mod, attr, None)
        if fn is None:
            raise FileFormatError(f"the {self.title or self.name} {_ROLE_WORDS.get(role, role)} ({module}) has no "
                                  f"{attr}()")
        return fn

    def named(self, name: str) -> bool:
        """Whether the file name ``name`` (lower case) ends with one of this format's suffixes."""
        return bool(self.suffixes) and name.endswith(self.suffixes)


_ROLE_WORDS = {"load": "importer", "save": "exporter"}


# ------------------------------------------------------------------------------------- built in
def looks_like_safetensors(probe: Probe) -> bool:
    """Whether the file's first bytes are a safetensors header: its length, then ``{``, inside the file."""
    head = probe.head
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= probe.size - 8


#: The graphdnn checkpoint: a graph and its values in one safetensors file (or shards and an index).
SAFETENSORS = Format(
    name="safetensors",
    description="a safetensors file",
    suffixes=(".safetensors", ".safetensors.index.json"),
    sniff=looks_like_safetensors,
    load="graphdnn.checkpoint:load_safetensors",
    save="graphdnn.checkpoint:save",
    title="graphdnn checkpoint",
    label=".safetensors (graphdnn checkpoint), .safetensors.index.json (sharded checkpoint)",
    priority=50,
)


# ------------------------------------------------------------------------------------- registry
_registry: dict[str, Format] | None = None


def _discover() -> dict[str, Format]:
    from importlib.metadata import entry_points

    found: dict[str, Format] = {SAFETENSORS.name: SAFETENSORS}
    for ep in entry_points(group=GROUP):
        try:
            value = ep.load()
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the other formats
            warnings.warn(f"graphdnn format plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=3)
            continue
        for fmt in (value if isinstance(value, (list, tuple)) else (value,)):
            if not isinstance(fmt, Format):
                warnings.warn(f"graphdnn format plugin {ep.name!r} ({ep.value}) is not a graphdnn.formats.Format",
                              stacklevel=3)
            elif fmt.name in found:
                if found[fmt.name] != fmt:
                    warnings.warn(f"graphdnn format plugin {ep.name!r} ({ep.value}): a format named {fmt.name!r} "
                                  "is registered already; keeping the first", stacklevel=3)
            else:
                found[fmt.name] = fmt
    return found


def _formats() -> dict[str, Format]:
    global _registry
    if _registry is None:
        _registry = _discover()
    return _registry


def formats() -> list[Format]:
    """Every registered format, in sniffing order."""
    return sorted(_formats().values(), key=lambda f: f.priority)


def get(name: str) -> Format:
    """The format registered as ``name``."""
    table = _formats()
    if name not in table:
        raise FileFormatError(f"no file format {name!r} is registered; known: {', '.join(sorted(table))}")
    return table[name]


def register(fmt: Format, *, replace: bool = False) -> Format:
    """Add ``fmt`` to the registry (``replace=True`` to take the place of a format of the same name)."""
    table = _formats()
    if fmt.name in table and not replace and table[fmt.name] != fmt:
        raise GraphDNNError(f"a file format named {fmt.name!r} is registered already; pass replace=True")
    table[fmt.name] = fmt
    return fmt


def reset() -> None:
    """Forget the registry; the next use discovers the entry points again."""
    global _registry
    _registry = None


# ------------------------------------------------------------------------------------- detection
def sniff(path: str | os.PathLike) -> str | None:
    """The name of the format of the file at ``path`` told by its content, or None when the bytes say nothing
    certain (a TF ``.meta`` protobuf, a text file, a folder)."""
    probe = Probe.open(path)
    if probe is None:
        return None
    for fmt in formats():
        if fmt.sniff is not None and fmt.sniff(probe):
            return fmt.name
    return None


def by_suffix(path: str | os.PathLike, among: Iterable[Format] | None = None) -> Format | None:
    """The format whose suffix the name of ``path`` ends with (the longest suffix wins), or None."""
    name = Path(path).name.lower()
    best: tuple[int, Format] | None = None
    for fmt in formats() if among is None else among:
        for suffix in fmt.suffixes:
            if name.endswith(suffix) and (best is None or len(suffix) > best[0]):
                best = (len(suffix), fmt)
    return None if best is None else best[1]


def claimed(path: Path) -> Format | None:
    """The format that recognises ``path`` as a whole (a folder, a checkpoint prefix), or None."""
    return next((fmt for fmt in formats() if fmt.claims is not None and fmt.claims(path)), None)


def supported() -> list[str]:
    """What ``graphdnn.load`` reads, in words (in the order the formats were registered)."""
    return list(dict.fromkeys(fmt.label or fmt.description for fmt in _formats().values() if fmt.load))


def tensor_reader(path: Path) -> Callable[..., Any] | None:
    """The function reading ``path`` as named tensors (a ``graphdnn.restore`` source): a weights-only file by
    its name, a folder or checkpoint a format claims, or a path a format's ``holds_tensors`` hook accepts; None
    when the path is rather a model to load."""
    named = by_suffix(path)
    for fmt in formats():
        if "read_tensors" not in fmt.hooks:
            continue
        if fmt is named and fmt.content == "weights":
            return fmt.function("read_tensors")
        if named is not None and named is not fmt:
            continue  # named like another format: that format's file
        if (fmt.claims is not None and fmt.claims(path)) or (
                "holds_tensors" in fmt.hooks and fmt.function("holds_tensors")(path)):
            return fmt.function("read_tensors")
    return None
