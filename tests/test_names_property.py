"""Names are data: arbitrary names survive graph -> compile -> save -> load -> export -> import
unchanged, and never reach generated code unsanitized (property tests with hypothesis)."""

from __future__ import annotations

import ast
import keyword
import string
import unicodedata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.onnx_import import load_onnx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.errors import GraphError
from graphdnn.names import check_name, graph_name, state_key

CANARY = Path("/tmp") / f"graphdnn-names-canary-{__name__}"
HOSTILE = [
    f"__import__('os').system('touch {CANARY}')", "exec(\"import os\")", 'quote"\'\n\\newline', "ünïcødé/层",
    "class", "def", "lambda", "None", "training", "forward", "_private", "__dunder__", "a.b", "%41", "%", "a//b",
    "trail/", "/lead", "a:b", ":0x", "x\x00y", "\u2028sep", "🙂", " ", "\t", "self", "torch", "getattr",
    "1st", "-", "{}", "${x}", "\\", "'; rm -rf / #", "\r\n",
]
# any unicode text except lone surrogates (not valid UTF-8, so no file format can hold them)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
NAME = st.one_of(st.sampled_from(HOSTILE), ANY_TEXT, st.sampled_from(sorted(keyword.kwlist))).filter(
    lambda n: _valid(n))
_SAFE_CODE_CHARS = set(string.ascii_letters + string.digits + "_-+=@#$&()[]{},;:!?<>|~^* %.")


def _code_safe(text: str, extra: str = "") -> bool:
    """Only characters that are inert in a Python string literal: printable letters and digits of any
    script, and the ASCII punctuation ``names.state_key`` leaves unescaped (no quotes, backslashes,
    newlines or control characters)."""
    return all((ch.isalnum() and ch.isprintable()) or ch in _SAFE_CODE_CHARS or ch in extra for ch in text)


def _valid(name: str) -> bool:
    try:
        check_name(name)
    except GraphError:
        return False
    return True


def _build(names: list[str], input_name: str) -> tuple[gd.Graph, str]:
    torch.manual_seed(0)
    g = gd.Graph("names")
    h = g.placeholder(input_name, (None, 3))
    for i, name in enumerate(names):
        h = layers.dense(h, 3, name=name, activation=nn.elu if i % 2 else nn.relu)
    return g, h.name


def _check_code(code: str, names: list[str]) -> None:
    """The generated forward is plain Python whose strings are escaped state keys, with no call to
    anything a name could smuggle in."""
    tree = ast.parse(code)
    texts = []  # every string and identifier of the code (a name like '"' is part of its syntax)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert _code_safe(node.value), node.value
            assert state_key(graph_name(node.value)) == node.value
            texts.append(node.value)
        if isinstance(node, ast.Name):
            assert node.id.isidentifier() and node.id.isascii() and node.id not in ("eval", "exec", "__import__")
            texts.append(node.id)
    for name in names:
        if not _code_safe(name):
            assert not any(name in text for text in texts)


def _same_names(a: gd.Graph, b: gd.Graph) -> None:
    assert [op.name for op in a.operations()] == [op.name for op in b.operations()]
    assert sorted(op.name for op in a.variables()) == sorted(op.name for op in b.variables())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(names=st.lists(NAME, min_size=1, max_size=3, unique=True), input_name=NAME)
@example(names=["º", "가", "ﬁ"], input_name="torch")  # NFKC-unstable identifiers; a shadowed global
@example(names=["torch", "getattr", "operator"], input_name="self")
def test_any_name_survives_every_round_trip(tmp_path: Path, names: list[str], input_name: str) -> None:
    g, out = _build(names, input_name)
    x = torch.randn(4, 3)

    model = gd.compile(g, outputs=[out]).eval()
    _check_code(model.code, names + [input_name])
    expected = model(x).detach()
    assert sorted(model.variable_names) == sorted(op.name for op in g.variables())
    for key in model.state_dict():
        assert graph_name(key) in g.values

    path = gd.save(model, tmp_path / "m.safetensors")
    loaded = gd.load(path)
    _same_names(g, loaded)
    assert all(torch.equal(loaded.values[k], g.values[k]) for k in g.values)
    assert loaded.get_tensor(out).name == out
    torch.testing.assert_close(gd.compile(loaded, outputs=[out]).eval()(x), expected, rtol=1e-6, atol=1e-6)

    proto = gd.export_onnx(loaded, tmp_path / "m.onnx", outputs=[out])
    assert {t.name for t in proto.graph.initializer} == {op.name for op in g.variables()}
    assert [i.name for i in proto.graph.input] == [input_name]
    assert [o.name for o in proto.graph.output] == [out]
    assert {n.name for n in proto.graph.node} <= {op.name for op in g.operations()}
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")), full_check=True)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {input_name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=1e-5)

    back = load_onnx(tmp_path / "m.onnx")
    _same_names(g, back)
    assert all(torch.equal(back.values[k], g.values[k]) for k in g.values)
    torch.testing.assert_close(gd.compile(back, outputs=[out]).eval()(x), expected, rtol=1e-6, atol=1e-6)
    gd.save(back, tmp_path / "again.safetensors")
    _same_names(g, gd.load(tmp_path / "again.safetensors"))
    assert not CANARY.exists()


@given(name=NAME)
@settings(max_examples=200, deadline=None)
def test_state_key_is_reversible_and_code_safe(name: str) -> None:
    key = state_key(name)
    assert graph_name(key) == name
    for segment in key.split("."):
        assert segment and _code_safe(segment) and "." not in segment
        assert unicodedata.normalize("NFKC", segment) == segment  # Python reads identifiers in NFKC
        assert not keyword.iskeyword(segment) and not segment.startswith("_")


@pytest.mark.parametrize("name", HOSTILE[:4])
def test_hostile_names_in_graph_json_are_data(tmp_path: Path, name: str) -> None:
    g, out = _build([name], name if _valid(name) else "X")
    text = g.to_json()
    g2 = gd.Graph.from_json(text, initialize=True)
    _same_names(g, g2)
    gd.compile(g2, outputs=[out])(torch.randn(2, 3))
    assert not CANARY.exists()
