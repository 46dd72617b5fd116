"""The TF op catalogue: graphs written by TensorFlow 1.x graph mode (ops from ``tf.nn``, ``tf.math``,
``tf.compat.v1.layers`` and ``rnn_cell``, while loops, conds) imported without TensorFlow and checked
against the values, gradients and ONNX Runtime runs of the same graph."""

import copy
import re
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
    from graphdnn.converters import coverage_tables

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


# --------------------------------------------------------------- nested loops, conds in loop bodies
FLOW = FOREIGN / "tf1_nested_flow"


def _flow_reference(x, w, b, n):
    """The nested-flow graph written out in numpy (an independent reference for other trip counts)."""
    h = x
    for i in range(n):
        g = h
        for _ in range(i + 1):
            g = np.tanh(g @ w + b)
        g = g * 0.5 + x if g.sum() > 0 else g - b
        h = g if i % 2 == 0 else 1 / (1 + np.exp(-g))
    acc = x
    for i in range(4):
        acc = acc * w[0] if i < 2 else acc + acc.mean()
    return h + acc


def test_nested_loops_and_conds_in_loop_bodies_match_tensorflow():
    z = dict(np.load(FLOW / "expected.npz", allow_pickle=False))
    graph = load_tf(FLOW / "my_model_final.ckpt.meta")
    names = list(_aliases(z).values())
    model = gd.compile(graph, inputs=["x:0"], outputs=names).eval()
    with torch.no_grad():
        got = model(torch.from_numpy(z["input:x"]))
    for name, value in zip(names, got):
        np.testing.assert_allclose(value.numpy(), z["tensor:" + name], atol=1e-5, err_msg=name)
    trained = gd.compile(graph, inputs=["x:0"], outputs=["loss:0"]).train()
    loss = trained(torch.from_numpy(z["input:x"]))
    loss.backward()
    assert loss.item() == pytest.approx(float(z["loss"]), abs=1e-5)
    for name in ("w", "b"):  # read inside the inner loop and the conds: the gradients reach them
        np.testing.assert_allclose(trained.variable(name).grad.numpy(), z["grad:" + name], atol=1e-5, err_msg=name)


def test_nested_loops_are_loops_and_ifs_inside_loop_bodies():
    graph = load_tf(FLOW / "my_model_final.ckpt.meta")
    loops = {op.name: op for op in graph.operations() if op.type == "Loop"}
    assert set(loops) == {"outer", "cond_loop"}
    body = loops["outer"].attrs["body"]
    inner = {op.name: op for op in body.operations() if op.type in ("Loop", "If")}
    assert {"outer/inner": "Loop", "outer/sign/Merge": "If", "outer/parity/Merge": "If"} == {
        k: v.type for k, v in inner.items()}
    inner_body = inner["outer/inner"].attrs["body"]
    assert inner_body.get_operation("outer/inner/MatMul").type == "MatMul"
    captured = loops["outer"].inputs[-loops["outer"].meta["captures"]:]
    assert {"w:0", "b:0"} <= set(captured)  # the variables enter through the outer Loop's captures
    cond_body = loops["cond_loop"].attrs["body"]
    assert cond_body.get_operation("cond_loop/step_cond/Merge").type == "If"
    assert not any(op.type in ("Enter", "Exit", "Switch", "Merge", "NextIteration") for op in graph.operations())


@pytest.mark.parametrize("n", [1, 2, 5])
def test_nested_loop_trip_counts_follow_the_input(n):
    z = dict(np.load(FLOW / "expected.npz", allow_pickle=False))
    w, b, x = z["variable:w"], z["variable:b"], z["input:x"]
    np.testing.assert_allclose(_flow_reference(x, w, b, 3), z["tensor:out:0"], atol=1e-5)  # the reference is TF's
    model = gd.compile(load_tf(FLOW / "my_model_final.ckpt.meta"), inputs=["x:0", "n:0"], outputs=["out:0"]).eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x), torch.tensor(n, dtype=torch.int32))
    np.testing.assert_allclose(got.numpy(), _flow_reference(x, w, b, n), atol=1e-5)


def test_nested_flow_onnx_export_runs_in_onnxruntime(tmp_path):
    z = dict(np.load(FLOW / "expected.npz", allow_pickle=False))
    module = gd.compile(load_tf(FLOW / "my_model_final.ckpt.meta"), inputs=["x:0"], outputs=["out:0"]).eval()
    path = tmp_path / "flow.onnx"
    export_onnx(module, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: z["input:x"]})
    np.testing.assert_allclose(got, z["tensor:out:0"], atol=1e-5)


def test_nested_loops_survive_save_and_load(tmp_path):
    z = dict(np.load(FLOW / "expected.npz", allow_pickle=False))
    path = tmp_path / "flow.safetensors"
    gd.save(load_tf(FLOW / "my_model_final.ckpt.meta"), path)
    model = gd.compile(gd.load(path), inputs=["x:0"], outputs=["out:0"]).eval()
    with torch.no_grad():
        got = model(torch.from_numpy(z["input:x"]))
    np.testing.assert_allclose(got.numpy(), z["tensor:out:0"], atol=1e-5)


# --------------------------------------------------- conds and loops nested in tf.cond branches (tf.case)
NESTING = FOREIGN / "tf1_cond_nesting"
NESTED_OUTPUTS = ["nested", "loop_h", "loop_i", "deep", "case", "out"]


def _nesting():
    if NESTING not in _CACHE:
        _CACHE[NESTING] = (dict(np.load(NESTING / "expected.npz", allow_pickle=False)),
                           load_tf(NESTING / "my_model_final.ckpt.meta"))
    return _CACHE[NESTING]


def _bodies(graph):
    """Every (body graph, op) pair of ops in ``graph`` and its nested bodies."""
    for op in graph.operations():
        yield graph, op
        for value in op.attrs.values():
            if hasattr(value, "operations"):
                yield from _bodies(value)


def test_cond_nesting_fixture_takes_every_branch():
    z, _ = _nesting()
    assert {tuple(row) for row in z["branches"].tolist()} == {(a, b) for a in (True, False) for b in (True, False)}
    w, b = z["variable:w"], z["variable:b"]
    steps = set()
    for k, x in enumerate(z["input:x"]):  # `deep` in numpy: its inner cond takes both branches over the cases
        h = x
        for _ in range(3 if x.sum() > 0 else 0):
            steps.add(bool(h.sum() > 0))
            h = h * w[0] if h.sum() > 0 else h + b
        np.testing.assert_allclose(h if x.sum() > 0 else x * 2.0, z["tensor:" + str(z["alias:deep"])][k], atol=1e-5)
    assert steps == {True, False}


def test_conds_and_loops_nested_in_cond_branches_match_tensorflow():
    z, graph = _nesting()
    names = [str(z["alias:" + a]) for a in NESTED_OUTPUTS]
    shapes = str(z["alias:shapes"])
    model = gd.compile(graph, inputs=["x:0"], outputs=[*names, shapes]).eval()
    for k, x in enumerate(z["input:x"]):
        with torch.no_grad():
            got = model(torch.from_numpy(x))
        for name, value in zip(names, got):
            np.testing.assert_allclose(value.numpy(), z["tensor:" + name][k], atol=1e-5, err_msg=f"{name} case {k}")
        # the branches return (1, 3) or (4, 3): the output takes the shape of the branch that ran
        np.testing.assert_allclose(got[-1].numpy(), z[f"tensor:{shapes}/{k}"], atol=1e-5, err_msg=f"shapes case {k}")


def test_gradients_through_nested_conds_and_loops_match_tensorflow():
    z, graph = _nesting()
    model = gd.compile(graph, inputs=["x:0"], outputs=["loss:0"]).train()
    for k, x in enumerate(z["input:x"]):
        model.zero_grad()
        loss = model(torch.from_numpy(x))
        loss.backward()
        assert loss.item() == pytest.approx(float(z["loss"][k]), rel=1e-5, abs=1e-5)
        for name in ("w", "b"):  # read in inner branches and inside loops in branches: the gradients reach them
            np.testing.assert_allclose(model.variable(name).grad.numpy(), z["grad:" + name][k], atol=1e-5,
                                       err_msg=f"{name} case {k}")


def test_nested_conds_are_ifs_in_branches_and_loops_are_loops_there():
    _, graph = _nesting()
    found = {op.name: (body is graph, op.type) for body, op in _bodies(graph) if op.type in ("If", "Loop")}
    assert found == {
        "nested/Merge": (True, "If"), "nested/inner/Merge": (False, "If"),
        "in_cond/Merge": (True, "If"), "in_cond/Merge_1": (True, "If"), "in_cond/loop": (False, "Loop"),
        "deep/Merge": (True, "If"), "deep/deep_loop": (False, "Loop"), "deep/deep_loop/step/Merge": (False, "If"),
        "case/cond/Merge": (True, "If"), "case/cond/cond/Merge": (False, "If"), "shapes/Merge": (True, "If"),
    }
    ifs = {op.name: op for op in graph.operations() if op.type == "If"}
    inner = {op.name: op for op in ifs["nested/Merge"].attrs["then_branch"].operations()}
    assert inner["nested/inner/Merge"].type == "If"
    assert {"w:0", "b:0"} <= set(ifs["nested/Merge"].inputs[1:])  # variables enter through the outer If's captures
    assert inner["nested/inner/Merge"].inputs[1:]  # and reach the inner If as its captured values
    assert "case/cond/cond/Merge" in {op.name for op in ifs["case/cond/Merge"].attrs["else_branch"].operations()}
    flow_ops = {"Enter", "Exit", "Switch", "Merge", "NextIteration", "LoopCond"}
    assert not [op.name for _, op in _bodies(graph) if op.type in flow_ops]


@pytest.mark.parametrize("n", [0, 1, 4])
def test_loop_in_a_cond_branch_follows_its_trip_count(n):
    z, graph = _nesting()
    w, b = z["variable:w"], z["variable:b"]
    model = gd.compile(graph, inputs=["x:0", "n:0"], outputs=[str(z["alias:loop_h"]), str(z["alias:loop_i"])]).eval()
    for k, x in enumerate(z["input:x"]):
        with torch.no_grad():
            h, i = model(torch.from_numpy(x), torch.tensor(n, dtype=torch.int32))
        if x[0, 0] > 0:  # the loop's branch: n steps of tanh(h w + b) from x / 2
            want, steps = x * 0.5, n
            for _ in range(n):
                want = np.tanh(want @ w + b)
        else:
            want, steps = x - b, -1
        np.testing.assert_allclose(h.numpy(), want, atol=1e-5, err_msg=f"case {k}")
        assert i.item() == steps


def test_cond_nesting_onnx_export_runs_in_onnxruntime(tmp_path):
    z, graph = _nesting()
    names = [str(z["alias:out"]), str(z["alias:loop_i"]), str(z["alias:shapes"])]
    path = tmp_path / "nesting.onnx"
    export_onnx(gd.compile(graph, inputs=["x:0"], outputs=names).eval(), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for k, x in enumerate(z["input:x"]):
        out, i, shapes = session.run(None, {session.get_inputs()[0].name: x})
        np.testing.assert_allclose(out, z["tensor:" + names[0]][k], atol=1e-5, err_msg=f"case {k}")
        np.testing.assert_allclose(i, z["tensor:" + names[1]][k], atol=1e-5, err_msg=f"case {k}")
        np.testing.assert_allclose(shapes, z[f"tensor:{names[2]}/{k}"], atol=1e-5, err_msg=f"case {k}")


def test_unsupported_op_in_a_nested_branch_or_loop_is_named():
    meta = read_meta_graph(NESTING / "my_model_final.ckpt.meta")
    for node in meta.nodes:
        if node.name in ("nested/inner/Tanh", "in_cond/loop/Tanh"):  # in an inner cond; in a loop in a cond
            node.op = "MysteryOp"
    with pytest.raises(UnknownOpError) as err:
        import_meta_graph(meta)
    text = str(err.value)
    assert "nested/Merge (Merge: a tf.cond branch holds an op that cannot be imported (nested/inner/Merge: " \
           "unsupported op(s) in a tf.cond branch: nested/inner/Tanh (MysteryOp)))" in text
    assert "in_cond/loop/Exit: unsupported op(s) in the loop body: in_cond/loop/Tanh (MysteryOp)" in text
    graph = import_meta_graph(meta, outputs=["deep/Merge:0", "case/cond/Merge:0"])  # the other conds still import
    assert sorted(op.name for op in graph.operations() if op.type == "If") == ["case/cond/Merge", "deep/Merge"]


LOOP_NESTING = FOREIGN / "tf1_loop_cond_nesting"


def _loop_nesting_reference(x, w, b, taken: set):
    """The loop-nesting graph in numpy; adds the branches each step takes to ``taken``."""
    h = x
    for i in range(4):
        taken.add(("outer", bool(h.mean() > 0)))
        if h.mean() > 0:
            g = h * w[0]
            taken.add(("inner", bool(g.sum() > 0)))
            h = np.tanh(g + b) if g.sum() > 0 else g - b
        else:
            h = h * 0.5
        if h[0, 0] > 0:
            for _ in range(i):
                h = np.tanh(h @ w)
            taken.add(("sub", i > 0))
        else:
            h = h + b
            taken.add(("sub", None))
    return h


def test_conds_and_loops_in_cond_branches_in_a_loop_body_match_tensorflow():
    z = dict(np.load(LOOP_NESTING / "expected.npz", allow_pickle=False))
    graph = load_tf(LOOP_NESTING / "my_model_final.ckpt.meta")
    taken: set = set()
    for k, x in enumerate(z["input:x"]):  # the reference is TF's, and the steps take every branch
        want = _loop_nesting_reference(x, z["variable:w"], z["variable:b"], taken)
        np.testing.assert_allclose(want, z["tensor:out:0"][k], atol=1e-5)
    assert taken == {("outer", True), ("outer", False), ("inner", True), ("inner", False), ("sub", True),
                     ("sub", False), ("sub", None)}
    model = gd.compile(graph, inputs=["x:0"], outputs=["out:0"]).eval()
    trained = gd.compile(graph, inputs=["x:0"], outputs=["loss:0"]).train()
    for k, x in enumerate(z["input:x"]):
        with torch.no_grad():
            np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), z["tensor:out:0"][k], atol=1e-5)
        trained.zero_grad()
        loss = trained(torch.from_numpy(x))
        loss.backward()
        assert loss.item() == pytest.approx(float(z["loss"][k]), rel=1e-5, abs=1e-5)
        for name in ("w", "b"):
            np.testing.assert_allclose(trained.variable(name).grad.numpy(), z["grad:" + name][k], atol=1e-5,
                                       err_msg=f"{name} case {k}")
    body = next(op for op in graph.operations() if op.type == "Loop").attrs["body"]
    ifs = {op.name: op for op in body.operations() if op.type == "If"}
    assert set(ifs) == {"steps/outer/Merge", "steps/sub_cond/Merge"}
    assert ifs["steps/outer/Merge"].attrs["then_branch"].get_operation("steps/outer/inner/Merge").type == "If"
    assert ifs["steps/sub_cond/Merge"].attrs["then_branch"].get_operation("steps/sub_cond/sub").type == "Loop"


def test_loop_body_nesting_onnx_export_runs_in_onnxruntime(tmp_path):
    z = dict(np.load(LOOP_NESTING / "expected.npz", allow_pickle=False))
    path = tmp_path / "loop_nesting.onnx"
    export_onnx(gd.compile(load_tf(LOOP_NESTING / "my_model_final.ckpt.meta"), inputs=["x:0"],
                           outputs=["out:0"]).eval(), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for k, x in enumerate(z["input:x"]):
        (got,) = session.run(None, {session.get_inputs()[0].name: x})
        np.testing.assert_allclose(got, z["tensor:out:0"][k], atol=1e-5, err_msg=f"case {k}")


def test_nested_conds_survive_save_and_load(tmp_path):
    z, graph = _nesting()
    path = tmp_path / "nesting.safetensors"
    gd.save(graph, path)
    model = gd.compile(gd.load(path), inputs=["x:0"], outputs=[str(z["alias:out"])]).eval()
    for k, x in enumerate(z["input:x"]):
        with torch.no_grad():
            got = model(torch.from_numpy(x))
        np.testing.assert_allclose(got.numpy(), z["tensor:" + str(z["alias:out"])][k], atol=1e-5, err_msg=f"case {k}")
