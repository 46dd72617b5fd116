"""Read TensorFlow V2 checkpoints (``.index`` + ``.data-SSSSS-of-NNNNN``) without TensorFlow.

The ``.index`` file is a LevelDB-format table (sorted string table) mapping each tensor name to a
``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC-32C); the empty key holds the
``BundleHeaderProto``. Tensors are read one at a time straight from the data shard at their offset, their
checksum is verified, and they are decoded to numpy. Every size read from a file is checked against the
real file size before anything is allocated, so corrupted or hostile files give a
:class:`~graphdnn.errors.FileFormatError` naming the file and the tensor.

Decoded dtypes: float16/32/64, bfloat16 (returned as float32, exactly), int8/16/32/64, uint8/16/32/64,
bool, complex64/128, the quantized ints (as their storage ints) and string (object array of ``bytes``).
Partitioned (sliced) variables are listed but not read.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import cramjam
import google_crc32c
import numpy as np
from graphdnn.converters.tf_proto import (
    BundleEntry,
    BundleHeader,
    TFDType,
    decode_tensor_bytes,
    parse_bundle_entry,
    parse_bundle_header,
    read_varint,
)

from graphdnn.errors import FileFormatError

__all__ = [
    "TFCheckpointReader",
    "is_tf_checkpoint",
    "resolve_checkpoint_prefix",
    "is_optimizer_slot",
    "list_variables",
    "read_tf_checkpoint",
    "OPTIMIZER_SLOT_PATTERN",
]

TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48  # two block handles padded to 40 bytes + 8-byte magic
_BLOCK_TRAILER = 5  # compression type byte + masked crc32c
_NO_COMPRESSION, _SNAPPY = 0, 1
_DATA_RE = re.compile(r"^(?P<prefix>.*)\.data-\d{5}-of-\d{5}$")
_STATE_RE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"\s*$', re.MULTILINE)

#: Names skipped by ``read_all(skip_optimizer_slots=True)``: TF1 optimizer slots and bookkeeping, and the
#: TF2 object-graph checkpoint's optimizer state.
OPTIMIZER_SLOT_PATTERN = re.compile(
    r"/(?:Momentum|Adam(?:_\d+)?|RMSProp\w*|Adagrad\w*|ProximalAdagrad\w*|Ftrl\w*|Adadelta(?:_\d+)?)$"
    r"|(?:^|/)beta[12]_power(?:_\d+)?$"
    r"|^global_step$"
    r"|^_CHECKPOINTABLE_OBJECT_GRAPH$"
    r"|/\.OPTIMIZER_SLOT/"
    r"|^save_counter(?:/|$)"
    r"|^optimizer/.*\.ATTRIBUTES/VARIABLE_VALUE$"
)


def is_optimizer_slot(name: str) -> bool:
    """Whether ``name`` is optimizer state (``hidden1/kernel/Momentum``, ``beta1_power``, ``global_step``...)."""
    return OPTIMIZER_SLOT_PATTERN.search(name) is not None


# ============================================================================================ paths
def resolve_checkpoint_prefix(path: str | os.PathLike[str]) -> str:
    """The checkpoint prefix for ``path``: a prefix, its ``.index``/``.meta``/``.data-*`` file, a directory
    holding a ``checkpoint`` state file, or that state file itself.

    Raises ``FileFormatError`` when no ``<prefix>.index`` exists.
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        return _prefix_from_state_file(os.path.join(p, "checkpoint"))
    if os.path.basename(p) == "checkpoint" and os.path.isfile(p):
        return _prefix_from_state_file(p)
    prefix = p
    if p.endswith(".index"):
        prefix = p[: -len(".index")]
    elif p.endswith(".meta") and not os.path.exists(p + ".index"):
        prefix = p[: -len(".meta")]
    else:
        m = _DATA_RE.match(p)
        if m and not os.path.exists(p + ".index"):
            prefix = m.group("prefix")
    if not os.path.isfile(prefix + ".index"):
        raise FileFormatError(f"{p}: not a TensorFlow checkpoint: {prefix}.index does not exist")
    return prefix


def _prefix_from_state_file(state: str) -> str:
    try:
        text = Path(state).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FileFormatError(
            f"{state}: cannot read the checkpoint state file ({exc.strerror or exc}); "
            "pass the checkpoint prefix (e.g. .../my_model_final.ckpt) instead"
        ) from None
    m = _STATE_RE.search(text)
    if not m:
        raise FileFormatError(f"{state}: no model_checkpoint_path in the checkpoint state file")
    target = re.sub(r"\\(.)", r"\1", m.group(1))  # text-format escapes: \" and \\
    if not os.path.isabs(target):
        target = os.path.join(os.path.dirname(state), target)
    if not os.path.isfile(target + ".index"):
        raise FileFormatError(f"{state}: it names {target!r}, but {target}.index does not exist")
    return target


def is_tf_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` resolves (see :func:`resolve_checkpoint_prefix`) to a V2 checkpoint whose
    ``.index`` ends with the table magic number. Never raises for missing or unreadable files."""
    try:
        prefix = resolve_checkpoint_prefix(path)
        with open(prefix + ".index", "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < _FOOTER_LEN:
                return False
            f.seek(-8, os.SEEK_END)
            return struct.unpack("<Q", f.read(8))[0] == TABLE_MAGIC
    except (FileFormatError, OSError, ValueError):
        return False


# ======================================================================================= table format
_MASK_DELTA = 0xA282EAD8


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``; pass a previous result as ``crc`` to extend it over more data."""
    return google_crc32c.extend(crc, data)


def mask(crc: int) -> int:
    """LevelDB/TensorFlow checksum masking: rotate right by 15 bits and add a constant."""
    crc &= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _snappy_decompress(src: bytes, limit: int) -> bytes:
    """Decode one raw snappy block; refuses blocks that claim more than ``limit`` bytes before decoding them."""
    expected, _ = read_varint(src, 0, len(src))  # the block's leading varint: its decoded length
    if expected > limit:
        raise ValueError(f"snappy block claims {expected} bytes, more than the {limit} allowed")
    try:
        out = bytes(cramjam.snappy.decompress_raw(src))
    except cramjam.DecompressionError as exc:
        raise ValueError(f"corrupted snappy block ({exc})") from None
    if len(out) != expected:
        raise ValueError(f"snappy block decoded to {len(out)} bytes, expected {expected}")
    return out


def _block_handle(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos, end)
    size, pos = read_varint(buf, pos, end)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int, limit: int, what: str) -> bytes:
    if offset + size + _BLOCK_TRAILER > limit:
        raise ValueError(f"{what} at offset {offset} (size {size}) runs past the end of the table")
    block = data[offset : offset + size]
    ctype = data[offset + size]
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if unmask(stored) != crc32c(bytes([ctype]), crc32c(block)):
        raise ValueError(f"{what} at offset {offset}: block checksum mismatch (corrupted index file)")
    if ctype == _NO_COMPRESSION:
        return block
    if ctype == _SNAPPY:
        return _snappy_decompress(block, limit=64 * max(len(block), 1) + 1024)
    raise ValueError(f"{what}: unknown block compression type {ctype}")


def _block_entries(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    n = len(block)
    if n < 4:
        raise ValueError(f"{what}: block of {n} bytes is too short")
    num_restarts = struct.unpack_from("<I", block, n - 4)[0]
    restarts_at = n - 4 - 4 * num_restarts
    if num_restarts == 0 or restarts_at < 0:
        raise ValueError(f"{what}: bad restart count {num_restarts}")
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < restarts_at:
        shared, pos = read_varint(block, pos, restarts_at)
        unshared, pos = read_varint(block, pos, restarts_at)
        vlen, pos = read_varint(block, pos, restarts_at)
        if shared > len(key) or pos + unshared + vlen > restarts_at:
            raise ValueError(f"{what}: corrupted entry at byte {pos}")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + vlen]))
        pos += vlen
    return entries


def _read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < _FOOTER_LEN:
        raise ValueError(f"{len(data)} bytes is too short for a table (truncated?)")
    footer_at = len(data) - _FOOTER_LEN
    if struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise ValueError("bad magic number at the end of the file (truncated, or not a checkpoint index)")
    _, _, pos = _block_handle(data, footer_at, footer_at + 40)  # metaindex: unused by TF bundles
    index_off, index_size, _ = _block_handle(data, pos, footer_at + 40)
    index = _read_block(data, index_off, index_size, footer_at, "index block")
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(index, "index block"):
        off, size, _ = _block_handle(handle, 0, len(handle))
        entries.extend(_block_entries(_read_block(data, off, size, footer_at, "data block"), "data block"))
    return entries


# ========================================================================================= the reader
Include = str | re.Pattern[str] | Iterable[str] | Callable[[str], bool] | None


def _include_predicate(include: Include) -> Callable[[str], bool]:
    if include is None:
        return lambda name: True
    if isinstance(include, str):
        include = re.compile(include)
    if isinstance(include, re.Pattern):
        pattern = include
        return lambda name: pattern.match(name) is not None
    if callable(include):
        return include
    wanted = set(include)
    return lambda name: name in wanted


class TFCheckpointReader:
    """Random access to the tensors of a TF V2 checkpoint, without TensorFlow.

    ``path`` is anything :func:`resolve_checkpoint_prefix` accepts (``.../my_model_final.ckpt``, its
    ``.index``, ``.meta`` or ``.data-*`` file, or the directory holding the ``checkpoint`` state file).
    The index is parsed up front; tensor data is read lazily, one tensor at a time.
    """

    def __init__(self, path: str | os.PathLike[str], verify_checksums: bool = True) -> None:
        self.prefix: str = resolve_checkpoint_prefix(path)
        self.index_path: str = self.prefix + ".index"
        self.verify_checksums = verify_checksums
        try:
            data = Path(self.index_path).read_bytes()
        except OSError as exc:
            raise FileFormatError(f"{self.index_path}: cannot read ({exc.strerror or exc})") from None
        try:
            raw_entries = _read_table(data)
        except (ValueError, IndexError, struct.error) as exc:
            raise FileFormatError(f"{self.index_path}: not a valid TensorFlow checkpoint index: {exc}") from None
        header: BundleHeader | None = None
        self._entries: dict[str, BundleEntry] = {}
        self._slice_keys = 0
        for key, value in raw_entries:
            if key == b"":
                header = parse_bundle_header(value, self.index_path)
                continue
            if key[:1] == b"\x00":  # encoded key of one slice of a partitioned variable
                self._slice_keys += 1
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise FileFormatError(f"{self.index_path}: tensor name {key!r} is not UTF-8") from None
            self._entries[name] = parse_bundle_entry(value, self.index_path, name)
        if header is None:
            raise FileFormatError(f"{self.index_path}: no bundle header (empty key); not a V2 checkpoint index")
        if header.num_shards < 1 or header.num_shards > 99999:
            raise FileFormatError(f"{self.index_path}: implausible number of data shards {header.num_shards}")
        if header.min_consumer > 1:
            raise FileFormatError(
                f"{self.index_path}: written in bundle format requiring version {header.min_consumer}; "
                "graphdnn reads version 1"
            )
        self.header: BundleHeader = header

    # ------------------------------------------------------------------ metadata
    def names(self) -> list[str]:
        """Every tensor name, in the index's (sorted) order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> BundleEntry:
        """The raw index entry of ``name`` (dtype, shape, shard, offset, size, crc, slices)."""
        try:
            return self._entries[name]
        except KeyError:
            close = [n for n in self._entries if n.rsplit("/", 1)[-1] == name.rsplit("/", 1)[-1]][:5]
            hint = f"; similar names: {close}" if close else ""
            raise KeyError(f"{self.prefix}: no tensor named {name!r} in the checkpoint{hint}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name``."""
        return self.entry(name).shape

    def dtype(self, name: str) -> TFDType:
        """The TF dtype of tensor ``name`` (e.g. ``"bfloat16"``; :meth:`read` may widen it, see there)."""
        return self.entry(name).dtype

    def data_path(self, shard_id: int) -> str:
        """The path of data shard ``shard_id``."""
        return f"{self.prefix}.data-{shard_id:05d}-of-{self.header.num_shards:05d}"

    # ------------------------------------------------------------------ reading
    def read(self, name: str) -> np.ndarray:
        """Read tensor ``name`` from disk, verify its checksum, and decode it to numpy.

        bfloat16 comes back as float32 (exact), strings as an object array of ``bytes``.
        """
        entry = self.entry(name)
        raw = self._read_bytes(name, entry)
        base = str(entry.dtype.base_dtype)
        if base == "string":
            return self._decode_strings(name, entry, raw)
        if self.verify_checksums:
            self._check_crc(name, entry, crc32c(raw))
        try:
            return decode_tensor_bytes(raw, entry.dtype, entry.shape, f"tensor {name!r}", self.header.big_endian)
        except FileFormatError as exc:
            raise FileFormatError(f"{self.data_path(entry.shard_id)}: {exc}") from None

    def read_all(
        self, include: Include = None, skip_optimizer_slots: bool = True
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """Read many tensors at once.

        ``include`` selects names: a regex (``str`` or compiled, matched with ``re.match`` like TF's
        ``scope=`` filters, e.g. ``"hidden[123]"``), an iterable of exact names, or a predicate.
        With ``skip_optimizer_slots`` the names matching :data:`OPTIMIZER_SLOT_PATTERN` are not read.
        Returns ``(tensors by name in index order, sorted names skipped as optimizer state)``.
        """
        keep = _include_predicate(include)
        out: dict[str, np.ndarray] = {}
        skipped: list[str] = []
        for name in self._entries:
            if not keep(name):
                continue
            if skip_optimizer_slots and is_optimizer_slot(name):
                skipped.append(name)
                continue
            out[name] = self.read(name)
        return out, sorted(skipped)

    # ------------------------------------------------------------------ internals
    def _fail(self, entry: BundleEntry, name: str, msg: str) -> FileFormatError:
        return FileFormatError(f"{self.data_path(entry.shard_id)}: tensor {name!r}: {msg}")

    def _read_bytes(self, name: str, entry: BundleEntry) -> bytes:
        if entry.slices:
            raise FileFormatError(
                f"{self.index_path}: tensor {name!r} is a partitioned variable stored in "
                f"{len(entry.slices)} slices; graphdnn does not read partitioned variables yet"
            )
        if not 0 <= entry.shard_id < self.header.num_shards:
            raise FileFormatError(
                f"{self.index_path}: tensor {name!r} is in shard {entry.shard_id}, "
                f"but the checkpoint has {self.header.num_shards}"
            )
        base = str(entry.dtype.base_dtype)
        np_dtype = entry.dtype.numpy_dtype
        if base != "string" and (np_dtype is None or base in ("resource", "variant")):
            raise FileFormatError(f"{self.index_path}: tensor {name!r} has dtype {base}, which graphdnn cannot decode")
        if entry.offset < 0 or entry.size < 0:
            raise FileFormatError(f"{self.index_path}: tensor {name!r} has a negative offset or size")
        if base != "string":
            count = int(np.prod(entry.shape, dtype=object)) if entry.shape else 1
            itemsize = 2 if base == "bfloat16" else np.dtype(np_dtype).itemsize
            if entry.size != count * itemsize:
                raise FileFormatError(
                    f"{self.index_path}: tensor {name!r} ({base}, shape {list(entry.shape)}) should take "
                    f"{count * itemsize} bytes but its entry says {entry.size}"
                )
        path = self.data_path(entry.shard_id)
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                file_size = f.tell()
                if entry.offset + entry.size > file_size:
                    raise self._fail(
                        entry,
                        name,
                        f"bytes {entry.offset}..{entry.offset + entry.size} lie beyond the end of the "
                        f"{file_size}-byte data file (truncated checkpoint?)",
                    )
                f.seek(entry.offset)
                raw = f.read(entry.size)
        except OSError as exc:
            raise FileFormatError(f"{path}: cannot read tensor {name!r}: {exc.strerror or exc}") from None
        if len(raw) != entry.size:
            raise self._fail(entry, name, f"short read ({len(raw)} of {entry.size} bytes)")
        return raw

    def _check_crc(self, name: str, entry: BundleEntry, crc: int) -> None:
        if mask(crc) != entry.crc32c:
            raise self._fail(
                entry,
                name,
                f"checksum mismatch (crc32c {mask(crc):#010x}, index says {entry.crc32c:#010x}): "
                "the data file is corrupted",
            )

    def _decode_strings(self, name: str, entry: BundleEntry, raw: bytes) -> np.ndarray:
        # [varint64 len]*n [masked crc32c of the lengths] [bytes]*n; the tensor's crc covers the lengths (as
        # fixed-width integers), the 4 length-checksum bytes, then the string bytes.
        count = int(np.prod(entry.shape, dtype=object)) if entry.shape else 1
        n = len(raw)
        if count > n:
            raise self._fail(entry, name, f"{count} strings cannot fit in {n} bytes")
        lengths: list[int] = []
        pos = 0
        try:
            for _ in range(count):
                length, pos = read_varint(raw, pos, n)
                lengths.append(length)
        except ValueError as exc:
            raise self._fail(entry, name, f"corrupted string lengths ({exc})") from None
        if pos + 4 > n:
            raise self._fail(entry, name, "string tensor truncated before its length checksum")
        # each length enters the checksum as a little-endian uint32, or uint64 if it does not fit
        length_bytes = b"".join(
            struct.pack("<I", length) if length <= 0xFFFFFFFF else struct.pack("<Q", length) for length in lengths
        )
        if self.verify_checksums:
            stored = struct.unpack_from("<I", raw, pos)[0]
            crc = crc32c(length_bytes)
            if mask(crc) != stored:
                raise self._fail(entry, name, "checksum mismatch in the string lengths: the data file is corrupted")
            crc = crc32c(raw[pos : pos + 4], crc)
        pos += 4
        if pos + sum(lengths) != n:
            raise self._fail(entry, name, f"string lengths add up to {sum(lengths)}, but {n - pos} bytes follow")
        if self.verify_checksums:
            self._check_crc(name, entry, crc32c(raw[pos:], crc))
        out = np.empty(count, dtype=object)
        for i, length in enumerate(lengths):
            out[i] = raw[pos : pos + length]
            pos += length
        return out.reshape(entry.shape)

    def __repr__(self) -> str:
        return f"TFCheckpointReader({self.prefix!r}, {len(self._entries)} tensors)"


# ==================================================================================== conveniences
def list_variables(path: str | os.PathLike[str]) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every tensor, like ``tf.train.list_variables``."""
    reader = TFCheckpointReader(path)
    return [(name, reader.shape(name)) for name in reader.names()]


def read_tf_checkpoint(
    path: str | os.PathLike[str], include: Include = None, skip_optimizer_slots: bool = True
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Shorthand for ``TFCheckpointReader(path).read_all(include, skip_optimizer_slots)``."""
    return TFCheckpointReader(path).read_all(include, skip_optimizer_slots)
