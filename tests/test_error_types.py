"""Every bad-input error graphdnn raises is a ``GraphDNNError`` that keeps the builtin type callers caught before:
a source scan for plain ``raise ValueError(...)``/``TypeError``/``KeyError``/``IndexError``, and checks that
user-facing bad input (training, schedules, augmentation, ML ops imported from ONNX) raises such errors."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import run_graphdnn, value_info
from onnx import helper

import graphdnn
from graphdnn.errors import ArgumentTypeError, GraphDNNError, GraphError, InputError, UnknownNameError
from graphdnn.train import ExponentialDecay, PiecewiseConstant, PowerDecay, RandomBrightnessContrast, RandomShift, fit

PACKAGE = Path(graphdnn.__file__).resolve().parent
BUILTINS = ("ValueError", "TypeError", "KeyError", "IndexError")

# Plain builtin raises that are not about a caller's input, as (path under graphdnn/, exception): count.
ALLOWED = {
    # Regenerates the packaged digits file from scikit-learn's copy and checks that copy's pixel values:
    # a maintainer's build step, never reached from the library.
    ("data/make_digits.py", "ValueError"): 1,
}


def _raises_in(source: str, rel: str) -> list[tuple[str, str]]:
    """(exception name, "graphdnn/<rel>:<line>") of each ``raise`` of a builtin in BUILTINS in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id in BUILTINS:
                found.append((target.id, f"graphdnn/{rel}:{node.lineno}: raise {target.id}"))
    return sorted(found, key=lambda item: int(item[1].split(":")[1]))


def _plain_raises() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for name, where in _raises_in(path.read_text(encoding="utf-8"), rel):
            found.setdefault((rel, name), []).append(where)
    return found


def test_no_plain_builtin_raises_outside_the_allow_list():
    found = _plain_raises()
    extra = [where for key, places in found.items() for where in places[ALLOWED.get(key, 0):]]
    assert not extra, ("raise a graphdnn.errors class (InputError, GraphError, ArgumentTypeError, ...) instead of "
                       "a plain builtin:\n" + "\n".join(extra))


def test_allow_list_is_not_stale():
    found = _plain_raises()
    stale = [key for key, count in ALLOWED.items() if len(found.get(key, [])) < count]
    assert not stale, f"allow-list entries with fewer raises than listed (lower or drop them): {stale}"


def test_the_scan_sees_plain_raises_and_not_project_errors():
    source = ("def f(x):\n    if x:\n        raise ValueError('bad')\n    if x is None:\n        raise KeyError\n"
              "    raise InputError('fine')\n")
    assert _raises_in(source, "m.py") == [("ValueError", "graphdnn/m.py:3: raise ValueError"),
                                          ("KeyError", "graphdnn/m.py:5: raise KeyError")]


def _both(exc_info: pytest.ExceptionInfo, builtin: type[Exception]) -> None:
    assert isinstance(exc_info.value, GraphDNNError) and isinstance(exc_info.value, builtin), type(exc_info.value)


def test_fit_with_mismatched_x_and_y():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(InputError, match="one label per sample") as info:
        fit(model, torch.zeros(5, 3), torch.zeros(4, dtype=torch.int64), epochs=1, progress=False)
    _both(info, ValueError)


def test_fit_bad_arguments():
    model = torch.nn.Linear(3, 2)
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(InputError, match="epochs") as info:
        fit(model, x, y, epochs=-1, progress=False)
    _both(info, ValueError)
    with pytest.raises(ArgumentTypeError, match="early_stopping") as info:
        fit(model, x, y, epochs=1, early_stopping=True, progress=False)
    _both(info, TypeError)
    with pytest.raises(UnknownNameError, match="val_loss") as info:
        fit(model, x, y, epochs=1, early_stopping={"monitor": "val_loss", "patience": 1}, progress=False)
    _both(info, KeyError)
    assert "val_loss" in str(info.value) and not str(info.value).startswith(("'", '"'))


def test_schedule_bad_parameters():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(InputError, match="decay_steps") as info:
        ExponentialDecay(opt, decay_steps=0, decay_rate=0.5)
    _both(info, ValueError)
    with pytest.raises(InputError, match="boundaries") as info:
        PiecewiseConstant(opt, boundaries=[10, 5], values=[0.1, 0.01, 0.001])
    _both(info, ValueError)
    with pytest.raises(InputError, match="decay_steps"):
        PowerDecay(opt, decay_steps=-3)


def test_augmentation_bad_arguments():
    with pytest.raises(InputError, match="RandomShift.*max_shift") as info:
        RandomShift(max_shift=-1)
    _both(info, ValueError)
    with pytest.raises(InputError, match="contrast") as info:
        RandomBrightnessContrast(brightness=0.1, contrast=1.5)
    _both(info, ValueError)
    with pytest.raises(InputError, match="NCHW") as info:
        RandomShift(max_shift=1)(torch.zeros(3, 8, 8))
    _both(info, ValueError)


def _ml_model(attrs: dict, x: np.ndarray) -> onnx.ModelProto:
    node = helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph([node], "g", [value_info("x", x)], [onnx.ValueInfoProto(name="y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("ai.onnx.ml", 4)])
    model.ir_version = 9
    return model


def test_ml_op_with_invalid_attributes():
    x = np.array([1, 2, 3], np.int64)
    good = {"keys_int64s": [1, 2], "values_int64s": [10, 20], "default_int64": -1}
    assert run_graphdnn(_ml_model(good, x), [x])[0].tolist() == [10, 20, -1]
    two_key_sets = {**good, "keys_strings": ["a", "b"]}
    with pytest.raises(GraphError, match="LabelEncoder.*keys_") as info:
        run_graphdnn(_ml_model(two_key_sets, x), [x])
    _both(info, ValueError)
    uneven = {**good, "values_int64s": [10, 20, 30]}
    with pytest.raises(GraphError, match="LabelEncoder: 2 keys but 3 values") as info:
        run_graphdnn(_ml_model(uneven, x), [x])
    _both(info, ValueError)
