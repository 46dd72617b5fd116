"""TF V2 checkpoint reader, tested against checkpoints written by TensorFlow itself (no TF needed).

The fixtures in ``tests/fixtures/foreign/`` were written by ``tests/fixtures/make_foreign.py``; their
``expected.npz`` hold the values TF had in its session when it saved.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from _protowire import len_field as _field
from _protowire import varint as _varint
from _protowire import varint_field as _vfield
from graphdnn.converters.tf_checkpoint import (
    TABLE_MAGIC,
    TFCheckpointReader,
    _block_entries,
    _read_table,
    _snappy_decompress,
    crc32c,
    is_optimizer_slot,
    is_tf_checkpoint,
    list_variables,
    mask,
    read_tf_checkpoint,
    resolve_checkpoint_prefix,
    unmask,
)

from graphdnn.errors import FileFormatError

FOREIGN = Path(__file__).parent / "fixtures" / "foreign"
DNN = FOREIGN / "tf1_dnn"
BN = FOREIGN / "tf1_bn"
PREFIX = "my_model_final.ckpt"
DATA = f"{PREFIX}.data-00000-of-00001"


def _expected_variables(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / "expected.npz", allow_pickle=False) as z:
        return {k[len("variable:") :]: z[k] for k in z.files if k.startswith("variable:")}


def _same(actual: np.ndarray, expected: np.ndarray) -> bool:
    if actual.dtype == object:  # strings: expected.npz stores them as fixed-width bytes
        return actual.shape == expected.shape and [bytes(x) for x in actual.ravel()] == list(expected.ravel())
    return actual.dtype == expected.dtype and actual.shape == expected.shape and np.array_equal(actual, expected)


@pytest.fixture()
def dnn_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "tf1_dnn"
    shutil.copytree(DNN, dst)
    return dst


# ------------------------------------------------------------------------------------------ crc32c
def test_crc32c_known_vectors() -> None:
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


def _crc32c_bitwise(data: bytes) -> int:
    # the definition: reflected CRC with the Castagnoli polynomial, initial value and final xor all ones
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("n", [1, 7, 1000, 4099])
def test_crc32c_matches_the_bitwise_definition_and_extends(n: int) -> None:
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    reference = _crc32c_bitwise(data)
    assert crc32c(data) == reference
    cut = n // 3
    assert crc32c(data[cut:], crc32c(data[:cut])) == reference


def test_mask_roundtrip() -> None:
    for value in (0, 1, 0xFFFFFFFF, 0xE3069283, 0x12345678):
        assert unmask(mask(value)) == value
    # LevelDB: rotate right by 15 bits, add 0xa282ead8
    assert mask(0x12345678) == (((0x12345678 >> 15) | (0x12345678 << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------------------ real TF checkpoints
@pytest.mark.parametrize("directory", [DNN, BN], ids=["tf1_dnn", "tf1_bn"])
def test_every_variable_bit_identical_to_tf(directory: Path) -> None:
    reader = TFCheckpointReader(directory / PREFIX)
    expected = _expected_variables(directory)
    assert sorted(reader.names()) == sorted(expected)
    for name in reader.names():
        value = reader.read(name)
        assert _same(value, expected[name]), name


def test_every_dtype_tf_writes() -> None:
    reader = TFCheckpointReader(DNN / PREFIX)
    dtypes = {name[len("misc/") :]: reader.dtype(name) for name in reader.names() if name.startswith("misc/")}
    for kind in (
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float64",
        "bfloat16",
        "bool",
        "complex64",
        "complex128",
    ):
        assert dtypes[kind] == kind
        assert reader.read(f"misc/{kind}").dtype == (np.float32 if kind == "bfloat16" else np.dtype(kind))
    assert dtypes["string"] == "string"
    strings = reader.read("misc/string")
    assert strings.dtype == object and strings[0] == b"" and strings[3] == b"x" * 300
    assert strings[4] == bytes(range(256))
    assert reader.read("misc/string_scalar").shape == () and reader.read("misc/string_scalar")[()] == b"scalar string"
    assert reader.read("misc/empty").shape == (0, 3)
    assert reader.read("misc/scalar_float").shape == ()
    assert reader.shape("hidden1/kernel") == (64, 32)
    assert reader.dtype("global_step") == "int32"  # tf.Variable(0) in TF1


def test_read_all_skips_optimizer_slots_and_reports_them() -> None:
    reader = TFCheckpointReader(DNN / PREFIX)
    values, skipped = reader.read_all()
    assert "hidden1/kernel" in values and "outputs/bias" in values
    assert "hidden1/kernel/Momentum" in skipped and "global_step" in skipped
    assert not any(name.endswith("/Momentum") for name in values)
    assert set(values) | set(skipped) == set(reader.names())

    everything, none_skipped = reader.read_all(skip_optimizer_slots=False)
    assert none_skipped == [] and set(everything) == set(reader.names())

    bn_values, bn_skipped = TFCheckpointReader(BN / PREFIX).read_all()
    assert "batch_normalization/moving_mean" in bn_values
    assert {"hidden1/kernel/Adam", "hidden1/kernel/Adam_1"} <= set(bn_skipped)
    assert any(name.endswith("beta1_power") for name in bn_skipped)
    assert any(name.endswith("beta2_power") for name in bn_skipped)


def test_read_all_include_like_the_book() -> None:
    reader = TFCheckpointReader(DNN / PREFIX)
    values, skipped = reader.read_all(include="hidden[123]")  # regex, re.match like TF's scope filter
    assert sorted(values) == [f"hidden{i}/{v}" for i in (1, 2, 3) for v in ("bias", "kernel")]
    assert all(name.startswith("hidden") for name in skipped)
    values, _ = reader.read_all(include=["outputs/bias", "misc/int8"])
    assert sorted(values) == ["misc/int8", "outputs/bias"]
    values, _ = reader.read_all(include=lambda n: n.endswith("/kernel"))
    assert len(values) == 6


def test_list_variables_and_shorthand() -> None:
    listed = dict(list_variables(DNN))
    assert listed["hidden1/kernel"] == (64, 32) and listed["outputs/bias"] == (10,)
    values, skipped = read_tf_checkpoint(DNN / PREFIX, include="outputs")
    assert sorted(values) == ["outputs/bias", "outputs/kernel"] and len(skipped) == 2


@pytest.mark.parametrize(
    "name, slot",
    [
        ("hidden1/kernel/Momentum", True),
        ("hidden1/kernel/Adam", True),
        ("hidden1/kernel/Adam_1", True),
        ("hidden1/kernel/RMSProp_1", True),
        ("hidden1/kernel/Adagrad", True),
        ("hidden1/kernel/Ftrl_1", True),
        ("beta1_power", True),
        ("train/beta2_power", True),
        ("global_step", True),
        ("_CHECKPOINTABLE_OBJECT_GRAPH", True),
        ("model/dense/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE", True),
        ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", True),
        ("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE", True),
        ("hidden1/kernel", False),
        ("batch_normalization/moving_mean", False),
        ("Momentum", False),
        ("model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE", False),
    ],
)
def test_is_optimizer_slot(name: str, slot: bool) -> None:
    assert is_optimizer_slot(name) is slot


def test_prefix_resolution_and_detection(tmp_path: Path) -> None:
    prefix = str(DNN / PREFIX)
    for form in (prefix, prefix + ".index", prefix + ".meta", str(DNN / DATA), str(DNN), str(DNN / "checkpoint")):
        assert resolve_checkpoint_prefix(form) == prefix, form
        assert is_tf_checkpoint(form), form
    assert TFCheckpointReader(DNN).prefix == prefix
    assert not is_tf_checkpoint(tmp_path / "missing.ckpt")
    assert not is_tf_checkpoint(tmp_path)  # a directory without a state file
    (tmp_path / "junk.index").write_bytes(b"not a table" * 10)
    assert not is_tf_checkpoint(tmp_path / "junk")
    with pytest.raises(FileFormatError, match="missing.ckpt"):
        TFCheckpointReader(tmp_path / "missing.ckpt")
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "gone.ckpt"\n')
    with pytest.raises(FileFormatError, match="gone.ckpt"):
        resolve_checkpoint_prefix(tmp_path)


# ----------------------------------------------------------------------------------- corrupted files
def test_flipped_data_byte_is_a_checksum_error_naming_the_tensor(dnn_copy: Path) -> None:
    reader = TFCheckpointReader(dnn_copy / PREFIX)
    entry = reader.entry("hidden1/kernel")
    data = bytearray((dnn_copy / DATA).read_bytes())
    data[entry.offset + 17] ^= 0x01
    (dnn_copy / DATA).write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match=r"hidden1/kernel.*checksum"):
        reader.read("hidden1/kernel")
    assert np.array_equal(reader.read("outputs/bias"), _expected_variables(DNN)["outputs/bias"])
    with pytest.raises(FileFormatError, match="hidden1/kernel"):
        reader.read_all()
    unchecked = TFCheckpointReader(dnn_copy / PREFIX, verify_checksums=False)
    assert unchecked.read("hidden1/kernel").shape == (64, 32)


def test_flipped_string_byte_is_a_checksum_error(dnn_copy: Path) -> None:
    reader = TFCheckpointReader(dnn_copy / PREFIX)
    entry = reader.entry("misc/string")
    data = bytearray((dnn_copy / DATA).read_bytes())
    data[entry.offset + entry.size - 3] ^= 0x40  # inside the last string's bytes
    (dnn_copy / DATA).write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match=r"misc/string.*checksum"):
        reader.read("misc/string")


def test_truncated_data_file(dnn_copy: Path) -> None:
    reader = TFCheckpointReader(dnn_copy / PREFIX)
    last = max(reader.names(), key=lambda n: reader.entry(n).offset + reader.entry(n).size)
    data = (dnn_copy / DATA).read_bytes()
    (dnn_copy / DATA).write_bytes(data[: len(data) - 5])
    with pytest.raises(FileFormatError, match=rf"{last}.*beyond the end"):
        reader.read(last)
    os.remove(dnn_copy / DATA)
    with pytest.raises(FileFormatError, match="cannot read"):
        reader.read("outputs/bias")


@pytest.mark.parametrize("keep", [0, 1, 20, 47, 48, 700, -1])
def test_truncated_index_is_a_clean_error(dnn_copy: Path, keep: int) -> None:
    index = dnn_copy / f"{PREFIX}.index"
    data = index.read_bytes()
    index.write_bytes(data[:keep])
    assert not is_tf_checkpoint(dnn_copy / PREFIX)
    with pytest.raises(FileFormatError, match=r"\.index"):
        TFCheckpointReader(dnn_copy / PREFIX)


def test_garbage_and_flipped_index(dnn_copy: Path) -> None:
    index = dnn_copy / f"{PREFIX}.index"
    good = index.read_bytes()
    index.write_bytes(os.urandom(2000))
    with pytest.raises(FileFormatError, match=r"\.index.*magic"):
        TFCheckpointReader(dnn_copy / PREFIX)
    index.write_bytes(os.urandom(2000) + struct.pack("<Q", TABLE_MAGIC))  # right magic, garbage body
    with pytest.raises(FileFormatError, match=r"\.index"):
        TFCheckpointReader(dnn_copy / PREFIX)
    flipped = bytearray(good)
    flipped[30] ^= 0x10
    index.write_bytes(bytes(flipped))
    with pytest.raises(FileFormatError, match="checksum"):
        TFCheckpointReader(dnn_copy / PREFIX)


def test_random_index_mutations_never_escape_as_other_errors(dnn_copy: Path) -> None:
    index = dnn_copy / f"{PREFIX}.index"
    good = index.read_bytes()
    rng = random.Random(0)
    for _ in range(60):  # raw byte flips: caught by block checksums or structure checks, or harmless
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        index.write_bytes(bytes(data))
        try:  # flips in the footer padding or the unused metaindex block are harmless
            TFCheckpointReader(dnn_copy / PREFIX).read_all()
        except FileFormatError:
            pass
    # mutate entry protos and block bytes *behind* valid block checksums, so the decoders see the damage
    entries = _read_table(good)
    for _ in range(150):
        mutated = []
        for key, value in entries:
            if value and rng.random() < 0.2:
                value = bytearray(value)
                value[rng.randrange(len(value))] = rng.randrange(256)
                value = bytes(value)
            mutated.append((key, value))
        index.write_bytes(_table(mutated, per_block=rng.randint(1, 40)))
        try:
            TFCheckpointReader(dnn_copy / PREFIX, verify_checksums=rng.random() < 0.5).read_all(
                skip_optimizer_slots=False
            )
        except FileFormatError:
            pass
    block = _block(entries[:20], restart_interval=4)
    for _ in range(300):
        damaged = bytearray(block)
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            _block_entries(bytes(damaged), "data block")
        except ValueError:
            pass


# ------------------------------------------------------ hand-built tables: sizes, offsets, compression



def _shape(dims: tuple[int, ...]) -> bytes:
    return b"".join(_field(2, _vfield(1, d)) for d in dims)


def _entry(dtype: int, dims: tuple[int, ...], offset: int, size: int, crc: int, shard: int = 0) -> bytes:
    out = _vfield(1, dtype) + _field(2, _shape(dims)) + _vfield(4, offset) + _vfield(5, size)
    if shard:
        out += _vfield(3, shard)
    return out + _varint(6 << 3 | 5) + struct.pack("<I", crc)


def _header(num_shards: int = 1) -> bytes:
    return _vfield(1, num_shards) + _field(3, _vfield(1, 1))


def _block(entries: list[tuple[bytes, bytes]], restart_interval: int = 2) -> bytes:
    out, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(last), len(key)) and last[shared] == key[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        last = key
    restarts = restarts or [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def _snappy_literal(raw: bytes) -> bytes:
    out = bytearray(_varint(len(raw)))
    for i in range(0, len(raw), 60):
        piece = raw[i : i + 60]
        out += bytes([(len(piece) - 1) << 2]) + piece
    return bytes(out)


def _table(entries: list[tuple[bytes, bytes]], snappy: bool = False, per_block: int = 3) -> bytes:
    data = bytearray()

    def add(raw: bytes, ctype: int = 0) -> bytes:
        payload = _snappy_literal(raw) if ctype == 1 else raw
        handle = _varint(len(data)) + _varint(len(payload))
        data.extend(payload + bytes([ctype]) + struct.pack("<I", mask(crc32c(bytes([ctype]), crc32c(payload)))))
        return handle

    index = []
    for i in range(0, len(entries), per_block):
        chunk = entries[i : i + per_block]
        index.append((chunk[-1][0], add(_block(chunk), 1 if snappy else 0)))
    meta = add(_block([]))
    handles = meta + add(_block(index, 1))
    return bytes(data) + handles + bytes(40 - len(handles)) + struct.pack("<Q", TABLE_MAGIC)


def _write_bundle(tmp_path: Path, tensors: dict[str, bytes], data: bytes, snappy: bool = False) -> str:
    prefix = str(tmp_path / "model.ckpt")
    entries = [(b"", _header())] + sorted((k.encode(), v) for k, v in tensors.items())
    Path(prefix + ".index").write_bytes(_table(entries, snappy=snappy))
    Path(prefix + ".data-00000-of-00001").write_bytes(data)
    return prefix


def _float_bundle(tmp_path: Path, snappy: bool = False) -> tuple[str, dict[str, np.ndarray]]:
    arrays = {f"layer{i}/kernel": np.arange(i * 6, dtype=np.float32).reshape(i, 6) for i in range(1, 8)}
    data, tensors = bytearray(), {}
    for name, arr in arrays.items():
        raw = arr.tobytes()
        tensors[name] = _entry(1, arr.shape, len(data), len(raw), mask(crc32c(raw)))
        data += raw
    return _write_bundle(tmp_path, tensors, bytes(data), snappy), arrays


@pytest.mark.parametrize("snappy", [False, True], ids=["raw", "snappy"])
def test_hand_built_multi_block_table(tmp_path: Path, snappy: bool) -> None:
    prefix, arrays = _float_bundle(tmp_path, snappy)
    reader = TFCheckpointReader(prefix)
    assert reader.names() == sorted(arrays)
    for name, arr in arrays.items():
        assert _same(reader.read(name), arr)


def test_snappy_decoder_on_real_snappy_output() -> None:
    # written by the reference snappy implementation (cramjam.snappy.compress_raw): literals and copies
    compressed = bytes.fromhex(
        "88043468696464656e312f6b65726e656cde0e00f04c000102030405060708090a0b0c0d0e0f101112131415161718191a"
        "1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40414243444561626162616261"
        "fe060015060078fe0100fe0100fe0100fe0100aa0100"
    )
    expected = b"hidden1/kernel" * 5 + bytes(range(70)) + b"ab" * 40 + b"x" * 300
    assert _snappy_decompress(compressed, 10_000) == expected
    with pytest.raises(ValueError):
        _snappy_decompress(compressed, 100)  # refuses to grow past the limit
    with pytest.raises(ValueError):
        _snappy_decompress(compressed[:-3], 10_000)
    with pytest.raises(ValueError, match="corrupted snappy"):
        _snappy_decompress(_varint(8) + bytes([1 | (3 << 2), 5]), 100)  # copy before any output
    with pytest.raises(ValueError):
        _snappy_decompress(_varint(3) + bytes([(9 << 2)]) + b"0123456789", 100)  # more output than claimed
    with pytest.raises(ValueError, match="claims"):  # refused from the header, before any decoding
        _snappy_decompress(_varint(1 << 40) + bytes([1 | (3 << 2), 5]), 10_000)


def test_hostile_snappy_index_block_is_a_file_format_error(tmp_path: Path) -> None:
    # a well-checksummed index block whose snappy header claims a terabyte
    payload = _varint(1 << 40) + b"\x00x"
    data = payload + b"\x01" + struct.pack("<I", mask(crc32c(b"\x01", crc32c(payload))))
    handles = _varint(0) + _varint(0) + _varint(0) + _varint(len(payload))
    index = tmp_path / "model.ckpt.index"
    index.write_bytes(data + handles + bytes(40 - len(handles)) + struct.pack("<Q", TABLE_MAGIC))
    with pytest.raises(FileFormatError, match=r"model\.ckpt\.index.*claims 1099511627776 bytes"):
        TFCheckpointReader(str(tmp_path / "model.ckpt"))


@pytest.mark.parametrize(
    "entry, message",
    [
        (_entry(1, (4,), 0, 1 << 40, 0), "should take 16 bytes"),  # lying size
        (_entry(1, (1 << 20, 1 << 20), 0, 1 << 42, 0), "beyond the end"),  # huge, consistent, but no data
        (_entry(1, (4,), 1000, 16, 0), "beyond the end"),  # offset past the data file
        (_entry(1, (4,), 0, 16, 0, shard=3), "shard 3"),
        (_entry(21, (1,), 0, 8, 0), "variant"),
        (_entry(7, (100,), 0, 16, 0), "cannot fit"),  # 100 strings in 16 bytes
        (_entry(7, (2,), 0, 16, 0), "checksum"),
        (_vfield(1, 1) + _field(2, _shape((-1, 3))), "not fully defined"),
        (b"\xff\xff", "not a valid"),
    ],
)
def test_hostile_entries_are_clean_errors(tmp_path: Path, entry: bytes, message: str) -> None:
    prefix = _write_bundle(tmp_path, {"bad/tensor": entry}, bytes(range(16)))
    with pytest.raises(FileFormatError, match=message) as info:
        TFCheckpointReader(prefix).read("bad/tensor")
    assert "bad/tensor" in str(info.value)


def test_missing_header_and_partitioned_variable(tmp_path: Path) -> None:
    prefix = str(tmp_path / "x.ckpt")
    Path(prefix + ".index").write_bytes(_table([(b"a", _entry(1, (1,), 0, 4, 0))]))
    with pytest.raises(FileFormatError, match="header"):
        TFCheckpointReader(prefix)
    sliced = _entry(1, (4,), 0, 0, 0) + _field(7, _field(1, _vfield(1, 0) + _vfield(2, 2)))
    prefix = _write_bundle(tmp_path, {"part/kernel": sliced}, b"")
    reader = TFCheckpointReader(prefix)
    assert reader.entry("part/kernel").slices == [[(0, 2)]]
    with pytest.raises(FileFormatError, match="partitioned"):
        reader.read("part/kernel")
    with pytest.raises(KeyError, match="nope"):
        reader.read("nope")
