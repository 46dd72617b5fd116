"""TF1 meta graphs + checkpoints imported without TensorFlow, checked against TF's own outputs."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from graphdnn.converters.tf_import import import_meta_graph, load_tf, load_tf_with_report
from graphdnn.converters.tf_proto import read_meta_graph

import graphdnn as gd
from graphdnn.errors import FileFormatError, UnknownOpError

FOREIGN = Path(__file__).parent / "fixtures" / "foreign"
DNN, BN = FOREIGN / "tf1_dnn" / "my_model_final.ckpt", FOREIGN / "tf1_bn" / "my_model_final.ckpt"


def _expected(prefix):
    return np.load(prefix.parent / "expected.npz")


def _run(graph, names, x):
    model = gd.compile(graph, inputs=["X:0"], outputs=names).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("prefix", [DNN, BN])
def test_outputs_and_intermediates_match_tensorflow(prefix):
    z = _expected(prefix)
    graph = gd.load(str(prefix) + ".meta")
    names = [k[len("tensor:"):] for k in z.files if k.startswith("tensor:")]
    assert len(names) == 3
    for name, got in zip(names, _run(graph, names, z["input:X"])):
        np.testing.assert_allclose(got, z["tensor:" + name], atol=1e-4, err_msg=name)


def test_names_are_tensorflows():
    graph = load_tf(str(DNN) + ".meta")
    assert graph.get_tensor("dnn/hidden4/Relu:0").shape == (None, 16)
    assert graph.get_operation("dnn/hidden1/MatMul").type == "MatMul"
    kernel = graph.get_operation("hidden1/kernel")                 # variables keep the checkpoint names
    assert kernel.is_variable and kernel.attrs["layout"] == "io" and kernel.attrs["trainable"]
    assert graph.get_tensor("hidden1/kernel/read:0").name == "hidden1/kernel:0"   # folded read, still reachable
    scopes = ("hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "outputs")
    assert sorted(v.name for v in graph.trainable_variables()) == sorted(
        f"{s}/{v}" for s in scopes for v in ("kernel", "bias"))
    assert not any(op.name.startswith(("train/", "save/")) or "gradients" in op.name for op in graph.operations())
    x, y, acc = (graph.get_tensor(n) for n in graph.get_collection("my_important_ops"))
    assert (x.name, y.name, acc.name) == ("X:0", "y:0", "eval/accuracy:0")
    assert graph.meta["tf_import"]["dropped_collection_entries"] == ["my_important_ops: train/Momentum"]


def test_variables_bit_identical_and_slots_reported():
    z = _expected(DNN)
    graph, report = load_tf_with_report(DNN)                      # a checkpoint prefix works too
    for name in graph.values:
        assert np.array_equal(graph.values[name].detach().numpy(), z["variable:" + name]), name
    slots = [k[len("variable:"):] for k in z.files if k.endswith("/Momentum")] + ["global_step"]
    assert sorted(slots) == sorted(report.skipped) == graph.meta["tf_import"]["optimizer_slots"]
    assert len(report.matched) == 12 and not report.missing


def test_loss_and_accuracy_are_imported():
    z = _expected(DNN)
    graph = load_tf(DNN)
    logits = z["tensor:dnn/outputs/BiasAdd:0"]
    labels = np.argmax(logits, axis=1)
    labels[:2] = (labels[:2] + 1) % 10
    model = gd.compile(graph, inputs=["X:0", "y:0"], outputs=["loss/loss:0", "eval/accuracy:0"]).eval()
    loss, acc = model(torch.from_numpy(z["input:X"]), torch.from_numpy(labels))
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    assert abs(loss.item() - ref.item()) < 1e-4 and acc.item() == pytest.approx(3 / 5)


def test_batch_norm_is_one_op_with_tf_settings():
    graph = load_tf(BN)
    bns = [op for op in graph.operations() if op.type == "BatchNormalization"]
    assert [op.name for op in bns] == [f"dnn/batch_normalization{s}/batchnorm/add_1" for s in ("", "_1", "_2")]
    assert all(op.attrs["momentum"] == 0.9 and op.attrs["epsilon"] == 0.001 for op in bns)
    assert bns[0].inputs[1:] == [f"batch_normalization/{v}:0" for v in ("gamma", "beta", "moving_mean",
                                                                          "moving_variance")]
    assert not any(op.type in ("Switch", "Merge") or "/cond" in op.name for op in graph.operations())
    assert graph.get_tensor("dnn/batch_normalization/cond/Merge:0").name == "batch_normalization/moving_mean:0"
    assert not graph.get_operation("batch_normalization/moving_mean").attrs["trainable"]


def test_batch_norm_train_mode_updates_moving_averages():
    z = _expected(BN)
    graph = load_tf(BN)
    model = gd.compile(graph, inputs=["X:0"], outputs=["dnn/hidden1/BiasAdd:0", "dnn/Elu:0"]).train()
    x = torch.from_numpy(z["input:X"])
    before = graph.values["batch_normalization/moving_mean"].clone()
    pre, _ = model(x)
    batch_mean = pre.detach().mean(0)
    after = graph.values["batch_normalization/moving_mean"]
    torch.testing.assert_close(after, 0.9 * before + 0.1 * batch_mean, atol=1e-6, rtol=1e-5)


def test_training_branch_and_outputs_subset():
    graph = load_tf(BN, outputs=["dnn/Elu:0"])
    assert {op.type for op in graph.operations()} == {"Placeholder", "Variable", "MatMul", "Add",
                                                      "BatchNormalization", "Elu"}
    trained = load_tf(BN, training=True)
    assert [op.name for op in trained.operations() if op.type == "BatchNormalization"] == [
        op.name for op in load_tf(BN).operations() if op.type == "BatchNormalization"]


def test_unsupported_ops_listed_in_one_error():
    meta = read_meta_graph(str(DNN) + ".meta")
    for node in meta.nodes:
        if node.name in ("dnn/hidden2/Relu", "dnn/hidden3/Relu"):
            node.op = "FancyActivation"
    with pytest.raises(UnknownOpError) as err:
        import_meta_graph(meta)
    assert "dnn/hidden2/Relu (FancyActivation)" in str(err.value) and "dnn/hidden3/Relu" in str(err.value)
    graph = import_meta_graph(meta, outputs=["dnn/hidden1/Relu:0"])          # the part before them imports
    assert graph.get_tensor("dnn/hidden1/Relu:0")


def _copy(tmp_path, prefix):
    for f in prefix.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / prefix.name


def test_corrupted_data_names_the_tensor(tmp_path):
    prefix = _copy(tmp_path, DNN)
    data = Path(str(prefix) + ".data-00000-of-00001")
    from graphdnn.converters.tf_checkpoint import TFCheckpointReader

    entry = TFCheckpointReader(prefix).entry("hidden2/kernel")
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 3] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match=r"hidden2/kernel.*checksum mismatch"):
        load_tf(str(prefix) + ".meta")


def test_corrupted_index_and_meta(tmp_path):
    prefix = _copy(tmp_path, DNN)
    index = Path(str(prefix) + ".index")
    index.write_bytes(index.read_bytes()[:-20])
    with pytest.raises(FileFormatError, match="index"):
        load_tf(str(prefix) + ".meta")
    meta = Path(str(prefix) + ".meta")
    meta.write_bytes(b"\x0a\xff\xff\xff\x0f" + meta.read_bytes()[:100])
    with pytest.raises(FileFormatError):
        load_tf(meta, checkpoint=DNN)


def test_values_false_leaves_variables_unbound():
    graph = load_tf(str(DNN) + ".meta", values=False)
    assert float(graph.values["hidden1/kernel"].detach().abs().sum()) == 0.0
    assert graph.meta["tf_import"]["unbound_variables"]
