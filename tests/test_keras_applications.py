"""Every ``keras.applications`` family, imported from the ``.keras`` and legacy ``.h5`` files Keras wrote.

The weights would not fit in the repository, so ``fixtures/keras_apps`` keeps each file's skeleton (every zip
member, HDF5 group, attribute and dataset as Keras wrote it, less the dataset values) and Keras' outputs; Keras
wrote its files with weights made by a formula (``_keras_skeleton.py``, ``fixtures/make_keras_catalogue.py
--apps-skeletons``), so filling the datasets by the same formula rebuilds the files Keras saved. Outputs must
match within 1e-4 of the output's scale (``1e-4 * max(1, max |expected|)``).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np
import onnxruntime as ort
import pytest
import torch
from _keras_skeleton import load_skeleton, rebuild, record_hdf5, weight_values

import graphdnn as gd

APPS = Path(__file__).parent / "fixtures" / "keras_apps"
FAMILIES = ["mobilenet", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_b0", "resnet50",
            "resnet50_v2", "densenet121", "inception_v3", "inception_resnet_v2", "xception", "nasnet_mobile",
            "convnext_tiny", "vgg16"]
# RegNet is only in Keras 2 (tf_keras): its .keras zip keys weights by class-derived names, unnamed
FILES = [(name, fmt) for name in FAMILIES + ["regnetx002"] for fmt in ("keras", "h5")]


class _Files:
    """Rebuilt files, one family's weights kept at a time (the test order groups them by family)."""

    def __init__(self, directory: Path):
        self.directory, self.family, self.cache = directory, None, {}

    def __call__(self, name: str, fmt: str) -> tuple[dict, Path]:
        skeleton = load_skeleton(APPS / f"{name}.json.gz")
        if self.family != name:  # the weights of all families together take gigabytes
            for old in self.directory.iterdir():
                old.unlink()
            self.family, self.cache = name, {}
        path = self.directory / f"{name}.{fmt}"
        if not path.exists():
            rebuild(skeleton, fmt, path, self.cache)
        return skeleton, path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: these tiny batches gain nothing from more, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _Files(tmp_path_factory.mktemp("keras_apps"))


def _input(skeleton: dict) -> np.ndarray:
    return weight_values("input", (2, *skeleton["input_shape"]), skeleton["input"]["offset"],
                         skeleton["input"]["scale"])


def _layer_names(skeleton: dict) -> set[str]:
    """The names of the model's own layers, from the config Keras saved."""
    attrs = skeleton["files"]["h5"]["hdf5"]["attrs"]
    config = json.loads(next(a["value"] for a in attrs if a["name"] == "model_config"))
    return {layer["config"]["name"] for layer in config["config"]["layers"]}


def _keras_name(path: str, fmt: str, layers: set[str]) -> str:
    """The ``Variable.path`` Keras gives the weight ``path`` of a model it loads from a ``fmt`` file.

    It starts at the model's layer that holds the weight (``stem/stem_conv/kernel`` for a nested model):
    NASNet builds its layers under name scopes (``normal_A_block_0/.../adjust_bn_0/gamma``) that no file keeps.
    ConvNeXt's ``LayerScale`` weight has no name, so Keras numbers it by a process-wide counter
    (``variable_3``): the legacy ``.h5`` keeps that name, a ``.keras`` file does not (graphdnn: ``variable``)."""
    parts = path.split("/")
    name = "/".join(parts[next(i for i, part in enumerate(parts) if part in layers):])
    return re.sub(r"/variable_\d+$", "/variable", name) if fmt == "keras" else name


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=what)


@pytest.mark.parametrize(("name", "fmt"), FILES)
def test_application_matches_keras_and_keeps_every_weight(name, fmt, files):
    skeleton, path = files(name, fmt)
    z = np.load(APPS / f"{name}_expected.npz", allow_pickle=False)
    graph = gd.load(path)
    names = [op.name for op in graph.variables()]
    assert len(names) == len(skeleton["weights"])  # none dropped
    layers = _layer_names(skeleton)
    assert set(names) == {_keras_name(weight, fmt, layers) for weight in skeleton["weights"]}
    weights = list(skeleton["weights"].items())
    for weight, rule in weights[::len(weights) // 4] + weights[-1:]:  # a few values under their names
        value = graph.values[_keras_name(weight, fmt, layers)].detach().numpy()
        want = weight_values(weight, value.shape, rule["offset"], rule["scale"]) if "offset" in rule else rule["value"]
        assert np.array_equal(value, want), weight
    meta = graph.meta["keras_import"]
    module = gd.compile(graph, outputs=meta["outputs"] + skeleton["probes"]).eval()
    with torch.no_grad():
        got = module(torch.from_numpy(_input(skeleton)))
    _close(got[0].numpy(), z["output:0"], f"{name}.{fmt} output")
    for probe, value in zip(skeleton["probes"], got[1:]):
        _close(value.numpy(), z[f"layer:{probe}"], f"{name}.{fmt} layer {probe}")


def _shape_only(node: dict) -> dict:
    return {"attrs": node["attrs"], "groups": {k: _shape_only(v) for k, v in node["groups"].items()},
            "datasets": {k: {f: v[f] for f in ("shape", "dtype", "attrs")} for k, v in node["datasets"].items()}}


@pytest.mark.parametrize("name", ["mobilenet", "efficientnet_b0"])  # a Normalization layer's int64 count
def test_rebuilt_files_have_the_structure_keras_wrote(name, files):
    """The rebuilt files hold the recorded zip members, HDF5 groups, attributes (with their dtypes) and
    datasets."""
    skeleton, path = files(name, "h5")
    with h5py.File(path, "r") as f:
        assert record_hdf5(f, lambda dataset: {}) == _shape_only(skeleton["files"]["h5"]["hdf5"])
    skeleton, path = files(name, "keras")
    members = skeleton["files"]["keras"]["members"]
    with zipfile.ZipFile(path) as z:
        assert [i.filename for i in z.infolist()] == [m["name"] for m in members]
        for member in members:
            if "text" in member:
                assert z.read(member["name"]).decode("utf-8") == member["text"]
            else:
                with h5py.File(io.BytesIO(z.read(member["name"])), "r") as f:
                    assert record_hdf5(f, lambda dataset: {}) == _shape_only(member["hdf5"])


def test_onnx_export_of_an_application_runs_in_onnx_runtime(files, tmp_path):
    skeleton, path = files("mobilenet", "keras")
    graph = gd.load(path)
    meta = graph.meta["keras_import"]
    out = tmp_path / "mobilenet.onnx"
    gd.export_onnx(graph, str(out), outputs=meta["outputs"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: _input(skeleton)})
    _close(got, np.load(APPS / "mobilenet_expected.npz")["output:0"], "onnx output")
