"""Fuzz every graphdnn loader with hostile files: seeded mutations of real files, and generated ones; report
what each input did.

*Mutated* formats (``safetensors``, ``onnx``, ``tf_index``, ``tf_data``, ``tf_meta``, ``keras``, ``h5``,
``npz``, ``pt``): seed files are written into a temporary folder by graphdnn's own writers (a checkpoint, a
sharded checkpoint, an ONNX export, ``.npz`` and ``.pt`` files) and copied from ``tests/fixtures/foreign/``
(TF1 checkpoints and meta graphs, Keras ``.keras``/``.h5``/``.weights.h5``). Every case mutates one file of
a seed, with generic byte mutations (truncation, bit flips, interesting integers, chunk duplication/removal,
inflated varints) and format-aware ones that keep the container valid and make the *content* lie:
safetensors headers and graph JSON, ONNX protos, TF bundle entries rebuilt into a valid table, protobuf
fields of meta graphs, zip members of ``.keras``/``.npz``/``.pt`` archives, HDF5 datasets, links and
attributes.

*Generated* formats build valid containers with hostile content from scratch (or around a real model):
``onnx_gen`` (1-4 nodes of random op types with attributes drawn from their ``onnx.defs`` schemas, fed by
initializers that lie, sparse initializers and ``sparse_value`` constants, external data beside, outside
or at an absolute path), ``safetensors_gen`` (overlapping or out-of-range offsets, huge dims, bad dtypes,
duplicated names, metadata that is not strings), ``h5_gen`` (external raw storage, virtual datasets,
external/soft/hard links, filters, unwritten datasets, odd element types, in ``.h5``, ``.weights.h5`` and
inside ``.keras``), ``zip_gen`` (``.npz``/``.pt``/``.keras`` members of odd sizes, odd names, other
compression methods, duplicates, deflate bombs), ``tf_gen`` (meta graphs of random ops whose attributes
have odd values or the wrong kind) and ``saved_model_gen`` (a real SavedModel folder whose ``saved_model.pb``
is rewritten through graphdnn's TF protobuf classes: nodes, calls of missing or recursive functions,
signatures, the function library, the object graph; or whose variables index/data are mutated). Files that
refer outside the case's folder point at ``SECRET``; a loaded tensor holding its bytes is a failure.

Whatever loads is compiled (``graphdnn.compile``) and run once on small inputs. Each case runs in a worker
subprocess (a long-lived one, replaced when it dies or hangs) under a wall-clock timeout and an
address-space cap (``RLIMIT_AS``) set, for each case, to the worker's current size plus ``--mem-base-mb``
plus ``--mem-per-byte`` times the case's total file size. Outcomes: ``ok`` (loaded, compiled and ran),
``clean`` (a ``graphdnn.errors.GraphDNNError``), ``run_error`` (loaded and compiled; PyTorch refused the
forward pass on the fuzzer's inputs: reported, not a failure), and the failures ``unexpected`` (any other
exception: type, message, traceback tail and the case id to reproduce), ``memory`` (the budget overrun: a
``MemoryError`` under the cap), ``timeout`` and ``crash`` (the worker died: signal or exit code).

    python tests/fuzz_loaders.py --cases 300 --json fuzz.json
    python tests/fuzz_loaders.py --reproduce onnx_gen:17 --seed 0     # rerun one case in-process
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = ROOT / "tests" / "fixtures" / "foreign"
MUTATED = ("safetensors", "onnx", "tf_index", "tf_data", "tf_meta", "keras", "h5", "npz", "pt")
GENERATED = ("onnx_gen", "safetensors_gen", "h5_gen", "zip_gen", "tf_gen", "saved_model_gen")
FORMATS = MUTATED + GENERATED
FAILURES = ("unexpected", "memory", "timeout", "crash")
OUTCOMES = ("ok", "clean", "run_error", *FAILURES)
INTERESTING_INTS = (0, 1, 2, 7, 255, 256, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**53 + 1,
                    2**62, 2**63 - 1, 2**64 - 1, -1, -2**31, -2**63)
INTERESTING_STRINGS = ("", "a", "A:0", "A:7", "x/y", "../../etc/passwd", "__metadata__",
                       "__import__('os').system('true')", 'quote"\n\\', "ünï/层", "%2E", "X",
                       "hidden1/kernel", "dnn/hidden1/MatMul")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ================================================================================== seeds
@dataclass
class Seed:
    """One model on disk: its files (relative path -> bytes), the file a case mutates, and the
    loader steps run on it (``(kind, relative path)``, see ``_STEPS``)."""

    fmt: str
    name: str
    files: dict[str, bytes]
    target: str
    steps: list[tuple[str, str]]


def _control_flow_model() -> Any:
    """A Loop whose body holds an If and reads an outer initializer, then a Scan: bodies to mutate."""
    from onnx import TensorProto as T
    from onnx import helper as h

    def vi(name: str, elem: int, shape: list | None) -> Any:
        return h.make_tensor_value_info(name, elem, shape)

    then_g = h.make_graph([h.make_node("Mul", ["v_in", "k"], ["v_then"])], "then", [], [vi("v_then", T.FLOAT, [4])])
    else_g = h.make_graph([h.make_node("Neg", ["v_in"], ["v_else"])], "else", [], [vi("v_else", T.FLOAT, [4])])
    body = h.make_graph(
        [h.make_node("Greater", ["i", "one"], ["big"]),
         h.make_node("If", ["big"], ["v_out"], then_branch=then_g, else_branch=else_g),
         h.make_node("Identity", ["c_in"], ["c_out"])],
        "loop_body", [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), vi("v_in", T.FLOAT, [4])],
        [vi("c_out", T.BOOL, []), vi("v_out", T.FLOAT, [4])], [h.make_tensor("one", T.INT64, [], [1])])
    scan_nodes = [h.make_node("Add", ["s_in", "x_t"], ["s_out"]), h.make_node("Identity", ["s_out"], ["y_t"])]
    scan_body = h.make_graph(scan_nodes, "scan_body", [vi("s_in", T.FLOAT, [4]), vi("x_t", T.FLOAT, [4])],
                             [vi("s_out", T.FLOAT, [4]), vi("y_t", T.FLOAT, [4])])
    graph = h.make_graph(
        [h.make_node("Loop", ["M", "", "v0"], ["v"], body=body, name="loop"),
         h.make_node("Scan", ["v", "xs"], ["s", "ys"], body=scan_body, num_scan_inputs=1, name="scan")],
        "control_flow", [vi("M", T.INT64, []), vi("v0", T.FLOAT, [4]), vi("xs", T.FLOAT, [3, 4])],
        [vi("s", T.FLOAT, [4]), vi("ys", T.FLOAT, [3, 4])], [h.make_tensor("k", T.FLOAT, [], [2.0])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def _graphs(graph: Any) -> list[Any]:
    """``graph`` and every control-flow body nested in it."""
    import onnx

    found = [graph]
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                found += _graphs(a.g)
    return found


def _small_graph(seed: int = 0) -> Any:
    import torch

    import graphdnn as gd
    from graphdnn import layers, nn

    torch.manual_seed(seed)
    g = gd.Graph("small")
    x = g.placeholder("X", (None, 6))
    with g.name_scope("dnn"):
        h = nn.elu(layers.batch_normalization(layers.dense(x, 8, name="hidden1"), name="bn1"))
        h = nn.relu(layers.dense(h, 5, name="hidden2"))
        out = layers.dense(h, 3, name="outputs")
    g.add_to_collection("my_important_ops", out)
    return g


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def make_seeds(work: Path) -> dict[str, list[Seed]]:
    """Write the seed models into ``work`` and return them by format."""
    import numpy as np
    import torch

    import graphdnn as gd

    g = _small_graph()
    seeds: dict[str, list[Seed]] = {f: [] for f in MUTATED}

    d = work / "st"
    d.mkdir()
    gd.save(g, d / "m.safetensors")
    seeds["safetensors"].append(Seed("safetensors", "checkpoint", _files(d), "m.safetensors",
                                     [("load", "m.safetensors")]))
    d = work / "shards"
    d.mkdir()
    gd.save(g, d / "m.safetensors", max_shard_size=200)
    files = _files(d)
    for target in sorted(files):
        seeds["safetensors"].append(Seed("safetensors", f"sharded:{target}", files, target,
                                         [("load", "m.safetensors.index.json")]))

    d = work / "onnx"
    d.mkdir()
    gd.export_onnx(g, d / "m.onnx")
    seeds["onnx"].append(Seed("onnx", "export", _files(d), "m.onnx", [("load", "m.onnx")]))
    d = work / "onnx_control_flow"
    d.mkdir()
    (d / "cf.onnx").write_bytes(_control_flow_model().SerializeToString())
    seeds["onnx"].append(Seed("onnx", "control_flow", _files(d), "cf.onnx", [("load", "cf.onnx")]))

    for model in ("tf1_dnn", "tf1_bn"):
        files = _files(FOREIGN / model)
        files.pop("expected.npz")
        steps = [("load", "my_model_final.ckpt.meta"), ("tensors", "my_model_final.ckpt")]
        for fmt, suffix in (("tf_index", ".index"), ("tf_data", ".data-00000-of-00001"), ("tf_meta", ".meta")):
            seeds[fmt].append(Seed(fmt, model, files, "my_model_final.ckpt" + suffix, steps))

    for model in ("mlp", "cnn"):
        folder = FOREIGN / "keras"
        seeds["keras"].append(Seed("keras", model, {"m.keras": (folder / f"{model}.keras").read_bytes()}, "m.keras",
                                   [("load", "m.keras"), ("tensors", "m.keras")]))
        seeds["h5"].append(Seed("h5", f"{model}.h5", {"m.h5": (folder / f"{model}.h5").read_bytes()}, "m.h5",
                                [("load", "m.h5"), ("tensors", "m.h5")]))
        seeds["h5"].append(Seed("h5", f"{model}.weights.h5", {"w.weights.h5": (folder / f"{model}.weights.h5")
                                                               .read_bytes()}, "w.weights.h5",
                                [("tensors", "w.weights.h5")]))

    arrays = {"hidden1/kernel": np.arange(48, dtype=np.float32).reshape(6, 8), "hidden1/bias": np.zeros(8, np.float64),
              "steps": np.array(3, dtype=np.int64), "mask": np.array([True, False])}
    for name, save in (("plain", np.savez), ("compressed", np.savez_compressed)):
        buf = io.BytesIO()
        save(buf, **arrays)
        seeds["npz"].append(Seed("npz", name, {"a.npz": buf.getvalue()}, "a.npz", [("tensors", "a.npz")]))

    state = {"fc1.weight": torch.randn(8, 6), "fc1.bias": torch.zeros(8), "bn.running_var": torch.ones(8),
             "bn.num_batches_tracked": torch.tensor(5)}
    buf = io.BytesIO()
    torch.save(state, buf)
    seeds["pt"].append(Seed("pt", "state_dict", {"m.pt": buf.getvalue()}, "m.pt", [("tensors", "m.pt")]))
    buf = io.BytesIO()
    torch.save({"model_state_dict": state, "epoch": 3}, buf)
    seeds["pt"].append(Seed("pt", "nested", {"m.pt": buf.getvalue()}, "m.pt", [("tensors", "m.pt")]))
    for seed in (s for group in seeds.values() for s in group):  # compile and run whatever loads
        seed.steps = [("run" if kind == "load" else kind, rel) for kind, rel in seed.steps]
    return seeds


# ========================================================================= generic mutations
def _uvarint(n: int) -> bytes:
    n &= 2**64 - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int] | None:
    """``(value, next position)``, or None where ``buf`` holds no complete varint at ``pos``."""
    from graphdnn.converters.tf_proto import read_varint

    try:
        return read_varint(buf, pos, len(buf))
    except ValueError:
        return None


def _int_bytes(rng: random.Random) -> bytes:
    value = rng.choice(INTERESTING_INTS)
    width = rng.choice((1, 2, 4, 8))
    return (value & (2 ** (8 * width) - 1)).to_bytes(width, rng.choice(("little", "big")))


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to three generic byte mutations."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        n = len(buf)
        kind = rng.randrange(8)
        if n == 0:
            buf += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif kind == 0:  # truncation
            del buf[rng.randrange(n):]
        elif kind == 1:  # bit flips
            for _ in range(rng.randrange(1, 9)):
                buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif kind == 2:  # interesting bytes
            for _ in range(rng.randrange(1, 5)):
                buf[rng.randrange(n)] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x01))
        elif kind == 3:  # an interesting integer written over the data
            pos = rng.randrange(n)
            chunk = _int_bytes(rng)
            buf[pos:pos + len(chunk)] = chunk
        elif kind == 4:  # chunk duplication
            a = rng.randrange(n)
            b = min(n, a + rng.randrange(1, 256))
            buf[b:b] = buf[a:b] * rng.randrange(1, 4)
        elif kind == 5:  # chunk removal
            a = rng.randrange(n)
            del buf[a:a + rng.randrange(1, 256)]
        elif kind == 6:  # inflated varint / random insertion
            pos = rng.randrange(n)
            buf[pos:pos] = _uvarint(rng.choice(INTERESTING_INTS)) if rng.random() < 0.6 else rng.randbytes(
                rng.randrange(1, 32))
        else:  # the same byte repeated over a range
            a = rng.randrange(n)
            buf[a:a + rng.randrange(1, 64)] = bytes([rng.randrange(256)]) * rng.randrange(1, 64)
    return bytes(buf)


# -------------------------------------------------------------------------------- protobuf
def _pb_fields(buf: bytes) -> list[tuple[int, int, int, int, int]] | None:
    """``(start, tag, wire, value_start, end)`` of every field when ``buf`` parses as a message."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        r = _read_uvarint(buf, pos)
        if r is None:
            return None
        tag, pos = r
        wire = tag & 7
        if tag >> 3 == 0:
            return None
        value_start = pos
        if wire == 0:
            r = _read_uvarint(buf, pos)
            if r is None:
                return None
            pos = r[1]
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            r = _read_uvarint(buf, pos)
            if r is None:
                return None
            value_start, pos = r[1], r[1] + r[0]
        else:
            return None
        if pos > len(buf):
            return None
        out.append((start, tag, wire, value_start, pos))
    return out


def mutate_protobuf(data: bytes, rng: random.Random, depth: int = 0) -> bytes:
    """Mutate one field somewhere in a protobuf message, keeping every enclosing length correct, so
    the message stays well-formed and only its content lies."""
    fields = _pb_fields(data)
    if not fields:
        return mutate_bytes(data, rng)
    start, tag, wire, vstart, end = rng.choice(fields)
    payload = data[vstart:end]
    if wire == 2 and depth < 12 and rng.random() < 0.75 and _pb_fields(payload):
        new = mutate_protobuf(payload, rng, depth + 1)
        return data[:start] + _uvarint(tag) + _uvarint(len(new)) + new + data[end:]
    kind = rng.randrange(6)
    field_bytes = data[start:end]
    if kind == 0:
        return data[:start] + data[end:]
    if kind == 1:
        return data[:end] + field_bytes * rng.choice((1, 1, 2, 50)) + data[end:]
    if wire == 0 or kind == 2:
        value = _uvarint(rng.choice(INTERESTING_INTS))
        return data[:start] + _uvarint((tag & ~7) | 0) + value + data[end:]
    if wire == 2:
        if kind == 3:
            new = payload[: rng.randrange(len(payload) + 1)]
        elif kind == 4:
            new = payload + rng.randbytes(rng.randrange(1, 64))
        else:
            new = mutate_bytes(payload, rng)
        return data[:start] + _uvarint(tag) + _uvarint(len(new)) + new + data[end:]
    return data[:vstart] + rng.randbytes(end - vstart) + data[end:]


# ------------------------------------------------------------------------------------ JSON
def _interesting_json(rng: random.Random) -> Any:
    return rng.choice((
        lambda: rng.choice(INTERESTING_INTS), lambda: 10**30, lambda: 1e308, lambda: -0.5, lambda: None,
        lambda: True, lambda: [], lambda: {}, lambda: rng.choice(INTERESTING_STRINGS),
        lambda: [rng.choice((2**40, 2**31, 2**62, -1, 0, 1))] * rng.randrange(1, 4), lambda: {"type": "value"},
        lambda: [None], lambda: "x" * 5000,
    ))()


def mutate_json(doc: Any, rng: random.Random) -> Any:
    """Replace, delete or duplicate one node of a JSON document (the document is modified in place;
    returned, as the root itself may be replaced)."""
    parent, key, node = None, None, doc
    while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
        parent = node
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        node = node[key]
    if parent is None:
        return _interesting_json(rng) if rng.random() < 0.3 else doc
    action = rng.randrange(5)
    if action == 0:
        del parent[key]
    elif action == 1 and isinstance(parent, list):
        parent.insert(key, parent[key])
    elif action == 2 and isinstance(parent, dict):
        parent[rng.choice(INTERESTING_STRINGS)] = parent.pop(key)
    else:
        parent[key] = _interesting_json(rng)
    return doc


def _deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


# ============================================================================ format mutators
def _safetensors_split(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def _safetensors_join(header: dict[str, Any] | str, body: bytes) -> bytes:
    raw = (header if isinstance(header, str) else json.dumps(header, ensure_ascii=False)).encode("utf-8")
    return len(raw).to_bytes(8, "little") + raw + body


def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    try:
        header, body = _safetensors_split(data)
    except ValueError:
        return mutate_bytes(data, rng)
    kind = rng.randrange(9)
    tensors = [k for k in header if k != "__metadata__"]
    meta = header.get("__metadata__", {})
    if kind == 0 and tensors:  # a tensor entry lies: shape, offsets or dtype
        entry = header[rng.choice(tensors)]
        what = rng.choice(("shape", "data_offsets", "dtype"))
        if what == "shape":
            entry["shape"] = rng.choice(([2**40, 2**40], [2**62], [2**31, 2**31, 2**31], [-1], [0], [1.5], [3],
                                         entry["shape"] + [1], entry["shape"][::-1], []))
        elif what == "data_offsets":
            begin, end = entry["data_offsets"]
            entry["data_offsets"] = rng.choice(([begin, 2**63], [0, end], [end, begin], [begin, end + 8],
                                                [2**64, 2**64 + end - begin], [begin, begin], [-8, end]))
        else:
            entry["dtype"] = rng.choice(("F64", "F16", "BF16", "I8", "BOOL", "C64", "F8_E4M3", "U64", "XX", 7))
        return _safetensors_join(header, body)
    if kind == 1 and tensors:  # a duplicated tensor name (JSON keeps the last one)
        name = rng.choice(tensors)
        other = dict(header[rng.choice(tensors)])
        text = json.dumps(header, ensure_ascii=False)
        dup = json.dumps(name, ensure_ascii=False) + ":" + json.dumps(other)
        return _safetensors_join(text[:-1] + "," + dup + "}", body)
    if kind == 2:  # the length prefix lies
        raw = data[8:8 + int.from_bytes(data[:8], "little")]
        n = rng.choice((0, 1, len(raw) - 1, len(raw) + 1, len(data), 2**31, 2**63, 2**64 - 1))
        return (n & (2**64 - 1)).to_bytes(8, "little") + data[8:]
    if kind in (3, 4, 5) and "graphdnn.graph" in meta:  # the graph JSON lies
        doc = json.loads(meta["graphdnn.graph"])
        if kind == 3 and doc.get("ops"):  # aim at the ops: names, inputs, shapes, attributes
            op = rng.choice(doc["ops"])
            field = rng.choice(("name", "inputs", "attrs", "outputs", "type"))
            if field == "name" and rng.random() < 0.5:
                op["name"] = rng.choice(doc["ops"])["name"]
            elif field == "attrs" and op.get("attrs") and rng.random() < 0.5:
                op["attrs"][rng.choice(list(op["attrs"]))] = _interesting_json(rng)
            else:
                op[field] = mutate_json(op.get(field), rng) if rng.random() < 0.6 else _interesting_json(rng)
        elif kind == 4:
            doc = mutate_json(doc, rng)
        meta["graphdnn.graph"] = json.dumps(doc, ensure_ascii=False) if kind != 5 else _deep_json()
        return _safetensors_join(header, body)
    if kind == 6 and meta:  # other metadata: aliases, keys, collections, version
        key = rng.choice(list(meta) + ["graphdnn.aliases", "graphdnn.keys", "graphdnn.version"])
        meta[key] = rng.choice((json.dumps({rng.choice(INTERESTING_STRINGS): rng.choice(tensors or ["x"])}),
                                "not json", "99", "-1", _deep_json(), json.dumps([1, 2]), "{}"))
        return _safetensors_join(header, body)
    if kind == 7:
        return _safetensors_join(mutate_json(header, rng), body)
    return mutate_bytes(data, rng)


def mutate_shard_index(data: bytes, rng: random.Random) -> bytes:
    try:
        doc = json.loads(data)
    except ValueError:
        return mutate_bytes(data, rng)
    wmap = doc.get("weight_map", {})
    if wmap and rng.random() < 0.5:
        name = rng.choice(list(wmap))
        wmap[name] = rng.choice(("../m.safetensors", "/etc/passwd", "", ".", "..", "missing.safetensors",
                                 rng.choice(list(wmap.values())), "m.safetensors.index.json"))
        if rng.random() < 0.3:
            wmap[rng.choice(INTERESTING_STRINGS)] = wmap[name]
    else:
        doc = mutate_json(doc, rng)
    return json.dumps(doc).encode()


def mutate_onnx(data: bytes, rng: random.Random) -> bytes:
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(data)
    g = rng.choice(_graphs(model.graph))  # the main graph or a control-flow body
    kind = rng.randrange(13)
    if kind == 0 and g.initializer:  # initializer dims / dtype / payload lie
        t = rng.choice(g.initializer)
        what = rng.randrange(5)
        if what == 0:
            dims = rng.choice(([2**40, 2**40], [2**62], [-1], [0], [2**31, 2**31, 4], list(t.dims) + [2]))
            del t.dims[:]
            t.dims.extend(dims)
        elif what == 1:
            t.data_type = rng.choice((0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 21, 22, 23, 99))
        elif what == 2:
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data) + 1)] if rng.random() < 0.5 else (
                t.raw_data + rng.randbytes(rng.randrange(1, 16)))
        elif what == 3:
            t.data_location = onnx.TensorProto.EXTERNAL
            del t.external_data[:]
            for k, v in (("location", rng.choice(("../../../etc/passwd", "missing.bin", "/etc/hostname", "m.onnx"))),
                         ("offset", str(rng.choice((0, 2**40)))), ("length", str(rng.choice((4, 2**40))))):
                e = t.external_data.add()
                e.key, e.value = k, v
        else:
            t.ClearField("raw_data")
            t.float_data.extend([1.0] * rng.choice((0, 1, 3)))
    elif kind == 1 and g.initializer:  # a duplicated initializer
        dup = g.initializer.add()
        dup.CopyFrom(rng.choice(g.initializer))
        if rng.random() < 0.5 and dup.dims:
            dup.dims[0] += 1
    elif kind == 2 and g.node:  # a node changes type
        rng.choice(g.node).op_type = rng.choice(("Reshape", "Conv", "Gemm", "Concat", "Softmax", "NoSuchOp", "Loop",
                                                 "Relu", "Transpose", "Split", "Slice", "Expand", "Tile"))
    elif kind == 3 and g.node:  # duplicated node names or outputs
        a, b = rng.choice(g.node), rng.choice(g.node)
        if rng.random() < 0.5:
            a.name = b.name
        elif a.output and b.output:
            a.output[0] = b.output[0]
    elif kind == 4 and g.node:  # inputs rewired: missing values, graph outputs, itself
        node = rng.choice(g.node)
        if node.input:
            i = rng.randrange(len(node.input))
            node.input[i] = rng.choice(("missing", "", node.output[0] if node.output else "x",
                                        rng.choice(g.node).output[0] if rng.choice(g.node).output else "y"))
        else:
            node.input.append("missing")
    elif kind == 5 and g.node:  # attributes lie
        node = rng.choice(g.node)
        if node.attribute and rng.random() < 0.6:
            a = rng.choice(node.attribute)
            if a.type == onnx.AttributeProto.INT:
                a.i = rng.choice(INTERESTING_INTS) & (2**63 - 1) if rng.random() < 0.5 else -rng.choice((1, 2**40))
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = rng.choice((float("nan"), float("inf"), -1.0, 1e30))
            else:
                a.type = rng.choice((1, 2, 3, 7, 8))
        else:
            node.attribute.append(onnx.helper.make_attribute(rng.choice(("axis", "perm", "transA", "alpha", "x")),
                                                             rng.choice((10**9, [0, 0, 7], -1, "s", 1.5))))
    elif kind == 6:  # opset / IR version
        if rng.random() < 0.5 and model.opset_import:
            model.opset_import[0].version = rng.choice((0, 1, 6, 7, 99, 2**40))
        else:
            model.ir_version = rng.choice((0, 1, 3, 99, 2**40))
    elif kind == 7 and g.input:  # graph input types and shapes
        vi = rng.choice(g.input)
        tt = vi.type.tensor_type
        if rng.random() < 0.5:
            tt.elem_type = rng.choice((0, 7, 8, 11, 16, 99))
        elif tt.HasField("shape") and tt.shape.dim:
            tt.shape.dim[rng.randrange(len(tt.shape.dim))].dim_value = rng.choice((2**40, 0, -5))
    elif kind == 8 and g.output:
        if rng.random() < 0.5:
            g.output[0].name = "missing"
        else:
            g.output.add().CopyFrom(g.output[0])
    elif kind == 9 and g.node:  # a node is removed (its consumers dangle) or duplicated
        i = rng.randrange(len(g.node))
        if rng.random() < 0.5:
            del g.node[i]
        else:
            g.node.add().CopyFrom(g.node[i])
    elif kind == 10:
        return mutate_protobuf(data, rng)
    elif kind == 11:  # bodies: dropped, swapped for another, or nested far too deep
        nodes = [n for gr in _graphs(model.graph) for n in gr.node if n.attribute]
        node = rng.choice(nodes) if nodes else None
        bodies = [a for a in node.attribute if a.type == onnx.AttributeProto.GRAPH] if node else []
        what = rng.randrange(3)
        if bodies and what == 0:
            node.attribute.remove(rng.choice(bodies))
        elif bodies and what == 1:  # (through bytes: a graph copied into its own body would alias itself)
            donor = rng.choice(_graphs(model.graph)).SerializeToString()
            target = rng.choice(bodies).g
            target.Clear()
            target.ParseFromString(donor)
        elif model.graph.output:  # an If whose branches are Ifs ... down to the main graph
            inner, out = model.graph, model.graph.output[0]
            leaf = onnx.helper.make_graph([], "leaf", [], [out])
            for _ in range(rng.choice((5, 20, 40))):
                try:
                    node = onnx.helper.make_node("If", ["M"], [out.name], then_branch=inner, else_branch=leaf)
                except Exception:  # protobuf's own depth limit: as deep as it lets us
                    break
                inner = onnx.helper.make_graph([node], "nest", [], [out])
            model.graph.node.add().CopyFrom(inner.node[0])
    else:
        return mutate_bytes(data, rng)
    return model.SerializeToString()


# ------------------------------------------------------------------------------------- TF
def _pb_varint_field(num: int, value: int) -> bytes:
    return _uvarint(num << 3) + _uvarint(value)


def _pb_bytes_field(num: int, payload: bytes) -> bytes:
    return _uvarint((num << 3) | 2) + _uvarint(len(payload)) + payload


def _encode_entry(e: Any) -> bytes:
    shape = b"".join(_pb_bytes_field(2, _pb_varint_field(1, d)) for d in e.shape)
    out = _pb_varint_field(1, e.dtype.enum) + _pb_bytes_field(2, shape) + _pb_varint_field(3, e.shard_id)
    out += _pb_varint_field(4, e.offset) + _pb_varint_field(5, e.size)
    out += _uvarint((6 << 3) | 5) + struct.pack("<I", e.crc32c & 0xFFFFFFFF)
    for s in e.slices:
        extents = b"".join(_pb_bytes_field(1, _pb_varint_field(1, a) + (b"" if n is None else _pb_varint_field(2, n)))
                           for a, n in s)
        out += _pb_bytes_field(7, extents)
    return out


def _encode_header(h: Any) -> bytes:
    version = _pb_varint_field(1, h.producer) + _pb_varint_field(2, h.min_consumer)
    return _pb_varint_field(1, h.num_shards) + _pb_varint_field(2, int(h.big_endian)) + _pb_bytes_field(3, version)


def _table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A LevelDB table with one uncompressed data block (a restart point at every entry)."""
    from graphdnn.converters.tf_checkpoint import crc32c, mask

    def block(items: list[tuple[bytes, bytes]]) -> bytes:
        body, restarts = bytearray(), []
        for key, value in items:
            restarts.append(len(body))
            body += _uvarint(0) + _uvarint(len(key)) + _uvarint(len(value)) + key + value
        body += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
        return bytes(body)

    def trailer(b: bytes) -> bytes:
        return b + b"\x00" + struct.pack("<I", mask(crc32c(b + b"\x00")))

    data = block(entries or [(b"", b"")])
    out = trailer(data)
    handle = _uvarint(0) + _uvarint(len(data))
    index = block([(entries[-1][0] if entries else b"", handle)])
    index_at = len(out)
    out += trailer(index)
    footer = _uvarint(0) + _uvarint(0) + _uvarint(index_at) + _uvarint(len(index))
    return out + footer.ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)


def mutate_tf_index(data: bytes, rng: random.Random) -> bytes:
    from graphdnn.converters.tf_checkpoint import _read_table
    from graphdnn.converters.tf_proto import TFDType, parse_bundle_entry, parse_bundle_header

    if rng.random() < 0.3:
        return mutate_bytes(data, rng)
    entries = list(_read_table(data))
    header_at = next(i for i, (k, _) in enumerate(entries) if k == b"")
    keyed = [i for i, (k, _) in enumerate(entries) if k]
    kind = rng.randrange(7)
    if kind == 0:  # the bundle header lies
        h = parse_bundle_header(entries[header_at][1])
        what = rng.randrange(3)
        if what == 0:
            h.num_shards = rng.choice((0, 2, 99999, 10**9, 2**63 - 1))
        elif what == 1:
            h.big_endian = True
        else:
            h.min_consumer = rng.choice((2, 99))
        entries[header_at] = (b"", _encode_header(h))
    elif kind == 1:  # a duplicated tensor name, or a lost header
        i = rng.choice(keyed)
        if rng.random() < 0.7:
            entries.insert(i, entries[i])
        else:
            del entries[header_at]
    elif kind == 2:  # protobuf-level mutation of one entry
        i = rng.choice(keyed)
        entries[i] = (entries[i][0], mutate_protobuf(entries[i][1], rng))
    else:  # a field of one entry lies: shape, dtype, offset, size, shard, slices
        i = rng.choice(keyed)
        key = entries[i][0]
        e = parse_bundle_entry(entries[i][1])
        if kind == 3:
            e.shape = rng.choice(((2**40, 2**40), (2**62,), (2**31, 2**31, 2**31), (0,), (1, 1, 1) + e.shape,
                                  e.shape[::-1], (2**64 - 1,)))
        elif kind == 4:
            e.dtype = TFDType(rng.choice((0, 1, 2, 7, 9, 10, 14, 18, 19, 20, 21, 29, 33, 99, 101, 107)))
        elif kind == 5:
            setattr(e, rng.choice(("offset", "size", "shard_id")), rng.choice(INTERESTING_INTS) & (2**64 - 1))
        else:
            e.slices = [[(0, rng.choice((None, 1, 2**40))), (rng.choice((0, 2**63 - 1)), None)]]
        entries[i] = (key, _encode_entry(e))
    return _table(entries)


# ----------------------------------------------------------------------------------- zips
def _zip_members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(info, z.read(info)) for info in z.infolist()]


def _zip_build(members: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as z:
        warnings.simplefilter("ignore")  # duplicated names are intended
        for name, payload, method in members:
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.compress_type = method
            z.writestr(info, payload)
    return buf.getvalue()


def _zip_lie_about_size(data: bytes, rng: random.Random) -> bytes:
    """Rewrite the uncompressed size of one member in the central directory and local header."""
    buf = bytearray(data)
    central = [i for i in range(len(buf) - 4) if buf[i:i + 4] == b"PK\x01\x02"]
    if not central:
        return mutate_bytes(data, rng)
    at = rng.choice(central)
    size = rng.choice((0, 1, 2**31 - 1, 2**32 - 1, 5 * 2**30, 100 * 2**20))
    size = min(size, 2**32 - 1)
    buf[at + 24:at + 28] = struct.pack("<I", size)
    local = struct.unpack_from("<I", buf, at + 42)[0]
    if buf[local:local + 4] == b"PK\x03\x04":
        buf[local + 22:local + 26] = struct.pack("<I", size)
    return bytes(buf)


def _zip_mutate(data: bytes, rng: random.Random, member_mutator: Callable[[str, bytes, random.Random], bytes]) -> bytes:
    try:
        members = [(info.filename, payload, info.compress_type) for info, payload in _zip_members(data)]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return mutate_bytes(data, rng)
    kind = rng.randrange(7)
    if kind == 0:
        return _zip_lie_about_size(data, rng)
    if kind == 1 and members:  # a duplicated member (zipfile reads the last one)
        name, payload, method = rng.choice(members)
        members.append((name, mutate_bytes(payload, rng), method))
    elif kind == 2:  # a real compression bomb
        name = rng.choice([m[0] for m in members] or ["x"])
        members.append((name, b"\x00" * (rng.choice((2, 64)) * 2**20), zipfile.ZIP_DEFLATED))
    elif kind == 3 and members:
        del members[rng.randrange(len(members))]
    elif kind in (4, 5) and members:
        i = rng.randrange(len(members))
        name, payload, method = members[i]
        members[i] = (name, member_mutator(name, payload, rng), method)
    else:
        return mutate_bytes(data, rng)
    return _zip_build(members)


def _npy_member(name: str, payload: bytes, rng: random.Random) -> bytes:
    if not payload.startswith(b"\x93NUMPY") or rng.random() < 0.3:
        return mutate_bytes(payload, rng)
    hlen = struct.unpack_from("<H", payload, 8)[0]
    body = payload[10 + hlen:]
    descr = rng.choice(("'<f4'", "'<f8'", "'|O'", "'<U8'", "'|V8'", "[('a', '<f4')]", "'<c16'", "'>i8'", "'|b1'"))
    shape = rng.choice(("(1099511627776,)", "(4611686018427387904,)", "(3, 1000000000)", "()", "(0,)", "(-1,)",
                        "(2,)", "(6, 8)", "(1.5,)"))
    text = f"{{'descr': {descr}, 'fortran_order': {rng.choice(('False', 'True'))}, 'shape': {shape}, }}"
    if rng.random() < 0.2:
        text = rng.choice(("{'descr': __import__('os').getcwd()}", "[" * 5000, "{}", "{'descr': '<f4'}"))
    head = text.encode("latin1")
    head += b" " * (-(10 + len(head) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head + body


def mutate_npz(data: bytes, rng: random.Random) -> bytes:
    return _zip_mutate(data, rng, _npy_member)


def _pt_member(name: str, payload: bytes, rng: random.Random) -> bytes:
    if name.endswith("data.pkl") and rng.random() < 0.4:
        evil = rng.choice((b"cos\nsystem\n(S'true'\ntR.", b"\x80\x02cbuiltins\neval\nq\x00X\x01\x00\x00\x001q\x01\x85q"
                           b"\x02Rq\x03.", b"(" * 100_000 + b"."))
        return evil
    return mutate_bytes(payload, rng)


def mutate_pt(data: bytes, rng: random.Random) -> bytes:
    return _zip_mutate(data, rng, _pt_member)


# ------------------------------------------------------------------------------------ HDF5
def _h5_datasets(f: Any) -> list[str]:
    import h5py

    out: list[str] = []
    f.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return out


def _h5_groups(f: Any) -> list[str]:
    import h5py

    out: list[str] = []
    f.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Group) else None)
    return out


def mutate_h5(data: bytes, rng: random.Random) -> bytes:
    """Structured HDF5 edits made with h5py (huge or retyped datasets, external and soft links, bad
    attributes), or generic byte mutations."""
    import h5py
    import numpy as np

    if rng.random() < 0.35:
        return mutate_bytes(data, rng)
    buf = io.BytesIO(data)
    with h5py.File(buf, "r+") as f:
        datasets, groups = _h5_datasets(f), _h5_groups(f)
        kind = rng.randrange(7)
        if kind == 0 and datasets:  # a huge dataset with no stored data
            name = rng.choice(datasets)
            del f[name]
            f.create_dataset(name, shape=rng.choice(((2**31, 1024), (2**40,), (2**20, 2**20))), dtype="f4",
                             chunks=True)
        elif kind == 1 and datasets:  # a retyped or reshaped dataset
            name = rng.choice(datasets)
            shape = f[name].shape
            del f[name]
            value = rng.choice((lambda: np.zeros(shape[::-1] + (2,), "f4"), lambda: np.array([b"abc", b"d"]),
                                lambda: np.zeros(3, dtype=[("a", "f4"), ("b", "i4")]), lambda: np.float64(1.5),
                                lambda: np.zeros((), "f4"), lambda: np.zeros(shape, "c16"),
                                lambda: np.zeros(5, bool)))()
            f.create_dataset(name, data=value)
        elif kind == 2 and datasets:  # an external link (must never be followed)
            name = rng.choice(datasets)
            del f[name]
            f[name] = h5py.ExternalLink(rng.choice(("/etc/passwd", "../other.h5", "m.h5")), "/x")
        elif kind == 3 and groups:  # a soft link making a cycle, or dangling
            group = rng.choice(groups)
            f[f"{group}/loop"] = h5py.SoftLink("/" + rng.choice([group, *groups, ""]).strip("/") if rng.random() < .8
                                               else "/nowhere")
        elif kind == 4:  # attributes lie
            objs = ["/"] + groups
            target = f[rng.choice(objs)]
            key = rng.choice(list(target.attrs) + ["name", "layer_names", "weight_names", "model_config"])
            target.attrs[key] = rng.choice((
                lambda: np.void(b"\xff\xfe"), lambda: b"\xff\xfe\x80", lambda: "{not json", lambda: _deep_json(5000),
                lambda: np.array([b"missing", b"..", b""]), lambda: 7, lambda: np.array([1.5, 2.5]),
                lambda: json.dumps(mutate_json(_safe_json(target.attrs.get(key)), rng)),
            ))()
        elif kind == 5 and groups:  # a group becomes a dataset, or is removed
            name = rng.choice(groups)
            del f[name]
            if rng.random() < 0.5:
                f.create_dataset(name, data=np.zeros(3, "f4"))
        elif datasets:  # deep nesting
            parent = f.require_group(rng.choice(groups or [""]) or "/")
            for i in range(rng.choice((10, 300))):
                parent = parent.create_group(f"g{i}")
    return buf.getvalue()


def _safe_json(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        return json.loads(value) if isinstance(value, str) else {"v": 1}
    except ValueError:
        return {"v": 1}


def mutate_keras(data: bytes, rng: random.Random) -> bytes:
    def member(name: str, payload: bytes, rng: random.Random) -> bytes:
        if name == "config.json":
            try:
                doc = json.loads(payload)
            except ValueError:
                return mutate_bytes(payload, rng)
            if rng.random() < 0.1:
                return _deep_json().encode()
            layers = doc.get("config", {}).get("layers") if isinstance(doc.get("config"), dict) else None
            if layers and rng.random() < 0.7:
                layer = rng.choice(layers)
                mutate_json(layer if rng.random() < 0.3 else layer.get("config", layer), rng)
                return json.dumps(doc).encode()
            return json.dumps(mutate_json(doc, rng)).encode()
        if name.endswith(".h5"):
            try:
                return mutate_h5(payload, rng)
            except Exception:  # noqa: BLE001 - h5py refusing the seed copy: fall back to bytes
                return mutate_bytes(payload, rng)
        return mutate_bytes(payload, rng)

    return _zip_mutate(data, rng, member)


def mutate_file(seed: Seed, data: bytes, rng: random.Random) -> bytes:
    """Mutate ``data`` (the seed's target file) with the format's mutators, or generic bytes."""
    target = seed.target
    if rng.random() < 0.25:
        return mutate_bytes(data, rng)
    try:
        if target.endswith(".index.json"):
            return mutate_shard_index(data, rng)
        if target.endswith(".safetensors"):
            return mutate_safetensors(data, rng)
        if target.endswith(".onnx"):
            return mutate_onnx(data, rng)
        if target.endswith(".index"):
            return mutate_tf_index(data, rng)
        if target.endswith(".meta"):
            return mutate_protobuf(data, rng)
        if target.endswith(".keras"):
            return mutate_keras(data, rng)
        if target.endswith(".h5"):
            return mutate_h5(data, rng)
        if target.endswith(".npz"):
            return mutate_npz(data, rng)
        if target.endswith(".pt"):
            return mutate_pt(data, rng)
    except Exception:  # noqa: BLE001 - a structured mutator that cannot parse an input falls back to bytes
        pass
    return mutate_bytes(data, rng)


# ============================================================================ generated cases
# Structure-aware generation: valid containers built from scratch (or around a real model) whose
# *content* is hostile. Each generator returns ``(name, files, steps)`` for one case.
SECRET = b"graphdnn-fuzz: bytes outside the model folder".ljust(64, b"#") * 4  # must never be loaded
SECRET_PATH = Path(tempfile.gettempdir()) / "graphdnn-fuzz-secret.bin"  # an absolute path holding it
_SMALL_INTS = (-1, 0, 1, 1, 2, 2, 3, 4)


def _hostile_int(rng: random.Random) -> int:
    return rng.choice(_SMALL_INTS) if rng.random() < 0.75 else rng.choice(INTERESTING_INTS)


def _onnx_schemas() -> list[Any]:
    import onnx.defs

    from graphdnn.ops import registry

    opset = registry.MAX_ONNX_OPSET
    names = sorted({s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == ""})
    out = []
    for name in names:
        try:
            schema = onnx.defs.get_schema(name, opset, "")
        except Exception:  # noqa: BLE001 - an op introduced after the newest opset graphdnn reads
            continue
        if not schema.deprecated:
            out.append(schema)
    return out


_SCHEMAS: list[Any] = []


def _onnx_array(rng: random.Random, dtype: Any = None) -> Any:
    """A small numpy array of a random (ONNX-representable) dtype and shape."""
    import numpy as np

    dtype = dtype or rng.choice((np.float32, np.float32, np.float32, np.int64, np.int64, np.int32, np.float64,
                                 np.float16, np.bool_, np.uint8, np.int8))
    shape = tuple(rng.choice((1, 2, 3, 4)) for _ in range(rng.choice((0, 1, 1, 2, 3))))
    data = np.asarray([rng.choice((0, 1, 2, 3, -1, 0.5)) for _ in range(int(np.prod(shape)))])
    return data.astype(dtype).reshape(shape)


def _onnx_lie(t: Any, rng: random.Random) -> None:
    """Make an initializer's metadata lie about its payload (dims, element type)."""
    what = rng.randrange(3)
    if what == 0:
        dims = rng.choice(([-1], [2**31, 2**31], [0, 5], [2**40], [3, -2], list(t.dims) + [7]))
        del t.dims[:]
        t.dims.extend(dims)
    elif what == 1:
        t.data_type = rng.choice((0, 8, 14, 15, 22, 23, 99))
    else:
        t.raw_data = t.raw_data[: len(t.raw_data) // 2] + (b"\x01" if rng.random() < 0.5 else b"")


def _onnx_sparse(rng: random.Random, name: str) -> Any:
    """A ``SparseTensorProto``, honest or lying (index range, counts, dims, element type)."""
    import numpy as np
    from onnx import TensorProto as T
    from onnx import helper as h

    dims = [rng.choice((1, 2, 4, 6)) for _ in range(rng.choice((1, 1, 2)))]
    numel = int(np.prod(dims))
    nnz = rng.randrange(0, numel + 1)
    flat = sorted(rng.sample(range(numel), nnz))
    values = [float(rng.choice((1, 2, -3))) for _ in range(nnz)]
    kind = rng.randrange(8)
    if kind == 0 and flat:
        flat[-1] = rng.choice((numel, numel + 5, -1, 2**40))
    elif kind == 1:
        values.append(9.0)
    elif kind == 2 and flat:
        flat.append(flat[0])
        values.append(1.0)
    elif kind == 3:
        dims = rng.choice(([-4], [2**20, 2**20], [0]))
    coords = rng.random() < 0.3 and len(dims) > 1 and kind != 3
    if coords:
        idx = np.array(np.unravel_index([max(0, min(i, numel - 1)) for i in flat], dims)).T.reshape(-1).tolist()
        if kind == 0 and idx:
            idx[-1] = dims[-1] + 3
        indices = h.make_tensor(name + "_i", T.INT64, [len(flat), len(dims)], idx)
    else:
        indices = h.make_tensor(name + "_i", T.INT64, [len(flat)], flat)
    if kind == 4:
        vals = h.make_tensor(name, T.STRING, [len(values)], [b"s"] * len(values))
    elif kind == 5:
        vals = h.make_tensor(name, rng.choice((T.INT64, T.DOUBLE, T.FLOAT16)), [len(values)], values)
    else:
        vals = h.make_tensor(name, T.FLOAT, [len(values)], values)
    return h.make_sparse_tensor(vals, indices, dims)


def _onnx_attr(rng: random.Random, name: str, kind: int) -> Any:
    from onnx import AttributeProto as A
    from onnx import helper as h
    from onnx import numpy_helper

    if kind == A.INT:
        return h.make_attribute(name, _hostile_int(rng))
    if kind == A.INTS:
        return h.make_attribute(name, [_hostile_int(rng) for _ in range(rng.choice((0, 1, 2, 2, 4)))], attr_type=kind)
    if kind == A.FLOAT:
        return h.make_attribute(name, rng.choice((0.5, 1.0, 1e-5, -1.0, 1e30, float("nan"), float("inf"))))
    if kind == A.FLOATS:
        return h.make_attribute(name, [rng.choice((0.5, 1.0, -2.0)) for _ in range(rng.choice((0, 1, 2, 4)))],
                                attr_type=kind)
    if kind == A.STRING:
        return h.make_attribute(name, rng.choice(("", "NOTSET", "constant", "linear", "nearest", "SAME_UPPER",
                                                  "reflect", "x" * 300, "__import__('os')", "ü")))
    if kind == A.STRINGS:
        return h.make_attribute(name, [rng.choice(("a", "", "tanh", "sigmoid")) for _ in range(rng.randrange(3))],
                                attr_type=kind)
    if kind == A.TENSOR:
        return h.make_attribute(name, numpy_helper.from_array(_onnx_array(rng), name))
    if kind == A.SPARSE_TENSOR:
        return h.make_attribute(name, _onnx_sparse(rng, name))
    if kind == A.GRAPH:
        return h.make_attribute(name, h.make_graph([], "empty", [], []))
    return h.make_attribute(name, rng.choice((1, 1.5, "s", [1, 2])))  # a value of the wrong kind


def gen_onnx(rng: random.Random, seeds: dict[str, list[Seed]]) -> tuple[str, dict[str, bytes], list]:
    """A model of 1-4 random nodes (op types and attributes from ``onnx.defs``) fed by graph inputs,
    initializers (some lying, sparse, or external and pointing anywhere) and Constant nodes."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    if not _SCHEMAS:
        _SCHEMAS.extend(_onnx_schemas())
    files: dict[str, bytes] = {}
    x = h.make_tensor_value_info("x", T.FLOAT, [rng.choice((1, 2, 3)) for _ in range(rng.choice((1, 2, 2, 3, 4)))])
    inputs, inits, sparse_inits, nodes, avail = [x], [], [], [], ["x"]
    ops = []
    for k in range(rng.choice((1, 1, 2, 3, 4))):
        schema = rng.choice(_SCHEMAS)
        hi = min(schema.max_input, schema.min_input + 2)
        n_in = rng.randint(schema.min_input, max(schema.min_input, hi))
        ins = []
        for i in range(n_in):
            r = rng.random()
            if r < 0.45:
                ins.append(rng.choice(avail))
            elif r < 0.8:
                name = f"w{k}_{i}"
                t = numpy_helper.from_array(_onnx_array(rng), name)
                lie = rng.random()
                if lie < 0.15:
                    _onnx_lie(t, rng)
                elif lie < 0.3:  # external data: beside the model, outside it, or absolute
                    payload = t.raw_data or b"\x00" * 4
                    files["w.bin"] = files.get("w.bin", b"") + payload
                    location = rng.choice(("w.bin", "w.bin", "../outside.bin", str(SECRET_PATH), "sub/../w.bin",
                                           "missing.bin", "."))
                    t.ClearField("raw_data")
                    t.data_location = T.EXTERNAL
                    for key, value in (("location", location), ("offset", str(rng.choice((0, 0, 3, 2**40)))),
                                       ("length", str(rng.choice((len(payload), len(payload), 1, 2**40))))):
                        entry = t.external_data.add()
                        entry.key, entry.value = key, value
                elif lie < 0.4:
                    sparse_inits.append(_onnx_sparse(rng, name))
                    ins.append(name)
                    continue
                inits.append(t)
                ins.append(name)
            elif r < 0.92:
                name = f"c{k}_{i}"
                value = {"sparse_value": _onnx_sparse(rng, name)} if rng.random() < 0.4 else {
                    "value": numpy_helper.from_array(_onnx_array(rng), name)}
                nodes.append(h.make_node("Constant", [], [name], **value))
                ins.append(name)
            else:
                ins.append(rng.choice(("", "missing")))
        attrs = []
        for a in schema.attributes.values():
            if rng.random() < (0.9 if a.required else 0.4):
                wrong = rng.random() < 0.05
                attrs.append(_onnx_attr(rng, a.name, rng.choice(list(range(1, 12))) if wrong else a.type))
        if rng.random() < 0.05:
            attrs.append(_onnx_attr(rng, rng.choice(("zz", "a=__import__('os'),b", "ü")), rng.choice((1, 2, 7))))
        n_out = max(1, schema.min_output) + (rng.randrange(2) if schema.max_output > schema.min_output else 0)
        outs = [f"v{k}_{j}" for j in range(n_out)]
        node = h.make_node(schema.name, ins, outs, name=f"n{k}")
        node.attribute.extend(attrs)
        nodes.append(node)
        avail.extend(outs)
        ops.append(schema.name)
    outputs = [h.make_tensor_value_info(nodes[-1].output[0], rng.choice((T.FLOAT, T.FLOAT, T.INT64, 0)), None)]
    graph = h.make_graph(nodes, "gen", inputs, outputs, inits)
    graph.sparse_initializer.extend(sparse_inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", rng.choice((13, 17, 18, 21)))])
    model.ir_version = 8 if rng.random() < 0.9 else rng.choice((3, 99))
    files["m.onnx"] = model.SerializeToString()
    return "+".join(ops), files, [("run", "m.onnx")]


def gen_safetensors(rng: random.Random, seeds: dict[str, list[Seed]]) -> tuple[str, dict[str, bytes], list]:
    """A real checkpoint (graph included) or a weights-only file built from scratch, whose header lies:
    overlapping or out-of-range offsets, huge or negative dims, bad dtypes, duplicated names, metadata
    values that are not strings."""
    seed = seeds["safetensors"][0]
    header, body = _safetensors_split(seed.files[seed.target])
    steps: list = [("run", "m.safetensors")]
    if rng.random() < 0.4:  # weights only, from scratch
        header, chunks, at = {}, [], 0
        for i in range(rng.randrange(1, 5)):
            dtype, width = rng.choice((("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("BOOL", 1), ("U8", 1),
                                       ("F8_E4M3", 1), ("F64", 8), ("I8", 1), ("U64", 8)))
            shape = [rng.choice((0, 1, 2, 3)) for _ in range(rng.randrange(3))]
            n = width * (int(__import__("math").prod(shape)) if shape else 1)
            header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}
            chunks.append(rng.randbytes(n))
            at += n
        body = b"".join(chunks)
        steps = [("tensors", "m.safetensors")]
    names = [k for k in header if k != "__metadata__"]
    for _ in range(rng.choice((0, 1, 1, 2, 3))):  # (none: an honest file, which must load)
        kind = rng.randrange(7)
        entry = header[rng.choice(names)] if names else {}
        if kind == 0 and len(names) > 1:  # overlapping offsets
            entry["data_offsets"] = list(header[rng.choice(names)]["data_offsets"])
        elif kind == 1 and entry:
            entry["shape"] = rng.choice(([2**62, 4], [-1], [2**31, 2**31, 2**31], [1.5], ["2"], [None], 7))
        elif kind == 2 and entry:
            entry["dtype"] = rng.choice(("f32", "F32 ", "", "C128", "Q4", None, 4, ["F32"], {"F32": 1}))
        elif kind == 3 and entry:
            begin, end = entry["data_offsets"]
            entry["data_offsets"] = rng.choice(([end, begin], [begin, len(body) + 1], [-4, end], [begin], [0.5, end],
                                                [begin, 2**64], None, "0"))
        elif kind == 4:
            meta = header.get("__metadata__")
            meta = header["__metadata__"] = meta if isinstance(meta, dict) else {}
            key = rng.choice(list(meta) + ["format", "graphdnn.graph", "graphdnn.version", "x"])
            meta[key] = rng.choice((7, None, [1, 2], {"a": "b"}, 1.5, True, "ü" * 3, _deep_json(500)))
        elif kind == 5:
            header["__metadata__"] = rng.choice(([], "meta", 7, None, {"a": {"b": "c"}}))
        else:
            extra = dict(entry) if entry else {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
            header[rng.choice((*names, "t0", "x"))] = extra
            text = json.dumps(header, ensure_ascii=False)
            dup = json.dumps(rng.choice(names or ["x"])) + ":" + json.dumps(extra)
            return "duplicated", {"m.safetensors": _safetensors_join(text[:-1] + "," + dup + "}", body)}, steps
    return ("weights" if steps[0][0] == "tensors" else "checkpoint"), {
        "m.safetensors": _safetensors_join(header, body)}, steps


def _h5_feature(f: Any, name: str, rng: random.Random) -> str:
    """Replace dataset ``name`` of an open HDF5 file by one using an HDF5 feature (its name is returned);
    the ones reading other files point at ``SECRET``, which no loaded tensor may hold."""
    import h5py
    import numpy as np

    old = f[name]
    shape, dtype = old.shape, old.dtype
    del f[name]
    kind = rng.randrange(10)
    if kind == 0:  # raw storage in another file (anywhere)
        target = rng.choice(("../outside.bin", str(SECRET_PATH), "inside.bin", "/proc/self/environ"))
        f.create_dataset(name, shape=shape, dtype=dtype, external=[(target, 0, h5py.h5f.UNLIMITED)])
        return "external storage"
    if kind == 1:  # a virtual dataset mapping another file's dataset
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(rng.choice(("../outside.h5", "/etc/passwd", ".")), "data", shape=shape)
        f.create_virtual_dataset(name, layout, fillvalue=0)
        return "virtual dataset"
    if kind == 2:
        f[name] = h5py.ExternalLink(rng.choice(("../outside.h5", "/etc/passwd", "m.h5")), "/data")
        return "external link"
    if kind == 3:  # a soft link to another dataset, or dangling
        others = _h5_datasets(f)
        f[name] = h5py.SoftLink("/" + rng.choice(others) if others and rng.random() < 0.7 else "/nowhere")
        return "soft link"
    if kind == 4 and shape:  # a hard link: the same dataset under two names
        ds = f.create_dataset(name + "_twin", data=np.zeros(shape, dtype))
        f[name] = ds
        return "hard link"
    if kind == 5:  # filters and layouts
        data = np.ones(shape, dtype) if dtype.kind in "biuf" else np.zeros(shape, "f4")
        opts = rng.choice(({"compression": "gzip", "compression_opts": 9}, {"compression": "lzf"},
                           {"shuffle": True, "fletcher32": True}, {"scaleoffset": 0 if data.dtype.kind in "iu" else 2},
                           {"chunks": tuple(1 for _ in shape) or None}, {"fillvalue": 7}))
        try:
            f.create_dataset(name, data=data, **opts)
        except (TypeError, ValueError):
            f.create_dataset(name, data=data)
        return f"filter {sorted(opts)[0]}"
    if kind == 6:  # never written: its fill value only, possibly huge
        f.create_dataset(name, shape=rng.choice((shape, (2**20, 2**20), (0,))), dtype=dtype, chunks=True,
                         fillvalue=1)
        return "unwritten"
    if kind == 7:  # odd element types
        value = rng.choice((lambda: np.array([b"a", b"bc"], dtype=h5py.string_dtype("ascii")),
                            lambda: np.zeros(shape, dtype=h5py.enum_dtype({"A": 0, "B": 1}, basetype="i1")),
                            lambda: np.zeros(shape, "u8"), lambda: np.zeros(shape, "c8"),
                            lambda: np.zeros(shape, [("a", "f4")]), lambda: np.zeros(shape, ">f8")))()
        f.create_dataset(name, data=value)
        return "odd dtype"
    if kind == 8:  # an object reference where a weight should be
        f.create_dataset(name, data=f.ref if hasattr(f, "ref") else f["/"].ref, dtype=h5py.ref_dtype)
        return "reference"
    f.create_dataset(name, data=np.zeros(shape[::-1] + (2,), "f4"))  # a reshaped weight
    return "reshaped"


def _with_member(archive: bytes, member: str, payload: bytes) -> bytes:
    return _zip_build([(info.filename, payload if info.filename == member else data, info.compress_type)
                       for info, data in _zip_members(archive)])


def gen_h5(rng: random.Random, seeds: dict[str, list[Seed]]) -> tuple[str, dict[str, bytes], list]:
    """A real Keras ``.h5``, ``.weights.h5`` or ``.keras`` whose weights use HDF5 features: external raw
    storage, virtual datasets, external/soft/hard links, filters, fill values, odd element types."""
    import h5py

    folder = FOREIGN / "keras"
    model = rng.choice(("mlp", "cnn"))
    which = rng.choice(("h5", "weights.h5", "keras"))
    if which == "keras":
        archive = (folder / f"{model}.keras").read_bytes()
        member = next(i.filename for i, _ in _zip_members(archive) if i.filename.endswith(".h5"))
        data = dict((i.filename, d) for i, d in _zip_members(archive))[member]
    else:
        data = (folder / f"{model}.{which}").read_bytes()
    buf = io.BytesIO(data)
    with h5py.File(buf, "r+") as f:
        names = _h5_datasets(f)
        weights = [n for n in names if n.rsplit("/", 1)[-1] in ("0", "1", "kernel:0", "bias:0")] or names
        feature = _h5_feature(f, rng.choice(weights), rng)
    data = buf.getvalue()
    files = {"inside.bin": SECRET}
    if which == "keras":
        files["m.keras"] = _with_member(archive, member, data)
        steps = [("load", "m.keras"), ("tensors", "m.keras")]
    elif which == "h5":
        files["m.h5"] = data
        steps = [("run", "m.h5"), ("tensors", "m.h5")]
    else:
        files["w.weights.h5"] = data
        steps = [("tensors", "w.weights.h5")]
    return f"{model}.{which} {feature}", files, steps


def _odd_size(payload: bytes, rng: random.Random) -> bytes:
    n = len(payload)
    return rng.choice((lambda: b"", lambda: payload[:1], lambda: payload[: max(0, n - 1)], lambda: payload + b"\x00",
                       lambda: payload[: n // 2], lambda: payload + payload[-7:], lambda: payload[:10] + b"\xff" * 3,
                       lambda: payload * 2))()


def gen_zip(rng: random.Random, seeds: dict[str, list[Seed]]) -> tuple[str, dict[str, bytes], list]:
    """A real ``.npz``, ``.pt`` or ``.keras`` archive rebuilt with members of odd sizes, odd names
    (``../``, absolute, directories), other compression methods, duplicates or a honest deflate bomb."""
    fmt = rng.choice(("npz", "pt", "keras"))
    seed = rng.choice(seeds[fmt])
    members = [(i.filename, d, i.compress_type) for i, d in _zip_members(seed.files[seed.target])]
    what = []
    for _ in range(rng.choice((1, 1, 2))):
        i = rng.randrange(len(members))
        name, payload, method = members[i]
        kind = rng.randrange(6)
        if kind in (0, 1):
            members[i] = (name, _odd_size(payload, rng), method)
            what.append(f"odd size {name.rsplit('/', 1)[-1]}")
        elif kind == 2:
            members[i] = (name, payload, rng.choice((zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)))
            what.append("method")
        elif kind == 3:
            prefix = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
            members.append((prefix + rng.choice(("../evil.npy", "/abs.npy", "dir/", "a\\b.npy", "x.npy")),
                            _odd_size(payload, rng), zipfile.ZIP_STORED))
            what.append("odd name")
        elif kind == 4:
            members.append((name, _odd_size(payload, rng), method))
            what.append("duplicate")
        else:
            members.append((name, b"\x00" * rng.choice((2**20, 16 * 2**20, 48 * 2**20)), zipfile.ZIP_DEFLATED))
            what.append("deflate bomb")
    return f"{fmt} {', '.join(what)}", {seed.target: _zip_build(members)}, seed.steps


def _tf_attr(kind: str, rng: random.Random) -> bytes:
    """An ``AttrValue``: the kind a node expects, or (sometimes) another."""
    if rng.random() < 0.1:
        kind = rng.choice(("s", "i", "f", "b", "type", "shape", "list", "tensor"))
    if kind == "type":
        return _pb_varint_field(6, rng.choice((1, 1, 1, 1, 1, 3, 9, 10, 2, 7, 0, 99, 101, 18, 19, 23)))
    if kind == "shape":
        return _pb_bytes_field(7, _tf_shape(rng))
    if kind == "tensor":
        return _pb_bytes_field(8, _tf_tensor(rng))
    if kind == "s":
        return _pb_bytes_field(2, rng.choice((b"", b"SAME", b"VALID", b"NHWC", b"\xff\xfe", b"x" * 200)))
    if kind == "i":
        return _pb_varint_field(3, _hostile_int(rng))
    if kind == "f":
        return _uvarint((4 << 3) | 5) + struct.pack("<f", rng.choice((0.5, 1.0, float("nan"), -1e30)))
    if kind == "b":
        return _pb_varint_field(5, rng.choice((0, 1, 2)))
    ints = b"".join(_uvarint(_hostile_int(rng)) for _ in range(rng.randrange(5)))
    return _pb_bytes_field(1, _pb_bytes_field(3, ints))  # list(i): packed


def _tf_shape(rng: random.Random) -> bytes:
    if rng.random() < 0.1:
        return _pb_varint_field(3, 1)  # unknown rank
    dims = [rng.choice((1, 2, 3, 4, -1)) if rng.random() < 0.8 else rng.choice((0, -7, 2**28, 2**40, 2**62))
            for _ in range(rng.choice((0, 1, 2, 2, 3)))]
    return b"".join(_pb_bytes_field(2, _pb_varint_field(1, d)) for d in dims)


def _tf_tensor(rng: random.Random) -> bytes:
    """A ``TensorProto``: dtype, shape, and content that may not match them."""
    if rng.random() < 0.4:  # an honest float32 constant
        dims = [rng.choice((1, 2, 3)) for _ in range(rng.choice((0, 1, 2)))]
        n = 1
        for d in dims:
            n *= d
        shape = b"".join(_pb_bytes_field(2, _pb_varint_field(1, d)) for d in dims)
        content = b"".join(struct.pack("<f", rng.choice((0.5, 1.0, -2.0))) for _ in range(n))
        return _pb_varint_field(1, 1) + _pb_bytes_field(2, shape) + _pb_bytes_field(4, content)
    dtype = rng.choice((1, 1, 1, 3, 9, 2, 10, 7, 19, 18, 8, 99))
    out = _pb_varint_field(1, dtype) + _pb_bytes_field(2, _tf_shape(rng))
    r = rng.random()
    if r < 0.4:
        out += _pb_bytes_field(4, rng.randbytes(rng.choice((0, 1, 4, 8, 12, 16, 24, 33))))
    elif r < 0.7:
        floats = b"".join(struct.pack("<f", rng.choice((0.5, 1.0, -2.0))) for _ in range(rng.choice((1, 1, 3))))
        out += _pb_bytes_field(5, floats)
    elif r < 0.9:
        out += _pb_bytes_field(7, b"".join(_uvarint(_hostile_int(rng)) for _ in range(rng.choice((1, 2, 6)))))
    else:
        out += _pb_bytes_field(8, b"abc")  # string_val
    return out


_TF_OPS = {  # op -> (number of inputs, attrs it reads)
    "Placeholder": (0, {"dtype": "type", "shape": "shape"}), "Const": (0, {"dtype": "type", "value": "tensor"}),
    "Identity": (1, {"T": "type"}), "MatMul": (2, {"T": "type", "transpose_a": "b", "transpose_b": "b"}),
    "Add": (2, {"T": "type"}), "Relu": (1, {"T": "type"}), "Reshape": (2, {"T": "type", "Tshape": "type"}),
    "Fill": (2, {"T": "type", "index_type": "type"}), "Shape": (1, {"T": "type", "out_type": "type"}),
    "ConcatV2": (3, {"T": "type", "N": "i", "Tidx": "type"}), "Transpose": (2, {"T": "type", "Tperm": "type"}),
    "BiasAdd": (2, {"T": "type", "data_format": "s"}), "Cast": (1, {"SrcT": "type", "DstT": "type"}),
    "Mean": (2, {"T": "type", "keep_dims": "b", "Tidx": "type"}), "Softmax": (1, {"T": "type"}),
    "Conv2D": (2, {"T": "type", "strides": "list", "padding": "s", "data_format": "s", "dilations": "list"}),
    "MaxPool": (1, {"T": "type", "ksize": "list", "strides": "list", "padding": "s"}),
    "Tile": (2, {"T": "type", "Tmultiples": "type"}), "ExpandDims": (2, {"T": "type", "Tdim": "type"}),
    "Range": (3, {"Tidx": "type"}), "NoSuchOp": (1, {"T": "type"}),
}


def gen_tf(rng: random.Random, seeds: dict[str, list[Seed]]) -> tuple[str, dict[str, bytes], list]:
    """A TF1 ``MetaGraphDef`` (or a bare ``GraphDef`` where one is expected) written from scratch: a
    Placeholder and Consts feeding random ops whose attributes have odd values or the wrong kind."""
    nodes, names, ops = [], [], []
    for k in range(rng.randint(2, 7)):
        op = "Placeholder" if k == 0 else "Const" if k < 3 and rng.random() < 0.6 else rng.choice(list(_TF_OPS))
        n_in, attrs = _TF_OPS[op]
        name = f"n{k}" if rng.random() < 0.95 else rng.choice(("n0", "", "a:0", "^x", "ü/层"))
        body = _pb_bytes_field(1, name.encode()) + _pb_bytes_field(2, op.encode())
        for _ in range(n_in + (1 if rng.random() < 0.1 else 0) - (1 if n_in and rng.random() < 0.1 else 0)):
            ref = rng.choice(names) if names else "missing"
            ref += rng.choice(("", "", ":0", ":1", ":99")) if rng.random() < 0.3 else ""
            body += _pb_bytes_field(3, (("^" if rng.random() < 0.05 else "") + ref).encode())
        for key, kind in attrs.items():
            if rng.random() < 0.92:
                entry = _pb_bytes_field(1, key.encode()) + _pb_bytes_field(2, _tf_attr(kind, rng))
                body += _pb_bytes_field(5, entry)
        nodes.append(_pb_bytes_field(1, body))
        names.append(name)
        ops.append(op)
    graph_def = b"".join(nodes)
    meta = _pb_bytes_field(2, graph_def)
    if rng.random() < 0.2:  # a collection naming things that do not exist
        values = _pb_bytes_field(1, _pb_bytes_field(1, rng.choice((b"missing:0", b"n1:0", b""))))
        meta += _pb_bytes_field(4, _pb_bytes_field(1, b"train_op") + _pb_bytes_field(2, values))
    return "+".join(ops[1:]) or "empty", {"m.meta": meta}, [("run", "m.meta")]


_SAVED_MODELS: dict[str, dict[str, bytes]] = {}
_SM_OPS = ("While", "StatelessWhile", "If", "StatelessIf", "StatefulPartitionedCall", "PartitionedCall",
           "TensorListReserve", "TensorListGetItem", "TensorListSetItem", "TensorListStack", "_Retval", "Identity",
           "ReadVariableOp", "VarHandleOp", "Const", "Placeholder", "MatMul", "AddV2", "NoSuchOp")


def _saved_models() -> dict[str, dict[str, bytes]]:
    """The SavedModel fixtures, by name: relative path -> bytes."""
    if not _SAVED_MODELS:
        for folder in sorted(FOREIGN.glob("saved_model_*")):
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                     if p.is_file() and p.name != "expected.npz"}
            _SAVED_MODELS[folder.name.removeprefix("saved_model_")] = files
    return _SAVED_MODELS


def _sm_nodes(meta: Any) -> list[tuple[str, Any]]:
    """Every NodeDef of a meta graph (top graph and function bodies) with where it is."""
    found = [("graph", n) for n in meta.graph_def.node]
    for f in meta.graph_def.library.function:
        if "traced_save" not in f.signature.name and "traced_restore" not in f.signature.name:  # not imported
            found += [(f.signature.name, n) for n in f.node_def]
    return found


def _sm_mutate_node(meta: Any, rng: random.Random) -> str:
    from graphdnn.converters.tf_protos import message_class

    nodes = _sm_nodes(meta)
    if not nodes:
        return "no node"
    where, node = rng.choice(nodes)
    functions = [f.signature.name for f in meta.graph_def.library.function]
    r = rng.random()
    if r < 0.2:
        node.op = rng.choice(_SM_OPS + tuple(functions[:3]))
        return f"{where}/{node.name}: op {node.op}"
    if r < 0.4 and node.input:
        i = rng.randrange(len(node.input))
        node.input[i] = rng.choice((*INTERESTING_STRINGS, node.input[i] + ":7", node.input[i].split(":")[0] + ":x:0",
                                    f"{node.name}:output:0", "^" + node.input[i]))
        return f"{where}/{node.name}: input {i} {node.input[i]!r}"
    if r < 0.5 and node.input:
        del node.input[rng.randrange(len(node.input))]
        return f"{where}/{node.name}: input dropped"
    if r < 0.7 and functions:  # a call (or a While/If body) naming a missing function, or the caller itself
        key = rng.choice(("f", "body", "cond", "then_branch", "else_branch"))
        target = rng.choice((where if where != "graph" else functions[0], "missing_fn", rng.choice(functions)))
        node.attr[key].func.name = target
        if rng.random() < 0.5:
            node.op = rng.choice(("StatefulPartitionedCall", "While", "If", target))
        return f"{where}/{node.name}: {key}={target} op {node.op}"
    keys = list(node.attr) or ["T"]
    key = rng.choice(keys + ["_output_shapes", "dtype", "shape", "value"])
    kind = rng.choice(("s", "i", "f", "b", "type", "shape", "list", "tensor"))
    node.attr[key].CopyFrom(message_class("AttrValue").FromString(_tf_attr(kind, rng)))
    return f"{where}/{node.name}: attr {key} ({kind})"


def _sm_mutate_signature(meta: Any, rng: random.Random) -> str:
    if not meta.signature_def:
        return "no signature"
    name = rng.choice(sorted(meta.signature_def))
    sig = meta.signature_def[name]
    side = rng.choice(("inputs", "outputs"))
    infos = getattr(sig, side)
    if not infos:
        return f"signature {name}: no {side}"
    key = rng.choice(sorted(infos))
    info = infos[key]
    r = rng.random()
    if r < 0.35:
        info.name = rng.choice((*INTERESTING_STRINGS, info.name + "7", info.name.split(":")[0] + ":9"))
        return f"signature {name} {side} {key}: name {info.name!r}"
    if r < 0.55:
        info.dtype = rng.choice((0, 3, 7, 9, 10, 21, 99, -1))
        return f"signature {name} {side} {key}: dtype {info.dtype}"
    if r < 0.8:
        del info.tensor_shape.dim[:]
        for _ in range(rng.choice((0, 1, 3, 9))):
            info.tensor_shape.dim.add().size = rng.choice((-1, 0, 1, 3, 2**31, 2**40, -7))
        return f"signature {name} {side} {key}: shape {[d.size for d in info.tensor_shape.dim]}"
    del infos[key]
    if rng.random() < 0.3:
        infos[rng.choice(("", "x/y", "ü"))].name = rng.choice(("", "missing:0", "a:b:c"))
    return f"signature {name} {side} {key}: removed"


def _sm_mutate_library(meta: Any, rng: random.Random) -> str:
    library = meta.graph_def.library.function
    if not library:
        return "no function"
    i = rng.randrange(len(library))
    fn = library[i]
    r = rng.random()
    if r < 0.25:
        del library[i]
        return f"function {fn.signature.name} removed"
    if r < 0.5 and fn.ret:
        key = rng.choice(sorted(fn.ret))
        fn.ret[key] = rng.choice(("", "missing:output:0", "a", fn.ret[key] + ":3", fn.ret[key].split(":")[0] + ":y:0"))
        return f"function {fn.signature.name}: ret {key}={fn.ret[key]!r}"
    if r < 0.65:
        library.add().CopyFrom(fn)  # a duplicated name
        return f"function {fn.signature.name} duplicated"
    if r < 0.85 and fn.signature.input_arg:
        del fn.signature.input_arg[rng.randrange(len(fn.signature.input_arg))]
        return f"function {fn.signature.name}: argument dropped"
    fn.signature.output_arg.add().name = rng.choice(("extra", "", "output_0"))
    return f"function {fn.signature.name}: output added"


def _sm_mutate_objects(meta: Any, rng: random.Random) -> str:
    nodes = meta.object_graph_def.nodes
    if not nodes:
        return "no object graph"
    i = rng.randrange(len(nodes))
    obj = nodes[i]
    r = rng.random()
    if r < 0.4 and obj.children:
        child = obj.children[rng.randrange(len(obj.children))]
        child.node_id = rng.choice((0, i, len(nodes), 2**31 - 1, -1))
        return f"object {i}: child -> {child.node_id}"
    if r < 0.6:
        ref = obj.children.add()
        ref.node_id, ref.local_name = rng.choice((0, i)), rng.choice(INTERESTING_STRINGS)
        return f"object {i}: child {ref.local_name!r} -> {ref.node_id} (a cycle)"
    if r < 0.8:
        obj.function.concrete_functions.append(rng.choice(("missing_fn", "")))
        return f"object {i}: a function naming a missing concrete function"
    del nodes[i]
    return f"object {i} removed"


def gen_saved_model(rng: random.Random, seeds: dict[str, list[Seed]]) -> tuple[str, dict[str, bytes], list]:
    """A real SavedModel folder (``tests/fixtures/foreign/saved_model_*``) with 1-3 structure-aware lies: its
    ``saved_model.pb`` rewritten through graphdnn's own protobuf classes (nodes of the graph and of library
    functions: op types, inputs, attributes, calls of missing or recursive functions; signatures; the
    function library; the object graph), or its ``variables.index`` / ``variables.data`` mutated."""
    from graphdnn.converters.tf_protos import message_class

    models = _saved_models()
    model = rng.choice(sorted(models))
    files = dict(models[model])
    saved = message_class("SavedModel").FromString(files["saved_model.pb"])
    what = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        r = rng.random()
        metas = saved.meta_graphs
        if r < 0.08 or not metas:
            files["saved_model.pb"] = mutate_protobuf(saved.SerializeToString(), rng)
            what.append("protobuf fields")
            break
        meta = metas[rng.randrange(len(metas))]
        if r < 0.45:
            what.append(_sm_mutate_node(meta, rng))
        elif r < 0.6:
            what.append(_sm_mutate_signature(meta, rng))
        elif r < 0.72:
            what.append(_sm_mutate_library(meta, rng))
        elif r < 0.82:
            what.append(_sm_mutate_objects(meta, rng))
        else:
            target = rng.choice(sorted(k for k in files if k.startswith("variables/")))
            files[target] = (mutate_tf_index if target.endswith(".index") else mutate_bytes)(files[target], rng)
            what.append(f"{target} mutated")
    else:
        files["saved_model.pb"] = saved.SerializeToString()
    return f"{model}: {'; '.join(what)}", files, [("run", ".")]


GENERATORS: dict[str, Callable[[random.Random, dict[str, list[Seed]]], tuple[str, dict[str, bytes], list]]] = {
    "onnx_gen": gen_onnx, "safetensors_gen": gen_safetensors, "h5_gen": gen_h5, "zip_gen": gen_zip,
    "tf_gen": gen_tf, "saved_model_gen": gen_saved_model,
}


# ================================================================================== cases
@dataclass
class Case:
    fmt: str
    index: int
    seed_name: str
    files: dict[str, bytes]
    steps: list[tuple[str, str]]

    @property
    def id(self) -> str:
        return f"{self.fmt}:{self.index}"

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.files.values())


def make_case(seeds: dict[str, list[Seed]], fmt: str, index: int, base_seed: int) -> Case:
    """Case ``index`` of format ``fmt``: deterministic in ``(base_seed, fmt, index)``."""
    rng = random.Random(f"{base_seed}:{fmt}:{index}")
    if fmt in GENERATORS:
        for attempt in range(20):  # a generator whose random choices the writing library refuses: draw again
            try:
                name, files, steps = GENERATORS[fmt](rng, seeds)
                return Case(fmt, index, name, files, steps)
            except Exception:  # noqa: BLE001 - h5py/onnx.helper refusing a combination
                rng = random.Random(f"{base_seed}:{fmt}:{index}:{attempt}")
        raise RuntimeError(f"{fmt}:{index}: no case could be generated")
    seed = rng.choice(seeds[fmt])
    files = dict(seed.files)
    data = files[seed.target]
    for _ in range(rng.choice((1, 1, 1, 2))):
        data = mutate_file(seed, data, rng)
    files[seed.target] = data
    return Case(fmt, index, f"{seed.name}", files, seed.steps)


# ================================================================================= worker
def _run_steps(folder: Path, steps: list[tuple[str, str]]) -> None:
    from graphdnn.converters.named_tensors import read_named_tensors

    import graphdnn as gd
    from graphdnn.small_dtypes import storage

    for kind, rel in steps:
        path = folder / rel
        if kind in ("load", "run"):
            graph = gd.load(path)
            for op in graph.variables():  # every value is materialized (int4 & co. through their bytes)
                value = graph.values.get(op.name)
                if value is not None:
                    storage(value).sum()
                    _not_secret(rel, op.name, storage(value))
            if kind == "run":
                _compile_and_run(graph)
        elif kind == "tensors":
            for name, value in read_named_tensors(path).read(read_named_tensors(path).names()):
                _bytes_of(value).sum()  # every byte read, whatever the dtype
                _not_secret(rel, name, value)
        elif kind in _SELF_TESTS:  # the harness's own checks: a hang, a huge allocation, a crash
            _SELF_TESTS[kind]()
        else:
            raise ValueError(f"unknown step {kind!r}")


def _bytes_of(value: Any) -> Any:
    """The bytes of a tensor as a flat uint8 tensor (a dense copy: loaders may hand out expanded views)."""
    import torch

    dense = torch.empty(value.shape, dtype=value.dtype)
    dense.copy_(value)
    return dense.reshape(-1).view(torch.uint8)


def _not_secret(rel: str, name: str, value: Any) -> None:
    """Fail when a loaded tensor holds bytes of the files outside the case's folder (``SECRET``)."""
    import torch

    if not isinstance(value, torch.Tensor) or value.numel() == 0:
        return
    data = _bytes_of(value.detach().reshape(-1)[:16])[:16].numpy().tobytes()
    if len(data) >= 8 and data[:8] in SECRET:
        raise AssertionError(f"{rel}: tensor {name!r} holds bytes read from a file outside the model's folder")


class RunError(Exception):
    """A model loaded and compiled, but its forward pass on the fuzzer's inputs raised (the cause)."""


def _compile_and_run(graph: Any) -> None:
    """Compile ``graph`` and run one forward pass on small inputs of its placeholders' shapes (unknown
    dimensions become 2; int inputs are small non-negative numbers)."""
    import torch

    import graphdnn as gd
    from graphdnn.dtypes import torch_dtype

    module = gd.compile(graph)
    args = []
    for name in module.input_names:
        t = graph.get_tensor(name)
        shape = [2 if d is None else int(d) for d in (t.shape or ())] if t.shape is not None else [2]
        numel = 1
        for d in shape:
            numel *= max(d, 0)
        if numel > 2**20:
            return  # the inputs alone would be large: loading and compiling was the test
        dtype = torch_dtype(t.dtype) if t.dtype else torch.float32
        if dtype.is_floating_point:
            args.append(torch.randn(shape).to(dtype))
        elif dtype == torch.bool:
            args.append(torch.zeros(shape, dtype=torch.bool))
        else:
            args.append(torch.full(shape, 2).to(dtype))
    try:
        with torch.no_grad():
            module(*args)
    except gd.GraphDNNError:
        raise
    except Exception as exc:
        raise RunError(f"{type(exc).__name__}: {exc}") from exc


def _hang() -> None:
    while True:
        time.sleep(1)


def _allocate() -> None:
    blocks = [bytearray(2**30) for _ in range(64)]
    raise AssertionError(f"{len(blocks)} GiB allocated under the cap")


_SELF_TESTS: dict[str, Callable[[], None]] = {"_hang": _hang, "_allocate": _allocate,
                                              "_abort": lambda: os.abort(), "_raise": lambda: {}["missing"]}


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def classify(exc: BaseException | None) -> str:
    """``ok``, ``clean`` (a project error), ``run_error`` (a forward pass raised), ``memory`` or ``unexpected``."""
    from graphdnn.errors import GraphDNNError

    if exc is None:
        return "ok"
    if isinstance(exc, GraphDNNError):
        return "clean"
    if isinstance(exc, RunError):
        return "run_error"
    if isinstance(exc, MemoryError):
        return "memory"
    return "unexpected"


def worker_main() -> None:
    """Serve cases: one JSON request per line on stdin, one JSON answer per line on fd 3's dup."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a loader prints goes to stderr, not into the protocol
    import warnings

    warnings.simplefilter("ignore")
    import graphdnn.converters.keras_import  # noqa: F401
    import graphdnn.converters.named_tensors  # noqa: F401
    import graphdnn.converters.onnx_import  # noqa: F401
    import graphdnn.converters.tf_import  # noqa: F401
    import h5py  # noqa: F401 - everything is imported before the cap is set
    import onnx.shape_inference  # noqa: F401

    import graphdnn  # noqa: F401

    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("warmup"):
            try:
                _run_steps(Path(req["folder"]), [tuple(s) for s in req["steps"]])
            except Exception:  # noqa: BLE001 - warm-up only imports lazily loaded modules
                pass
            out.write(json.dumps({"outcome": "warm"}) + "\n")
            continue
        cap = _vm_size() + int(req["budget"])
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
        reply: dict[str, Any]
        try:
            _run_steps(Path(req["folder"]), [tuple(s) for s in req["steps"]])
            reply = {"outcome": "ok"}
        except BaseException as exc:  # noqa: BLE001 - everything is classified and reported
            outcome = classify(exc)
            reply = {"outcome": outcome, "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                     "message": str(exc)[:400]}
            if outcome != "clean":
                reply["traceback"] = "".join(traceback.format_exception(exc)[-6:])[-2000:]
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        out.write(json.dumps(reply) + "\n")


class Worker:
    """A worker subprocess; replaced whenever it hangs or dies."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MALLOC_ARENA_MAX="2",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.logf, text=True, env=env, cwd=str(ROOT))
        if self._read(120) is None:
            raise RuntimeError(f"fuzz worker did not start; see {self.log}")

    def _read(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"outcome": "crash"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except BrokenPipeError:
                        pass
            self.proc = None
            self.logf.close()

    def ask(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            reply: dict[str, Any] | None = {"outcome": "crash"}
        else:
            reply = self._read(timeout)
        if reply is None:
            self.stop()
            return {"outcome": "timeout", "message": f"no answer within {timeout} s"}
        if reply["outcome"] == "crash":
            self.proc.wait()
            code = self.proc.returncode
            self.stop()
            return {"outcome": "crash", "message": f"worker exited with {code}", "tail": _tail(self.log)}
        return reply


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_bytes()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


# ================================================================================== driver
@dataclass
class Report:
    cases: int
    seed: int
    formats: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    run_errors: list[dict[str, Any]] = field(default_factory=list)  # the first few, for reading
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        totals = {k: sum(v[k] for v in self.formats.values()) for k in ("cases", *OUTCOMES)}
        return {"cases_per_format": self.cases, "seed": self.seed, "seconds": round(self.seconds, 1),
                "formats": self.formats, "totals": totals, "failures": self.failures, "run_errors": self.run_errors}


def _write_case(folder: Path, case: Case) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for rel, data in case.files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def run_fuzz(cases: int, *, seed: int = 0, formats: tuple[str, ...] = FORMATS, timeout: float = 20.0,
             jobs: int = 2, mem_base_mb: int = 512, mem_per_byte: int = 64,
             progress: Callable[[str], None] | None = None) -> Report:
    """Run ``cases`` mutated inputs per format through the loaders in ``jobs`` workers."""
    start = time.perf_counter()
    report = Report(cases, seed)
    with tempfile.TemporaryDirectory(prefix="graphdnn-fuzz-") as tmp:
        work = Path(tmp)
        (work / "seeds").mkdir()
        seeds = make_seeds(work / "seeds")
        queue: list[tuple[str, int]] = [(f, i) for i in range(cases) for f in formats]
        lock = threading.Lock()
        for f in formats:
            report.formats[f] = {"cases": 0, **dict.fromkeys(OUTCOMES, 0)}
        (work / "outside.bin").write_bytes(SECRET)  # what "../outside.*" in a case points at
        if not SECRET_PATH.is_file() or SECRET_PATH.read_bytes() != SECRET:
            SECRET_PATH.write_bytes(SECRET)
        (work / "outside.h5").write_bytes(_outside_h5())

        def serve(slot: int) -> None:
            worker = Worker(work / f"worker{slot}.log")
            folder = work / f"case{slot}"
            try:
                for s in (seeds[f][0] for f in MUTATED):  # warm-up (imports what loaders import lazily), unmutated
                    _write_case(folder, Case(s.fmt, -1, s.name, s.files, s.steps))
                    worker.ask({"warmup": True, "folder": str(folder), "steps": s.steps}, 600)
                while True:
                    with lock:
                        if not queue:
                            return
                        fmt, index = queue.pop(0)
                    case = make_case(seeds, fmt, index, seed)
                    _write_case(folder, case)
                    budget = mem_base_mb * 2**20 + mem_per_byte * case.size
                    reply = worker.ask({"folder": str(folder), "steps": case.steps, "budget": budget}, timeout)
                    with lock:
                        counts = report.formats[fmt]
                        counts["cases"] += 1
                        counts[reply["outcome"]] += 1
                        if reply["outcome"] == "run_error" and len(report.run_errors) < 50:
                            report.run_errors.append({"case": case.id, "seed_file": case.seed_name,
                                                      "message": reply.get("message", "")[:200]})
                        if reply["outcome"] in FAILURES:
                            report.failures.append({"case": case.id, "seed_file": case.seed_name, "seed": seed,
                                                    **reply})
                            if progress:
                                progress(f"{case.id} ({case.seed_name}): {reply['outcome']} {reply.get('type', '')} "
                                         f"{reply.get('message', '')[:200]}")
            finally:
                worker.stop()

        threads = [threading.Thread(target=serve, args=(i,)) for i in range(max(1, jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    report.failures.sort(key=lambda f: (f["case"].split(":")[0], int(f["case"].split(":")[1])))
    report.seconds = time.perf_counter() - start
    return report


def _outside_h5() -> bytes:
    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("data", data=np.frombuffer(SECRET[:256], dtype="f4"))
    return buf.getvalue()


def check_seeds() -> dict[str, str]:
    """Every unmutated seed loads (in-process): ``{format:seed name: outcome}``."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="graphdnn-fuzz-") as tmp:
        work = Path(tmp)
        (work / "seeds").mkdir()
        for fmt, seeds in make_seeds(work / "seeds").items():
            for s in seeds:
                folder = work / "case"
                _write_case(folder, Case(fmt, -1, s.name, s.files, s.steps))
                try:
                    _run_steps(folder, s.steps)
                    out[f"{fmt}:{s.name}"] = "ok"
                except Exception as exc:  # noqa: BLE001 - reported
                    out[f"{fmt}:{s.name}"] = f"{type(exc).__name__}: {exc}"
    return out


def reproduce(case_id: str, seed: int, keep: Path | None = None) -> None:
    """Rerun one case in this process and print what happened (and keep its files in ``keep``)."""
    fmt, index = case_id.split(":")
    with tempfile.TemporaryDirectory(prefix="graphdnn-fuzz-") as tmp:
        work = Path(tmp)
        (work / "seeds").mkdir()
        case = make_case(make_seeds(work / "seeds"), fmt, int(index), seed)
        folder = keep or work / "case"
        _write_case(folder, case)
        print(f"case {case.id} from seed file {case.seed_name}: steps {case.steps} in {folder}")
        try:
            _run_steps(folder, case.steps)
            print("outcome: ok")
        except BaseException as exc:  # noqa: BLE001 - printed
            print(f"outcome: {classify(exc)}")
            traceback.print_exc()


def _iter_table(report: Report) -> Iterator[str]:
    yield (f"{'format':<16}{'cases':>6}{'ok':>6}{'clean':>7}{'run_error':>10}{'unexpected':>11}{'budget':>7}"
           f"{'timeout':>8}{'crash':>6}")
    for fmt, c in report.formats.items():
        yield (f"{fmt:<16}{c['cases']:>6}{c['ok']:>6}{c['clean']:>7}{c['run_error']:>10}{c['unexpected']:>11}"
               f"{c['memory']:>7}{c['timeout']:>8}{c['crash']:>6}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200, help="cases per format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--mem-base-mb", type=int, default=512)
    parser.add_argument("--mem-per-byte", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--reproduce", metavar="FORMAT:INDEX")
    parser.add_argument("--keep", type=Path, help="with --reproduce: write the case's files here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    if args.reproduce:
        reproduce(args.reproduce, args.seed, args.keep)
        return 0
    formats = tuple(f for f in args.formats.split(",") if f)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    report = run_fuzz(args.cases, seed=args.seed, formats=formats, timeout=args.timeout, jobs=args.jobs,
                      mem_base_mb=args.mem_base_mb, mem_per_byte=args.mem_per_byte,
                      progress=lambda s: print(s, file=sys.stderr, flush=True))
    for line in _iter_table(report):
        print(line)
    print(f"{report.seconds:.1f} s, seed {args.seed}")
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2))
    return 1 if any(report.formats[f][k] for f in formats for k in FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
