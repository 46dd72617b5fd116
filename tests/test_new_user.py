"""What a new user meets one step past the tour: values that are missing, filters that match nothing, feeds
checked at the module boundary, cached data carried into ``fit``, close names suggested, Keras and PyTorch
habits (``summary()``, ``print(model)``, ``torch.save``, torch-layout state dicts, CSV / TensorBoard logs)."""

from __future__ import annotations

import csv
import io
import pickle
import warnings
from functools import partial

import numpy as np
import pytest
import torch

import graphdnn as gd
from graphdnn import initializers as init
from graphdnn import layers, nn
from graphdnn.errors import GraphDNNError, GraphError, InputError, RestoreError, UninitializedError


def _mlp(batch_norm: bool = True) -> tuple[gd.Graph, gd.Tensor]:
    g = gd.Graph()
    X = g.placeholder("X", (None, 784))
    g.placeholder("y", (None,), "int64")
    bn = partial(layers.batch_normalization, momentum=0.9) if batch_norm else (lambda t: t)
    dense = partial(layers.dense, kernel_initializer=init.he_normal())
    with g.name_scope("dnn"):
        h1 = nn.elu(bn(dense(X, 300, name="hidden1")))
        h2 = nn.elu(bn(dense(h1, 100, name="hidden2")))
        logits = dense(h2, 10, name="outputs")
    return g, logits


def _reference(model: gd.CompiledGraph, x: torch.Tensor) -> torch.Tensor:
    """The tour's MLP without batch norm, written by hand with the module's own variables."""
    h = torch.nn.functional.elu(x @ model.variable("hidden1/kernel") + model.variable("hidden1/bias"))
    h = torch.nn.functional.elu(h @ model.variable("hidden2/kernel") + model.variable("hidden2/bias"))
    return h @ model.variable("outputs/kernel") + model.variable("outputs/bias")


# ----------------------------------------------------------------------------- 1. missing values
def test_compile_lists_every_variable_without_a_value_and_initialize_draws_them(tmp_path):
    g, logits = _mlp()
    f = str(tmp_path / "m.safetensors")
    gd.save(gd.compile(g, outputs=[logits]), f)
    g2 = gd.load(f, values=False)
    report = gd.restore(g2, f, include="hidden1")
    assert sorted(report.matched) == ["hidden1/bias", "hidden1/kernel"]
    with pytest.raises(UninitializedError) as info:
        gd.compile(g2, outputs=[logits.name])
    message = str(info.value)
    for name in ("batch_normalization/gamma", "batch_normalization_1/moving_variance", "hidden2/kernel",
                 "outputs/bias"):
        assert name in message
    assert "hidden1/kernel" not in message
    assert "graphdnn.initialize(graph)" in message and "graphdnn.restore" in message
    kept = g2.values["hidden1/kernel"].detach().clone()
    drawn = gd.initialize(g2)
    assert "hidden1/kernel" not in drawn and "hidden2/kernel" in drawn
    assert torch.equal(g2.values["hidden1/kernel"], kept)
    assert g2.values["hidden2/kernel"].shape == (300, 100)
    # He normal: std sqrt(2 / fan_in), within sampling error
    assert abs(float(g2.values["hidden2/kernel"].detach().std()) - (2 / 300) ** 0.5) < 0.01
    out = gd.compile(g2, outputs=[logits.name]).eval()(torch.randn(3, 784))
    assert out.shape == (3, 10)


def test_initialize_filters_and_overwrite():
    g, _ = _mlp(batch_norm=False)
    before = g.values["hidden2/kernel"].detach().clone()
    assert gd.initialize(g) == []  # every variable has a value already
    assert gd.initialize(g, "hidden2", overwrite=True) == ["hidden2/kernel", "hidden2/bias"]
    assert not torch.equal(g.values["hidden2/kernel"], before)
    with pytest.raises(GraphError, match="did you mean 'hidden2'"):
        gd.initialize(g, "hiden2")


# ------------------------------------------------------------------- 2. filters that match nothing
def test_restore_include_matching_nothing_is_an_error_with_close_names(tmp_path):
    g, logits = _mlp()
    f = str(tmp_path / "m.safetensors")
    gd.save(gd.compile(g, outputs=[logits]), f)
    g2 = gd.load(f, values=False)
    with pytest.raises(RestoreError, match="did you mean 'hidden1'"):
        gd.restore(g2, f, include="hiden1")
    assert not g2.values  # nothing written
    assert gd.restore(g2, f, include="hiden1", strict=False).matched == []
    with pytest.raises(RestoreError, match="did you mean 'hidden1/kernel'"):
        gd.restore(g2, f, include=["hiden1/kernel"])


def test_load_weights_that_load_nothing_fail_unless_not_strict():
    from graphdnn.converters.named_tensors import load_weights

    g, _ = _mlp(batch_norm=False)
    state = {"fc9.weight": torch.zeros(5, 5)}
    with pytest.raises(RestoreError, match="names do not match"):
        load_weights(g, state)
    with pytest.raises(RestoreError, match="did you mean 'hidden1'"):
        load_weights(g, {"hidden1.weight": torch.zeros(300, 784)}, include="hiden1")
    assert load_weights(g, state, strict=False).matched == []


# -------------------------------------------------------------------------------- 4. feeds
def test_feeds_are_checked_by_name_shape_and_dtype():
    g, logits = _mlp(batch_norm=False)
    model = gd.compile(g, outputs=[logits])
    with pytest.raises(InputError, match=r"input 'X:0' expects shape \[None, 784\], got \[4, 783\]"):
        model(torch.zeros(4, 783))
    with pytest.raises(InputError, match="expects shape"):
        model(torch.zeros(784))
    with pytest.raises(InputError, match="expects float32, got int64"):
        model(torch.zeros(4, 784, dtype=torch.int64))
    with pytest.raises(InputError, match="takes 1 input"):
        model(torch.zeros(4, 784), torch.zeros(4))
    x = np.random.default_rng(0).standard_normal((4, 784))  # float64, as numpy makes it
    expected = _reference(model, torch.from_numpy(x).float())
    for out in (model(x), model(X=x), model(**{"X:0": torch.from_numpy(x).float()}), model(x=x)):
        torch.testing.assert_close(out, expected)
    with pytest.raises(InputError, match="did you mean 'X'"):
        model(XX=x)
    for bad, message in ((torch.zeros(4, 783), r"expects shape \[None, 784\], got \[4, 783\]"),
                         (torch.zeros(784), "expects shape"), (torch.zeros(4, 784, dtype=torch.int64), "float32")):
        with pytest.raises(InputError, match=message):  # after accepted calls too
            model(bad)
    torch.testing.assert_close(model(torch.nn.Parameter(torch.from_numpy(x).float())), expected)  # a subclass
    model.check_inputs = False  # switched off: the lowering's own error
    with pytest.raises(RuntimeError):
        model(torch.zeros(4, 783))
    quiet = gd.compile(g, outputs=[logits], check_inputs=False)
    assert quiet.check_inputs is False and gd.compile(g, outputs=[logits]).check_inputs is True


def test_checked_module_keeps_code_state_dict_and_torch_compile():
    g, logits = _mlp(batch_norm=False)
    model = gd.compile(g, outputs=[logits])
    assert "def forward" in model.code
    assert set(model.state_dict()) == {"hidden1.kernel", "hidden1.bias", "hidden2.kernel", "hidden2.bias",
                                       "outputs.kernel", "outputs.bias"}
    x = torch.randn(5, 784)
    torch.testing.assert_close(model(x), _reference(model, x))
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # dynamo traces through the checks
    torch.testing.assert_close(compiled(x), _reference(model, x))
    assert compiled(torch.randn(7, 784)).shape == (7, 10)


# ------------------------------------------------------------------------------ 6. cache -> fit
def _frozen_model() -> tuple[gd.CompiledGraph, torch.Tensor, torch.Tensor]:
    g, logits = _mlp(batch_norm=False)
    model = gd.compile(g, outputs=[logits])
    gd.freeze(model, "hidden[12]")
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(64, 784, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    return model, X, y


def test_cached_dataset_carries_labels_into_fit():
    from graphdnn.train import fit

    model, X, y = _frozen_model()
    top, cached = gd.cache_frozen(model, (X, y), progress=False)
    assert len(cached.tensors) == 2 and torch.equal(cached.tensors[1], y)
    assert cached.names[-1] == "labels"
    history = fit(top, data=cached, epochs=2, batch_size=16, progress=False, seed=0)
    assert len(history.history["loss"]) == 2
    # the cached frontier is the frozen bottom's output, computed by hand
    with torch.no_grad():
        h = torch.nn.functional.elu(X @ model.variable("hidden1/kernel") + model.variable("hidden1/bias"))
        h = torch.nn.functional.elu(h @ model.variable("hidden2/kernel") + model.variable("hidden2/bias"))
    torch.testing.assert_close(cached.tensors[0], h)


def test_fit_validates_data_and_labels():
    from graphdnn.train import fit

    model, X, y = _frozen_model()
    with pytest.raises(InputError, match="needs labels"):
        fit(model, X, epochs=1, progress=False)
    with pytest.raises(InputError, match="integer class labels"):
        fit(model, X, y.float() + 0.5, epochs=1, progress=False)
    with pytest.raises(InputError, match="64 samples but y has 10"):
        fit(model, X, y[:10], epochs=1, progress=False)
    top, cached = gd.cache_frozen(model, X, progress=False)
    with pytest.raises(InputError, match="holds no labels"):
        fit(top, data=cached, epochs=1, progress=False)
    fit(model, X, y.float(), epochs=1, progress=False)  # whole-valued float labels are class indices


# ------------------------------------------------------------------------------ 7. did you mean
def test_did_you_mean_for_names_and_patterns():
    g, logits = _mlp()
    with pytest.raises(GraphError, match="did you mean 'dnn/hidden1/MatMul'"):
        gd.compile(g, outputs=["dnn/hiden1/MatMul"])
    with pytest.raises(GraphError, match="did you mean 'X'"):
        gd.compile(g, inputs=["x"], outputs=[logits])
    with pytest.raises(GraphError, match="did you mean 'dnn/outputs/MatMul'"):
        g.get_operation_by_name("dnn/output/MatMul")
    with pytest.raises(GraphError, match="did you mean 'hidden1'"):
        gd.freeze(g, "hiden1")
    with pytest.raises(GraphError, match="did you mean 'hidden1/kernel'"):
        gd.freeze(g, ["hidden1/kernal", "hidden1/bias"])
    assert not g.get_operation("hidden1/bias").attrs.get("frozen")  # nothing frozen
    from graphdnn.train import predict

    model = gd.compile(g, outputs=[logits])
    assert predict(model, torch.zeros(2, 784), output="dnn/outputs/BiasAdd").shape == (2, 10)
    with pytest.raises(InputError, match="did you mean 'dnn/outputs/BiasAdd:0'"):
        predict(model, torch.zeros(2, 784), output="dnn/output/BiasAdd:0")


# ------------------------------------------------------------------------------ 10. habits
def test_one_make_optimizer_for_modules_graphs_and_parameters():
    from graphdnn import freezing as freeze_module
    from graphdnn.train import make_optimizer

    assert gd.make_optimizer is make_optimizer
    assert not hasattr(freeze_module, "make_optimizer")
    g, logits = _mlp(batch_norm=False)
    model = gd.compile(g, outputs=[logits])
    gd.freeze(model, "hidden1")
    for target in (model, g):
        opt = make_optimizer("momentum", target, lr=0.05, scope="hidden2|outputs")
        assert {id(p) for p in opt.param_groups[0]["params"]} == {
            id(model.variable(n)) for n in ("hidden2/kernel", "hidden2/bias", "outputs/kernel", "outputs/bias")}
        assert opt.param_groups[0]["momentum"] == 0.9
    w = torch.nn.Parameter(torch.ones(2))
    assert make_optimizer("sgd", [w], 0.1).param_groups[0]["params"] == [w]
    with pytest.raises(GraphError, match="did you mean 'hidden2'"):
        make_optimizer("adam", model, scope="hiden2")


def test_print_model_shows_scopes_and_summary_method():
    g, logits = _mlp()
    model = gd.compile(g, outputs=[logits])
    gd.freeze(model, "hidden1")
    text = str(model)
    assert "Module()" not in text and "X:0 -> dnn/outputs/BiasAdd:0" in text.replace("dnn/outputs/Add", "x")
    assert "hidden1/" in text and "(784, 300)" in text and "frozen" in text
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    assert "Total params" in lines[0] and "hidden2" in lines[0]
    from graphdnn.summary import summary_data

    rows = summary_data(model)["rows"]  # each ELU in its place, not folded into one "dnn" row
    assert [r["scope"] for r in rows] == ["X", "dnn/hidden1", "dnn/batch_normalization", "dnn", "dnn/hidden2",
                                          "dnn/batch_normalization_1", "dnn", "dnn/outputs"]
    assert [r["output_shape"] for r in rows if r["scope"] == "dnn"] == ["(None, 300)", "(None, 100)"]


def test_torch_save_and_load_give_a_working_compiled_module():
    g, logits = _mlp(batch_norm=False)
    model = gd.compile(g, outputs=[logits])
    x = torch.randn(3, 784)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    back = torch.load(buffer, weights_only=False)
    assert isinstance(back, gd.CompiledGraph)
    torch.testing.assert_close(back(x), model(x))
    torch.testing.assert_close(back.variable("hidden1/kernel"), model.variable("hidden1/kernel"))
    assert back.input_names == model.input_names and set(back.state_dict()) == set(model.state_dict())
    assert isinstance(pickle.loads(pickle.dumps(model)), gd.CompiledGraph)


def test_load_state_dict_accepts_torch_linear_layout():
    g, logits = _mlp(batch_norm=False)
    model = gd.compile(g, outputs=[logits])
    linear = torch.nn.Linear(784, 300)
    state = {"hidden1.kernel": linear.weight.detach(), "hidden1.bias": linear.bias.detach()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_state_dict(state, strict=False)
    assert any("hidden1.kernel" in str(w.message) for w in caught)
    x = torch.randn(2, 784)
    torch.testing.assert_close(x @ model.variable("hidden1/kernel") + model.variable("hidden1/bias"), linear(x))
    with pytest.raises(RuntimeError, match="load_weights"):
        model.load_state_dict({"hidden1.kernel": torch.zeros(3, 3)}, strict=False)


def test_fit_verbose_validation_split_and_csv_logger(tmp_path, capsys):
    from graphdnn.train import CSVLogger, fit

    model, X, y = _frozen_model()
    path = tmp_path / "log.csv"
    history = fit(model, X, y, epochs=2, batch_size=16, verbose=0, validation_split=0.25, seed=0,
                  callbacks=[CSVLogger(path)])
    assert capsys.readouterr().err == ""
    assert "val_loss" in history.history and len(history.history["val_loss"]) == 2
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["val_loss"]) == pytest.approx(history.history["val_loss"][1])
    with pytest.raises(ValueError, match="validation_split"):
        fit(model, X, y, epochs=1, verbose=0, validation_split=0.25, validation_data=(X, y))


def test_tensorboard_callback_writes_or_says_what_to_install(tmp_path, monkeypatch):
    from graphdnn.train import TensorBoard

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(GraphDNNError, match="pip install tensorboard"):
            TensorBoard(tmp_path / "tb")
        return
    tb = TensorBoard(tmp_path / "tb")
    tb.on_epoch_end(1, {"loss": 0.5})
    tb.on_train_end({})
    assert any((tmp_path / "tb").iterdir())


def test_deepcopy_of_a_compiled_module_keeps_its_signature_and_owns_its_variables():
    import copy

    import graphdnn as gd

    g = gd.Graph()
    x = g.placeholder("X", (None, 4))
    gd.layers.dense(x, 3, name="h")
    model = gd.compile(g)
    twin = copy.deepcopy(model)
    feed = torch.ones(2, 4)
    torch.testing.assert_close(twin(feed), model(feed))
    assert twin.input_names == model.input_names and twin.output_names == model.output_names
    with torch.no_grad():
        twin.variable("h/kernel").add_(1.0)
    assert not torch.equal(twin.variable("h/kernel"), model.variable("h/kernel"))
    with pytest.raises(gd.InputError, match="expects shape"):
        twin(torch.ones(2, 5))
