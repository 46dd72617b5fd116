"""Keras files rebuilt from their skeletons: the structure Keras wrote, with values made by a formula.

A skeleton (``fixtures/keras_apps/<name>.json.gz``, written by ``fixtures/make_keras_catalogue.py``) holds
everything of a ``.keras`` zip or a legacy ``.h5`` file except the weight values: the zip's members (text
members verbatim), every HDF5 group, every attribute with its exact dtype and shape, and every dataset's name,
shape and dtype with the ``Variable.path`` of the weight it holds. Keras saved its files with the weight values
:func:`weight_values` gives, so writing the same values back rebuilds the files Keras wrote.

The value formula (shared by the generator, which runs under TensorFlow, and the tests, which do not)::

    unit[j] = (splitmix64(j) >> 40) * 2**-23 - 1, for j < P = 1048573 (a prime)    (float32, uniform in [-1, 1))
    value[i] = float32(offset + scale * unit[(crc32(name) + i) mod P]), element i of the C-ordered array

(``splitmix64`` is Steele et al.'s 64-bit mixer), with ``offset`` and ``scale`` per weight, kept in the skeleton.
It is integer arithmetic, then IEEE float64 operations rounded once to float32, so every numpy gives the same
bits; a weight costs one pass over at most P table entries and a copy. Integer weights (a Normalization
layer's ``count``) are kept in the skeleton as they are.
"""

from __future__ import annotations

import gzip
import json
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PERIOD = 1048573
_TABLE: list[np.ndarray] = []


def _unit_table() -> np.ndarray:
    if not _TABLE:
        z = np.arange(PERIOD, dtype=np.uint64)
        z *= np.uint64(0x9E3779B97F4A7C15)  # splitmix64 of the counter (uint64 arrays wrap around)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        z >>= np.uint64(40)
        unit = z.astype(np.float64)  # < 2**24: exact, and exact again after the scaling below
        unit *= 2.0 ** -23
        unit -= 1.0
        _TABLE.append(unit)
    return _TABLE[0]


def weight_values(name: str, shape: tuple[int, ...], offset: float, scale: float, dtype: str = "float32") -> np.ndarray:
    """The value formula above: ``offset + scale * unit[...]`` for the weight (or input) called ``name``."""
    n = int(np.prod(shape, dtype=np.int64))
    start, m = zlib.crc32(name.encode("utf-8")) % PERIOD, min(n, PERIOD)
    table = _unit_table()
    units = table[start:start + m]
    if len(units) < m:
        units = np.concatenate([units, table[:m - len(units)]])
    period = (offset + scale * units).astype(dtype)
    return (np.resize(period, n) if n > m else period).reshape(shape)


# ---------------------------------------------------------------------------------------------------- HDF5

def _attr_record(obj: Any, key: str) -> dict[str, Any]:
    import h5py

    aid = obj.attrs.get_id(key)
    dtype, shape, value = aid.dtype, aid.shape, obj.attrs[key]
    string = h5py.check_string_dtype(dtype)
    if string is not None and string.length is None:  # variable-length string
        v = value.tolist() if isinstance(value, np.ndarray) else value
        v = _decode(v, string.encoding)
        return {"name": key, "type": "vlen-str", "encoding": string.encoding, "shape": list(shape), "value": v}
    if dtype.kind == "S":
        v = np.asarray(value).tolist()
        return {"name": key, "type": dtype.str, "shape": list(shape), "value": _decode(v, "latin-1")}
    if dtype.kind in "biuf":
        return {"name": key, "type": dtype.str, "shape": list(shape), "value": np.asarray(value).tolist()}
    raise ValueError(f"attribute {obj.name}@{key}: dtype {dtype} is not recorded")


def _decode(v: Any, encoding: str) -> Any:
    if isinstance(v, list):
        return [_decode(x, encoding) for x in v]
    return v.decode(encoding) if isinstance(v, bytes) else v


def _encode(v: Any, encoding: str) -> Any:
    if isinstance(v, list):
        return [_encode(x, encoding) for x in v]
    return v.encode(encoding)


def record_hdf5(group: Any, name_of: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The skeleton of an open h5py group: its attributes, sub-groups and datasets (``name_of(dataset)`` says
    what fills each dataset: ``{"weight": path}`` or ``{"value": [...]}``)."""
    import h5py

    node: dict[str, Any] = {"attrs": [_attr_record(group, k) for k in group.attrs], "groups": {}, "datasets": {}}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            node["groups"][key] = record_hdf5(item, name_of)
        else:
            if item.compression is not None or item.chunks is not None or item.fillvalue not in (0, None):
                raise ValueError(f"dataset {item.name}: chunked/compressed layouts are not recorded")
            node["datasets"][key] = {"shape": list(item.shape), "dtype": item.dtype.str,
                                     "attrs": [_attr_record(item, k) for k in item.attrs], **name_of(item)}
    return node


def _write_attrs(obj: Any, records: list[dict[str, Any]]) -> None:
    import h5py

    for rec in records:
        shape = tuple(rec["shape"])
        if rec["type"] == "vlen-str":
            dtype = h5py.string_dtype(rec["encoding"])
            data = np.array(rec["value"], dtype=object) if shape else rec["value"]
        elif rec["type"].lstrip("|<>=").startswith("S"):
            dtype = np.dtype(rec["type"])
            data = np.array(_encode(rec["value"], "latin-1"), dtype=dtype).reshape(shape)
        else:
            dtype = np.dtype(rec["type"])
            data = np.array(rec["value"], dtype=dtype).reshape(shape)
        obj.attrs.create(rec["name"], data, shape=shape, dtype=dtype)


def write_hdf5(group: Any, node: dict[str, Any], values: Callable[[dict[str, Any]], np.ndarray]) -> None:
    """Write the skeleton ``node`` into the open h5py ``group``; ``values(record)`` gives each dataset's array."""
    _write_attrs(group, node["attrs"])
    for key, child in node["groups"].items():
        write_hdf5(group.create_group(key), child, values)
    for key, rec in node["datasets"].items():
        data = values(rec)
        shape, dtype = tuple(rec["shape"]), np.dtype(rec["dtype"])
        if data.shape != shape or data.dtype != dtype:
            raise ValueError(f"dataset {group.name}/{key}: values {data.shape} {data.dtype}, want {shape} {dtype}")
        _write_attrs(group.create_dataset(key, data=data), rec["attrs"])


# ---------------------------------------------------------------------------------------------------- files

def load_skeleton(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def dataset_values(skeleton: dict[str, Any], cache: dict[str, np.ndarray] | None = None):
    """The ``values(record)`` callback for :func:`write_hdf5`: a weight's formula values, or a stored value."""
    weights = skeleton["weights"]
    cache = {} if cache is None else cache

    def values(rec: dict[str, Any]) -> np.ndarray:
        if "value" in rec:
            return np.array(rec["value"], dtype=rec["dtype"]).reshape(rec["shape"])
        path, rule = rec["weight"], weights[rec["weight"]]
        if "value" in rule:  # an integer weight (a Normalization's count): kept as it is
            return np.array(rule["value"], dtype=rec["dtype"]).reshape(rec["shape"])
        if path not in cache:
            cache[path] = weight_values(path, tuple(rec["shape"]), rule["offset"], rule["scale"], rec["dtype"])
        return cache[path]

    return values


def rebuild(skeleton: dict[str, Any], fmt: str, path: Path, cache: dict[str, np.ndarray] | None = None) -> Path:
    """Write the ``fmt`` (``"keras"`` or ``"h5"``) file of ``skeleton`` to ``path``."""
    import h5py

    values = dataset_values(skeleton, cache)
    node = skeleton["files"][fmt]
    if fmt == "h5":
        with h5py.File(path, "w") as f:
            write_hdf5(f, node["hdf5"], values)
        return path
    with zipfile.ZipFile(path, "w") as z:
        for member in node["members"]:
            info = zipfile.ZipInfo(member["name"], date_time=tuple(member["date_time"]))
            info.compress_type = member["compress_type"]
            if "text" in member:
                z.writestr(info, member["text"].encode("utf-8"))
            else:
                h5_path = path.with_name(path.name + ".weights.h5")
                with h5py.File(h5_path, "w") as f:
                    write_hdf5(f, member["hdf5"], values)
                z.writestr(info, h5_path.read_bytes())
                h5_path.unlink()
    return path
