"""One TF op catalogue: the SavedModel importer adds nothing to it, so import order changes nothing."""

import subprocess
import sys
from pathlib import Path

import graphdnn.converters.saved_model  # noqa: F401  (imported first on purpose: the TF1 importer must not change)
import numpy as np
import pytest
import torch
from graphdnn.converters.tf_import import import_meta_graph
from graphdnn.converters.tf_ops import supported_ops
from graphdnn.converters.tf_proto import read_meta_graph

import graphdnn as gd
from graphdnn.errors import UnknownOpError

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = ROOT / "tests" / "fixtures" / "foreign"
DNN = FOREIGN / "tf1_dnn" / "my_model_final.ckpt"


def test_supported_ops_do_not_depend_on_import_order():
    code = ("from graphdnn.converters.tf_ops import supported_ops\n"
            "before = supported_ops()\n"
            "import graphdnn.converters.saved_model\n"
            "assert before == supported_ops(), sorted(set(supported_ops()) ^ set(before))\n"
            "print(len(before), 'While' in before, 'TensorListReserve' in before)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(supported_ops())), "True", "True"]


def test_tf1_graph_after_a_saved_model_in_the_same_process():
    gd.load(FOREIGN / "saved_model_while")                       # the SavedModel importer has run
    graph = gd.load(str(DNN) + ".meta")                           # then a TF1 graph imports as before
    expected = np.load(DNN.parent / "expected.npz")                # TensorFlow's own outputs
    model = gd.compile(graph, inputs=["X:0"], outputs=["dnn/outputs/BiasAdd:0"]).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(expected["input:X"])).numpy()
    np.testing.assert_allclose(logits, expected["tensor:dnn/outputs/BiasAdd:0"], rtol=1e-5, atol=1e-5)


def test_functional_while_in_a_tf1_graph_is_a_clear_error():
    meta = read_meta_graph(str(DNN) + ".meta")
    for node in meta.nodes:
        if node.name == "dnn/hidden2/Relu":
            node.op = "StatelessWhile"                            # a TF2 While: its bodies live in functions
    with pytest.raises(UnknownOpError, match=r"dnn/hidden2/Relu.*StatelessWhile.*SavedModel"):
        import_meta_graph(meta)
