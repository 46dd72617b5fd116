"""ONNX ``Gradient`` (ai.onnx.preview.training): derivatives of part of the graph, by autograd."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from graphdnn.converters.onnx_export import export_onnx
from graphdnn.converters.onnx_import import load_onnx
from onnx import TensorProto as T
from onnx import helper as h

import graphdnn as gd
from graphdnn.errors import GraphError

TRAINING = "ai.onnx.preview.training"


def _model(xs=("a", "b"), zs=("w",), y="d") -> onnx.ModelProto:
    """d = sum(tanh((a + b) * a * w)); Gradient of d w.r.t. a and b, with w fed as a z."""
    nodes = [h.make_node("Add", ["a", "b"], ["c"]), h.make_node("Mul", ["c", "a"], ["e"]),
             h.make_node("Mul", ["e", "w"], ["f"]), h.make_node("Tanh", ["f"], ["g"]),
             h.make_node("ReduceSum", ["g"], ["d"], keepdims=0),
             h.make_node("Gradient", ["a", "b", "w"], ["da", "db"], domain=TRAINING, name="grad",
                         xs=list(xs), zs=list(zs), y=y)]
    vi = [h.make_tensor_value_info(n, T.FLOAT, [3]) for n in ("a", "b", "w")]
    outs = [h.make_tensor_value_info("d", T.FLOAT, []), h.make_tensor_value_info("da", T.FLOAT, [3]),
            h.make_tensor_value_info("db", T.FLOAT, [3])]
    graph = h.make_graph(nodes, "grad", vi, outs)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid(TRAINING, 1)])


def _expected(a, b, w):
    """By hand: d = sum(tanh(w a (a + b))); dd/da = (1 - tanh^2) w (2a + b), dd/db = (1 - tanh^2) w a."""
    t = np.tanh(w * a * (a + b))
    return (1 - t**2) * w * (2 * a + b), (1 - t**2) * w * a


@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference"])
def test_gradient_matches_the_derivative_by_hand(mode):
    g = load_onnx(_model())
    module = gd.compile(g, inputs=g.meta["onnx"]["inputs"], outputs=["da", "db"])
    rng = np.random.default_rng(0)
    a, b, w = (rng.standard_normal(3).astype(np.float32) for _ in range(3))
    ctx = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference": torch.inference_mode}[mode]
    with ctx():
        da, db = module(*(torch.from_numpy(v) for v in (a, b, w)))
    ea, eb = _expected(a, b, w)
    np.testing.assert_allclose(da.detach().numpy(), ea, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db.detach().numpy(), eb, rtol=1e-5, atol=1e-6)


def test_gradient_exports_with_its_attributes():
    g = load_onnx(_model())
    model = export_onnx(g, None, inputs=g.meta["onnx"]["inputs"], outputs=["d", "da", "db"])
    node = next(n for n in model.graph.node if n.op_type == "Gradient")
    attrs = {a.name: h.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"xs": [b"a", b"b"], "zs": [b"w"], "y": b"d"} and list(node.input) == ["a", "b", "w"]


def test_gradient_of_a_missing_tensor_is_a_clear_error():
    g = load_onnx(_model(y="no_such_tensor"), name="bad")
    with pytest.raises(GraphError, match="no_such_tensor"):
        gd.compile(g, inputs=g.meta["onnx"]["inputs"], outputs=["da"])
