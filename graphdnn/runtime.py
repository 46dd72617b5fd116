"""Serve a graph (or an ONNX file) with ONNX Runtime, feeding and fetching tensors by name.

``OrtRunner(path_or_graph)`` keeps one ``onnxruntime.InferenceSession`` per set of requested
outputs. Feeds are keyed by name (a graphdnn tensor name ``X:0``, a placeholder name ``X`` or the
ONNX value name); results are numpy arrays keyed by the names asked for. Any intermediate tensor can
be fetched: for a graph, the runner exports it again with that tensor as an extra output; for an
ONNX file, the model is copied with the value added to the graph outputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphdnn import formats
from graphdnn.errors import GraphDNNError, GraphError

__all__ = ["OrtRunner"]


class OrtRunner:
    """Cached ONNX Runtime sessions over a graph, a compiled module, an ONNX path or a ``ModelProto``.

    ``providers`` is passed to ``onnxruntime.InferenceSession`` (default: CPU). ``inputs`` and
    ``outputs`` choose the exported part of a graph as in ``graphdnn.export_onnx``.
    """

    def __init__(self, source: Any, providers: Sequence[Any] | None = None, *,
                 inputs: Sequence[Any] | None = None, outputs: Sequence[Any] | None = None,
                 session_options: Any = None) -> None:
        import onnx

        from graphdnn.compiler import CompiledGraph
        from graphdnn.graph import Graph

        self.providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.session_options = session_options
        self._sessions: dict[tuple[str, ...], Any] = {}
        self.graph: Graph | None = None
        if isinstance(source, (Graph, CompiledGraph)):
            onnx_format = formats.get("onnx")
            build_model, value_names = onnx_format.function("build_model"), onnx_format.function("value_names")
            self.graph = source if isinstance(source, Graph) else source.source_graph
            self._inputs, self._outputs = inputs, outputs
            self.model = build_model(source, inputs, outputs)
            self._names = value_names(self.graph)
        elif isinstance(source, onnx.ModelProto):
            self.model = source
            self._names = {}
        elif isinstance(source, (str, os.PathLike)):
            self.model, _ = formats.get("onnx").function("read_model")(Path(source))
            self._names = {}
        else:
            raise GraphDNNError(f"OrtRunner needs a graph, a compiled module or an ONNX model, not {type(source)}")
        self.input_names = [i.name for i in self.model.graph.input
                            if i.name not in {t.name for t in self.model.graph.initializer}]
        self.output_names = [o.name for o in self.model.graph.output]

    # -- names ----------------------------------------------------------------------------
    def value_name(self, name: Any) -> str:
        """The ONNX value name for a graphdnn tensor/op name, a ``Tensor`` or an ONNX value name."""
        ref = getattr(name, "name", name)
        if ref in self._names.values() or not self._names:
            return ref
        if self.graph is not None:
            try:
                ref = self.graph.get_tensor(ref).name
            except GraphDNNError:
                return ref
        return self._names.get(ref, ref)

    # -- sessions -------------------------------------------------------------------------
    def session(self, outputs: Sequence[str] | None = None) -> Any:
        """The (cached) session computing the model's outputs plus ``outputs`` (ONNX value names)."""
        import onnxruntime as ort

        extra = tuple(o for o in (outputs or ()) if o not in self.output_names)
        if extra not in self._sessions:
            model = self.model if not extra else self._with_outputs(extra)
            self._sessions[extra] = ort.InferenceSession(model.SerializeToString(), sess_options=self.session_options,
                                                         providers=self.providers)
        return self._sessions[extra]

    def _with_outputs(self, extra: tuple[str, ...]) -> Any:
        import onnx

        if self.graph is not None:
            build_model = formats.get("onnx").function("build_model")
            base = list(self._outputs) if self._outputs is not None else [self.graph.get_tensor(r).name
                                                                          for r in self._graph_outputs()]
            wanted = base + [self._graph_ref(v) for v in extra]
            return build_model(self.graph, self._inputs, wanted)
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        known = {vi.name: vi for vi in (*model.graph.value_info, *model.graph.input)}
        produced = {o for n in model.graph.node for o in n.output} | set(known)
        for name in extra:
            if name not in produced:
                raise GraphError(f"the model has no value named {name!r}")
            vi = known.get(name) or onnx.helper.make_empty_tensor_value_info(name)
            model.graph.output.append(vi)
        return model

    def _graph_outputs(self) -> list[str]:
        reverse = {v: k for k, v in self._names.items()}
        return [reverse.get(o, o) for o in self.output_names]

    def _graph_ref(self, value: str) -> str:
        reverse = {v: k for k, v in self._names.items()}
        return reverse.get(value, value)

    # -- running --------------------------------------------------------------------------
    def run(self, feeds: Mapping[Any, Any], outputs: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
        """Run with ``feeds`` (name -> array) and return ``{name: numpy array}`` for ``outputs``
        (default: the model's outputs; any intermediate tensor name is accepted)."""
        ort_feeds = {}
        for key, value in feeds.items():
            name = self.value_name(key)
            if name not in self.input_names:
                raise GraphError(f"{key!r} is not an input of this model; its inputs are {self.input_names}")
            ort_feeds[name] = _as_numpy(value)
        missing = [n for n in self.input_names if n not in ort_feeds]
        if missing:
            raise GraphError(f"missing feeds for inputs {missing}")
        asked = list(outputs) if outputs is not None else list(self.output_names)
        wanted = [self.value_name(o) for o in asked]
        results = self.session(wanted).run(wanted, ort_feeds)
        return {getattr(a, "name", a): r for a, r in zip(asked, results)}

    __call__ = run


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)
