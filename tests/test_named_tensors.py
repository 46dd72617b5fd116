"""Named tensors from PyTorch, numpy, safetensors, TF checkpoints and dicts, with layout conversion."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from graphdnn.converters.named_tensors import LayoutConverter, load_weights, read_named_tensors, torch_to_tf_name
from safetensors.torch import save_file

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.errors import FileFormatError, RestoreError

FOREIGN = Path(__file__).parent / "fixtures" / "foreign"


def _graph(bn_eps=1e-3):
    g = gd.Graph()
    x = g.placeholder("X", (None, 4))
    h = layers.dense(x, 5, name="hidden1")
    h = nn.relu(layers.batch_normalization(h, epsilon=bn_eps, name="bn1"))
    return g, x, layers.dense(h, 3, name="outputs")


def _torch_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("hidden1", torch.nn.Linear(4, 5))
    net.add_module("bn1", torch.nn.BatchNorm1d(5, eps=2e-5, momentum=0.2))
    net.add_module("relu", torch.nn.ReLU())
    net.add_module("outputs", torch.nn.Linear(5, 3))
    net.train()
    for _ in range(3):
        net(torch.randn(16, 4) * 3 + 1)                       # non-trivial running statistics
    return net.eval()


def test_book_original_w_and_b():
    g = gd.Graph()
    x = g.placeholder("X", (None, 2))
    h = layers.dense(x, 3, name="hidden1")
    original_w, original_b = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.array([7.0, 8.0, 9.0])
    report = load_weights(g, {"hidden1/kernel": original_w, "hidden1/bias": original_b})
    assert report.ok and not report.converted
    out = gd.compile(g, inputs=[x], outputs=[h])(torch.tensor([[10.0, 11.0]]))
    assert out.tolist() == [[61.0, 83.0, 105.0]]


def test_torch_module_matches_torch(tmp_path):
    net = _torch_net()
    g, x, out = _graph()
    report = load_weights(g, net)
    assert report.ok and sorted(report.skipped) == ["bn1.num_batches_tracked"]
    assert report.renamed["hidden1.weight"] == "hidden1/kernel" and report.renamed["bn1.running_var"] == (
        "bn1/moving_variance")
    assert "transposed torch Linear weight [out, in] [5, 4]" in report.converted["hidden1/kernel"]
    bn = g.get_operation("bn1/FusedBatchNorm")
    assert (bn.attrs["epsilon"], bn.attrs["momentum"]) == (2e-5, 0.8) and bn.name in report.converted
    assert "converted" in report.table() and "transposed" in report.table()
    xs = torch.randn(6, 4)
    with torch.no_grad():
        np.testing.assert_allclose(gd.compile(g, inputs=[x], outputs=[out]).eval()(xs).numpy(), net(xs).numpy(),
                                   atol=1e-5)


def test_torch_state_dict_file_with_rename(tmp_path):
    net = _torch_net()
    state = {k.replace("hidden1", "fc1").replace("outputs", "fc2"): v for k, v in net.state_dict().items()}
    path = tmp_path / "model.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    g, x, out = _graph()
    report = load_weights(g, path, rename=[(r"^fc1\.", "hidden1."), (r"^fc2\.", "outputs.")])
    assert report.ok
    assert g.get_operation("bn1/FusedBatchNorm").attrs["epsilon"] == 1e-5      # torch's default: unknown eps
    xs = torch.randn(6, 4)
    bn_default = torch.nn.functional.batch_norm(net.hidden1(xs), net.bn1.running_mean, net.bn1.running_var,
                                                net.bn1.weight, net.bn1.bias, False, 0.0, 1e-5)
    ref = net.outputs(torch.relu(bn_default))
    with torch.no_grad():
        np.testing.assert_allclose(gd.compile(g, inputs=[x], outputs=[out]).eval()(xs).numpy(), ref.detach().numpy(),
                                   atol=1e-5)


def test_square_linear_kernels_are_transposed_for_torch():
    g = gd.Graph()
    x = g.placeholder("X", (None, 3))
    y = layers.dense(x, 3, use_bias=False, name="square")
    lin = torch.nn.Linear(3, 3, bias=False)
    load_weights(g, {"square.weight": lin.weight.detach()}, framework="torch")
    xs = torch.randn(2, 3)
    torch.testing.assert_close(gd.compile(g, inputs=[x], outputs=[y])(xs), lin(xs))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"w": Evil()}, f)
    with pytest.raises(FileFormatError, match="weights_only"):
        read_named_tensors(path)


def test_npz_and_object_arrays(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **{"hidden1/kernel": np.ones((2, 3), np.float32), "hidden1/bias": np.arange(3.0)})
    src = read_named_tensors(path)
    assert src.info("hidden1/kernel")[0] == (2, 3)
    assert src.read_one("hidden1/bias").tolist() == [0.0, 1.0, 2.0]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FileFormatError, match="never unpickles"):
        read_named_tensors(bad)


def test_safetensors_and_conv_layouts(tmp_path):
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    path = tmp_path / "conv.safetensors"
    hwio = conv.weight.detach().permute(2, 3, 1, 0).contiguous()
    save_file({"conv1/kernel": hwio, "conv1/bias": conv.bias.detach()}, str(path))
    g = gd.Graph()
    x = g.placeholder("x", (None, 3, 8, 8))
    y = layers.conv2d(x, 4, 3, padding="same", name="conv1")
    report = load_weights(g, path, framework="tf")
    assert "HWIO [3, 3, 3, 4] -> OIHW [4, 3, 3, 3]" in report.converted["conv1/kernel"]
    xs = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gd.compile(g, inputs=[x], outputs=[y])(xs), conv(xs), atol=1e-5, rtol=1e-5)


def test_layout_converter_to_hwio():
    g = gd.Graph()
    g.variable("k", (3, 3, 2, 4), layout="hwio")
    conv = LayoutConverter(g, "torch")
    oihw = torch.randn(4, 2, 3, 3)
    assert torch.equal(conv("k", oihw, (3, 3, 2, 4)), oihw.permute(2, 3, 1, 0))
    assert "OIHW" in conv.notes["k"]


def test_tf_checkpoint_tensors_bit_identical():
    z = np.load(FOREIGN / "tf1_dnn" / "expected.npz")
    src = read_named_tensors(FOREIGN / "tf1_dnn" / "my_model_final.ckpt")
    assert src.framework == "tf" and "hidden1/kernel/Momentum" in src.excluded and "misc/string" in src.excluded
    for name, value in src.read(src.names()):
        expected = z["variable:" + name]
        if name == "misc/bfloat16":                                    # stored as float32 in the fixture
            assert src.info(name)[1] == torch.bfloat16
        assert value.numpy().dtype == expected.dtype and np.array_equal(value.numpy(), expected), name


def test_restore_from_tf_prefix_lists_slots():
    g = gd.load(FOREIGN / "tf1_dnn" / "my_model_final.ckpt.meta", values=False)
    report = gd.restore(g, FOREIGN / "tf1_dnn" / "my_model_final.ckpt", include="hidden[123]", strict=False)
    assert sorted(report.matched) == sorted(f"hidden{i}/{v}" for i in (1, 2, 3) for v in ("kernel", "bias"))
    assert "hidden1/kernel/Momentum" in report.skipped and "global_step" in report.skipped


def test_torch_names():
    targets = ["bn/gamma", "bn/beta", "fc/kernel", "fc/bias"]
    assert [torch_to_tf_name(k, targets) for k in ("bn.weight", "bn.bias", "fc.weight", "bn.running_mean")] == [
        "bn/gamma", "bn/beta", "fc/kernel", "bn/moving_mean"]


def test_strict_mismatch_changes_nothing():
    g, _, _ = _graph()
    before = g.values["hidden1/kernel"].detach().clone()
    with pytest.raises(RestoreError):
        load_weights(g, {"hidden1/kernel": np.zeros((7, 7), np.float32)})
    assert torch.equal(g.values["hidden1/kernel"].detach(), before)
