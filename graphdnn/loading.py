"""``graphdnn.load``, ``graphdnn.save`` and ``graphdnn.export_onnx``: model files in and out, through the
registry of file formats (``graphdnn.formats``).

``load`` chooses the format by what the path is first (a SavedModel folder, a TF checkpoint prefix), by the
file's content second (:func:`sniff`: the magic bytes of HDF5, zip, pickle, safetensors, ONNX and TF index
files), by its name last. The formats graphdnn ships:

=============================================  ===============================================
``*.safetensors``                               graphdnn checkpoint (``graphdnn.checkpoint``)
``*.safetensors.index.json``                    sharded graphdnn checkpoint
``*.onnx``                                      ``graphdnn.converters.onnx_import.load_onnx``
``*.meta``, ``*.index``, a TF checkpoint prefix ``graphdnn.converters.tf_import.load_tf``
a folder holding ``saved_model.pb``             ``graphdnn.converters.saved_model.load_saved_model``
``*.keras``, ``*.h5``, ``*.hdf5``               ``graphdnn.converters.keras_import.load_keras``
=============================================  ===============================================

Importers of foreign formats are imported only when needed; one that is not installed gives a
``FileFormatError`` naming the format. Another package adds a format through an entry point of group
``graphdnn.formats`` (see ``graphdnn.formats``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphdnn import budget, formats
from graphdnn.bulk import paused_gc
from graphdnn.errors import FileFormatError, GraphError, reading_file

if TYPE_CHECKING:
    from graphdnn.graph import Graph, Tensor

__all__ = ["export_onnx", "from_torch", "load", "save", "sniff"]


def sniff(path: str | os.PathLike) -> str | None:
    """The format of the file at ``path`` told by its content (the name of a registered format: ``"onnx"``,
    ``"safetensors"``, ``"hdf5"``, ``"keras"``, ``"tf-index"``, ``"pytorch"``, ``"npz"``, ``"npy"``...), or None
    when the bytes say nothing certain (a TF ``.meta`` protobuf, a text file, a folder)."""
    return formats.sniff(path)


# ------------------------------------------------------------------------------------------ load
def load(path: str | os.PathLike, *, max_bytes: int | None = None, values: bool | None = None,
         **options: Any) -> Graph:
    """Load the graph (with its variable values) stored at ``path``, whatever the format.

    Args:
        path: a model file (``.safetensors``, ``.onnx``, ``.keras``/``.h5``, ``.meta``/``.index``), a
            checkpoint prefix or a SavedModel folder; the format is told by the content first, the name second.
        max_bytes: the memory budget of the load (``graphdnn.budget``): by default 16 x the size of the
            model's files + 256 MiB; raise it for a trusted file that legitimately expands. Going over raises
            ``ResourceLimitError`` naming the tensor.
        values: ``False`` returns the graph without its variable values (TF's ``import_meta_graph``), to be
            filled by ``graphdnn.restore`` (graphdnn checkpoints, TF meta graphs and SavedModels).
        **options: passed to the format's importer, e.g. ``trainable=``/``external_data_dir=`` (ONNX),
            ``training=``/``checkpoint=``/``outputs=`` (TF meta graph), ``signature=`` (SavedModel).

    Whatever is wrong with the file raises a ``GraphDNNError`` naming it (``CorruptFileError`` for
    damage no reader check foresaw, the reader's exception as its ``__cause__``); a keyword the format's
    importer does not take is a ``TypeError``."""
    if values is not None:
        options["values"] = values
    with paused_gc(), budget.load_scope(path, max_bytes=max_bytes) as scope:
        graph = _load(Path(path), options)
        budget.remember(graph, scope)
        return graph


def _read(fmt: formats.Format, path: Path, options: dict[str, Any]) -> Graph:
    """``fmt``'s ``load(path, **options)``, any unforeseen exception from reading the file a
    ``CorruptFileError`` (a keyword the importer does not take stays the caller's ``TypeError``)."""
    try:
        fn = fmt.function("load")
    except FileFormatError as exc:
        raise FileFormatError(f"{path}: {exc}") from None
    inspect.signature(fn).bind(str(path), **options)
    with reading_file(path):
        return fn(str(path), **options)


def _load(path: Path, options: dict[str, Any]) -> Graph:
    fmt = formats.claimed(path)  # a folder, a checkpoint prefix
    if fmt is not None:
        return _load_as(path, fmt, None, options)
    named = formats.by_suffix(path)
    kind = formats.sniff(path) if path.is_file() else None
    if kind is not None:
        return _load_as(path, formats.get(kind), named, options, sniffed=True)
    if named is not None and (named.load is not None or path.is_file()):
        return _load_as(path, named, None, options)
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    raise FileFormatError(f"{path}: unknown model format; graphdnn.load reads {', '.join(formats.supported())}")


def _load_as(path: Path, fmt: formats.Format, named: formats.Format | None, options: dict[str, Any],
             sniffed: bool = False) -> Graph:
    """Read ``path`` as ``fmt`` (told by its bytes when ``sniffed``, else by what the path is; ``named``: the
    format its name suggests)."""
    misnamed = f" (named like {named.description})" if named is not None and named is not fmt else ""
    if fmt.load is not None:
        if sniffed and fmt.rename_hint and not fmt.named(path.name.lower()):
            raise FileFormatError(f"{path}: {fmt.description}{misnamed}; {fmt.rename_hint}")
        return _read(fmt, path, options)
    if fmt.content == "weights":
        raise FileFormatError(f"{path}: {fmt.description}{misnamed} holds weights, not a graph: use "
                              f"{fmt.reader}(graph, {str(path)!r}) to load them into a graph built in code")
    if fmt.content == "array":
        raise FileFormatError(f"{path}: {fmt.description}{misnamed} is an array, not a model; read it with "
                              f"{fmt.reader}")
    raise FileFormatError(f"{path}: {fmt.description}{misnamed} is not a model file graphdnn.load reads")


# ------------------------------------------------------------------------------------------ save
def save(obj: Any, path: str | os.PathLike, *, format: str | None = None,  # noqa: A002
         max_shard_size: int | str | None = None, metadata: Mapping[str, str] | None = None, fsync: bool = False,
         **options: Any) -> Any:
    """Save a graph or compiled module (its variable values and its graph) to ``path``.

    Args:
        obj: a ``Graph`` or a compiled module (``graphdnn.compile``).
        path: the file to write. Its suffix chooses the format among those that can write (``.onnx``
            exports ONNX as ``export_onnx`` does); any other name is a graphdnn checkpoint (safetensors).
        format: a registered format's name (``"safetensors"``, ``"onnx"``...) instead of the suffix's choice.
        max_shard_size: safetensors only: bytes or ``"500MB"``; splits the tensors into shards plus an index
            JSON, whose path is returned (``model.safetensors`` -> ``model.safetensors.index.json``).
        metadata: safetensors only: user ``str -> str`` entries stored in the header.
        fsync: safetensors only: also survive power loss (at a cost). A failed or killed save leaves any previous
            file at ``path`` untouched either way.
        **options: passed to the format's writer (e.g. ``opset=``, ``outputs=`` for ONNX).

    Returns what the format's writer returns (the written path for safetensors, the ``ModelProto`` for ONNX)."""
    fmt = formats.get(format) if format is not None else formats.by_suffix(path, _writers()) or formats.SAFETENSORS
    if fmt.save is None:
        raise FileFormatError(f"{path}: graphdnn cannot write {fmt.description}; save as .safetensors or .onnx")
    if fmt.name == formats.SAFETENSORS.name:
        return fmt.function("save")(obj, path, max_shard_size=max_shard_size, metadata=metadata, fsync=fsync,
                                    **options)
    given = [k for k, v in (("max_shard_size", max_shard_size), ("metadata", metadata), ("fsync", fsync)) if v]
    if given:
        raise GraphError(f"{path}: {', '.join(given)} apply to safetensors checkpoints, not to {fmt.description}")
    return fmt.function("save")(obj, path, **options)


def _writers() -> list[formats.Format]:
    return [f for f in formats.formats() if f.save]


def export_onnx(obj: Any, path: str | os.PathLike | None, inputs: Sequence[Tensor | str] | None = None,
                outputs: Sequence[Tensor | str] | Tensor | str | None = None, opset: int | None = None,
                external_data: bool | None = None, fuse_gemm: bool = True) -> Any:
    """Export a graph or compiled module to ONNX at ``path``, keeping every name, and return the ``ModelProto``.

    Args:
        obj: a ``Graph``, or a compiled module (its graph, inputs and outputs).
        path: the ``.onnx`` file to write; None only builds the model.
        inputs: the tensors fed (any tensor can be an input), as in ``graphdnn.compile``; default: the
            graph's recorded signature, else the placeholders the outputs need.
        outputs: the tensors computed; default: the graph's recorded signature, else its final tensors.
        opset: the ONNX opset; default: the graph's.
        external_data: None stores weights in the file unless they exceed 2 GB; True/False forces it.
        fuse_gemm: fuse ``MatMul`` + ``Add`` pairs into ``Gemm`` nodes."""
    return formats.get("onnx").function("save")(obj, path, inputs, outputs, opset, external_data, fuse_gemm)


# ------------------------------------------------------------------------------------------ objects
def from_torch(module: Any, example_inputs: Any, dynamic_shapes: Any = None, *,
               kwargs: dict[str, Any] | None = None, name: str | None = None) -> Graph:
    """The graph of a ``torch.nn.Module`` traced by ``torch.export`` on ``example_inputs`` (a tuple of
    positional arguments, or one tensor): its parameters and buffers as variables under their state-dict names,
    op names scoped by module path.

    Args:
        module: the module (exported in eval mode, left in the mode it was in).
        example_inputs: positional example arguments.
        dynamic_shapes: passed to ``torch.export.export`` (e.g. ``{"x": {0: torch.export.Dim("batch")}}``); a
            dynamic dim is ``None`` in the placeholder's shape.
        kwargs: keyword example arguments.
        name: the graph's name (default: the module's class name).

    Raises ``TorchExportError`` for data-dependent control flow and ``UnknownOpError`` listing every ATen op
    without a translator."""
    fn = formats.get("torch.nn.Module").function("from_torch")
    return fn(module, example_inputs, dynamic_shapes, kwargs=kwargs, name=name)
