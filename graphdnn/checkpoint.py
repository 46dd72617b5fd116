"""Checkpoints: every variable under its graph name in safetensors, the graph in the metadata.

One ``.safetensors`` file is TF's ``.meta`` + ``.ckpt`` together: tensors keyed by graph name
(``hidden1/kernel``) and ``__metadata__`` holding the graph JSON (``graphdnn.graph``), its
collections (``graphdnn.collections``, for inspection) and the format version. With
``max_shard_size`` the tensors go to shards beside a
``<stem>.safetensors.index.json`` (``{"metadata": ..., "weight_map": {name: shard}}``), the layout of
the Hugging Face ecosystem; every shard is a plain safetensors file. Each sharded save writes a new
generation of shards, ``<stem>-<generation>-00001-of-0000N.safetensors`` (12 random hex digits), never a
file that an index may name, and the index, renamed into place last, is the only commit point: a
killed save leaves the previous checkpoint whole, and of two concurrent saves the last index wins
whole. Shards that the committed index does not name and no live writer holds (``graphdnn.atomic``)
are removed after each sharded save, which also clears the leftovers of failed or killed saves.
Reading follows the index, so shards of any name (older ``<stem>-00001-of-0000N.safetensors``) load.

Writes are atomic: a temporary file in the same folder, flushed (and fsync'ed with ``fsync=True``),
then renamed over the target, so an interrupted save leaves the previous checkpoint intact. Each
tensor's bytes are copied at most once on the way to the file: contiguous tensors are written from
their own memory, others (views such as a transposed torch weight) slice by slice through one reused
buffer. Reading checks the header length against the file size before allocating, validates every
header entry, and reads only the tensors asked for (``TensorFile.read``) through safetensors'
copy-on-write memory maps. No pickle anywhere.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from graphdnn.atomic import (
    GENERATION,
    atomic_write,
    collect_garbage,
    create_locked,
    file_identity,
    fsync_folder,
    new_generation,
)
from graphdnn.dtypes import dtype_name
from graphdnn.errors import FileFormatError, GraphError
from graphdnn.graph import Graph
from graphdnn.small_dtypes import storage

FORMAT = "graphdnn-checkpoint"
VERSION = 1
INDEX_SUFFIX = ".safetensors.index.json"
MAX_HEADER_BYTES = 256 * 2**20
MAX_INDEX_BYTES = 256 * 2**20
_KEY = "graphdnn."

_CODES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.complex64: "C64",
}
for _attr, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                     ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _attr):
        _CODES[getattr(torch, _attr)] = _code
_DTYPES = {code: dt for dt, code in _CODES.items()}


# ------------------------------------------------------------------------------------ saving
def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*", str(size), re.IGNORECASE)
    if not m:
        raise GraphError(f"max_shard_size {size!r}: use bytes (an int) or a string like '500MB' or '2GiB'")
    unit = m.group(2).upper().rstrip("B")
    base = 1024 if unit.endswith("I") else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(unit.rstrip("I") or " "))


def _collect(obj: Any) -> tuple[Graph | None, dict[str, torch.Tensor]]:
    """The graph and the named tensors to save: a module's current values win over its graph's."""
    if isinstance(obj, Graph):
        return obj, dict(obj.values)
    graph = getattr(obj, "source_graph", None)
    if isinstance(graph, Graph) and hasattr(obj, "graph_state_dict"):
        values = dict(graph.values)
        values.update(obj.graph_state_dict())
        return graph, values
    if isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return None, dict(obj)
    raise GraphError(f"save() takes a Graph, a compiled module or a dict of named tensors, not {type(obj).__name__}")


def _prepare(values: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU tensors ready to write (no copy is made here: ``_write_tensors`` packs non-contiguous ones),
    and aliases (name -> name holding the same data) for tensors that are the same view of one storage."""
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple, str] = {}
    for name, value in values.items():
        t = storage(value.detach())  # int4 & co. are written as the int8/uint8 bytes that hold them
        if t.dtype not in _CODES:
            raise GraphError(f"variable {name!r}: dtype {t.dtype} cannot be stored in safetensors")
        if t.is_sparse or t.layout != torch.strided:
            raise GraphError(f"variable {name!r} is a {t.layout} tensor; save its dense form")
        ptr = t.untyped_storage().data_ptr() if t.numel() else 0
        view = (t.device, ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if ptr and view in views:
            aliases[name] = views[view]
            continue
        if ptr:
            views[view] = name
        out[name] = t if t.device.type == "cpu" else t.contiguous().cpu()
    return out, aliases


def _header(tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    entries: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        entries[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


_CHUNK_BYTES = 8 * 2**20
_COLUMNS = 64


def _pack(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)``; a column-major matrix is copied in blocks of columns, which reads whole cache
    lines and runs two to three times faster than one strided copy."""
    if src.dim() == 2 and src.stride(0) == 1 and src.shape[1] > _COLUMNS:
        for j in range(0, src.shape[1], _COLUMNS):
            dst[:, j:j + _COLUMNS].copy_(src[:, j:j + _COLUMNS])
    else:
        dst.copy_(src)


def _slices(t: torch.Tensor) -> Iterator[torch.Tensor]:
    """A tensor cut along its first dimension into slices of about ``_CHUNK_BYTES`` (at least one row)."""
    if t.dim() == 0:
        t = t.reshape(1)
    rows = max(1, _CHUNK_BYTES // max(t[0].numel() * t.element_size(), 1))
    for i in range(0, t.shape[0], rows):
        yield t[i:i + rows]


def _write_tensors(f: BinaryIO, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file: the header, then each tensor's bytes, copied at most once (contiguous
    tensors not at all; others slice by slice through one reused buffer)."""
    f.write(_header(tensors, metadata))
    buffer = torch.empty(0, dtype=torch.uint8)
    for t in tensors.values():
        if not t.numel():
            continue
        if sys.byteorder != "little" and t.element_size() > 1:
            f.write(memoryview(t.contiguous().reshape(-1).numpy().byteswap().view("uint8")))
        elif t.is_contiguous():
            f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        else:
            for part in _slices(t):
                nbytes = part.numel() * part.element_size()
                if buffer.numel() < nbytes:
                    buffer = torch.empty(max(nbytes, min(_CHUNK_BYTES, t.numel() * t.element_size())),
                                         dtype=torch.uint8)
                raw = buffer[:nbytes]
                _pack(raw.view(t.dtype).view(part.shape), part)
                f.write(memoryview(raw.numpy()))


def _order(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Widest dtypes first (keeps every tensor aligned, as safetensors does), else in given order."""
    return dict(sorted(tensors.items(), key=lambda kv: -kv[1].element_size()))


def save(
    obj: Any,
    path: str | os.PathLike,
    *,
    max_shard_size: int | str | None = None,
    metadata: Mapping[str, str] | None = None,
    fsync: bool = False,
) -> Path:
    """Save a graph or compiled module (its current variable values and its graph) to ``path``.

    ``max_shard_size`` (bytes or ``"500MB"``) splits the tensors into shards plus an index JSON;
    the index path is returned (``model.safetensors`` -> ``model.safetensors.index.json``).
    ``metadata`` adds user ``str -> str`` entries. Tensors sharing one storage view are stored once
    and recorded as aliases. A failed or killed save leaves any previous file at ``path`` untouched
    (temporary file, flush, rename); ``fsync=True`` also survives power loss, at a cost."""
    graph, values = _collect(obj)
    tensors, aliases = _prepare(values)
    meta: dict[str, str] = {"format": "pt", f"{_KEY}format": FORMAT, f"{_KEY}version": str(VERSION)}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str) or k.startswith(_KEY) or k == "format":
            raise GraphError(f"metadata entry {k!r}: keys and values must be str, keys not 'format' or 'graphdnn.*'")
        meta[k] = v
    if graph is not None:
        meta[f"{_KEY}graph"] = graph.to_json()
        meta[f"{_KEY}collections"] = json.dumps(graph.collections, ensure_ascii=False)
    if aliases:
        meta[f"{_KEY}aliases"] = json.dumps(aliases, ensure_ascii=False)
    if "__metadata__" in tensors:  # the one key safetensors reserves
        tensors["__metadata__%"] = tensors.pop("__metadata__")
        meta[f"{_KEY}keys"] = json.dumps({"__metadata__%": "__metadata__"})
    tensors = _order(tensors)
    path = Path(path)
    if max_shard_size is None:
        atomic_write(path, lambda f: _write_tensors(f, tensors, meta), fsync)
        return path
    return _save_sharded(path, tensors, meta, _parse_size(max_shard_size), fsync)


def _shard_paths(path: Path) -> tuple[Path, str]:
    name = path.name
    if name.endswith(INDEX_SUFFIX):
        stem = name[: -len(INDEX_SUFFIX)]
    elif name.endswith(".safetensors"):
        stem = name[: -len(".safetensors")]
    else:
        stem = name
    return path.parent / f"{stem}{INDEX_SUFFIX}", stem


def _save_sharded(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str], limit: int,
                  fsync: bool) -> Path:
    if limit <= 0:
        raise GraphError(f"max_shard_size must be positive, got {limit}")
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if groups[-1] and size + n > limit:
            groups.append({})
            size = 0
        groups[-1][name] = t
        size += n
    index_path, stem = _shard_paths(path)
    folder = index_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    generation = new_generation()
    names = [f"{stem}-{generation}-{i:05d}-of-{len(groups):05d}.safetensors" for i in range(1, len(groups) + 1)]
    weight_map: dict[str, str] = {}
    files: list[BinaryIO] = []  # each locked until the index is in place: no collector removes them
    committing = False
    try:
        for shard, group in zip(names, groups):
            f = create_locked(folder / shard)
            files.append(f)
            shard_meta = {"format": "pt", f"{_KEY}format": FORMAT, f"{_KEY}version": str(VERSION)}
            _write_tensors(f, group, shard_meta)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
            weight_map.update(dict.fromkeys(group, shard))
        if fsync:
            fsync_folder(folder)
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        doc = {"metadata": {"total_size": total, **meta}, "weight_map": weight_map}
        text = json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8")
        committing = True
        atomic_write(index_path, lambda f: f.write(text), fsync)  # the commit point
    except BaseException:
        if not (committing and set(names) & _indexed_shards(index_path)):  # not committed: take our shards back
            for shard in names[: len(files)]:
                (folder / shard).unlink(missing_ok=True)
        raise
    finally:
        for f in files:
            f.close()
    _collect_shards(folder, stem, index_path)
    return index_path


def _indexed_shards(index_path: Path) -> set[str]:
    try:
        return set(_read_index(index_path)[1].values())
    except (OSError, FileFormatError):
        return set()


def _collect_shards(folder: Path, stem: str, index_path: Path) -> list[str]:
    """Remove this checkpoint's shards that its committed index does not name and no live writer
    holds: superseded generations and the leftovers of failed or killed saves."""
    s = re.escape(stem)
    pattern = rf"{s}-(?:{GENERATION}-)?\d{{5}}-of-\d{{5}}(?:-b)?\.safetensors"

    def referenced() -> set[str] | None:
        try:
            keep = set(_read_index(index_path)[1].values())
        except (OSError, FileFormatError):
            return None  # no readable commit point: remove nothing
        # never a shard of another checkpoint whose stem extends ours (``<stem>-<hex>``)
        others = re.compile(rf"{s}-({GENERATION})-.*")
        for name in os.listdir(folder):
            m = others.fullmatch(name)
            if m and (folder / f"{stem}-{m.group(1)}{INDEX_SUFFIX}").exists():
                keep.add(name)
        return keep

    return collect_garbage(folder, pattern, referenced)


# ----------------------------------------------------------------------------------- reading
class TensorInfo:
    """Where one tensor lies in a file: dtype, shape and byte range."""

    __slots__ = ("dtype", "shape", "begin", "end", "path", "key")

    def __init__(self, dtype: torch.dtype, shape: tuple[int, ...], begin: int, end: int, path: Path,
                 key: str) -> None:
        self.dtype, self.shape, self.begin, self.end, self.path, self.key = dtype, shape, begin, end, path, key

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def _bad(path: Path, what: str) -> FileFormatError:
    return FileFormatError(f"{path}: not a valid safetensors file: {what}; the file is truncated or corrupted "
                           "(re-save it, or restore from another copy)")


_HEADER_CACHE: OrderedDict[tuple, tuple[dict[str, TensorInfo], dict[str, str], int]] = OrderedDict()
_HEADER_CACHE_SIZE = 16


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """Validate a safetensors file's header: its tensors, metadata and the offset of the data.

    Validated headers are remembered per file identity (device, inode, size, modification time), so
    a ``load(values=False)`` followed by ``restore`` parses the header once; graphdnn replaces files
    by rename (a new inode), and any other change of size or time parses again."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key in _HEADER_CACHE:
                _HEADER_CACHE.move_to_end(key)
                infos, meta, data_start = _HEADER_CACHE[key]
                return dict(infos), dict(meta), data_start
            size = st.st_size
            head = f.read(8)
            if len(head) < 8:
                raise _bad(path, f"only {size} bytes, shorter than the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > size - 8:
                raise _bad(path, f"the header claims {n} bytes but only {size - 8} follow")
            if n > MAX_HEADER_BYTES:
                raise _bad(path, f"a {n}-byte header is over the {MAX_HEADER_BYTES}-byte limit")
            raw = f.read(n)
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FileFormatError(f"{path} is a folder, not a safetensors file") from None
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(path, f"the header is not UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _bad(path, "the header is not a JSON object")
    meta = doc.pop("__metadata__", None)
    meta = {} if meta is None else meta  # (an empty list or string is no map: safetensors refuses it too)
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _bad(path, "__metadata__ must map strings to strings")
    data_start, data_len = 8 + n, size - 8 - n
    infos: dict[str, TensorInfo] = {}
    for name, e in doc.items():
        if not (isinstance(e, dict) and isinstance(e.get("dtype"), str) and e["dtype"] in _DTYPES
                and isinstance(e.get("shape"), list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in e["shape"])
                and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in e["data_offsets"])):
            raise _bad(path, f"tensor {name!r} has a malformed entry")
        dtype = _DTYPES[e["dtype"]]
        begin, end = e["data_offsets"]
        numel = 1
        for d in e["shape"]:
            numel *= d
        if not 0 <= begin <= end or end - begin != numel * dtype.itemsize:
            raise _bad(path, f"tensor {name!r}: offsets {e['data_offsets']} do not fit shape {e['shape']}")
        infos[name] = TensorInfo(dtype, tuple(e["shape"]), data_start + begin, data_start + end, path, name)
    pos = 0
    for info in sorted(infos.values(), key=lambda i: (i.begin, i.end)):
        if info.begin - data_start != pos:
            raise _bad(path, "tensor data overlaps or leaves gaps")
        pos = info.end - data_start
    if pos > data_len:
        raise _bad(path, f"the data needs {pos} bytes but the file holds {data_len}")
    if pos < data_len:
        raise _bad(path, f"{data_len - pos} bytes follow the last tensor")
    _HEADER_CACHE[key] = (infos, meta, data_start)
    while len(_HEADER_CACHE) > _HEADER_CACHE_SIZE:
        _HEADER_CACHE.popitem(last=False)
    return dict(infos), dict(meta), data_start


def _read_index(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    if size > MAX_INDEX_BYTES:
        raise FileFormatError(f"{path}: a {size}-byte index is over the {MAX_INDEX_BYTES}-byte limit")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FileFormatError(f"{path}: the shard index is not valid JSON ({exc}); re-save the checkpoint") from None
    meta, wmap = (doc.get("metadata", {}), doc.get("weight_map")) if isinstance(doc, dict) else (None, None)
    if not isinstance(wmap, dict) or not isinstance(meta, dict):
        raise FileFormatError(f"{path}: a shard index needs 'weight_map' and 'metadata' objects")
    for name, shard in wmap.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise FileFormatError(f"{path}: tensor {name!r} maps to {shard!r}; shards must be plain file names "
                                  "in the index's folder")
    return meta, wmap


def _shard_inside(index_path: Path, shard: str) -> Path:
    """The path of ``shard`` beside its index; a shard that is a link leading out of that folder is refused."""
    shard_path = index_path.parent / shard
    if shard_path.is_symlink():
        folder = index_path.parent.resolve()
        target = shard_path.resolve()
        if not target.is_relative_to(folder):
            raise FileFormatError(f"{index_path}: shard {shard!r} is a link to {target}, outside the checkpoint's "
                                  "folder; graphdnn reads nothing outside a model's folder (copy the file in)")
    return shard_path


class TensorFile:
    """Lazy, validated access to the named tensors of a safetensors file or a sharded checkpoint.

    ``names()``, ``info(name)`` (dtype, shape) and ``metadata`` cost no tensor reads; ``read(names)``
    reads just those tensors (in file order, each straight into its own storage). Aliases recorded
    at save time appear as names of their own."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.infos: dict[str, TensorInfo] = {}
        if self.path.name.endswith(".index.json"):
            for attempt in range(3):  # a concurrent save may replace the index and remove its old shards
                before = file_identity(self.path)
                try:
                    self._read_shards()
                    break
                except FileFormatError:
                    if attempt == 2 or file_identity(self.path) in (before, None):
                        raise
        else:
            self.infos, self.metadata, _ = read_header(self.path)
        keys = self._json("keys", {})
        for stored, name in keys.items():
            if stored in self.infos:
                self.infos[name] = self.infos.pop(stored)
        self.aliases: dict[str, str] = self._json("aliases", {})
        for alias, target in self.aliases.items():
            if target not in self.infos:
                raise FileFormatError(f"{self.path}: alias {alias!r} points at missing tensor {target!r}")
            self.infos.setdefault(alias, self.infos[target])

    def _read_shards(self) -> None:
        meta, wmap = _read_index(self.path)
        self.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
        headers: dict[str, dict[str, TensorInfo]] = {}
        self.infos = {}
        for name, shard in wmap.items():
            if shard not in headers:
                headers[shard] = read_header(_shard_inside(self.path, shard))[0]
            if name not in headers[shard]:
                raise FileFormatError(f"{self.path}: the index puts {name!r} in {shard}, which lacks it")
            self.infos[name] = headers[shard][name]

    def _json(self, key: str, default: Any) -> Any:
        text = self.metadata.get(_KEY + key)
        if text is None:
            return default
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            raise FileFormatError(f"{self.path}: metadata {_KEY + key} is not valid JSON") from None
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise FileFormatError(f"{self.path}: metadata {_KEY + key} must map names to names")
        return value

    def names(self) -> list[str]:
        return list(self.infos)

    def info(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        i = self.infos[name]
        return i.shape, i.dtype

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` for ``names``. After this class validated the header, the bytes are
        served by safetensors' own reader: private copy-on-write memory maps, so untouched data costs
        no memory and writing to a tensor never writes to the file."""
        import safetensors
        from safetensors import safe_open

        reader_errors = (OSError, ValueError, RuntimeError, getattr(safetensors, "SafetensorError", OSError))
        wanted = sorted(set(names), key=lambda n: (str(self.infos[n].path), self.infos[n].begin))
        by_file: dict[Path, list[str]] = {}
        for name in wanted:
            by_file.setdefault(self.infos[name].path, []).append(name)
        for path, group in by_file.items():
            try:
                with safe_open(path, framework="pt") as f:
                    for name in group:
                        yield name, f.get_tensor(self.infos[name].key)
            except reader_errors as exc:  # older safetensors raise their own error type
                if isinstance(exc, FileFormatError):
                    raise
                if getattr(exc, "errno", None) == errno.ENOMEM or "Cannot allocate memory" in str(exc):
                    raise MemoryError(f"{path}: out of memory while reading tensors ({exc})") from exc
                raise _bad(path, f"reading it failed ({exc})") from None

    def read_one(self, name: str) -> torch.Tensor:
        return next(self.read([name]))[1]

    def graph_json(self) -> str | None:
        version = self.metadata.get(_KEY + "version")
        if version is not None and (not version.isdigit() or int(version) > VERSION):
            raise FileFormatError(f"{self.path}: checkpoint format version {version!r} is newer than this graphdnn "
                                  f"reads ({VERSION}); upgrade graphdnn")
        return self.metadata.get(_KEY + "graph")


def load_safetensors(path: str | os.PathLike, *, values: bool = True) -> Graph:
    """The graph saved in ``path`` (a ``.safetensors`` file or a shard index), with its values
    unless ``values=False`` (then restore them with ``graphdnn.restore``). A sharded checkpoint that
    a concurrent save replaces while it is read is read again from its new index."""
    path = Path(path)
    for attempt in range(3):
        before = file_identity(path) if path.name.endswith(".index.json") else None
        try:
            return _load_safetensors(path, values)
        except FileFormatError:
            if before is None or attempt == 2 or file_identity(path) in (before, None):
                raise
    raise AssertionError("unreachable")


def _load_safetensors(path: Path, values: bool) -> Graph:
    from graphdnn.serialize import graph_from_json

    reader = TensorFile(path)
    text = reader.graph_json()
    if text is None:
        raise FileFormatError(f"{reader.path} holds tensors but no graphdnn graph (plain safetensors); build the "
                              "graph in code and load the tensors with graphdnn.restore(graph, path)")
    graph = graph_from_json(text, source=str(reader.path))
    if not values:
        return graph
    names = {op.name for op in graph.variables()}
    canonical = [n for n in reader.names() if n in names and n not in reader.aliases]
    for name, tensor in reader.read(canonical):
        try:
            graph.set_value(name, tensor, copy=False)
        except GraphError as exc:
            raise FileFormatError(f"{reader.path}: {exc}") from None
    for alias, target in reader.aliases.items():
        if alias in names and target in graph.values:
            op = graph.get_operation(alias)
            value = graph.values[target]
            if list(value.shape) == op.attrs["shape"] and dtype_name(value.dtype) == op.attrs["dtype"]:
                graph.values[alias] = value
            else:
                graph.set_value(alias, value)
    return graph


__all__ = ["FORMAT", "VERSION", "TensorFile", "TensorInfo", "load_safetensors", "read_header", "save"]
