"""Restore named tensors into a graph or a compiled module, by name, with filters and renames.

Two layers, usable separately:

* ``match_names(target, source, include=, exclude=, rename=)`` is the pure name matching (no I/O):
  it maps source names through ``rename`` to target names, applies the filters, and returns a
  ``RestoreReport`` (matched / missing / unexpected / shape-mismatched / renamed / skipped) with the
  ``pairs`` to copy. Converters (TF checkpoints, Keras, PyTorch state dicts, numpy) reuse it.
* ``restore(target, source, ...)`` reads only the matched tensors (``source`` is a path, a graph, a
  module, a mapping of names to arrays / ``LazyTensor`` / zero-argument callables, or any object
  with ``names()``, ``info(name)`` and ``read(names)``) and writes them in place, so every module
  compiled from the graph sees them. Every check runs before the first write: a failed restore
  changes nothing.

Filters match the *target* names (after renaming) like TF's scope filter: a string is a regex
matched at the start of the name (``"hidden[123]"``); a list, tuple or set holds exact names.
``rename`` is ``[(pattern, replacement), ...]`` (the first rule whose pattern is found applies,
``re.sub`` style, like TF's assignment map), a ``{source: target}`` dict, or a callable.

Without ``rename``, a graph's own record of source names applies: ``graph.meta["weight_sources"]``
(``{source name: [variable, "same" | "transpose"]}``, written by ``graphdnn.from_torch`` for state-dict keys and
by the ONNX import for parameters the torch exporters renamed) renames and transposes on the way, a second
source name for an already filled variable (tied weights) is noted, and the names in
``graph.meta["weight_sources_folded"]`` (folded by an exporter beyond recovery) are left out and listed in
``report.folded``. A source that holds a graphdnn graph's variables (a graph, a compiled module, a model file,
a graphdnn checkpoint) is read by the variables' own names, without that record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from graphdnn import formats, graph_hooks
from graphdnn.dtypes import dtype_name, torch_dtype
from graphdnn.errors import GraphError, RestoreError
from graphdnn.gate_order import GATES_TORCH, gate_kind, permute_gates
from graphdnn.graph import Graph
from graphdnn.suggest import did_you_mean

Shape = tuple[int, ...]
Filter = str | re.Pattern | Iterable[str] | None
Rename = list[tuple[str, str]] | Mapping[str, str] | Callable[[str], str] | None
Convert = Callable[[str, torch.Tensor, Shape], torch.Tensor] | None


# ----------------------------------------------------------------------------------- sources
@dataclass
class LazyTensor:
    """A tensor known by shape and dtype, read only when ``load()`` is called."""

    shape: Shape | None
    dtype: torch.dtype | None
    load: Callable[[], Any]


class TensorSource(Protocol):
    """What ``restore`` reads from: names, their shapes/dtypes, and a bulk reader."""

    def names(self) -> list[str]: ...

    def info(self, name: str) -> tuple[Shape | None, torch.dtype | None]: ...

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]: ...


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise RestoreError(f"source tensor {name!r}: {type(value).__name__} is not an array ({exc})") from None


class MappingSource:
    """A ``TensorSource`` over a mapping of name -> tensor / ndarray / ``LazyTensor`` / callable; ``graph``: the
    graph whose variables the tensors are, when known (it tells their layouts)."""

    def __init__(self, mapping: Mapping[str, Any], label: str = "<mapping>", graph: Graph | None = None) -> None:
        self.mapping, self.label, self.graph = mapping, label, graph

    def names(self) -> list[str]:
        return list(self.mapping)

    def info(self, name: str) -> tuple[Shape | None, torch.dtype | None]:
        v = self.mapping[name]
        if isinstance(v, LazyTensor):
            return (None if v.shape is None else tuple(v.shape)), v.dtype
        if isinstance(v, torch.Tensor):
            return tuple(v.shape), v.dtype
        if isinstance(v, np.ndarray):
            return tuple(v.shape), None
        return None, None

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        for name in names:
            v = self.mapping[name]
            if isinstance(v, LazyTensor):
                v = v.load()
            elif callable(v) and not isinstance(v, (torch.Tensor, np.ndarray)):
                v = v()
            yield name, _as_tensor(v, name)


def as_source(source: Any) -> tuple[TensorSource, str]:
    """A ``TensorSource`` and a label for anything ``restore`` accepts as a source."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.name.endswith((".safetensors", ".index.json")):
            from graphdnn.checkpoint import TensorFile

            return TensorFile(path), str(path)
        read_tensors = formats.tensor_reader(path)  # weights-only files, Hugging Face folders, TF checkpoints
        if read_tensors is not None:
            return read_tensors(path), str(path)
        from graphdnn.loading import load

        loaded = load(path)
        return MappingSource(loaded.values, str(path), loaded), str(path)
    if isinstance(source, Graph):
        return MappingSource(source.values, f"graph {source.name!r}", source), f"graph {source.name!r}"
    if hasattr(source, "graph_state_dict"):
        return MappingSource(source.graph_state_dict(), "module", getattr(source, "source_graph", None)), "module"
    if isinstance(source, Mapping):
        return MappingSource(source), "<mapping>"
    if all(hasattr(source, a) for a in ("names", "info", "read")):
        return source, str(getattr(source, "path", type(source).__name__))
    raise GraphError(f"cannot restore from a {type(source).__name__}: pass a path, a Graph, a compiled module, "
                     "a mapping of names to arrays, or a TensorSource")


# ------------------------------------------------------------------------------------ report
def _show(name: str | None) -> str:
    if name is None:
        return "-"
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], name)


def _shape(shape: Shape | None) -> str:
    return "?" if shape is None else str(tuple(shape))


@dataclass
class RestoreReport:
    """What a restore matched and what it did not. ``print(report)`` shows a table."""

    source: str = ""
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, Shape | None, Shape | None]] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    cast: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Layout and semantics conversions a foreign-weights loader made (name -> what was done).
    converted: dict[str, str] = field(default_factory=dict)
    #: Weights an exporter folded with other constants beyond recovery (name -> what happened).
    folded: dict[str, str] = field(default_factory=dict)
    pairs: dict[str, str] = field(default_factory=dict, repr=False)
    shapes: dict[str, Shape | None] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.shape_mismatched)

    def summary(self) -> str:
        return (f"restore from {_show(self.source)}: {len(self.matched)} matched, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.shape_mismatched)} shape mismatched, "
                f"{len(self.renamed)} renamed, {len(self.skipped)} skipped by filters")

    def rows(self, show_skipped: bool = False) -> list[tuple[str, str, str, str]]:
        """``(status, target, source, detail)`` rows of the table."""
        inverse = {t: s for s, t in self.renamed.items()}
        rows = []
        for t in self.matched:
            status = "renamed" if t in inverse else "matched"
            cast = f" cast {self.cast[t][0]}->{self.cast[t][1]}" if t in self.cast else ""
            note = f" {self.converted[t]}" if t in self.converted else ""
            rows.append((status, t, self.pairs.get(t, t), _shape(self.shapes.get(t)) + cast + note))
        rows += [("converted", t, None, note) for t, note in self.converted.items() if t not in self.pairs]
        rows += [("mismatch", t, self.pairs.get(t, t), f"source {_shape(s)} != target {_shape(d)}")
                 for t, s, d in self.shape_mismatched]
        rows += [("missing", t, None, _shape(self.shapes.get(t))) for t in self.missing]
        rows += [("unexpected", None, s, "") for s in self.unexpected]
        rows += [("folded", t, None, note) for t, note in self.folded.items()]
        if show_skipped:
            rows += [("skipped", None, s, "") for s in self.skipped]
        return [(a, _show(b), _show(c), d) for a, b, c, d in rows]

    def table(self, show_skipped: bool = False) -> str:
        rows = [("status", "target", "source", "shape")] + self.rows(show_skipped)
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [self.summary()]
        lines += ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        return self.table()


# ---------------------------------------------------------------------------------- matching
def _selector(include: Filter, exclude: Filter) -> Callable[[str], bool]:
    def compile_filter(f: Filter) -> Callable[[str], bool] | None:
        if f is None:
            return None
        if isinstance(f, (str, re.Pattern)):
            rx = re.compile(f)
            return lambda n: rx.match(n) is not None
        names = set(f)
        return names.__contains__

    inc, exc = compile_filter(include), compile_filter(exclude)
    return lambda n: (inc is None or inc(n)) and not (exc is not None and exc(n))


def renamer(rename: Rename) -> Callable[[str], str]:
    """A name -> name function from rename rules: None, a mapping, a function, or ``[(pattern,
    replacement), ...]`` where the first pattern found in a name rewrites it with ``re.sub``."""
    if rename is None:
        return lambda n: n
    if callable(rename) and not isinstance(rename, Mapping):
        return rename
    if isinstance(rename, Mapping):
        return lambda n: rename.get(n, n)
    rules = [(re.compile(p), r) for p, r in rename]

    def apply(n: str) -> str:
        for rx, repl in rules:
            if rx.search(n):
                return rx.sub(repl, n)
        return n

    return apply


def match_names(
    target: Mapping[str, Shape | None],
    source: Mapping[str, Shape | None],
    *,
    include: Filter = None,
    exclude: Filter = None,
    rename: Rename = None,
    label: str = "",
) -> RestoreReport:
    """Match source names (renamed) to target names; no data is read. ``report.pairs`` maps each
    matched or shape-mismatched target name to its source name. Shapes may be None (unknown)."""
    selected = _selector(include, exclude)
    to_target = renamer(rename)
    report = RestoreReport(source=label)
    if include is not None and not isinstance(include, (str, re.Pattern)):
        unknown = sorted(set(include) - set(target))
        if unknown:
            raise RestoreError(f"include names {unknown[:10]} are not variables of the target"
                               f"{did_you_mean(unknown[0], target)}; check the spelling "
                               "(a list holds exact names, a string is a regex)")
    claimed: dict[str, str] = {}
    for s_name, s_shape in source.items():
        t_name = to_target(s_name)
        if not isinstance(t_name, str):
            raise RestoreError(f"rename turned {s_name!r} into {t_name!r}, not a name")
        if not selected(t_name):
            report.skipped.append(s_name)
            continue
        if t_name not in target:
            report.unexpected.append(s_name)
            continue
        if t_name in claimed:
            raise RestoreError(f"source tensors {claimed[t_name]!r} and {s_name!r} both map to {t_name!r}; "
                               "fix the rename rules")
        claimed[t_name] = s_name
        if t_name != s_name:
            report.renamed[s_name] = t_name
        report.pairs[t_name] = s_name
        t_shape = target[t_name]
        report.shapes[t_name] = t_shape
        if s_shape is not None and t_shape is not None and tuple(s_shape) != tuple(t_shape):
            report.shape_mismatched.append((t_name, tuple(s_shape), tuple(t_shape)))
        else:
            report.matched.append(t_name)
    for t_name, t_shape in target.items():
        if selected(t_name) and t_name not in claimed:
            report.missing.append(t_name)
            report.shapes[t_name] = t_shape
    return report


# ----------------------------------------------------------------------------------- targets
class _Target:
    """Uniform write access to the variables of a graph or a compiled module."""

    def __init__(self, target: Any) -> None:
        if isinstance(target, Graph):
            self.graph, self.module = target, None
            self.names = [op.name for op in target.variables()]
        elif hasattr(target, "source_graph") and hasattr(target, "variable_names"):
            self.graph, self.module = target.source_graph, target
            self.names = list(target.variable_names)
        else:
            raise GraphError(f"cannot restore into a {type(target).__name__}: pass a Graph or a compiled module")

    def specs(self) -> dict[str, Shape]:
        return {n: tuple(self.graph.get_operation(n).attrs["shape"]) for n in self.names}

    def dtype(self, name: str) -> torch.dtype:
        if self.module is not None:
            return self.module.variable(name).dtype
        value = self.graph.values.get(name)
        return value.dtype if value is not None else torch_dtype(self.graph.get_operation(name).attrs["dtype"])

    def write(self, name: str, value: torch.Tensor, dtype: torch.dtype | None, owned: bool) -> None:
        if dtype is not None:
            self._redeclare(name, dtype)
            value = value.to(dtype)
        if self.module is not None:
            current = self.module.variable(name)
            if dtype is not None and current.dtype != dtype:
                current.data = value.to(current.device).clone()
            else:
                with torch.no_grad():
                    current.copy_(value)
            return
        current = self.graph.values.get(name)
        if current is not None and dtype is not None and current.dtype != dtype:
            current.data = value.clone()
        else:
            self.graph.set_value(name, value, copy=not owned or current is not None)

    def _redeclare(self, name: str, dtype: torch.dtype) -> None:
        op = self.graph.get_operation(name)
        op.attrs["dtype"] = dtype_name(dtype)
        op.outputs[0].dtype = dtype_name(dtype)


def restore(
    target: Any,
    source: Any,
    *,
    include: Filter = None,
    exclude: Filter = None,
    rename: Rename = None,
    strict: bool = True,
    dtype: torch.dtype | str | None = None,
    skip_mismatched: bool = False,
    convert: Convert = None,
) -> RestoreReport:
    """Copy named tensors from ``source`` into the variables of ``target`` (a Graph or a compiled
    module) and return the report.

    ``strict`` makes missing (selected target variables with no source) and unexpected (selected
    source tensors with no target) names an error, and an ``include`` that selects no variable (the
    message suggests close names); ``strict=False`` accepts all three. A shape mismatch is an error unless
    ``skip_mismatched``. ``dtype`` None casts values to each variable's dtype (casts are reported);
    a dtype converts the restored variables to it. ``convert(target_name, tensor, target_shape)``
    is a per-variable layout hook (transpose a foreign kernel...), applied before the shape check.
    LSTM/GRU weights held in torch's gate order (``layout`` ``gates:torch:...``, ``graphdnn.gate_order``) in the
    target or in a graphdnn source get their gate rows permuted where the two orders differ (a foreign source
    holds ONNX's order).
    Only the matched tensors are read; on error nothing is written."""
    tgt = _Target(target)
    src, label = as_source(source)
    want_dtype = torch_dtype(dtype) if dtype is not None else None
    s_names = src.names()
    # a graph's record of foreign names applies to foreign sources; a graphdnn one holds the variables by name
    plan = _SourcePlan(tgt, s_names) if rename is None and not _carries_graph(src) else None
    if plan is not None and plan.active:
        rename, s_names = plan.rename, [n for n in s_names if n not in plan.tied and n not in plan.left_out]
        convert = plan.converter(convert)
    else:
        plan = None
    s_specs = {n: (None if convert is not None else src.info(n)[0]) for n in s_names}
    report = match_names(tgt.specs(), s_specs, include=include, exclude=exclude, rename=rename, label=label)
    if plan is not None:
        plan.annotate(report)
    report.skipped.extend(getattr(src, "excluded", ()))  # what a foreign source leaves out (optimizer slots...)
    if strict and include is not None and not report.pairs and not report.missing:
        raise RestoreError(f"include {_pattern(include)} matches no variable of the target"
                           f"{did_you_mean(_pattern(include, quote=False), tgt.names, scopes=True)}; nothing was "
                           "restored (a string is a regex matched at the start of names; pass strict=False to "
                           "accept restoring nothing)")
    _check(report, strict, skip_mismatched)
    mismatched = {t for t, _, _ in report.shape_mismatched}
    todo = {t: s for t, s in report.pairs.items() if t not in mismatched}
    for t, s in todo.items():
        s_dtype = src.info(s)[1]
        t_dtype = want_dtype or tgt.dtype(t)
        if s_dtype is not None and s_dtype != t_dtype:
            report.cast[t] = (dtype_name(s_dtype), dtype_name(t_dtype))
    by_source = {s: t for t, s in todo.items()}
    owned = type(src).__name__ == "TensorFile"  # its reads are fresh tensors, nobody else holds them
    regate = _gate_conversions(tgt, src, todo, report)
    known = all(s_specs[s] is not None for s in by_source)
    if known:  # shapes were checked from the header: stream, one tensor in memory at a time
        for s, value in src.read(list(by_source)):
            t = by_source[s]
            if t in regate:
                value, owned_one = permute_gates(value, *regate[t], name=s), True
            else:
                owned_one = owned
            tgt.write(t, value, want_dtype, owned_one)
        return report
    staged: dict[str, torch.Tensor] = {}
    for s, value in src.read(list(by_source)):
        t = by_source[s]
        shape = report.shapes[t]
        if convert is not None:
            value = _as_tensor(convert(t, value, shape), s)
        if shape is not None and tuple(value.shape) != tuple(shape):
            report.matched.remove(t)
            report.shape_mismatched.append((t, tuple(value.shape), tuple(shape)))
            continue
        if t in regate:
            value = permute_gates(value, *regate[t], name=s)
        if value.dtype != (want_dtype or tgt.dtype(t)):
            report.cast[t] = (dtype_name(value.dtype), dtype_name(want_dtype or tgt.dtype(t)))
        staged[t] = value
    _check(report, strict, skip_mismatched)
    for t, value in staged.items():
        tgt.write(t, value, want_dtype, owned and convert is None)
    return report


def _gate_conversions(tgt: _Target, src: TensorSource, todo: Mapping[str, str], report: RestoreReport
                      ) -> dict[str, tuple[str, str]]:
    """The targets whose source tensor holds the other LSTM/GRU gate order (``graphdnn.gate_order``): target ->
    ``(kind, order to take it to)``, noted in ``report.converted``. A source tells its order when it comes with
    its graph (a graph, a compiled module, a graphdnn checkpoint, a model file): the variable's ``layout``
    marker. Any other source (arrays, foreign checkpoints) holds ONNX's order, the one ONNX defines for these
    tensors; a graphdnn-written file without its graph cannot tell and raises ``RestoreError``."""
    marked = {t: kind for t in todo if (kind := gate_kind(tgt.graph.get_operation(t).attrs.get("layout")))}
    graph = _source_graph(src, sorted(marked))
    if not marked and graph is None:
        return {}
    out: dict[str, tuple[str, str]] = {}
    for t, s in todo.items():
        want, held = marked.get(t), None
        if graph is not None and s in graph.nx:
            op = graph.get_operation(s)
            held = gate_kind(op.attrs.get("layout")) if op.is_variable else None
        if held == want:
            continue
        if held is not None and want is not None:
            raise RestoreError(f"source {s!r} holds {held} gates in torch's order; target {t!r} is an {want} "
                               "variable: they cannot be the same weights")
        out[t] = (want, "torch") if want is not None else (held, "onnx")
        note = (f"{want} gate rows from ONNX's order to torch's ({GATES_TORCH})" if want is not None
                else f"{held} gate rows from torch's order to ONNX's")
        report.converted[t] = f"{report.converted[t]}; {note}" if t in report.converted else note
    return out


def _carries_graph(src: TensorSource) -> bool:
    """Whether ``src`` holds a graphdnn graph's variables under their own names (a graph, a compiled module, a
    model file, a graphdnn checkpoint with its graph)."""
    if isinstance(getattr(src, "graph", None), Graph):
        return True
    graph_json = getattr(src, "graph_json", None)
    return callable(graph_json) and graph_json() is not None


def _source_graph(src: TensorSource, targets: list[str]) -> Graph | None:
    """The graph ``src``'s tensors belong to when it says and may hold tensors in torch's gate order; None for
    foreign tensors or a checkpoint none of whose variables is marked."""
    graph = getattr(src, "graph", None)
    if isinstance(graph, Graph):
        return graph
    graph_json = getattr(src, "graph_json", None)
    if not callable(graph_json):
        return None
    text = graph_json()
    if text is not None:
        if GATES_TORCH not in text:
            return None
        from graphdnn.serialize import graph_from_json

        return graph_from_json(text, str(getattr(src, "path", "<checkpoint>")))
    if targets and any(str(k).startswith("graphdnn.") for k in (getattr(src, "metadata", None) or {})):
        raise RestoreError(f"{getattr(src, 'path', 'the source')}: a graphdnn file without its graph cannot tell "
                           f"the gate order of the LSTM/GRU weights {targets[:5]} (held in torch's order here, "
                           f"{GATES_TORCH}); restore from the checkpoint with its graph, or from a mapping of tensors "
                           "in ONNX's gate order (graphdnn.gate_order.permute_gates(t, kind, to='onnx'))")
    return None


#: ``graph.meta`` key of the source names a converter recorded: ``{source name: [variable, layout]}``, layout
#: ``"same"`` or ``"transpose"`` (see ``graphdnn.converters.onnx_names`` and ``graphdnn.converters.torch_export``).
WEIGHT_SOURCES = "weight_sources"
#: ``graph.meta`` key of the weights an exporter folded beyond recovery: ``{name: what happened}``.
WEIGHT_SOURCES_FOLDED = "weight_sources_folded"


class _SourcePlan:
    """Source names a graph knows under other names (``graph.meta["weight_sources"]``): the rename to the
    variable (it wins over a variable of the same name: an exporter may have given a parameter's name to
    another tensor), the layout conversion, source names tied to a variable another source name fills, and
    source names an exporter folded beyond recovery (``graph.meta["weight_sources_folded"]``, left out)."""

    def __init__(self, tgt: _Target, s_names: list[str]) -> None:
        known: dict[str, list[str]] = tgt.graph.meta.get(WEIGHT_SOURCES) or {}
        self.folded: dict[str, str] = dict(tgt.graph.meta.get(WEIGHT_SOURCES_FOLDED) or {})
        targets = set(tgt.names)
        self.rename: dict[str, str] = {}
        self.transposed: dict[str, str] = {}
        self.tied: dict[str, str] = {}
        self.left_out: set[str] = {n for n in s_names if n in self.folded}
        claimed: dict[str, str] = {}
        for s in s_names:
            if s in self.left_out:
                continue
            if s in known and known[s][0] in targets:
                var, layout = known[s][0], known[s][1]
            elif s in targets:
                var, layout = s, "same"
            else:
                continue
            if var in claimed:
                self.tied[s] = claimed[var]
                continue
            claimed[var] = s
            self.rename[s] = var
            if layout == "transpose":
                self.transposed[var] = s

    @property
    def active(self) -> bool:
        return bool(self.transposed or self.tied or self.left_out or any(k != v for k, v in self.rename.items()))

    def converter(self, convert: Convert) -> Convert:
        if not self.transposed:
            return convert

        def transposing(name: str, value: torch.Tensor, shape: Shape | None) -> torch.Tensor:
            if name in self.transposed and value.dim() == 2:
                value = value.t()
            return value if convert is None else _as_tensor(convert(name, value, shape), name)

        return transposing

    def annotate(self, report: RestoreReport) -> None:
        for var, s in self.transposed.items():
            if var in report.pairs:
                report.converted[var] = f"transposed from {s}"
        for s, first in self.tied.items():
            var = self.rename.get(first, first)
            report.converted[var] = (report.converted.get(var, "") + f" tied to {s}").strip()
        report.folded.update(self.folded)


def _pattern(f: Filter, quote: bool = True) -> str:
    text = f.pattern if isinstance(f, re.Pattern) else f if isinstance(f, str) else ", ".join(sorted(map(str, f)))
    return repr(text) if quote else text


def initialize(target: Any, include: Filter = None, *, overwrite: bool = False) -> list[str]:
    """Give variables fresh values drawn from their initializers (TF's ``global_variables_initializer``);
    returns their names. ``target`` is a Graph or a compiled module (its graph's variables; modules share
    them). ``include`` selects variables like ``restore``'s filter: a regex matched at the start of names
    (``"hidden[12]"``) or a list of exact names; a filter matching nothing is an error. Variables that
    already have a value keep it unless ``overwrite`` (then they are redrawn in place, so every module
    compiled from the graph sees the new values)."""
    from graphdnn import initializers

    tgt = _Target(target)
    selected = _selector(include, None)
    chosen = [n for n in tgt.names if selected(n)]
    if include is not None and not chosen:
        raise GraphError(f"include {_pattern(include)} matches no variable"
                         f"{did_you_mean(_pattern(include, quote=False), tgt.names, scopes=True)}")
    if include is not None and not isinstance(include, (str, re.Pattern)):
        unknown = sorted(set(include) - set(tgt.names))
        if unknown:
            raise GraphError(f"include names {unknown[:10]} are not variables{did_you_mean(unknown[0], tgt.names)}")
    graph = tgt.graph
    todo = [n for n in chosen if overwrite or n not in graph.values]
    plan = []
    for name in todo:  # check every spec before drawing anything
        op = graph.get_operation(name)
        spec = op.attrs.get("initializer") or {}
        if spec.get("type") in (None, "value"):
            raise GraphError(f"variable {name!r} has no initializer to draw a value from (it held a loaded value); "
                             "give it one with graphdnn.restore(graph, source) or graph.set_value(name, value)")
        plan.append((op, spec))
    for op, spec in plan:
        value = initializers.materialize(spec, tuple(op.attrs["shape"]), op.attrs["dtype"], op.attrs.get("layout"))
        if tgt.module is not None and op.name in tgt.module.variable_names:
            with torch.no_grad():
                tgt.module.variable(op.name).copy_(value)
        else:
            graph.set_value(op.name, value)
    return [op.name for op, _ in plan]


def _check(report: RestoreReport, strict: bool, skip_mismatched: bool) -> None:
    problems = []
    if report.shape_mismatched and not skip_mismatched:
        problems.append("shapes differ (pass skip_mismatched=True to leave those variables as they are)")
    if strict and (report.missing or report.unexpected):
        problems.append("names do not match (filter with include=/exclude=, map with rename=, or strict=False)")
    if problems:
        raise RestoreError("; ".join(problems) + "; nothing was restored\n" + report.table())


__all__ = ["LazyTensor", "MappingSource", "RestoreReport", "TensorSource", "as_source", "initialize", "match_names",
           "restore"]

graph_hooks.install(graph_hooks.INITIALIZE, initialize)  # Graph.from_json(initialize=True)
