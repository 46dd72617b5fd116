"""Models exported by torch's exporters train after import like the original modules.

Each test builds a small module with plain torch, exports it (TorchScript exporter ``dynamo=False``
and the default ``dynamo=True`` one), imports the file and trains both copies with SGD on the same
batches: the losses, and for batch norm the running statistics, must agree. The trainability
policy (which initializers are weights, state or constants) is checked on the same files."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from graphdnn.converters.onnx_import import load_onnx
from onnx import TensorProto, helper, numpy_helper

import graphdnn as gd

VOCAB, WIDTH, HEADS, SEQ = 32, 16, 2, 8


class GPTBlock(nn.Module):
    """Embeddings, one pre-norm transformer block (causal attention filled with finfo.min, GELU with
    the tanh approximation written out with ``pow(x, 3.0)``), final norm and a language-model head."""

    def __init__(self) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, WIDTH), nn.Embedding(SEQ, WIDTH)
        self.ln1, self.ln2, self.lnf = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.fc, self.out = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.register_buffer("mask", torch.tril(torch.ones(SEQ, SEQ, dtype=torch.bool)).view(1, 1, SEQ, SEQ),
                             persistent=False)

    @staticmethod
    def gelu(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        x = self.wte(ids) + self.wpe(torch.arange(t))
        q, k, v = self.qkv(self.ln1(x)).split(WIDTH, dim=-1)
        q, k, v = (z.view(b, t, HEADS, WIDTH // HEADS).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(WIDTH // HEADS)
        att = torch.where(self.mask[:, :, :t, :t], att, torch.tensor(torch.finfo(att.dtype).min))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, WIDTH)
        x = x + self.proj(y)
        x = x + self.out(self.gelu(self.fc(self.ln2(x))))
        return self.head(self.lnf(x))


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


class ResNet(nn.Module):
    """conv-BN-relu stem, two residual blocks, global average pool, linear classifier."""

    def __init__(self, c: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(ResBlock(c), ResBlock(c))
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(torch.relu(self.bn(self.stem(x)))).mean((2, 3)))


def export(module: nn.Module, args: tuple, dynamo: bool, **kwargs) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=dynamo, input_names=["x"], output_names=["y"],
                          verbose=False, **kwargs)
    return onnx.load_from_string(buffer.getvalue())


def sgd_losses(module: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float = 0.1) -> list[float]:
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    module.train()
    losses = []
    for x, target in batches:
        opt.zero_grad()
        out = module(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def gpt_batches(n: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, VOCAB, (4, SEQ), generator=g), torch.randint(0, VOCAB, (4, SEQ), generator=g))
            for _ in range(n)]


@pytest.fixture(scope="module")
def gpt() -> GPTBlock:
    torch.manual_seed(0)
    module = GPTBlock().eval()
    with torch.no_grad():  # trained-looking norms: exporters share initializers whose values are equal
        for ln in (module.ln1, module.ln2, module.lnf):
            ln.weight.uniform_(0.8, 1.2)
            ln.bias.uniform_(-0.1, 0.1)
    return module


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_gpt_block_trains_like_the_original(gpt, dynamo):
    model = export(gpt, (torch.zeros(4, SEQ, dtype=torch.long),), dynamo)
    graph = load_onnx(model)
    summary = graph.meta["import_summary"]
    trainable = sum(1 for p in gpt.parameters())
    assert summary["trainable"] == trainable == len(graph.trainable_variables())
    assert summary["state"] == 0
    pow_node = next(n for n in model.graph.node if n.op_type == "Pow")
    exponent = pow_node.input[1]
    if exponent in graph:  # an initializer (the dynamo exporter), or a folded Constant node
        assert not graph.get_operation(exponent).attrs.get("trainable", False)

    imported = gd.compile(graph)
    original = GPTBlock()
    original.load_state_dict(gpt.state_dict())
    batches = gpt_batches()
    ours, theirs = sgd_losses(imported, batches), sgd_losses(original, batches)
    assert all(math.isfinite(v) for v in ours), ours
    assert ours == pytest.approx(theirs, abs=1e-4), (ours, theirs)
    assert theirs[-1] < theirs[0]


def test_resnet_from_the_torchscript_exporter_trains_like_the_original():
    torch.manual_seed(0)
    net = ResNet().eval()
    # without constant folding the TorchScript exporter keeps batch norm (training_mode=0, an eval export)
    model = export(net, (torch.zeros(4, 3, 8, 8),), False, do_constant_folding=False)
    assert [a.i for n in model.graph.node if n.op_type == "BatchNormalization" for a in n.attribute
            if a.name == "training_mode"] == [0] * 5
    graph = load_onnx(model)
    assert graph.meta["import_summary"]["trainable"] == sum(1 for _ in net.parameters())
    assert graph.meta["import_summary"]["state"] == 10
    imported = gd.compile(graph)
    original = ResNet()
    original.load_state_dict(net.state_dict())
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(5)]
    ours, theirs = sgd_losses(imported, batches), sgd_losses(original, batches)
    assert ours == pytest.approx(theirs, abs=1e-4), (ours, theirs)
    stats = {k: v for k, v in original.state_dict().items() if "running" in k}
    for key, value in stats.items():
        torch.testing.assert_close(imported.variable(key), value, atol=1e-5, rtol=1e-5)
        assert not torch.equal(value, net.state_dict()[key])  # they did move
    # eval mode: the running statistics normalize, as in the original
    x = batches[0][0]
    with torch.no_grad():
        torch.testing.assert_close(imported.eval()(x), original.eval()(x), atol=1e-5, rtol=1e-5)
    # a frozen batch norm stays in inference mode under train()
    gd.freeze(imported, r"bn\.")
    before = imported.variable("bn.running_mean").clone()
    imported.train()(x)
    torch.testing.assert_close(imported.variable("bn.running_mean"), before, atol=0, rtol=0)


def _roles_model() -> onnx.ModelProto:
    """One use of each kind: weights, a bias, an embedding, norm scales, BN state, an exponent, fill values,
    a mask, an epsilon, a shape, a transposed weight and the TorchScript exporter's ``Identity`` copy."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    rng = np.random.default_rng(0)

    def init(name, shape, values=None, dtype=f):
        array = rng.standard_normal(shape) if values is None else np.asarray(values)
        return numpy_helper.from_array(array.astype(np.int64 if dtype == i64 else np.bool_ if dtype == TensorProto.BOOL
                                                    else np.float32), name)

    inits = [init("W", (4, 4)), init("b", (4,)), init("E", (10, 4)), init("pos", (2, 4)), init("p", (), 3.0),
             init("fill", (), -3.4e38), init("mask", (2, 4), [[True] * 4, [False] * 4], TensorProto.BOOL),
             init("neg_mask", (2, 4), np.triu(np.full((2, 4), -1e38), 1)), init("ln_scale", (4,)),
             init("ln_bias", (4,)), init("eps", (), 1e-5), init("shape", (2,), [4, 2], i64), init("Wt", (4, 4)),
             init("bn_scale", (4,)), init("bn_bias", (4,)), init("bn_mean", (4,)), init("bn_var", (4,), [1.0] * 4),
             init("lone", (1,), [2.0])]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["b", "mm"], ["h"]),
        helper.make_node("Gather", ["E", "ids"], ["emb"]), helper.make_node("Add", ["h", "emb"], ["h2"]),
        helper.make_node("Add", ["h2", "pos"], ["h3"]), helper.make_node("Pow", ["h3", "p"], ["cube"]),
        helper.make_node("Where", ["mask", "cube", "fill"], ["masked"]),
        helper.make_node("Add", ["masked", "neg_mask"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"]),
        helper.make_node("LayerNormalization", ["probs", "ln_scale", "ln_bias"], ["normed"]),
        helper.make_node("Add", ["normed", "eps"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "lone"], ["scaled"]),
        helper.make_node("Identity", ["W"], ["W_copy"]), helper.make_node("MatMul", ["scaled", "W_copy"], ["mm2"]),
        helper.make_node("Transpose", ["Wt"], ["Wt_T"], perm=[1, 0]),
        helper.make_node("MatMul", ["mm2", "Wt_T"], ["mm3"]),
        helper.make_node("Unsqueeze", ["mm3", "axes"], ["mm4"]),
        helper.make_node("Unsqueeze", ["mm4", "axes"], ["mm5"]),
        helper.make_node("BatchNormalization", ["mm5", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"],
                         training_mode=0),
        helper.make_node("Reshape", ["bn", "shape"], ["y"]),
    ]
    inits.append(init("axes", (1,), [2], i64))
    graph = helper.make_graph(nodes, "roles", [helper.make_tensor_value_info("x", f, [2, 4]),
                                               helper.make_tensor_value_info("ids", i64, [2])],
                              [helper.make_tensor_value_info("y", f, [4, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


TRAINABLE = {"W", "b", "E", "pos", "ln_scale", "ln_bias", "W_copy", "Wt", "bn_scale", "bn_bias"}
STATE = {"bn_mean", "bn_var"}
CONSTANT = {"p", "fill", "mask", "neg_mask", "eps", "lone", "shape", "axes"}


def test_trainability_follows_use_and_is_summarized(capsys, tmp_path):
    model = _roles_model()
    graph = load_onnx(model)
    kinds = {v.name: "trainable" if v.attrs["trainable"] else "other" for v in graph.variables()}
    assert {n for n, k in kinds.items() if k == "trainable"} == TRAINABLE
    assert set(kinds) == TRAINABLE | STATE | CONSTANT
    assert graph.meta["import_summary"]["text"] == "10 trainable tensors, 2 state, 8 constants"
    assert graph.values["W_copy"] is not graph.values["W"] and torch.equal(graph.values["W_copy"], graph.values["W"])
    # the module agrees with ONNX Runtime, and only the trainable tensors are parameters
    module = gd.compile(graph).eval()
    assert {n for n in module.variable_names if isinstance(module.variable(n), nn.Parameter)} == TRAINABLE
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32), "ids": np.array([3, 7])}
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = module(torch.from_numpy(feeds["x"]), torch.from_numpy(feeds["ids"]))
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    # graphdnn inspect shows the decision
    path = tmp_path / "roles.onnx"
    onnx.save(model, path)
    from graphdnn.cli import main

    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    assert "imported: 10 trainable tensors, 2 state, 8 constants" in capsys.readouterr().out


def test_trainable_policy_can_be_overridden(tmp_path):
    model = _roles_model()
    only_w = load_onnx(model, trainable=r"^W")
    assert {v.name for v in only_w.trainable_variables()} == {"W", "W_copy", "Wt"}
    everything = load_onnx(model, trainable="float")  # every float but batch-norm statistics
    assert {v.name for v in everything.trainable_variables()} == TRAINABLE | {"p", "fill", "neg_mask", "eps", "lone"}
    decided = load_onnx(model, trainable=lambda name, value: True if name == "lone" else None)
    assert {v.name for v in decided.trainable_variables()} == TRAINABLE | {"lone"}
    assert decided.meta["import_summary"]["trainable"] == 11
    onnx.save(model, tmp_path / "roles.onnx")
    via_load = gd.load(tmp_path / "roles.onnx", trainable=lambda name, value: False if name == "pos" else None)
    assert {v.name for v in via_load.trainable_variables()} == TRAINABLE - {"pos"}
    with pytest.raises(gd.GraphDNNError, match="not a valid regex"):
        load_onnx(model, trainable="(")



def test_a_model_exported_in_training_mode_follows_train_and_eval():
    """The TorchScript exporter's training export writes training_mode=1 (and unused running-statistic
    outputs) on batch norm and a constant training_mode=True on dropout: the module's mode decides."""
    torch.manual_seed(0)
    net = nn.Sequential(ResNet(), nn.Dropout(0.3)).train()
    model = export(net, (torch.zeros(4, 3, 8, 8),), False, training=torch.onnx.TrainingMode.TRAINING)
    assert {a.i for n in model.graph.node if n.op_type == "BatchNormalization" for a in n.attribute
            if a.name == "training_mode"} == {1}
    assert any(n.op_type == "Dropout" and len(n.input) == 3 for n in model.graph.node)
    imported = gd.compile(load_onnx(model))
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(imported.eval()(x), net.eval()(x), atol=1e-5, rtol=1e-5)
        imported.train()
        torch.manual_seed(5)
        dropped = imported(x)
    assert (dropped == 0).any()  # dropout active again in train()
    assert not torch.equal(imported.variable("0.bn.running_mean"), net.state_dict()["0.bn.running_mean"])
