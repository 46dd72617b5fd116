"""Name-based restore on a crafted source/target pair, from files, mappings and modules."""

import numpy as np
import pytest
import safetensors
import torch
from safetensors.torch import save_file

import graphdnn as gd
from graphdnn.errors import RestoreError
from graphdnn.restoring import LazyTensor, match_names


def target_graph():
    g = gd.Graph("target")
    for name, shape in (("a/kernel", (2, 3)), ("a/bias", (3,)), ("b/kernel", (3, 5)), ("c/w", (4,)),
                        ("d/missing", (2,))):
        g.variable(name, value=torch.zeros(shape))
    return g


SOURCE = {
    "a/kernel": torch.arange(6.0).reshape(2, 3),
    "a/bias": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
    "b/kernel": torch.ones(3, 4),                  # shape mismatch against (3, 5)
    "old/w": torch.full((4,), 7.0),                # renamed to c/w
    "extra/z\nnewline": torch.ones(1),             # unexpected
}


def test_report_of_crafted_pair_and_strict_restores_nothing(tmp_path):
    save_file(SOURCE, tmp_path / "src.safetensors")
    g = target_graph()
    report = match_names({op.name: tuple(op.attrs["shape"]) for op in g.variables()},
                         {k: tuple(v.shape) for k, v in SOURCE.items()}, rename=[(r"^old/", "c/")])
    assert report.matched == ["a/kernel", "a/bias", "c/w"]
    assert report.missing == ["d/missing"]
    assert report.unexpected == ["extra/z\nnewline"]
    assert report.shape_mismatched == [("b/kernel", (3, 4), (3, 5))]
    assert report.renamed == {"old/w": "c/w"}
    with pytest.raises(RestoreError, match=r"shapes differ[\s\S]*b/kernel"):
        gd.restore(g, tmp_path / "src.safetensors", rename=[(r"^old/", "c/")])
    assert all(torch.all(v == 0) for v in g.values.values())      # nothing written

    report = gd.restore(g, tmp_path / "src.safetensors", rename=[(r"^old/", "c/")], strict=False,
                        skip_mismatched=True)
    assert torch.equal(g.values["a/kernel"], SOURCE["a/kernel"])
    assert torch.equal(g.values["a/bias"], SOURCE["a/bias"].float()) and g.values["a/bias"].dtype == torch.float32
    assert torch.equal(g.values["c/w"], SOURCE["old/w"]) and torch.all(g.values["b/kernel"] == 0)
    assert report.cast == {"a/bias": ("float64", "float32")}
    text = str(report)
    assert text.splitlines()[0].startswith("restore from ") and "3 matched, 1 missing, 1 unexpected" in text
    lines = text.splitlines()
    assert any(line.startswith("renamed") and "c/w" in line and "old/w" in line for line in lines)
    assert any(line.startswith("mismatch") and "(3, 4) != target (3, 5)" in line for line in lines)
    assert any(line.startswith("unexpected") and "extra/z\\nnewline" in line for line in lines)  # escaped
    assert any(line.startswith("missing") and "d/missing" in line for line in lines)


def test_filters_select_target_names_and_only_selected_tensors_are_read(tmp_path, monkeypatch):
    src = target_graph()
    for i, v in enumerate(src.values.values()):
        v.data.fill_(i + 1)
    path = gd.save(src, tmp_path / "m.safetensors")
    reads = []
    real = safetensors.safe_open

    class Spy:                                   # counts the tensors actually read from disk
        def __init__(self, *args, **kwargs):
            self.f = real(*args, **kwargs)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def get_tensor(self, key):
            reads.append(key)
            return self.f.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    g = target_graph()
    report = gd.restore(g, path, include="a/|c", exclude=["a/bias"])
    assert report.matched == ["a/kernel", "c/w"] and sorted(reads) == ["a/kernel", "c/w"]
    assert len(report.skipped) == 3
    assert torch.all(g.values["a/kernel"] == 1) and torch.all(g.values["a/bias"] == 0)
    with pytest.raises(RestoreError, match="not variables of the target"):
        gd.restore(g, path, include=["a/kernal"])


def test_mapping_sources_lazy_convert_and_dtype():
    g = target_graph()
    calls = []
    source = {
        "a/kernel": np.arange(6, dtype=np.float32).reshape(3, 2),        # torch layout: needs a transpose
        "a/bias": LazyTensor((3,), torch.float32, lambda: calls.append(1) or torch.ones(3)),
        "c/w": lambda: torch.full((4,), 2.0),
    }
    report = gd.restore(g, source, include="a/|c", convert=lambda n, t, shape: t.T if n == "a/kernel" else t)
    assert report.matched == ["a/kernel", "a/bias", "c/w"] and calls == [1]
    torch.testing.assert_close(g.values["a/kernel"], torch.arange(6.0).reshape(3, 2).T)
    report = gd.restore(g, {"c/w": torch.ones(4, dtype=torch.float64)}, include="c/", dtype="float64")
    assert g.values["c/w"].dtype == torch.float64 and g.get_operation("c/w").attrs["dtype"] == "float64"
    with pytest.raises(RestoreError, match="both map to"):
        gd.restore(g, {"x/w": torch.ones(4), "c/w": torch.ones(4)}, rename={"x/w": "c/w"}, strict=False)


def test_restore_into_module_and_from_graph_copies():
    src = target_graph()
    src.values["a/kernel"].data.fill_(3.0)
    g = target_graph()
    X = g.placeholder("X", (None, 2))
    out = g.add_op("MatMul", [X, "a/kernel"]).out()
    model = gd.compile(g, outputs=[out]).to(torch.float64)
    with pytest.raises(RestoreError, match="4 unexpected"):           # the module has a/kernel only
        gd.restore(model, src)
    assert torch.all(model.variable("a/kernel") == 0)
    report = gd.restore(model, src, strict=False)
    assert report.matched == ["a/kernel"] and report.unexpected == ["a/bias", "b/kernel", "c/w", "d/missing"]
    assert model.variable("a/kernel").dtype == torch.float64 and torch.all(model.variable("a/kernel") == 3)
    src.values["a/kernel"].data.fill_(5.0)                      # the target got a copy, not the source tensor
    assert torch.all(model.variable("a/kernel") == 3)
