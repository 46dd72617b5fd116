"""Every ``keras.applications`` family, imported from the ``.keras`` and legacy ``.h5`` files Keras wrote.

The weights would not fit in the repository, so ``fixtures/keras_apps`` keeps each file's skeleton (every zip
member, HDF5 group, attribute and dataset as Keras wrote it, less the dataset values) and Keras' outputs; Keras
wrote its files with weights made by a formula (``_keras_skeleton.py``, ``fixtures/make_keras_catalogue.py
--apps-skeletons``), so filling the datasets by the same formula rebuilds the files Keras saved. Outputs must
match within 1e-4 of the output's scale (``1e-4 * max(1, max |expected|)``). For each family the graph imported
from the ``.keras`` file also trains (a backward pass reaches every trainable variable) and exports to ONNX,
which ONNX Runtime runs to Keras' outputs within the same tolerance.
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
            "convnext_tiny", "vgg16",
            "regnetx002"]  # RegNet is only in Keras 2 (tf_keras): its .keras zip keys weights by class-derived names


class _Family:
    """One family's rebuilt files (each built once) and its ``.keras`` file imported once."""

    def __init__(self, name: str, directory: Path):
        self.name, self.directory, self.cache, self._graph = name, directory, {}, None
        self.skeleton = load_skeleton(APPS / f"{name}.json.gz")
        self.expected = dict(np.load(APPS / f"{name}_expected.npz", allow_pickle=False))

    def path(self, fmt: str) -> Path:
        path = self.directory / f"{self.name}.{fmt}"
        if not path.exists():
            rebuild(self.skeleton, fmt, path, self.cache)
            if all((self.directory / f"{self.name}.{f}").exists() for f in ("keras", "h5")):
                self.cache = {}  # both built: the weights are no longer needed
        return path

    def graph(self) -> gd.Graph:
        """The graph imported from the ``.keras`` file, shared by the tests of the family."""
        if self._graph is None:
            self._graph = gd.load(self.path("keras"))
        return self._graph

    def close(self) -> None:
        for old in self.directory.iterdir():
            old.unlink()
        self.cache, self._graph, self.expected = {}, None, {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: these tiny batches gain nothing from more, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    """One family at a time: pytest groups the tests by this module-scoped parameter and tears it down before
    the next, so only one family's weights are held (all of them together take gigabytes)."""
    family = _Family(request.param, tmp_path_factory.mktemp(request.param))
    yield family
    family.close()


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


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_application_matches_keras_and_keeps_every_weight(family, fmt):
    name, skeleton, z = family.name, family.skeleton, family.expected
    graph = family.graph() if fmt == "keras" else gd.load(family.path(fmt))
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


def _keras_trainable(skeleton: dict) -> set[str]:
    """The weights Keras trains: all but batch norm's moving statistics and a ``Normalization`` layer's
    adapted mean, variance and count."""
    attrs = skeleton["files"]["h5"]["hdf5"]["attrs"]
    config = json.loads(next(a["value"] for a in attrs if a["name"] == "model_config"))
    layers = {layer["config"]["name"]: layer["class_name"] for layer in config["config"]["layers"]}
    assert all(layer["config"].get("trainable", True) for layer in config["config"]["layers"])
    names = {_keras_name(weight, "keras", set(layers)) for weight in skeleton["weights"]}
    return {n for n in names if n.rsplit("/", 1)[-1] not in ("moving_mean", "moving_variance")
            and layers[n.split("/", 1)[0]] != "Normalization"}


def test_gradients_reach_every_trainable_variable(family):
    """One backward pass of a scalar loss (the outputs weighted by fixed random numbers) gives every trainable
    variable a finite, nonzero gradient, and none to the moving statistics, which are not parameters."""
    graph, skeleton = family.graph(), family.skeleton
    trainable = {op.name for op in graph.trainable_variables()}
    assert trainable == _keras_trainable(skeleton)
    module = gd.compile(graph, outputs=graph.meta["keras_import"]["outputs"]).eval()
    assert {n for n in module.variable_names if isinstance(module.variable(n), torch.nn.Parameter)} == trainable
    out = module(torch.from_numpy(_input(skeleton)))  # one output: a tensor
    weight = torch.from_numpy(np.random.default_rng(0).standard_normal(out.shape).astype(np.float32))
    (out * weight).sum().backward()
    try:
        for op in graph.variables():
            value = graph.values[op.name]
            if op.name in trainable:
                assert value.requires_grad and value.grad is not None, op.name
                assert torch.isfinite(value.grad).all() and value.grad.abs().max() > 0, op.name
            else:
                assert not value.requires_grad and value.grad is None, op.name
    finally:
        for name in trainable:
            graph.values[name].grad = None


def _shape_only(node: dict) -> dict:
    return {"attrs": node["attrs"], "groups": {k: _shape_only(v) for k, v in node["groups"].items()},
            "datasets": {k: {f: v[f] for f in ("shape", "dtype", "attrs")} for k, v in node["datasets"].items()}}


@pytest.mark.parametrize("family", ["mobilenet", "efficientnet_b0"], indirect=True)  # Normalization's int64 count
def test_rebuilt_files_have_the_structure_keras_wrote(family):
    """The rebuilt files hold the recorded zip members, HDF5 groups, attributes (with their dtypes) and
    datasets."""
    skeleton = family.skeleton
    with h5py.File(family.path("h5"), "r") as f:
        assert record_hdf5(f, lambda dataset: {}) == _shape_only(skeleton["files"]["h5"]["hdf5"])
    members = skeleton["files"]["keras"]["members"]
    with zipfile.ZipFile(family.path("keras")) as z:
        assert [i.filename for i in z.infolist()] == [m["name"] for m in members]
        for member in members:
            if "text" in member:
                assert z.read(member["name"]).decode("utf-8") == member["text"]
            else:
                with h5py.File(io.BytesIO(z.read(member["name"])), "r") as f:
                    assert record_hdf5(f, lambda dataset: {}) == _shape_only(member["hdf5"])


def test_onnx_export_runs_in_onnx_runtime_with_the_keras_outputs(family):
    graph = family.graph()
    model = gd.export_onnx(graph, None, outputs=graph.meta["keras_import"]["outputs"]).SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the plain kernels: faster here
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    del model
    (got,) = session.run(None, {session.get_inputs()[0].name: _input(family.skeleton)})
    _close(got, family.expected["output:0"], f"{family.name} ONNX output")
