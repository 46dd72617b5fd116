"""fit / evaluate / predict on the bundled digits with plain torch modules, and load_digits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graphdnn.data import DIGITS_PATH, load_digits
from graphdnn.train import (
    Callback,
    Compose,
    EarlyStopping,
    ExponentialDecay,
    RandomShift,
    evaluate,
    fit,
    max_norm_,
    performance_scheduling,
    predict,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models train fastest (and most predictably on a shared machine) on one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ELU(), nn.Dropout(dropout), nn.Linear(64, 10))


# ---------------------------------------------------------------- the data


def test_load_digits_shapes_types_and_split():
    x_train, y_train, x_test, y_test = load_digits()
    assert x_train.shape == (1438, 64) and x_test.shape == (359, 64)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    assert set(np.unique(y_test)) == set(range(10))
    again = load_digits()
    assert all(np.array_equal(a, b) for a, b in zip((x_train, y_train, x_test, y_test), again))
    x, y = load_digits(split=False, flat=False)
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,)
    # the split is a permutation of the whole set
    whole = np.concatenate([x_train, x_test])
    assert np.array_equal(np.sort(whole.reshape(-1)), np.sort(x.reshape(-1)))
    other = load_digits(seed=0, test_fraction=0.5)
    assert len(other[2]) == 898 and not np.array_equal(other[1][:50], y_train[:50])
    with pytest.raises(ValueError):
        load_digits(test_fraction=1.0)


def test_digits_file_is_plain_arrays_and_needs_no_sklearn():
    with np.load(DIGITS_PATH, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["images", "labels"]
        assert archive["images"].dtype == np.uint8 and archive["labels"].dtype == np.int64
        assert archive["images"].max() == 16
    code = "import sys; from graphdnn.data import load_digits; load_digits(); assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- training


def test_fit_reaches_95_percent_on_digits_and_is_deterministic(digits):
    x_train, y_train, x_test, y_test = digits
    histories, weights = [], []
    for _ in range(2):
        model = mlp(seed=0, dropout=0.1)
        history = fit(
            model,
            x_train,
            y_train,
            epochs=12,
            batch_size=32,
            optimizer="adam",
            lr=0.003,
            validation_data=(x_test, y_test),
            progress=False,
            seed=42,
        )
        histories.append(history)
        weights.append([p.detach().clone() for p in model.parameters()])
    first, second = histories
    assert first.to_dict() == second.to_dict()  # identical, not just close
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    assert first.keys() == ["loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert first.epochs == list(range(1, 13))
    scores = evaluate(model, x_test, y_test)
    assert scores["accuracy"] >= 0.95
    assert scores["accuracy"] == pytest.approx(first["val_accuracy"][-1])
    assert first["loss"][-1] < first["loss"][0]
    # a different seed gives a different run
    third = fit(mlp(seed=0, dropout=0.1), x_train, y_train, epochs=1, progress=False, seed=7)
    assert third["loss"][0] != first["loss"][0]


def test_seed_does_not_leak_into_the_global_rng(digits):
    x_train, y_train, _, _ = digits
    model = mlp()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, x_train[:64], y_train[:64], epochs=1, progress=False, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_seeded_augmented_runs_are_identical(digits):
    x_train, y_train, _, _ = digits
    runs = []
    for _ in range(2):
        augment = Compose(RandomShift(1), image_shape=(1, 8, 8))  # draws from the seeded global RNG
        runs.append(fit(mlp(), x_train[:256], y_train[:256], epochs=2, augment=augment, progress=False, seed=3))
    assert runs[0].to_dict() == runs[1].to_dict()


class Hooked(nn.Module):
    """A plain module exposing the hooks compiled graphdnn models provide, and recording modes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Linear(64, 32)
        self.out = nn.Linear(32, 10)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.reg_calls = 0
        self.constraint_calls = 0
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.out(torch.relu(self.hidden(x)))

    def regularization_loss(self):
        self.reg_calls += 1
        return torch.tensor(5.0) + 0.0 * self.hidden.weight.sum()

    def apply_constraints(self):
        self.constraint_calls += 1
        max_norm_(self.hidden.weight, 0.5, axes=0)  # torch's [out, in]: axes=0 is the book's rows


def test_fit_uses_model_hooks_and_modes(digits):
    x_train, y_train, x_test, y_test = digits
    model = Hooked()
    model.eval()
    x, y = x_train[:200], y_train[:200]
    history = fit(model, x, y, epochs=2, batch_size=50, validation_data=(x_test, y_test), progress=False)
    assert model.reg_calls == model.constraint_calls == 8  # 4 steps per epoch
    assert model.training is False  # mode restored
    assert model.modes[:4] == [True] * 4 and model.modes[4] is False  # train steps, then validation
    no_reg = evaluate(model, x, y)["loss"]
    assert history["loss"][-1] > 5.0 > no_reg  # the objective includes the regularization loss
    norms = model.hidden.weight.detach().norm(dim=0)
    assert float(norms.max()) <= 0.5 + 1e-6
    assert torch.equal(model.frozen, torch.ones(2))


def test_early_stopping_restores_the_best_epoch(digits):
    x_train, y_train, _, _ = digits
    model = mlp()
    snapshots = {}

    class Snap(Callback):
        def on_epoch_end(self, epoch, logs):
            snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    # lr decays every epoch, so monitoring it in max mode makes epoch 1 the best and stops at epoch 3
    history = fit(
        model,
        x_train[:300],
        y_train[:300],
        epochs=10,
        optimizer="sgd",
        lr=0.5,
        progress=False,
        schedule=lambda opt: ExponentialDecay(opt, decay_steps=1, decay_rate=0.5),
        schedule_interval="epoch",
        early_stopping={"monitor": "lr", "mode": "max", "patience": 2},
        callbacks=[Snap()],
    )
    assert history.stopped_early and history.epochs == [1, 2, 3] and history.best_epoch == 1
    assert history["lr"] == pytest.approx([0.5, 0.25, 0.125])
    for key, value in snapshots[1].items():
        assert torch.equal(model.state_dict()[key], value)
    assert not torch.equal(snapshots[3]["0.weight"], snapshots[1]["0.weight"])


def test_early_stopping_on_validation_loss_and_callback_stop(digits):
    x_train, y_train, x_test, y_test = digits
    stopper = EarlyStopping(patience=1)
    history = fit(
        mlp(),
        x_train,
        y_train,
        epochs=30,
        lr=0.05,
        validation_data=(x_test, y_test),
        progress=False,
        seed=0,
        early_stopping=stopper,
    )
    assert stopper.monitor == "val_loss"
    assert history.best_epoch == int(np.argmin(history["val_loss"])) + 1
    stopped = fit(mlp(), x_train[:64], y_train[:64], epochs=5, progress=False, callbacks=[lambda e, logs: e == 2])
    assert stopped.epochs == [1, 2] and stopped.stopped_early


def test_per_batch_schedule_clipping_and_dataloaders(digits):
    x_train, y_train, x_test, y_test = digits
    xs, ys = torch.tensor(x_train[:256]), torch.tensor(y_train[:256])
    loader = DataLoader(TensorDataset(xs, ys), batch_size=64, shuffle=True)
    worst = []

    class GradSpy(Callback):
        def __init__(self, model):
            self.model = model

        def on_batch_end(self, step, logs):
            worst.append(max(float(p.grad.abs().max()) for p in self.model.parameters()))

    model = mlp()
    history = fit(
        model,
        data=loader,
        epochs=3,
        optimizer="momentum",
        lr=0.1,
        clip_value=0.01,
        progress=False,
        schedule=lambda opt: ExponentialDecay(opt, decay_steps=4, decay_rate=0.1),
        validation_data=DataLoader(TensorDataset(torch.tensor(x_test), torch.tensor(y_test)), batch_size=100),
        callbacks=[GradSpy(model)],
    )
    assert len(worst) == 12 and max(worst) <= 0.01
    assert history["lr"] == pytest.approx([0.1, 0.01, 0.001])  # 4 batches per epoch, decay every 4 steps
    assert set(history.keys()) >= {"val_loss", "val_accuracy"}


def test_performance_scheduling_and_clip_norm_in_fit(digits):
    x_train, y_train, x_test, y_test = digits
    history = fit(
        mlp(),
        x_train[:200],
        y_train[:200],
        epochs=4,
        lr=1e-6,
        optimizer="sgd",
        clip_norm=1.0,
        validation_data=(x_test, y_test),
        progress=False,
        schedule=lambda opt: performance_scheduling(opt, factor=0.5, patience=0),
    )
    lrs = history["lr"]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_predict_and_evaluate(digits):
    x_train, y_train, x_test, y_test = digits
    model = mlp(dropout=0.5)
    fit(model, x_train, y_train, epochs=3, progress=False, seed=0)
    model.train()
    first = predict(model, x_test, batch_size=100)
    assert first.shape == (359, 10) and model.training  # eval inside, mode restored
    assert torch.equal(first, predict(model, torch.tensor(x_test)))  # dropout off: deterministic
    acc = float((first.argmax(1).numpy() == y_test).mean())
    assert evaluate(model, x_test, y_test, batch_size=7)["accuracy"] == pytest.approx(acc)
    loader = DataLoader(TensorDataset(torch.tensor(x_test), torch.tensor(y_test)), batch_size=50)
    assert evaluate(model, data=loader)["loss"] == pytest.approx(evaluate(model, x_test, y_test)["loss"])


def test_ftrl_with_l1_gives_a_sparse_linear_model(digits):
    x_train, y_train, x_test, y_test = digits
    torch.manual_seed(0)
    model = nn.Linear(64, 10)
    fit(
        model,
        x_train,
        y_train,
        epochs=3,
        optimizer="ftrl",
        lr=0.5,
        progress=False,
        seed=0,
        optimizer_kwargs={"l1_regularization_strength": 0.5},
    )
    zeros = int((model.weight == 0).sum())
    assert zeros > 0.2 * model.weight.numel()
    assert evaluate(model, x_test, y_test)["accuracy"] > 0.8


def test_history_plot_and_bad_arguments(digits, tmp_path):
    x_train, y_train, _, _ = digits
    model = mlp()
    history = fit(model, x_train[:128], y_train[:128], epochs=3, progress=False)
    path = history.plot(tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(KeyError):
        history.plot(tmp_path / "x.png", keys=["val_loss"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        fit(model, x_train, y_train, optimizer=opt, lr=0.5, progress=False)
    with pytest.raises(ValueError, match="unknown loss"):
        fit(model, x_train, y_train, loss="hinge", progress=False)
    with pytest.raises(ValueError, match="not both"):
        fit(model, x_train, y_train, data=(x_train, y_train), progress=False)
    with pytest.raises(KeyError, match="val_loss"):
        fit(model, x_train[:32], y_train[:32], epochs=1, progress=False, early_stopping={"monitor": "val_loss"})


class TwoHeads(nn.Module):
    """Returns (aux, logits) like a compiled graph with two outputs, naming them."""

    output_names = ["dnn/aux:0", "dnn/outputs/BiasAdd:0"]

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(64, 10)

    def forward(self, x):
        logits = self.body(x)
        return logits.sum(dim=1, keepdim=True), logits


def test_output_selection_by_graph_name(digits):
    x_train, y_train, x_test, y_test = digits
    model = TwoHeads()
    stopper = EarlyStopping(monitor="loss", patience=3)
    history = fit(
        model,
        x_train,
        y_train,
        epochs=2,
        output="dnn/outputs/BiasAdd:0",
        progress=False,
        early_stopping=stopper,
    )
    assert history["accuracy"][-1] > 0.5
    assert predict(model, x_test, output="dnn/outputs/BiasAdd:0").shape == (359, 10)
    assert predict(model, x_test).shape == (359, 1)  # first output by default
    # the same EarlyStopping instance starts afresh in a new run
    again = fit(model, x_train, y_train, epochs=1, output=1, progress=False, early_stopping=stopper)
    assert again.best_epoch == 1 and stopper.seen == 1
