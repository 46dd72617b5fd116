"""Strings read from model files are data, never code: attribute names, op types, domains, op, tensor
and scope names and metadata keys from ONNX files and graphdnn checkpoints either work as plain data
(the model computes what a handwritten reference computes) or are refused with a ``GraphDNNError``
naming them. Nothing a file says runs: a canary file that hostile strings try to create never appears."""

from __future__ import annotations

import ast
import json
import keyword
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from graphdnn.converters.onnx_import import load_onnx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from safetensors import safe_open
from safetensors.torch import save_file

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.cli import main as cli_main
from graphdnn.errors import GraphDNNError, GraphError

CANARY = Path("/tmp") / f"graphdnn-untrusted-names-canary-{os.getpid()}"
RUN = f"__import__('os').system('touch {CANARY}')"
HOSTILE_KEYS = [
    f"a={RUN},b",  # closes the keyword, calls, opens another keyword
    f"x=1)\n{RUN}\n#",
    f"**{{'{RUN}': 1}}",
    "class", "None", "a b", "a.b", "ü", "1x", "", "x", "training", "_outputs", "self", "torch",
]
HOSTILE_NAMES = [
    f'a"""; {RUN}; """',  # closes fx's meta block (FX_GRAPH_SHOW_META=1)
    f"x')\n{RUN}\n#", 'q"\'\\n', "class", "a.b", "%2E", "sp ace", "ünï/层", "self", "getattr", "__dunder__",
]
ALPHA = 0.2  # graphdnn.nn.leaky_relu's slope


@pytest.fixture(autouse=True)
def _no_canary():
    CANARY.unlink(missing_ok=True)
    yield
    assert not CANARY.exists(), "a string read from a file ran as code"


def _refused(exc: BaseException, offending: str) -> None:
    """A clean refusal: a GraphDNNError whose message names the offending string."""
    assert isinstance(exc, GraphDNNError), f"{type(exc).__name__}: {exc}"
    assert offending in str(exc) or repr(offending) in str(exc), str(exc)


def _check_code(code: str) -> None:
    """The generated code is plain Python: ASCII identifiers (none that imports or evaluates), keyword
    names that are identifiers, string literals (escaped module paths) without quotes, backslashes or
    unprintable characters, so no hostile name can have closed one of them."""
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            assert node.id.isascii() and node.id not in ("eval", "exec", "__import__", "compile", "open"), node.id
        elif isinstance(node, ast.Attribute):
            assert node.attr not in ("system", "popen"), node.attr
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert all(ch.isprintable() and ch not in "\"'\\" for ch in node.value), node.value
        elif isinstance(node, ast.keyword):
            assert node.arg is None or (node.arg.isascii() and node.arg.isidentifier()), node.arg


# -- ONNX files ---------------------------------------------------------------------------------
def _onnx_model(inp: str = "x", w: str = "w", mid: str = "m", out: str = "y", n1: str = "add", n2: str = "act",
                key: str | None = None, value: Any = 1) -> onnx.ModelProto:
    """``y = LeakyRelu(x + w, alpha=0.25)``, optionally with one more attribute ``key`` on LeakyRelu."""
    weight = numpy_helper.from_array(np.array([-1.0, 0.5, 2.0], np.float32), w)
    add = helper.make_node("Add", [inp, w], [mid], name=n1)
    act = helper.make_node("LeakyRelu", [mid], [out], name=n2, alpha=0.25)
    if key is not None:
        act.attribute.append(helper.make_attribute(key, value))
    graph = helper.make_graph([add, act], "g", [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2, 3])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _onnx_reference(x: np.ndarray) -> np.ndarray:
    z = x + np.array([-1.0, 0.5, 2.0], np.float32)
    return np.where(z > 0, z, 0.25 * z)


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_onnx_attribute_name_never_reaches_code(tmp_path: Path, key: str) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_onnx_model(key=key), str(path))
    graph = gd.load(path)
    assert key in graph.get_operation("act").attrs  # imported as data
    with pytest.raises(GraphDNNError) as info:
        gd.compile(graph)(torch.ones(2, 3))
    _refused(info.value, key)
    with pytest.raises(GraphDNNError) as info:  # and export names it too
        gd.export_onnx(gd.load(gd.save(graph, tmp_path / "m.safetensors")), tmp_path / "back.onnx")
    _refused(info.value, key)


def test_onnx_attribute_known_by_name_is_used() -> None:
    model = gd.compile(load_onnx(_onnx_model()))
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), _onnx_reference(x), rtol=1e-6)
    assert "alpha = 0.25" in model.code  # readable: plain attributes stay visible in the code


def _if_model(key: str, on_body: bool) -> onnx.ModelProto:
    """``y = If(c, then: Relu(x), else: Neg(x))`` with a hostile attribute name on the then-body's node
    (``on_body``) or as a graph-valued attribute of the If node itself."""
    then_node = helper.make_node("Relu", ["x"], ["t"], name="relu")
    if on_body:
        then_node.attribute.append(helper.make_attribute(key, 1))
    out = [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])]
    then_g = helper.make_graph([then_node], "then", [], out)
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["t"], name="neg")], "else", [], out)
    node = helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g)
    if not on_body:
        node.attribute.append(helper.make_attribute(key, then_g))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("on_body", [True, False], ids=["inside-body", "body-attribute"])
def test_control_flow_bodies_keep_attribute_names_out_of_code(on_body: bool) -> None:
    key = HOSTILE_KEYS[0]
    with pytest.raises(GraphDNNError) as info:
        graph = load_onnx(_if_model(key, on_body))
        gd.compile(graph)(torch.tensor(True), torch.tensor([-1.0, 2.0]))
    _refused(info.value, key)


# -- graphdnn checkpoints (graph JSON in the safetensors metadata) -------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    g = gd.Graph("m")
    x = g.placeholder("X", (None, 3))
    with g.name_scope("dnn"):
        h = layers.dense(x, 2, name="hidden1", activation=nn.leaky_relu)
    g.add_to_collection("outputs", h)
    return gd.save(g, tmp_path_factory.mktemp("ckpt") / "m.safetensors")


def _rewrite(src: Path, dst: Path, edit: Callable[[dict, dict, dict], None]) -> Path:
    """Copy a checkpoint with ``edit(graph_doc, tensors, metadata)`` applied, written by the safetensors
    library itself (the graph JSON spelled with ASCII escapes, as ``json.dumps`` does by default)."""
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    doc = json.loads(meta["graphdnn.graph"])
    edit(doc, tensors, meta)
    meta["graphdnn.graph"] = json.dumps(doc)
    meta["graphdnn.collections"] = json.dumps(doc["collections"])
    save_file(tensors, str(dst), metadata=meta)
    return dst


def _rename(doc: Any, old: str, new: str) -> Any:
    """Every reference to op ``old`` (``old`` and ``old:<i>``) renamed to ``new``."""
    if isinstance(doc, str):
        return new + doc[len(old):] if doc == old or doc.startswith(old + ":") else doc
    if isinstance(doc, list):
        return [_rename(v, old, new) for v in doc]
    if isinstance(doc, dict):
        return {k: _rename(v, old, new) for k, v in doc.items()}
    return doc


def _op(doc: dict, op_type: str) -> dict:
    return next(op for op in doc["ops"] if op["type"] == op_type)


def _set_attr(key: str) -> Callable[[dict, dict, dict], None]:
    return lambda doc, tensors, meta: _op(doc, "LeakyRelu")["attrs"].__setitem__(key, 1)


def _set(field: str, value: str) -> Callable[[dict, dict, dict], None]:
    return lambda doc, tensors, meta: _op(doc, "LeakyRelu").__setitem__(field, value)


def _rename_op(old: str, new: str, tensor: bool = False) -> Callable[[dict, dict, dict], None]:
    def edit(doc: dict, tensors: dict, meta: dict) -> None:
        doc.update(_rename(doc, old, new))
        if tensor:
            tensors[new] = tensors.pop(old)
    return edit


def _read_input(value: str) -> Callable[[dict, dict, dict], None]:
    return lambda doc, tensors, meta: _op(doc, "LeakyRelu").__setitem__("inputs", [value])


def _metadata_keys(key: str) -> Callable[[dict, dict, dict], None]:
    def edit(doc: dict, tensors: dict, meta: dict) -> None:
        doc["meta"][key] = key
        doc["collections"][key] = ["X:0"]
        doc["aliases"] = {key: "X:0"}
        doc["scopes"].append(key)
        _op(doc, "LeakyRelu")["meta"] = {key: key}
        meta[key] = key  # a user metadata entry of the safetensors file
    return edit


# (edit, offending string; None: the model must compute the reference)
_EDITS = {
    "attribute-key": (_set_attr(HOSTILE_KEYS[0]), HOSTILE_KEYS[0]),
    "attribute-key-newline": (_set_attr(HOSTILE_KEYS[1]), HOSTILE_KEYS[1]),
    "attribute-key-identifier": (_set_attr("self"), "self"),
    "op-type": (_set("type", HOSTILE_KEYS[0]), HOSTILE_KEYS[0]),
    "domain": (_set("domain", HOSTILE_KEYS[0]), HOSTILE_KEYS[0]),
    "tensor-name": (_read_input(f"X{HOSTILE_NAMES[1]}:0"), f"X{HOSTILE_NAMES[1]}:0"),
    "op-name": (_rename_op("dnn/hidden1/LeakyRelu", HOSTILE_NAMES[0]), None),
    "op-name-newline": (_rename_op("dnn/hidden1/LeakyRelu", HOSTILE_NAMES[1]), None),
    "op-name-tensor-like": (_rename_op("dnn/hidden1/BiasAdd", "x:0"), None),
    "placeholder-name": (_rename_op("X", HOSTILE_NAMES[1]), None),
    "variable-name": (_rename_op("hidden1/kernel", HOSTILE_NAMES[0], tensor=True), None),
    "variable-name-dots": (_rename_op("hidden1/bias", "a.b/%2E/self/__init__", tensor=True), None),
    "metadata-keys": (_metadata_keys(HOSTILE_NAMES[1]), None),
    "lone-surrogate-op-name": (_rename_op("dnn/hidden1/LeakyRelu", "a\ud800b"), "lone surrogate"),
    "lone-surrogate-attribute-key": (_set_attr("k\udfff"), "lone surrogate"),
    "lone-surrogate-metadata-key": (lambda doc, tensors, meta: doc["meta"].__setitem__("\ud83d", 1), "lone surrogate"),
}


@pytest.mark.parametrize("case", list(_EDITS))
def test_checkpoint_strings_are_data(tmp_path: Path, checkpoint: Path, case: str) -> None:
    edit, offending = _EDITS[case]
    path = _rewrite(checkpoint, tmp_path / "m.safetensors", edit)
    x = torch.randn(4, 3)
    try:
        graph = gd.load(path)
        model = gd.compile(graph).eval()
        got = model(x)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        assert offending is not None, f"{type(exc).__name__}: {exc}"
        _refused(exc, offending)
        return
    assert offending is None, f"{case}: loaded and ran although it names {offending!r}"
    _check_code(model.code)
    original = gd.load(checkpoint)
    kernel, bias = original.values["hidden1/kernel"], original.values["hidden1/bias"]
    torch.testing.assert_close(got, F.leaky_relu(x @ kernel + bias, ALPHA), rtol=1e-6, atol=1e-6)
    again = gd.load(gd.save(graph, tmp_path / "again.safetensors"))  # and it saves and loads again
    torch.testing.assert_close(gd.compile(again).eval()(x), got, rtol=0, atol=0)


def test_variable_with_a_hostile_name_is_reachable(tmp_path: Path, checkpoint: Path) -> None:
    name = HOSTILE_NAMES[0]
    graph = gd.load(_rewrite(checkpoint, tmp_path / "m.safetensors", _rename_op("hidden1/kernel", name, tensor=True)))
    model = gd.compile(graph)
    torch.testing.assert_close(model.variable(name), gd.load(checkpoint).values["hidden1/kernel"])
    assert gd.state_key(name) in model.state_dict()


def test_cli_run_refuses_a_hostile_attribute_name(tmp_path: Path, checkpoint: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    key = HOSTILE_KEYS[0]
    path = _rewrite(checkpoint, tmp_path / "m.safetensors", _set_attr(key))
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    status = cli_main(["run", str(path), "--engine", "torch", "--input", f"X={tmp_path / 'x.npy'}"])
    assert status == 1
    out = capsys.readouterr()
    assert "not an attribute name" in out.err + out.out


def test_node_meta_is_kept_out_of_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """``FX_GRAPH_SHOW_META=1`` makes torch.fx write node meta into the code, in a triple-quoted block
    that a name holding triple quotes would close."""
    monkeypatch.setenv("FX_GRAPH_SHOW_META", "1")
    torch.manual_seed(0)
    g = gd.Graph("m")
    x = g.placeholder(HOSTILE_NAMES[0], (None, 3))
    layers.dense(x, 2, name=HOSTILE_NAMES[0] + "/d", activation=nn.relu)
    model = gd.compile(g)
    value = torch.randn(2, 3)
    kernel, bias = g.values[HOSTILE_NAMES[0] + "/d/kernel"], g.values[HOSTILE_NAMES[0] + "/d/bias"]
    torch.testing.assert_close(model(value), torch.relu(value @ kernel + bias))
    model.recompile()
    assert RUN not in model.code
    torch.testing.assert_close(model(value), torch.relu(value @ kernel + bias))


# -- attribute values: small plain data in the code, anything else by reference ------------------
def test_attribute_values_that_are_not_plain_data_are_passed_by_reference() -> None:
    g = gd.Graph("m")
    x = g.placeholder("x", (None, 3))
    y = g.add_op("LeakyRelu", [x], {"alpha": np.float64(0.3)}).out()  # repr: np.float64(0.3)
    keys = list(range(300))
    values = [k * 7 - 5 for k in keys]
    i = g.placeholder("i", (4,), "int64")
    z = g.add_op("LabelEncoder", [i], {"keys_int64s": keys, "values_int64s": values, "default_int64": -1},
                 domain="ai.onnx.ml").out()
    model = gd.compile(g, inputs=[x, i], outputs=[y, z])
    assert "self._attr0" in model.code and "self._attr1" in model.code
    assert "np.float64" not in model.code and str(values[:20])[1:-1] not in model.code
    value, ids = torch.randn(2, 3), torch.tensor([0, 299, 300, 17])
    got_y, got_z = model(value, ids)
    torch.testing.assert_close(got_y, torch.where(value > 0, value, 0.3 * value))
    assert got_z.tolist() == [-5, 299 * 7 - 5, -1, 17 * 7 - 5]


# -- lone surrogates: refused when created, never a UnicodeEncodeError at save ---------------------
@pytest.mark.parametrize("make", ["placeholder", "dense", "variable", "scope", "rename"])
def test_lone_surrogate_names_are_refused_when_created(make: str) -> None:
    g = gd.Graph("m")
    x = g.placeholder("x", (None, 3))
    bad = "w\ud800"
    with pytest.raises(GraphError, match="lone surrogate"):
        if make == "placeholder":
            g.placeholder(bad, (None, 3))
        elif make == "dense":
            layers.dense(x, 2, name=bad)
        elif make == "variable":
            g.variable(bad, (3,))
        elif make == "scope":
            with g.name_scope(bad):
                pass
        else:
            g.rename_ops({"x": bad})


@pytest.mark.parametrize("where", ["attribute key", "attribute value", "graph meta"])
def test_lone_surrogate_strings_are_refused_at_save(tmp_path: Path, where: str) -> None:
    g = gd.Graph("m")
    x = g.placeholder("x", (None, 3))
    attrs = g.get_operation(g.add_op("Relu", [x]).op.name).attrs
    if where == "attribute key":
        attrs["\udc80"] = "v"
    elif where == "attribute value":
        attrs["note"] = "v\udc80"
    else:
        g.meta["k\ud800"] = 1
    with pytest.raises(GraphError, match="lone surrogate"):
        gd.save(g, tmp_path / "m.safetensors")


def test_escaped_surrogate_pairs_are_text(tmp_path: Path, checkpoint: Path) -> None:
    """``json.dumps`` spells 🙂 as the pair ``\\ud83d\\ude42``: a valid character, not a lone surrogate."""
    path = _rewrite(checkpoint, tmp_path / "m.safetensors", _rename_op("dnn/hidden1/LeakyRelu", "🙂"))
    assert "\\ud83d\\ude42" in safe_open(str(path), "pt").metadata()["graphdnn.graph"]
    assert gd.load(path).get_operation("🙂").type == "LeakyRelu"


# -- property: any text through import -> compile -> forward -> save -> load -> export -------------
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8),  # any UTF-8 text
    st.sampled_from(HOSTILE_NAMES + HOSTILE_KEYS[:3] + [".", "/", ":", "a:0", ":0", "'", '"', "\n", "\\"]),
    st.sampled_from(sorted(keyword.kwlist)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(values=st.lists(TEXT, min_size=4, max_size=4, unique=True),
       nodes=st.lists(TEXT, min_size=2, max_size=2, unique=True),
       key=st.one_of(st.none(), TEXT.filter(lambda k: k != "alpha")))
@example(values=[HOSTILE_NAMES[0], "class", "a.b", "y:0"], nodes=["", RUN], key=None)
@example(values=["x", "w", "m", "y"], nodes=["n", "n"], key=HOSTILE_KEYS[0])
def test_onnx_names_and_attribute_keys_are_data(tmp_path: Path, values: list[str], nodes: list[str],
                                                key: str | None) -> None:
    CANARY.unlink(missing_ok=True)
    source = _onnx_model(*values, *nodes, key=key)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    expected = _onnx_reference(x)
    graph = load_onnx(source)
    act = next(op for op in graph.operations() if op.type == "LeakyRelu")
    if key is not None:
        assert act.attrs[key] == 1
        with pytest.raises(GraphDNNError) as info:
            gd.compile(graph)
        _refused(info.value, key)
        loaded = gd.load(gd.save(graph, tmp_path / "m.safetensors"))
        assert loaded.get_operation(act.name).attrs == act.attrs  # the key stays data through a checkpoint
        with pytest.raises(GraphDNNError) as info:
            gd.export_onnx(loaded, tmp_path / "m.onnx")
        _refused(info.value, key)
        assert not CANARY.exists()
        return
    model = gd.compile(graph)
    _check_code(model.code)
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-6)
    loaded = gd.load(gd.save(model, tmp_path / "m.safetensors"))
    assert [op.name for op in loaded.operations()] == [op.name for op in graph.operations()]
    np.testing.assert_allclose(gd.compile(loaded)(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-6)
    proto = gd.export_onnx(loaded, tmp_path / "m.onnx")
    assert [i.name for i in proto.graph.input] == [values[0]] and [o.name for o in proto.graph.output] == [values[3]]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {values[0]: x})[0], expected, rtol=1e-6)
    back = load_onnx(tmp_path / "m.onnx")
    np.testing.assert_allclose(gd.compile(back)(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-6)
    assert not CANARY.exists()


@settings(max_examples=40, deadline=None)
@given(name=st.text(min_size=1, max_size=6))  # any code points, lone surrogates included
def test_any_variable_name_is_refused_when_created_or_round_trips(name: str) -> None:
    encodable = not any(0xD800 <= ord(ch) <= 0xDFFF for ch in name)
    g = gd.Graph("m")
    try:
        g.variable(name, (2,), initializer=gd.initializers.constant(1.5))
    except GraphError as exc:
        assert not encodable or (":" in name and name.rpartition(":")[2].isdigit()), str(exc)
        return
    assert encodable
    loaded = gd.Graph.from_json(g.to_json(), initialize=True)
    assert [op.name for op in loaded.variables()] == [name]
    assert loaded.values[name].tolist() == [1.5, 1.5]

