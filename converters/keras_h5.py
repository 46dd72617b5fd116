"""Reading Keras files safely: the ``.keras`` zip (in memory, sizes checked first) and HDF5 weights.

``read_keras_file(path)`` returns the model config (None for weights-only files) and the weights per
layer name, in Keras's order, for the three formats Keras writes:

* Keras 3 ``.keras``: a zip of ``config.json`` + ``model.weights.h5``; archive members' declared sizes
  and compression ratios are checked before anything is decompressed (no zip bombs);
* Keras 3 ``.weights.h5`` (and the ``model.weights.h5`` inside a ``.keras``): positional
  ``layers/<auto name>/vars/<i>`` datasets whose layer name is the ``name`` attribute of ``vars``;
* legacy ``.h5`` (``model.save`` / ``save_weights``): ``model_config`` JSON in the root attributes, and
  ``model_weights/<layer>`` groups listing their datasets in ``weight_names``.

HDF5 is read with h5py (the optional ``graphdnn[keras]`` dependency) without following external links.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from graphdnn.errors import FileFormatError

__all__ = ["MAX_ARCHIVE_BYTES", "KerasFile", "read_keras_file", "weight_names"]

#: Largest total uncompressed size of a ``.keras`` archive graphdnn opens.
MAX_ARCHIVE_BYTES = 4 * 2**30
_MAX_RATIO = 200  # uncompressed / compressed beyond this (for members > 1 MiB) is a zip bomb
_MAX_CONFIG = 64 * 2**20
_MAX_GROUPS = 100_000
_AUTO_NAME = re.compile(r"_\d+$")
_WEIGHT_NAMES = {
    "dense": ["kernel", "bias"], "conv2d": ["kernel", "bias"], "conv1d": ["kernel", "bias"],
    "depthwise_conv2d": ["depthwise_kernel", "bias"],
    "batch_normalization": ["gamma", "beta", "moving_mean", "moving_variance"],
}


class KerasFile:
    """A decoded Keras file: ``config`` (or None), ``weights`` (layer name -> [(name, array)])."""

    def __init__(self, path: str, config: dict[str, Any] | None, weights: dict[str, list[tuple[str, np.ndarray]]]):
        self.path, self.config, self.weights = path, config, weights


def _h5py() -> Any:
    try:
        import h5py
    except ModuleNotFoundError:
        raise FileFormatError("reading Keras .h5/.keras files needs h5py: pip install graphdnn[keras]") from None
    return h5py


def _child(group: Any, key: str, where: str) -> Any:
    """``group[key]`` unless it is an external link (never followed: it could read any file)."""
    h5py = _h5py()
    if not isinstance(group, h5py.Group):
        raise FileFormatError(f"{where}: {group.name} is a {type(group).__name__}, where a group holding {key!r} was "
                              "expected")
    link = group.get(key, getlink=True)
    if link is None:
        raise FileFormatError(f"{where}: missing {group.name}/{key}")
    if isinstance(link, h5py.ExternalLink):
        raise FileFormatError(f"{where}: {group.name}/{key} is an external link to {link.filename!r}; graphdnn does "
                              "not follow links out of the file")
    return group[key]


def _array(ds: Any, where: str) -> np.ndarray:
    h5py = _h5py()
    if not isinstance(ds, h5py.Dataset):
        raise FileFormatError(f"{where}: {ds.name} is not a dataset")
    if ds.dtype.kind not in "biufc":
        raise FileFormatError(f"{where}: weight {ds.name} has dtype {ds.dtype}, not numbers")
    stored = ds.id.get_storage_size()
    if ds.nbytes > 2**20 and ds.nbytes > _MAX_RATIO * max(stored, 1):
        raise FileFormatError(f"{where}: weight {ds.name} declares shape {list(ds.shape)} ({ds.nbytes} bytes) but "
                              f"the file stores {stored} bytes of it; refusing to allocate it (corrupted or hostile)")
    try:
        return np.asarray(ds[()])
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{where}: weight {ds.name} cannot be read ({exc}); the file is corrupted") from None


def _open_h5(source: Any, where: str) -> Any:
    h5py = _h5py()
    try:
        return h5py.File(source, "r")
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{where}: not a readable HDF5 file ({exc}); is it truncated or corrupted?") from None


def _attr_text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise FileFormatError(f"attribute value {value[:40]!r} is not UTF-8 text") from None
    return str(value)


def weight_names(class_hint: str, count: int) -> list[str]:
    """Keras's weight names for a layer class (``Dense`` or the auto name ``dense_1``), by position."""
    key = _AUTO_NAME.sub("", re.sub(r"(?<!^)(?=[A-Z])", "_", class_hint).lower()).replace("conv2_d", "conv2d")
    names = _WEIGHT_NAMES.get(key)
    return names[:count] if names and len(names) >= count else [str(i) for i in range(count)]


def _keras3_weights(root: Any, where: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    h5py = _h5py()
    seen: set[Any] = set()

    def walk(group: Any) -> None:
        if group.id in seen or len(seen) > _MAX_GROUPS:
            raise FileFormatError(f"{where}: group {group.name} is reached twice (a link cycle) or the file holds "
                                  f"over {_MAX_GROUPS} groups; not a Keras weights file")
        seen.add(group.id)
        for key in group:
            child = _child(group, key, where)
            if not isinstance(child, h5py.Group):
                continue
            if key == "vars":
                name = _attr_text(child.attrs.get("name", Path(group.name).name))
                arrays = [_array(_child(child, str(i), where), where) for i in range(len(child))]
                if arrays:
                    hint = Path(group.name).name
                    out[name] = list(zip(weight_names(hint, len(arrays)), arrays))
            else:
                walk(child)

    if "layers" in root:
        walk(_child(root, "layers", where))
    return out


def _legacy_weights(root: Any, where: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for layer in [_attr_text(n) for n in root.attrs.get("layer_names", [])]:
        group = _child(root, layer, where)
        arrays = []
        for wname in [_attr_text(n) for n in group.attrs.get("weight_names", [])]:
            node = group
            for part in wname.split("/"):
                node = _child(node, part, where)
            leaf = wname.rsplit("/", 1)[-1].split(":")[0]
            arrays.append((leaf, _array(node, where)))
        if arrays:
            out[layer] = arrays
    return out


def _h5_weights(f: Any, where: str) -> tuple[dict[str, Any] | None, dict[str, list[tuple[str, np.ndarray]]]]:
    config = None
    if "model_config" in f.attrs:
        try:
            config = json.loads(_attr_text(f.attrs["model_config"]))
        except (ValueError, RecursionError) as exc:
            raise FileFormatError(f"{where}: model_config is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise FileFormatError(f"{where}: model_config holds a {type(config).__name__}, not a model config object")
    if "model_weights" in f:
        return config, _legacy_weights(_child(f, "model_weights", where), where)
    if "layer_names" in f.attrs:
        return config, _legacy_weights(f, where)
    return config, _keras3_weights(f, where)


def _read_zip(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise FileFormatError(f"{path}: not a .keras archive (not a zip: {exc})") from None
    infos = {i.filename: i for i in archive.infolist()}
    names = [i.filename for i in archive.infolist()]
    total = sum(i.file_size for i in infos.values())
    if total > MAX_ARCHIVE_BYTES:
        raise FileFormatError(f"{path}: the archive declares {total} uncompressed bytes (limit {MAX_ARCHIVE_BYTES})")
    for info in infos.values():
        if info.file_size > 2**20 and info.file_size > _MAX_RATIO * max(info.compress_size, 1):
            raise FileFormatError(f"{path}: member {info.filename!r} would expand {info.compress_size} bytes to "
                                  f"{info.file_size}; refusing a likely zip bomb")
    for need in ("config.json", "model.weights.h5"):
        if need not in infos:
            raise FileFormatError(f"{path}: a .keras archive must hold {need}; it has {sorted(infos)}")
    if infos["config.json"].file_size > _MAX_CONFIG:
        raise FileFormatError(f"{path}: config.json is {infos['config.json'].file_size} bytes (limit {_MAX_CONFIG})")
    duplicated = sorted({n for n in names if names.count(n) > 1} & {"config.json", "model.weights.h5"})
    if duplicated:
        raise FileFormatError(f"{path}: the archive holds {duplicated} more than once; which copy is meant is "
                              "ambiguous")
    try:
        config = json.loads(archive.read("config.json"))
        weights = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, ValueError, EOFError, RecursionError, zlib.error, NotImplementedError) as exc:
        raise FileFormatError(f"{path}: corrupted archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict):
        raise FileFormatError(f"{path}: config.json holds a {type(config).__name__}, not a Keras model config object")
    return config, weights


def read_keras_file(path: str | os.PathLike) -> KerasFile:
    """Config and per-layer weights of a ``.keras``, ``.h5`` or ``.weights.h5`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file")
    where = str(path)
    if path.name.lower().endswith(".keras"):
        config, blob = _read_zip(path)
        inner = where + ":model.weights.h5"
        _, weights = _read_h5(io.BytesIO(blob), inner)
        return KerasFile(where, config, weights)
    config, weights = _read_h5(path, where)
    return KerasFile(where, config, weights)


def _read_h5(source: Any, where: str) -> tuple[dict[str, Any] | None, dict[str, list[tuple[str, np.ndarray]]]]:
    """Config and weights of an HDF5 file; the HDF5 library's errors about a damaged file (h5py raises
    OSError, RuntimeError, KeyError, ValueError or TypeError for them) become ``FileFormatError``."""
    try:
        with _open_h5(source, where) as f:
            return _h5_weights(f, where)
    except FileFormatError as exc:
        if str(exc).startswith(where):
            raise
        raise FileFormatError(f"{where}: {exc}") from None
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise FileFormatError(f"{where}: the HDF5 data is corrupted ({type(exc).__name__}: {exc}); re-save the "
                              "model") from None
