"""Reading Keras files safely: the ``.keras`` zip (in memory, sizes checked first) and HDF5 weights.

``read_keras_file(path)`` returns the model config (None for weights-only files) and the weights per
layer name, in Keras's order, for the three formats Keras writes, named by Keras 3's ``Variable.path``
(a nested functional model's layers by their own names, a nested Sequential's under its name; see ``KerasFile``):

* Keras 3 ``.keras``: a zip of ``config.json`` + ``model.weights.h5``; archive members' declared sizes
  and compression ratios are checked before anything is decompressed (no zip bombs);
* Keras 3 ``.weights.h5`` (and the ``model.weights.h5`` inside a ``.keras``): positional
  ``layers/<auto name>/vars/<i>`` datasets whose layer name is the ``name`` attribute of ``vars``;
* Keras 2 (``tf_keras``) ``.keras``: the same zip, but ``vars`` carry no names: ``layers/<key>`` is keyed by
  the layer's class (``conv2d``, ``conv2d_1``... in the config's layer order), and the weights get the names
  ``tf_keras`` gives them in its legacy ``.h5`` (``lstm/lstm_cell/kernel``, ``mha/query/kernel``, ``td/kernel``);
* legacy ``.h5`` (``model.save`` / ``save_weights``): ``model_config`` JSON in the root attributes, and
  ``model_weights/<layer>`` groups listing their datasets in ``weight_names``.

HDF5 is read with h5py (the optional ``graphdnn[keras]`` dependency) and nothing outside the file is read:
a file holding an external link, a dataset with external raw storage or a virtual dataset anywhere (read
or not) is refused with ``ExternalReferenceError`` (naming the link or dataset and the file it points to)
before any data is read, as is a dataset compressed by a filter HDF5 would load as a plugin; soft links
are resolved one name at a time inside the file.
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

from graphdnn import budget
from graphdnn.errors import ExternalReferenceError, FileFormatError

__all__ = ["MAX_ARCHIVE_BYTES", "VAR_NAMES", "KerasFile", "read_keras_file", "var_names", "weight_names"]

#: Largest total uncompressed size of a ``.keras`` archive graphdnn opens.
MAX_ARCHIVE_BYTES = 4 * 2**30
_MAX_RATIO = 200  # uncompressed / compressed beyond this (for members > 1 MiB) is a zip bomb
_MAX_CONFIG = 64 * 2**20
_MAX_GROUPS = 100_000
_MAX_SOFT_HOPS = 32
_MAX_OBJECTS = 1_000_000
# HDF5's built-in filters and h5py's LZF (deflate, shuffle, fletcher32, szip, nbit, scaleoffset, lzf).
_BUILTIN_FILTERS = frozenset((1, 2, 3, 4, 5, 6, 32000))
_AUTO_NAME = re.compile(r"_\d+$")

_KD = ["kernel", "bias"]
_CELL = ["kernel", "recurrent_kernel", "bias"]
#: Keras's variable names, in creation order, for the layer classes that own weights (config flags decide
#: which of BatchNormalization/LayerNormalization/Attention's optional weights exist).
VAR_NAMES: dict[str, list[str]] = {
    **{c: _KD for c in ("Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
                        "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D")},
    "SeparableConv1D": ["depthwise_kernel", "pointwise_kernel", "bias"],
    "SeparableConv2D": ["depthwise_kernel", "pointwise_kernel", "bias"],
    **{c: _CELL for c in ("LSTMCell", "GRUCell", "SimpleRNNCell")},
    "Embedding": ["embeddings"], "PReLU": ["alpha"], "Normalization": ["mean", "variance", "count"],
    "BatchNormalization": ["gamma", "beta", "moving_mean", "moving_variance"],
    "LayerNormalization": ["gamma", "beta"], "GroupNormalization": ["gamma", "beta"],
    "Attention": ["scale", "concat_score_weight"], "AdditiveAttention": ["scale"],
    "LayerScale": ["variable"],  # keras.applications.convnext
}
_SNAKE = {re.sub(r"(?<!^)(?=[A-Z])", "_", c).lower().replace("conv1_d", "conv1d").replace("conv2_d", "conv2d")
          .replace("conv3_d", "conv3d").replace("p_re_l_u", "p_relu").replace("l_s_t_m", "lstm")
          .replace("g_r_u", "gru").replace("simple_r_n_n", "simple_rnn"): c for c in VAR_NAMES}
_SNAKE.update({"prelu": "PReLU", "lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"})
_RNN_CELL = {"LSTM": "LSTMCell", "GRU": "GRUCell", "SimpleRNN": "SimpleRNNCell"}
_MHA_PARTS = {"query_dense", "key_dense", "value_dense", "output_dense"}


def var_names(cls: str | None, config: dict[str, Any] | None, count: int, where: str) -> list[str]:
    """Keras's names for the ``count`` variables a layer of class ``cls`` stores, in order. The layer's
    ``config`` (when the file has one) says which optional weights exist; without it a count that fits
    two layouts (a BatchNormalization with 3 weights) cannot be named and raises ``FileFormatError``."""
    if cls in ("LSTM", "GRU", "SimpleRNN"):
        cls = _RNN_CELL[cls]
    names = VAR_NAMES.get(cls or "")
    config = config if isinstance(config, dict) else None
    cfg = config or {}
    if names is None:
        raise FileFormatError(f"{where}: cannot name the {count} weight(s) of a layer of class {cls or 'unknown'}; "
                              "graphdnn names weights of the classes "
                              f"{', '.join(sorted(VAR_NAMES))} (load the full model file, whose config names them)")
    if cls in ("Dense", "EinsumDense") or cls.startswith(("Conv", "Depthwise")):
        names = names[:1] + (names[1:] if cfg.get("use_bias", count > 1) else [])
    elif cls.startswith("Separable"):
        names = names[:2] + (names[2:] if cfg.get("use_bias", count > 2) else [])
    elif cls.endswith("Cell"):
        names = names[:2] + (names[2:] if cfg.get("use_bias", count > 2) else [])
    elif cls == "BatchNormalization":
        if config is None and count == 3:
            raise FileFormatError(f"{where}: a BatchNormalization with 3 weights is either center=False or "
                                  "scale=False; without the model config they cannot be named")
        if config is None:
            names = names if count == 4 else names[2:]
        else:
            names = ([names[0]] if cfg.get("scale", True) else []) + ([names[1]] if cfg.get("center", True) else
                                                                         []) + names[2:]
    elif cls in ("LayerNormalization", "GroupNormalization"):
        if config is None and count == 1:
            raise FileFormatError(f"{where}: a {cls} with 1 weight is either center=False or scale=False; "
                                  "without the model config it cannot be named")
        if config is not None:
            scale = cfg.get("scale", True) or cfg.get("rms_scaling", False)
            center = cfg.get("center", True) and not cfg.get("rms_scaling", False)
            names = ([names[0]] if scale else []) + ([names[1]] if center else [])
    elif cls == "Attention" and config is not None:
        names = (["scale"] if cfg.get("use_scale") else []) + (
            ["concat_score_weight"] if cfg.get("score_mode") == "concat" else [])
    elif cls == "Attention" and count == 1:
        raise FileFormatError(f"{where}: an Attention layer's single weight is either scale or "
                              "concat_score_weight; without the model config it cannot be named")
    if len(names) < count or (config is not None and len(names) != count):
        raise FileFormatError(f"{where}: a {cls} layer stores {count} weight(s); Keras's {cls} with this config "
                              f"has {len(names)} ({', '.join(names)}); the file does not match its config")
    return names[:count]


def weight_names(class_hint: str, count: int) -> list[str]:
    """Keras's weight names for a layer class (``Dense`` or the auto name ``dense_1``), by position."""
    cls = class_hint if class_hint in VAR_NAMES or class_hint in _RNN_CELL else _SNAKE.get(
        _AUTO_NAME.sub("", class_hint))
    return var_names(cls, None, count, f"layer class {class_hint!r}")


class KerasFile:
    """A decoded Keras file: ``config`` (or None), ``weights``: top-level layer name -> [(Keras weight path,
    array)] in Keras's order, the paths being Keras 3's ``Variable.path`` (``lstm/lstm_cell/kernel``).

    The layers of a nested functional model are named by their own names (``proj/kernel``, as Keras 3 names
    them), those of a nested Sequential under its name (``seq/d1/kernel``). ``aliases`` maps the scoped name
    of such a weight (``encoder/proj/kernel``: every enclosing model's name) to its name in ``weights``;
    ``scoped`` lists the weights that keep their scoped name because an earlier weight has their Keras path
    (two nested models holding layers of the same name)."""

    def __init__(self, path: str, config: dict[str, Any] | None, weights: dict[str, list[tuple[str, np.ndarray]]]):
        self.path, self.config, self.weights = path, config, weights
        self.aliases: dict[str, str] = dict(getattr(weights, "aliases", {}))
        self.scoped: list[str] = list(getattr(weights, "scoped", []))


class _Named(dict):
    """Weights by top-level layer (``KerasFile.weights``), with the scoped names of nested models' weights."""

    aliases: dict[str, str]
    scoped: list[str]


def _by_keras_path(entries: list[tuple[str, str, str, np.ndarray]]) -> _Named:
    """Weights named by their Keras paths from (top-level layer, scoped name, Keras path, array) in Keras's
    order; a weight whose Keras path an earlier one has keeps its scoped name."""
    out = _Named()
    out.aliases, out.scoped = {}, []
    taken: set[str] = set()
    for top, scoped, kpath, arr in entries:
        name = kpath if kpath not in taken else scoped
        if name != kpath:
            out.scoped.append(scoped)
        taken.add(name)
        if scoped != name:
            out.aliases[scoped] = name
        out.setdefault(top, []).append((name, arr))
    return out


def _h5py() -> Any:
    try:
        import h5py
    except ModuleNotFoundError:
        raise FileFormatError("reading Keras .h5/.keras files needs h5py: pip install graphdnn[keras]") from None
    return h5py


def _has(group: Any, key: str) -> bool:
    """Whether ``group`` holds a link named ``key``, looked up without following it."""
    return group.get(key, getlink=True) is not None


def _child(group: Any, key: str, where: str, hops: int = 0) -> Any:
    """``group[key]``, following only links inside the file: hard links, and soft links resolved here
    one name at a time (so that none passes through an external link). External and user-defined links
    are refused: they could read any file."""
    h5py = _h5py()
    if not isinstance(group, h5py.Group):
        raise FileFormatError(f"{where}: {group.name} is a {type(group).__name__}, where a group holding {key!r} was "
                              "expected")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if len(parts) != 1:  # a path: every step is checked
        if not parts:
            raise FileFormatError(f"{where}: empty name {key!r} under {group.name}")
        node = group
        for part in parts:
            node = _child(node, part, where, hops)
        return node
    key = parts[0]
    link = group.get(key, getlink=True)
    if link is None:
        raise FileFormatError(f"{where}: missing {group.name}/{key}")
    path = f"{group.name.rstrip('/')}/{key}"
    if isinstance(link, h5py.ExternalLink):
        raise ExternalReferenceError(f"{where}: {path} is an external link to {link.path!r} in file "
                                     f"{link.filename!r}; graphdnn reads nothing outside the model file, re-save the "
                                     "model with the data inside it")
    if isinstance(link, h5py.SoftLink):
        if hops >= _MAX_SOFT_HOPS:
            raise FileFormatError(f"{where}: {path}: soft links chained more than {_MAX_SOFT_HOPS} deep (a cycle?)")
        start = group.file["/"] if link.path.startswith("/") else group
        return _child(start, link.path, where, hops + 1)
    if not isinstance(link, h5py.HardLink):
        raise ExternalReferenceError(f"{where}: {path} is a {type(link).__name__}, a link graphdnn does not follow")
    return group[key]


def _check_storage(ds: Any, where: str) -> None:
    """Refuse a dataset whose data lives in other files (external raw storage, a virtual dataset) or
    needs a filter HDF5 would load as a plugin; only the creation property list is read."""
    h5py = _h5py()
    dcpl = ds.id.get_create_plist()
    count = dcpl.get_external_count()
    if count:
        files = [_attr_text(dcpl.get_external(i)[0]) for i in range(min(count, 8))]
        raise ExternalReferenceError(f"{where}: dataset {ds.name} keeps its data in external file(s) {files}"
                                     f"{' ...' if count > 8 else ''}; graphdnn reads nothing outside the model "
                                     "file, re-save the model with the data inside it")
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        count = dcpl.get_virtual_count()
        sources = [f"{_attr_text(dcpl.get_virtual_filename(i))}:{_attr_text(dcpl.get_virtual_dsetname(i))}"
                   for i in range(min(count, 8))]
        raise ExternalReferenceError(f"{where}: dataset {ds.name} is a virtual dataset mapping {sources}"
                                     f"{' ...' if count > 8 else ''}; graphdnn reads nothing outside the model "
                                     "file, re-save the model with the data inside it")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in _BUILTIN_FILTERS:
            raise FileFormatError(f"{where}: dataset {ds.name} is compressed with HDF5 filter {code}, which is not "
                                  "built in; graphdnn does not load filter plugins")


def _check_file(f: Any, where: str) -> None:
    """Refuse a file that refers outside itself anywhere, read or not: every link and every dataset is
    visited once by HDF5's own traversal (which follows hard links only) before any data is read."""
    h5py = _h5py()
    found: list[str] = []
    count = [0]

    def on_link(name: bytes, info: Any) -> int | None:  # a non-None result stops the visit
        count[0] += 1
        path = "/" + name.decode("utf-8", "replace")
        if info.type == h5py.h5l.TYPE_EXTERNAL:
            filename, target = (v.decode("utf-8", "replace") for v in f.id.links.get_val(name))
            found.append(f"{path} is an external link to {target!r} in file {filename!r}")
        elif info.type not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):
            found.append(f"{path} is a user-defined link (type {info.type}), which graphdnn does not follow")
        return 1 if found or count[0] > _MAX_OBJECTS else None

    f.id.links.visit(on_link, info=True)
    if found:
        raise ExternalReferenceError(f"{where}: {found[0]}; graphdnn reads nothing outside the model file, re-save "
                                     "the model with the data inside it")
    if count[0] > _MAX_OBJECTS:
        raise FileFormatError(f"{where}: the file holds over {_MAX_OBJECTS} links; not a Keras file")
    datasets: list[Any] = []
    f.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
    for ds in datasets:
        _check_storage(ds, where)


def _array(ds: Any, where: str) -> np.ndarray:
    h5py = _h5py()
    if not isinstance(ds, h5py.Dataset):
        raise FileFormatError(f"{where}: {ds.name} is not a dataset")
    _check_storage(ds, where)
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


def _layer_classes(config: dict[str, Any] | None) -> dict[str, tuple[str, dict[str, Any]]]:
    """Layer name -> (class name, config) for the layers of a model config (nested models included)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}

    def visit(spec: Any) -> None:
        if not isinstance(spec, dict):
            return
        body = spec.get("config")
        if not isinstance(body, dict):
            return
        layers = body.get("layers")
        if isinstance(layers, list):
            for layer in layers:
                visit(layer)
        elif isinstance(body.get("name"), str) and isinstance(spec.get("class_name"), str):
            out[body["name"]] = (spec["class_name"], body)

    visit(config)
    return out


def _sublayer(cls: str | None, cfg: dict[str, Any] | None, key: str, name: str) -> tuple[str | None, Any]:
    """Class and config of the sublayer stored under ``key`` (named ``name``) of a ``cls`` layer."""
    if key == "cell":
        cell = cfg.get("cell") if isinstance(cfg, dict) else None
        return _RNN_CELL.get(cls or "", "LSTMCell"), cell.get("config") if isinstance(cell, dict) else None
    if key in _MHA_PARTS:
        return "EinsumDense", None if cfg is None else {"use_bias": cfg.get("use_bias", True)}
    if isinstance(cfg, dict) and key in ("layer", "forward_layer", "backward_layer"):
        spec = cfg.get("backward_layer") if key == "backward_layer" and cfg.get("backward_layer") else cfg.get("layer")
        if isinstance(spec, dict) and isinstance(spec.get("config"), dict):
            return str(spec.get("class_name")), spec["config"]
    guess = _SNAKE.get(_AUTO_NAME.sub("", key)) or _SNAKE.get(_AUTO_NAME.sub("", name))
    return guess, None


def _saved_order(key: str) -> tuple[str, int]:
    """Keras numbers the groups of layers of one class in the order it saves them (``dense``, ``dense_1``...
    ``dense_10``)."""
    match = _AUTO_NAME.search(key)
    return (key[:match.start()], int(key[match.start() + 1:])) if match else (key, -1)


def _keras3_weights(root: Any, where: str, config: dict[str, Any] | None = None
                    ) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Keras 3 positional weights (``layers/<key>/vars/<i>``, sublayers nested under their attribute
    name), named ``<layer>/<sublayer>/<variable>`` as Keras's ``Variable.path``: layer names come from
    the ``vars`` groups' ``name`` attributes, variable names from the layer classes (from ``config``
    when there is one, else from the group keys, which Keras derives from the class names)."""
    entries: list[tuple[str, str, str, np.ndarray]] = []
    classes = _layer_classes(config)
    h5py = _h5py()
    seen: set[Any] = set()

    def visit(group: Any, names: list[str], cls: str | None, cfg: Any, top: bool, keras: list[str]) -> None:
        """``names``: the scoped path of the group's layer; ``keras``: its Keras path prefix (a nested
        functional model's layers have none, a nested Sequential's are under its name)."""
        if group.id in seen or len(seen) > _MAX_GROUPS:
            raise FileFormatError(f"{where}: group {group.name} is reached twice (a link cycle) or the file holds "
                                  f"over {_MAX_GROUPS} groups; not a Keras weights file")
        seen.add(group.id)
        vars_ = _child(group, "vars", where) if _has(group, "vars") else None
        name = _attr_text(vars_.attrs.get("name", Path(group.name).name)) if vars_ is not None else None
        if top and name is not None and name in classes:
            cls, cfg = classes[name]
        path = names + ([name] if name is not None else [])
        kpath = keras + ([name] if name is not None else [])
        if vars_ is not None and len(vars_):
            if not path:
                raise FileFormatError(f"{where}: weights {vars_.name} belong to no named layer")
            arrays = [_array(_child(vars_, str(i), where), where) for i in range(len(vars_))]
            leaves = var_names(cls, cfg, len(arrays), f"{where}: {vars_.name} (layer {'/'.join(path)!r})")
            entries.extend((path[0], "/".join(path + [leaf]), "/".join(kpath + [leaf]), arr)
                           for leaf, arr in zip(leaves, arrays))
        for key in group:
            if key == "vars":
                continue
            child = _child(group, key, where)
            if not isinstance(child, h5py.Group):
                continue
            if key == "layers":  # a nested model's layers: <model>/<layer>/<variable>
                # Keras keys a model's group by its class: a Sequential builds its layers in its name scope
                inner = kpath[-1:] if _AUTO_NAME.sub("", Path(group.name).name) == "sequential" else []
                for sub in sorted(child, key=_saved_order):
                    node = _child(child, sub, where)
                    if isinstance(node, h5py.Group):
                        visit(node, path, _SNAKE.get(_AUTO_NAME.sub("", sub)), None, True, inner)
                continue
            sub_name = _attr_text(child["vars"].attrs.get("name", key)) if _has(child, "vars") else key
            sub_cls, sub_cfg = _sublayer(cls, cfg if config is not None else None, key, sub_name)
            visit(child, path, sub_cls, sub_cfg, False, kpath)

    if _has(root, "layers"):
        layers = _child(root, "layers", where)
        for key in sorted(layers, key=_saved_order):
            node = _child(layers, key, where)
            if isinstance(node, h5py.Group):
                visit(node, [], _SNAKE.get(_AUTO_NAME.sub("", key)), None, True, [])
    body = config.get("config") if isinstance(config, dict) else None
    tops = [(layer.get("config") or {}).get("name") for layer in (body.get("layers") if isinstance(body, dict) else
                                                                   None) or [] if isinstance(layer, dict)]
    order = {name: i for i, name in enumerate(tops) if isinstance(name, str)}
    entries.sort(key=lambda e: order.get(e[0], len(order)))  # Keras's order: the config's (which path is kept)
    out = _by_keras_path(entries)
    _check_unique(out, where)
    return out


def _keras2_key(cls: str) -> str:
    """``tf_keras``'s ``to_snake_case`` of a class name (``Conv2D`` -> ``conv2d``, ``TFOpLambda`` ->
    ``tf_op_lambda``): the key of a layer's group in a Keras 2 ``.keras`` archive."""
    key = re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls)).lower()
    return "private" + key if key.startswith("_") else key


def _keras2_layers(spec: dict[str, Any] | None, where: str) -> dict[str, dict[str, Any]]:
    """Group key -> layer spec for the layers of a (nested) model config, keyed as ``tf_keras`` saves them:
    the snake-case class name, numbered ``_1``, ``_2``... from the class's second layer on, in config order."""
    body = spec.get("config") if isinstance(spec, dict) else None
    layers = body.get("layers") if isinstance(body, dict) else body
    out: dict[str, dict[str, Any]] = {}
    used: dict[str, int] = {}
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict) or not isinstance(layer.get("class_name"), str):
            raise FileFormatError(f"{where}: the model config lists a layer without a class_name")
        key = _keras2_key(layer["class_name"])
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        out[key] = layer
    return out


#: Names ``tf_keras`` gives sublayers (by the attribute holding them) and variables that Keras 3 names otherwise.
_KERAS2_SUBLAYERS = {"_query_dense": "query", "_key_dense": "key", "_value_dense": "value",
                     "_output_dense": "attention_output"}
_KERAS2_CELLS = {"LSTM": "lstm_cell", "GRU": "gru_cell", "SimpleRNN": "simple_rnn_cell"}
_KERAS2_ORDER = {"_query_dense": 0, "_key_dense": 1, "_value_dense": 2, "_output_dense": 3, "forward_layer": 4,
                 "backward_layer": 5}
_KERAS2_VARS = {"DepthwiseConv1D": {"kernel": "depthwise_kernel"}, "DepthwiseConv2D": {"kernel": "depthwise_kernel"}}


def _keras2_weights(root: Any, where: str, config: dict[str, Any]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Keras 2 (``tf_keras``) positional weights of a ``.keras`` archive: ``layers/<class key>/vars/<i>``,
    matched to the config's layers by their class-derived keys, sublayers under the attribute holding them
    (``cell``, ``forward_layer``, ``_query_dense``); named as ``tf_keras``'s legacy ``.h5`` names them."""
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    h5py = _h5py()
    seen: set[Any] = set()

    def visit(group: Any, path: list[str], cls: str | None, cfg: Any, model: dict[str, Any] | None) -> None:
        if group.id in seen or len(seen) > _MAX_GROUPS:
            raise FileFormatError(f"{where}: group {group.name} is reached twice (a link cycle) or the file holds "
                                  f"over {_MAX_GROUPS} groups; not a Keras weights file")
        seen.add(group.id)
        vars_ = _child(group, "vars", where) if _has(group, "vars") else None
        if vars_ is not None and len(vars_):
            if not path:
                raise FileFormatError(f"{where}: weights {vars_.name} belong to no named layer")
            arrays = [_array(_child(vars_, str(i), where), where) for i in range(len(vars_))]
            leaves = var_names(cls, cfg, len(arrays), f"{where}: {vars_.name} (layer {'/'.join(path)!r})")
            renames = _KERAS2_VARS.get(cls or "", {})
            out.setdefault(path[0], []).extend(("/".join(path + [renames.get(leaf, leaf)]), arr)
                                               for leaf, arr in zip(leaves, arrays))
        layers = _keras2_layers(model, where) if model is not None else {}
        for key in sorted(group, key=lambda k: _KERAS2_ORDER.get(k, len(_KERAS2_ORDER))):  # tf_keras's order
            if key == "vars" or (not path and key != "layers"):  # the model's own state (optimizer...)
                continue
            child = _child(group, key, where)
            if not isinstance(child, h5py.Group):
                continue
            if key == "layers" and model is not None:  # a model's layers: <model>/<layer>/<variable>
                unknown = sorted(set(child) - set(layers))
                if unknown:
                    raise FileFormatError(f"{where}: {child.name}/{unknown[0]} matches no layer of the model config "
                                          f"(Keras 2 keys layers by class: {sorted(layers)[:20]}); the file does not "
                                          "match its config")
                for sub, spec in layers.items():  # in the config's order
                    node = _child(child, sub, where) if _has(child, sub) else None
                    if not isinstance(node, h5py.Group):
                        continue
                    body = spec.get("config")
                    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
                        raise FileFormatError(f"{where}: a {spec['class_name']} layer of the config has no name")
                    nested = spec if isinstance(body.get("layers"), list) else None
                    visit(node, path + [body["name"]], spec["class_name"], body, nested)
                continue
            sub_cls, sub_cfg = _sublayer(cls, cfg, key.lstrip("_"), key)
            if key == "cell":
                name = _KERAS2_CELLS.get(cls or "") or _keras2_key(sub_cls or "cell")
            elif key in ("forward_layer", "backward_layer"):
                wrapper = cfg if isinstance(cfg, dict) else {}
                inner = wrapper.get("backward_layer") if key == "backward_layer" and wrapper.get("backward_layer") \
                    else wrapper.get("layer")
                inner_name = (inner or {}).get("config", {}).get("name") if isinstance(inner, dict) else None
                name = f"{key.split('_')[0]}_{inner_name}" if isinstance(inner_name, str) else key
            elif key == "layer":  # TimeDistributed's layer: its weights are named under the wrapper
                name = None
            else:
                name = _KERAS2_SUBLAYERS.get(key, key)
            visit(child, path + ([name] if name else []), sub_cls, sub_cfg, None)

    visit(root, [], None, None, config)
    _check_unique(out, where)
    return out


def _is_keras2(config: dict[str, Any] | None, version: str | None) -> bool:
    """Whether a ``.keras`` archive was written by Keras 2 (``tf_keras``): by its ``metadata.json``'s
    ``keras_version``, else by the module its config names."""
    if version is not None:
        return version.startswith("2.")
    module = str((config or {}).get("module") or "")
    return module.startswith(("tf_keras.", "keras.engine.", "keras.src.engine."))


def _check_unique(weights: dict[str, list[tuple[str, np.ndarray]]], where: str) -> None:
    paths = [p for entries in weights.values() for p, _ in entries]
    dup = sorted({p for p in paths if paths.count(p) > 1})
    if dup:
        raise FileFormatError(f"{where}: weight name(s) {dup[:8]} occur more than once; every weight needs its own "
                              "name (a damaged or hand-edited file?)")


def _nested_layers(config: dict[str, Any] | None) -> dict[str, list[tuple[str, str]]]:
    """Top-level nested model name -> (Keras path, scoped path) of each layer inside it, at any depth: a
    functional model's layers have their own names as Keras paths, a Sequential's are under its name."""
    out: dict[str, list[tuple[str, str]]] = {}

    def visit(spec: Any, top: str, scoped: str, keras: str) -> None:
        body = spec.get("config") if isinstance(spec, dict) else None
        layers = body.get("layers") if isinstance(body, dict) else None
        if not isinstance(layers, list):
            out.setdefault(top, []).append((keras, scoped))
            return
        inner = f"{keras.rsplit('/', 1)[-1]}/" if spec.get("class_name") == "Sequential" else ""
        for layer in layers:
            name = layer.get("config", {}).get("name") if isinstance(layer, dict) else None
            if isinstance(name, str):
                visit(layer, top, f"{scoped}/{name}", inner + name)

    body = config.get("config") if isinstance(config, dict) else None
    for layer in (body.get("layers") if isinstance(body, dict) else None) or []:
        name = layer.get("config", {}).get("name") if isinstance(layer, dict) else None
        if isinstance(name, str) and isinstance(layer.get("config", {}).get("layers"), list):
            visit(layer, name, name, name)
    return out


def _legacy_weights(root: Any, where: str, config: dict[str, Any] | None = None, keras3: bool = False
                    ) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Legacy ``.h5`` weights, named by their full ``weight_names`` (``mha/query/kernel``, the ``:0``
    suffix of Keras 2 files dropped), prefixed with the layer name where Keras 2 left it out. Keras 3
    writes ``Variable.path`` there (a nested functional model's ``proj/kernel``): kept as it is, its scoped
    name (``encoder/proj/kernel``, from the config) an alias."""
    nested = _nested_layers(config) if keras3 else {}
    entries: list[tuple[str, str, str, np.ndarray]] = []
    for layer in [_attr_text(n) for n in root.attrs.get("layer_names", [])]:
        group = _child(root, layer, where)
        for wname in [_attr_text(n) for n in group.attrs.get("weight_names", [])]:
            node = group
            for part in wname.split("/"):
                node = _child(node, part, where)
            parts = wname.split(":")[0].split("/")
            if parts[0] != layer and layer in parts[1:-1]:  # a Sequential's weights: <model>/<layer>/<var>
                parts = parts[parts.index(layer, 1):]
            path = "/".join(parts if parts[0] == layer else [layer, *parts])
            kpath = "/".join(parts) if layer in nested else path
            known = [(k, sp) for k, sp in nested.get(layer, []) if kpath.startswith(k + "/")]
            if known:  # the scoped name of a nested model's weight: its layer's path in the config
                k, sp = max(known, key=lambda e: len(e[0]))
                path = sp + kpath[len(k):]
            entries.append((layer, path, kpath, _array(node, where)))
    out = _by_keras_path(entries)
    _check_unique(out, where)
    return out


def _h5_weights(f: Any, where: str, config: dict[str, Any] | None = None, keras2: bool = False
                ) -> tuple[dict[str, Any] | None, dict[str, list[tuple[str, np.ndarray]]]]:
    if "model_config" in f.attrs:
        try:
            config = json.loads(_attr_text(f.attrs["model_config"]))
        except (ValueError, RecursionError) as exc:
            raise FileFormatError(f"{where}: model_config is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise FileFormatError(f"{where}: model_config holds a {type(config).__name__}, not a model config object")
    keras3 = _attr_text(f.attrs.get("keras_version", "")).startswith("3.")
    if _has(f, "model_weights"):
        return config, _legacy_weights(_child(f, "model_weights", where), where, config, keras3)
    if "layer_names" in f.attrs:
        return config, _legacy_weights(f, where, config, keras3)
    if keras2 and config is not None:
        return config, _keras2_weights(f, where, config)
    return config, _keras3_weights(f, where, config)


def _read_zip(path: Path) -> tuple[dict[str, Any], bytes, str | None]:
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
    budget.charge(infos["config.json"].file_size + infos["model.weights.h5"].file_size,
                  f"{path}: config.json and model.weights.h5 (uncompressed)")
    try:
        config = json.loads(archive.read("config.json"))
        weights = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, ValueError, EOFError, RecursionError, zlib.error, NotImplementedError) as exc:
        raise FileFormatError(f"{path}: corrupted archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict):
        raise FileFormatError(f"{path}: config.json holds a {type(config).__name__}, not a Keras model config object")
    return config, weights, _keras_version(archive, infos.get("metadata.json"))


def _keras_version(archive: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> str | None:
    """The ``keras_version`` of an archive's ``metadata.json`` (None when it has none or it is unreadable)."""
    if info is None or info.file_size > 2**16:
        return None
    try:
        version = json.loads(archive.read(info)).get("keras_version")
    except (zipfile.BadZipFile, ValueError, EOFError, RecursionError, zlib.error, NotImplementedError,
            AttributeError):
        return None
    return version if isinstance(version, str) else None


def read_keras_file(path: str | os.PathLike, config: dict[str, Any] | None = None) -> KerasFile:
    """Config and per-layer weights of a ``.keras``, ``.h5`` or ``.weights.h5`` file. ``config`` (a
    model config) names the weights of a weights-only file whose layer classes leave names ambiguous."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file")
    where = str(path)
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # by content: a .keras archive named .h5 is still a zip
    if is_zip:
        config, blob, version = _read_zip(path)
        inner = where + ":model.weights.h5"
        _, weights = _read_h5(io.BytesIO(blob), inner, config, _is_keras2(config, version))
        return KerasFile(where, config, weights)
    config, weights = _read_h5(path, where, config)
    return KerasFile(where, config, weights)


def _read_h5(source: Any, where: str, config: dict[str, Any] | None = None, keras2: bool = False
             ) -> tuple[dict[str, Any] | None, dict[str, list[tuple[str, np.ndarray]]]]:
    """Config and weights of an HDF5 file; the HDF5 library's errors about a damaged file (h5py raises
    OSError, RuntimeError, KeyError, ValueError or TypeError for them) become ``FileFormatError``."""
    try:
        with _open_h5(source, where) as f:
            _check_file(f, where)
            return _h5_weights(f, where, config, keras2)
    except FileFormatError as exc:
        if str(exc).startswith(where):
            raise
        raise type(exc)(f"{where}: {exc}") from None
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise FileFormatError(f"{where}: the HDF5 data is corrupted ({type(exc).__name__}: {exc}); re-save the "
                              "model") from None
