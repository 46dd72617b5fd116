"""The TF op catalogue: graphs written by TensorFlow 1.x graph mode (ops from ``tf.nn``, ``tf.math``,
``tf.compat.v1.layers`` and ``rnn_cell``, while loops, conds) imported without TensorFlow and checked
against the values, gradients and ONNX Runtime runs of the same graph."""

import copy
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.onnx_export import export_onnx
from graphdnn.converters.tf_import import import_meta_graph, load_tf
from graphdnn.converters.tf_ops import supported_ops
from graphdnn.converters.tf_proto import read_meta_graph

import graphdnn as gd
from graphdnn.errors import UnknownOpError

FOREIGN = Path(__file__).parent / "fixtures" / "foreign"
OPS, RNN = FOREIGN / "tf1_ops", FOREIGN / "tf1_rnn"
INPUTS = {OPS: ["X", "ids"], RNN: ["ids", "seq_length"]}
_CACHE: dict[Path, tuple] = {}


def _fixture(folder: Path):
    if folder not in _CACHE:
        z = dict(np.load(folder / "expected.npz", allow_pickle=False))
        _CACHE[folder] = z, load_tf(folder / "my_model_final.ckpt.meta")
    return _CACHE[folder]


def _aliases(z) -> dict[str, str]:
    return {k[len("alias:"):]: str(z[k]) for k in z if k.startswith("alias:")}


def _feed(folder: Path, z) -> list[torch.Tensor]:
    return [torch.from_numpy(z[f"input:{name}"]) for name in INPUTS[folder]]


def _run(folder: Path, names: list[str]):
    z, graph = _fixture(folder)
    model = gd.compile(graph, inputs=[f"{n}:0" for n in INPUTS[folder]], outputs=names).eval()
    with torch.no_grad():
        out = model(*_feed(folder, z))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


OPS_TYPES = {
    "GatherV2", "ResourceGather", "Pack", "Unpack", "Split", "SplitV", "Fill", "ZerosLike", "OnesLike",
    "StridedSlice", "Slice", "Squeeze", "ExpandDims", "OneHot", "Select", "SelectV2", "Where", "Cumsum", "TopKV2",
    "BatchMatMulV2", "Einsum", "FusedBatchNormV3", "Conv2DBackpropInput", "ResizeBilinear",
    "ResizeNearestNeighbor", "Softplus", "Softsign", "Erf", "Range", "Conv2D", "Acos", "Acosh", "ArgMin", "Asin",
    "Asinh", "Atan", "Atanh", "AvgPool", "BroadcastTo", "Cosh", "DepthwiseConv2dNative", "DivNoNan", "Expm1",
    "FloorDiv", "FloorMod", "GatherNd", "IdentityN", "L2Loss", "LRN", "LeakyRelu", "Log1p", "LogSoftmax", "MaxPool",
    "MirrorPad", "NotEqual", "PadV2", "Relu6", "ReverseSequence", "ReverseV2", "Selu", "Sinh", "Size",
    "SoftmaxCrossEntropyWithLogits", "Tan", "Elu",
}


def test_catalogue_fixture_holds_the_ops_it_is_meant_to_test():
    meta = read_meta_graph(OPS / "my_model_final.ckpt.meta")
    assert OPS_TYPES <= {n.op for n in meta.nodes}
    masks = {k: 0 for k in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
    for node in meta.nodes:
        if node.op == "StridedSlice" and node.name.startswith("seq_ops/"):
            for k in masks:
                masks[k] |= int(node.attrs.get(k, 0))
    assert all(masks.values()), masks                            # every mask is used by some slice
    assert OPS_TYPES <= set(supported_ops())


@pytest.mark.parametrize("folder", [OPS, RNN], ids=["ops", "rnn"])
def test_every_probed_tensor_matches_tensorflow(folder):
    z, _ = _fixture(folder)
    aliases = _aliases(z)
    got = _run(folder, list(aliases.values()))
    for (alias, name), value in zip(aliases.items(), got):
        want = z["tensor:" + name]
        assert value.shape == want.shape, (alias, name)
        np.testing.assert_allclose(value, want, atol=1e-4, err_msg=f"{alias} ({name})")


@pytest.mark.parametrize("folder", [OPS, RNN], ids=["ops", "rnn"])
def test_gradients_match_tensorflow_for_every_trainable_variable(folder):
    z, graph = _fixture(folder)
    loss_name = "head/loss:0" if folder == OPS else "loss:0"
    inputs = INPUTS[folder] + (["y"] if folder == RNN else [])
    model = gd.compile(graph, inputs=[f"{n}:0" for n in inputs], outputs=[loss_name]).eval()
    feed = _feed(folder, z) + ([torch.from_numpy(z["input:y"])] if folder == RNN else [])
    loss = model(*feed)
    np.testing.assert_allclose(loss.item(), z["loss"], rtol=1e-5, atol=1e-5)
    trainable = {v.name for v in graph.trainable_variables()}
    assert trainable == {k[len("grad:"):] for k in z if k.startswith("grad:")}
    params = {name: graph.values[name] for name in sorted(trainable)}
    for p in params.values():
        p.grad = None
    loss.backward()
    for name, p in params.items():
        assert p.grad is not None, name
        np.testing.assert_allclose(p.grad.numpy(), z["grad:" + name], atol=1e-4, err_msg=name)


@pytest.mark.parametrize("folder", [OPS, RNN], ids=["ops", "rnn"])
def test_onnx_export_runs_in_onnxruntime(folder, tmp_path):
    z, graph = _fixture(folder)
    aliases = _aliases(z)
    names = list(aliases.values())
    module = gd.compile(graph, inputs=[f"{n}:0" for n in INPUTS[folder]], outputs=names).eval()
    path = tmp_path / "model.onnx"
    model = export_onnx(module, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: z[f"input:{re.sub(r':0$', '', i.name)}"] for i in session.get_inputs()}
    got = session.run(None, feed)
    assert len(got) == len(names) == len(model.graph.output)
    for name, value in zip(names, got):
        np.testing.assert_allclose(value, z["tensor:" + name], atol=1e-4, err_msg=name)


def test_unsupported_ops_are_listed_together():
    meta = read_meta_graph(OPS / "my_model_final.ckpt.meta")
    for node in meta.nodes:
        if node.name in ("seq_ops/cumsum", "image/bilinear"):
            node.op = "MysteryOp"
    with pytest.raises(UnknownOpError) as err:
        import_meta_graph(meta)
    text = str(err.value)
    assert "seq_ops/cumsum (MysteryOp)" in text and "image/bilinear (MysteryOp)" in text


def test_while_loops_are_onnx_loops_with_tf_names_inside():
    _, graph = _fixture(RNN)
    loops = {op.name: op for op in graph.operations() if op.type == "Loop"}
    assert set(loops) == {"lstm/rnn/while", "gru/rnn/while", "rnn_len/rnn/while", "multi/rnn/while", "flow/decay_loop",
                          "bidi/bidirectional_rnn/fw/fw/while", "bidi/bidirectional_rnn/bw/bw/while"}
    body = loops["lstm/rnn/while"].attrs["body"]
    assert body.get_operation("lstm/rnn/while/lstm_cell/MatMul").type == "MatMul"
    captured = {op.name for op in body.placeholders()}
    assert "lstm/rnn/while/lstm_cell/MatMul/Enter" in captured          # the kernel, read from the outer graph
    assert "lstm/rnn/while/Merge_3" in captured                        # a loop variable, named after its Merge
    kernel = loops["lstm/rnn/while"].inputs[-loops["lstm/rnn/while"].meta["captures"]:]
    assert "lstm/rnn/lstm_cell/kernel:0" in kernel                     # gradients reach it through the capture
    assert not any(op.type in ("Enter", "Exit", "Switch", "Merge", "NextIteration") for op in graph.operations())
    assert graph.get_tensor("lstm/rnn/while/Exit_3:0").name.startswith("lstm/rnn/while:")  # TF's names resolve
    cond = graph.get_operation("flow/cond/Merge")
    assert cond.type == "If" and {"then_branch", "else_branch"} <= set(cond.attrs)
    assert cond.attrs["then_branch"].get_operation("flow/cond/mul").type == "Mul"


def test_static_rnn_keeps_tf_names_per_step():
    _, graph = _fixture(RNN)
    steps = [op.name for op in graph.operations() if re.fullmatch(r"static/rnn/basic_rnn_cell/Tanh(_\d)?", op.name)]
    assert len(steps) == 6
    assert graph.get_operation("embedding_lookup").type == "Gather"


def test_rnn_model_trains():
    z, graph = _fixture(RNN)
    imported = copy.deepcopy(graph)                                    # training changes the values it holds
    model = gd.compile(imported, inputs=["ids:0", "seq_length:0", "y:0"], outputs=["loss:0"]).train()
    params = [imported.values[v.name] for v in imported.trainable_variables()]
    optimizer = torch.optim.Adam(params, lr=0.05)
    feed = _feed(RNN, z) + [torch.from_numpy(z["input:y"])]
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = model(*feed)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(float(z["loss"]), abs=1e-5) and losses[-1] < 0.5 * losses[0]
    assert not torch.equal(imported.values["lstm/rnn/lstm_cell/kernel"], graph.values["lstm/rnn/lstm_cell/kernel"])


def test_unsupported_op_in_a_loop_body_is_named():
    meta = read_meta_graph(RNN / "my_model_final.ckpt.meta")
    for node in meta.nodes:
        if node.name == "gru/rnn/while/gru_cell/Sigmoid":
            node.op = "MysteryOp"
    with pytest.raises(UnknownOpError, match=r"gru/rnn/while/Exit_3 \(Exit: unsupported op\(s\) in the loop body: "
                                             r"gru/rnn/while/gru_cell/Sigmoid \(MysteryOp\)"):
        import_meta_graph(meta)
    graph = import_meta_graph(meta, outputs=["lstm/rnn/while/Exit_4:0"])  # the other loops still import
    assert [op.type for op in graph.operations() if op.type == "Loop"] == ["Loop"]


def test_readme_tf_ops_table_is_current():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import coverage_tables

    text = coverage_tables.README.read_text(encoding="utf-8")
    assert coverage_tables.rewrite(text, ["tf-ops"]) == text, "run python benchmarks/coverage_tables.py"
    assert "`Conv2DBackpropInput`" in text and "`LoopCond`" in text


def test_imported_loops_survive_save_and_load(tmp_path):
    z, graph = _fixture(RNN)
    path = tmp_path / "rnn.safetensors"
    gd.save(graph, path)
    names = ["logits/BiasAdd:0", "lstm/rnn/while/Exit_3:0", "flow/cond/Merge:0"]
    model = gd.compile(gd.load(path), inputs=["ids:0", "seq_length:0"], outputs=names).eval()
    with torch.no_grad():
        got = model(*_feed(RNN, z))
    for name, value in zip(names, got):
        np.testing.assert_allclose(value.numpy(), z["tensor:" + name], atol=1e-4, err_msg=name)


def test_dropout_wrapper_is_onnx_dropout_driven_by_keep_prob():
    z, graph = _fixture(RNN)
    assert sum(op.type == "Dropout" for op in graph.operations()) == 6            # one per static step
    body = graph.get_operation("gru/rnn/while").attrs["body"]
    assert [op.type for op in body.operations() if op.type == "Dropout"] == ["Dropout"]  # inside the loop too
    model = gd.compile(graph, inputs=["ids:0", "seq_length:0", "keep_prob:0"], outputs=["static/stack:0"]).train()
    ids, lengths = _feed(RNN, z)
    torch.manual_seed(0)
    with torch.no_grad():
        full = model(ids, lengths, torch.tensor(1.0))                         # keep_prob's default: TF's values
        dropped = model(ids, lengths, torch.tensor(0.5))
    np.testing.assert_allclose(full.numpy(), z["tensor:static/stack:0"], atol=1e-4)
    assert 0.3 < (dropped == 0).float().mean().item() < 0.7
