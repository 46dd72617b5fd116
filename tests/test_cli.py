"""The ``graphdnn`` command, run for real in a subprocess on real files of every format it reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import graphdnn as gd
from graphdnn.recipes import default_dnn

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = ROOT / "tests" / "fixtures" / "foreign"
TF_META = FOREIGN / "tf1_dnn" / "my_model_final.ckpt.meta"
TF_PREFIX = FOREIGN / "tf1_dnn" / "my_model_final.ckpt"
KERAS = FOREIGN / "keras" / "mlp.keras"


def graphdnn(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m graphdnn ARGS`` (the console script's entry point) and capture its output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "graphdnn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def in_process(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """The same command through ``graphdnn.cli.main`` in this process (cheaper than a subprocess)."""
    from graphdnn.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained-looking book DNN as graphdnn safetensors and ONNX, a torch state dict and an input array."""
    tmp = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    dnn = default_dnn(64, 10, (32, 16))
    gd.freeze(dnn.graph, "hidden1")
    paths = {"st": tmp / "dnn.safetensors", "onnx": tmp / "dnn.onnx", "pt": tmp / "net.pt", "x": tmp / "x.npy"}
    gd.save(dnn.graph, paths["st"])
    gd.export_onnx(dnn.graph, paths["onnx"], outputs=[dnn.logits])
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.save(net.state_dict(), paths["pt"])
    np.save(paths["x"], np.random.default_rng(0).standard_normal((7, 64)).astype(np.float32))
    return paths


def test_inspect_reads_every_format_in_one_run(files: dict[str, Path]) -> None:
    r = graphdnn("inspect", files["st"], files["onnx"], TF_META, KERAS, files["pt"], "--ops")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for path in (files["st"], files["onnx"], TF_META, KERAS, files["pt"]):
        assert f"{path} (" in out
    assert "(graphdnn checkpoint)" in out and "(ONNX)" in out and "(TensorFlow meta graph)" in out
    assert "(Keras)" in out and "(PyTorch state dict)" in out
    # the summary table and the variable tree, with frozen parts
    assert "Scope (ops)" in out and "dnn/hidden1 (MatMul, Elu)" in out
    assert "frozen" in out and "Frozen params: 2,176" in out  # 64*32 kernel + 4*32 batch norm
    assert "dnn/hidden4 (MatMul, Add, Relu)" in out  # the TF1 graph
    assert "0.weight" in out and "(4, 8)" in out  # the state dict
    assert "dnn/hidden4/Relu  Relu(dnn/hidden4/BiasAdd:0) -> (None, 16)" in out  # --ops


def test_inspect_json_counts_match_the_file(files: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    code, out, err = in_process(capsys, "inspect", files["st"], "--json")
    assert code == 0, err
    doc = json.loads(out)
    stored = load_file(files["st"])
    assert {v["name"] for v in doc["variables"]} == set(stored)
    assert doc["totals"]["params"] == sum(a.size for a in stored.values())
    assert doc["totals"]["bytes"] == sum(a.nbytes for a in stored.values())
    status = {v["name"]: v["status"] for v in doc["variables"]}
    assert status["hidden1/kernel"] == "frozen" and status["hidden2/kernel"] == "trainable"
    assert status["hidden2/batch_normalization/moving_mean"] == "state"
    rows = {row["scope"]: row for row in doc["summary"]}
    assert rows["dnn/hidden2"]["params"] == 32 * 16 and rows["dnn/hidden2"]["output_shape"] == "(None, 16)"


def test_run_both_engines_agree_and_fetch_any_tensor(files: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    r = graphdnn("run", files["st"], "--input", f"X={files['x']}", "--output", "dnn/hidden2/Elu:0",
                 "--output", "dnn/outputs/BiasAdd:0", "--engine", "both", "--out-dir", out_dir, "--atol", "1e-5")
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("largest difference")][0]
    assert float(line.split(":")[1].split()[0]) < 1e-5
    ort_h2 = np.load(out_dir / "dnn_hidden2_Elu_0.ort.npy")
    torch_logits = np.load(out_dir / "dnn_outputs_BiasAdd_0.torch.npy")
    assert ort_h2.shape == (7, 16) and torch_logits.shape == (7, 10)
    graph = gd.load(files["st"])
    model = gd.compile(graph, inputs=["X"], outputs=["dnn/outputs/BiasAdd:0"]).eval()
    expected = model(torch.from_numpy(np.load(files["x"]))).detach().numpy()
    np.testing.assert_allclose(torch_logits, expected, atol=1e-6)


def test_convert_keras_to_onnx_then_run_it_in_ort(tmp_path: Path) -> None:
    onnx_path = tmp_path / "mlp.onnx"
    r = graphdnn("convert", KERAS, onnx_path)
    assert r.returncode == 0, r.stderr
    expected = np.load(FOREIGN / "keras" / "mlp_expected.npz")
    np.save(tmp_path / "x.npy", expected["input"])
    r = graphdnn("run", onnx_path, "--input", f"X={tmp_path / 'x.npy'}", "--out-dir", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    (saved,) = (tmp_path / "out").glob("*.npy")
    np.testing.assert_allclose(np.load(saved), expected["output"], atol=1e-5)


def test_convert_tf_checkpoint_with_filters_and_renames(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    whole, part = tmp_path / "whole.safetensors", tmp_path / "part.safetensors"
    r = graphdnn("convert", TF_PREFIX, whole, "--rename", "^hidden1/=layer1/")
    assert r.returncode == 0, r.stderr
    graph = gd.load(whole)
    assert "layer1/kernel" in graph.values and "hidden1/kernel" not in graph.values
    expected = np.load(FOREIGN / "tf1_dnn" / "expected.npz")
    np.testing.assert_array_equal(graph.values["layer1/kernel"].detach().numpy(), expected["variable:hidden1/kernel"])
    code, _, err = in_process(capsys, "convert", TF_META, part, "--include", "hidden[123]", "--exclude", ".*/bias")
    assert code == 0, err
    assert sorted(load_file(part)) == ["hidden1/kernel", "hidden2/kernel", "hidden3/kernel"]


def test_convert_pt_state_dict_with_rename(files: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    dst = tmp_path / "net.safetensors"
    code, _, err = in_process(capsys, "convert", files["pt"], dst, "--rename", r"^0\.=fc1.", "--exclude", r"2\.")
    assert code == 0, err
    state = torch.load(files["pt"], weights_only=True)
    got = load_file(dst)
    assert sorted(got) == ["fc1.bias", "fc1.weight"]
    np.testing.assert_array_equal(got["fc1.weight"], state["0.weight"].numpy())


def test_diff_names_shapes_and_values_match_numpy(files: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    graph = gd.load(files["st"])
    with torch.no_grad():
        graph.values["hidden2/kernel"].add_(0.25)
        graph.values["outputs/bias"][3] -= 1.5
    gd.rename_scope(graph, "outputs", "logits")
    other = tmp_path / "other.safetensors"
    gd.save(graph, other)
    r = graphdnn("diff", files["st"], other, "--json")
    assert r.returncode == 1, r.stderr  # they differ
    report = json.loads(r.stdout)
    assert report["only_a"] == ["outputs/kernel", "outputs/bias"]
    assert report["only_b"] == ["logits/kernel", "logits/bias"]
    a, b = load_file(files["st"]), load_file(other)
    for name, d in report["max_abs"].items():
        assert d == pytest.approx(float(np.abs(a[name].astype(np.float64) - b[name]).max()))
    assert report["max_abs"]["hidden2/kernel"] == pytest.approx(0.25)
    code, out, err = in_process(capsys, "diff", files["st"], files["onnx"])
    assert code == 0 and "same names, shapes and values" in out, out + err


def test_draw_svg_and_png_are_valid_pictures(files: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    svg, png = tmp_path / "g.svg", tmp_path / "g.png"
    r = graphdnn("draw", files["st"], "-o", svg)
    assert r.returncode == 0, r.stderr
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "dnn/hidden1/MatMul" in texts and "X" in texts
    assert any(g.get("class") == "frozen" for g in root.iter("{http://www.w3.org/2000/svg}g"))
    code, _, err = in_process(capsys, "draw", TF_META, "-o", png, "--depth", "2")
    assert code == 0, err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 100 < width < 5000 and 100 < height < 5000


@pytest.mark.parametrize("args, needle", [
    (("inspect", "missing.safetensors"), "missing.safetensors: no such file"),
    (("inspect", "notes.txt"), "notes.txt: unknown model format"),
])
def test_errors_are_one_clear_line(files: dict[str, Path], args: tuple[str, ...], needle: str) -> None:
    folder = files["pt"].parent
    (folder / "notes.txt").write_text("not a model")
    r = graphdnn(*args, cwd=folder)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert lines[0].startswith(f"graphdnn {args[0]}: error: ")


@pytest.mark.parametrize("args, needle", [
    (("draw", "net.pt", "-o", "g.svg"), "net.pt: a PyTorch state dict file holds named tensors but no graph"),
    (("convert", "missing.onnx", "out.safetensors"), "missing.onnx: no such file"),
    (("convert", "net.pt", "out.bmp"), "out.bmp: convert writes .safetensors or .onnx"),
    (("convert", "net.pt", "out.onnx"), "have no graph to export to ONNX; pass --graph MODEL"),
    (("run", "dnn.safetensors", "--input", "X=nothing.npy"), "nothing.npy: no such file"),
    (("view", "net.pt"), "Netron is not installed"),
])
def test_more_errors_are_one_clear_line(files: dict[str, Path], args: tuple[str, ...], needle: str,
                                        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(files["pt"].parent)
    monkeypatch.setitem(sys.modules, "netron", None)  # as where the optional extra is not installed
    code, _, err = in_process(capsys, *args)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert lines[0].startswith(f"graphdnn {args[0]}: error: ")


def _sparse_constant_onnx(path: Path, values: list[float], indices: list[int], dims: list[int]) -> Path:
    """An ONNX model whose only node is a Constant holding a sparse tensor (which may lie)."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as h

    sparse = h.make_sparse_tensor(h.make_tensor("v", TensorProto.FLOAT, [len(values)], values),
                                  h.make_tensor("i", TensorProto.INT64, [len(indices)], indices), dims)
    graph = h.make_graph([h.make_node("Constant", [], ["y"], sparse_value=sparse)], "g", [],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("args", [
    ("inspect", "{bad}"), ("run", "{bad}", "--engine", "torch"), ("convert", "{bad}", "out.safetensors"),
    ("draw", "{bad}", "-o", "g.svg"), ("diff", "{bad}", "{good}"), ("inspect", "{good}", "{bad}"),
])
def test_every_command_reports_a_malformed_file_in_one_line(files: dict[str, Path], tmp_path: Path, args: tuple,
                                                           capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _sparse_constant_onnx(tmp_path / "bad.onnx", [1.0, 2.0], [0, 9], [4])
    monkeypatch.chdir(tmp_path)
    code, _, err = in_process(capsys, *(a.format(bad=bad, good=files["st"]) for a in args))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"graphdnn {args[0]}: error: {bad}: ")
    assert "index 9 is outside a tensor of 4 elements" in lines[0]
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "g.svg").exists()


def test_traceback_flag_works_before_and_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from graphdnn.cli import main

    bad = _sparse_constant_onnx(tmp_path / "bad.onnx", [1.0], [0, 1], [4])
    for argv in (["--traceback", "inspect", str(bad)], ["inspect", str(bad), "--traceback"],
                 ["run", "--traceback", str(bad), "--engine", "torch"]):
        with pytest.raises(gd.FileFormatError, match="1 values but 2 indices"):
            main(argv)
    # after ``--`` it is an argument like any other (here: a second file to inspect)
    code, _, err = in_process(capsys, "inspect", str(bad), "--", "--traceback")
    assert code == 1 and len(err.strip().splitlines()) == 2, err


def test_the_same_line_from_a_real_process(tmp_path: Path) -> None:
    bad = _sparse_constant_onnx(tmp_path / "bad.onnx", [1.0], [0], [-4])
    r = graphdnn("convert", bad, tmp_path / "out.safetensors")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"graphdnn convert: error: {bad}: node 0 (Constant): node 'Constant': attribute 'sparse_value': negative "
        "dimension in dims [-4]"], r.stderr
    r = graphdnn("convert", bad, tmp_path / "out.safetensors", "--traceback")
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("graphdnn.errors.FileFormatError: ")


def test_os_errors_and_unexpected_ones_are_one_line_too(files: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = in_process(capsys, "convert", files["pt"], blocker / "out.safetensors")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("graphdnn convert: error: ") and str(blocker) in err

    import graphdnn.loading

    def broken(path: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(graphdnn.loading, "load", broken)
    code, _, err = in_process(capsys, "inspect", files["st"])
    assert code == 1
    assert err.strip().splitlines() == ["graphdnn inspect: error: unexpected ZeroDivisionError: division by zero "
                                        "(rerun with --traceback to see where)"]


def test_max_bytes_sets_the_load_budget(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([1024, 1024], np.int64), "s")   # a 4 MiB float tensor, 100 bytes
    graph = helper.make_graph([helper.make_node("Constant", [], ["s"], value=shape),
                               helper.make_node("ConstantOfShape", ["s"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    for command in (["inspect", path], ["diff", path, path], ["draw", path, "-o", tmp_path / "g.svg"],
                    ["convert", path, tmp_path / "out.safetensors"], ["run", path, "--engine", "torch"]):
        code, _, err = in_process(capsys, *command, "--max-bytes", "1MiB")
        assert code == 1 and "4194304 bytes" in err and "--max-bytes" in err, (command, err)
        code, _, err = in_process(capsys, *command, "--max-bytes", "0.5GiB")
        assert code == 0, (command, err)


@pytest.mark.parametrize("text, value", [("4096", 4096), ("2GiB", 2 << 30), ("2g", 2 << 30), ("500MB", 500 * 10**6),
                                         ("1.5KiB", 1536)])
def test_max_bytes_sizes(text: str, value: int) -> None:
    from graphdnn.commands._args import byte_size

    assert byte_size(text) == value


def test_max_bytes_rejects_a_bad_size(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        in_process(capsys, "inspect", "x.onnx", "--max-bytes", "2 parsecs")
    assert exc.value.code == 2 and "is not a size" in capsys.readouterr().err


def test_convert_filters_that_select_nothing_fail_unless_allowed(files: dict[str, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    dst = tmp_path / "part.safetensors"
    code, _, err = in_process(capsys, "convert", files["st"], dst, "--include", "hiden1")
    assert code == 1 and "selects none" in err and "did you mean 'hidden1'" in err and "--allow-missing" in err
    assert not dst.exists()
    code, _, err = in_process(capsys, "convert", files["st"], dst, "--include", "hiden1", "--allow-missing")
    assert code == 0, err
    assert load_file(dst) == {}


def test_convert_into_a_graph_that_loads_nothing_fails_unless_allowed(files: dict[str, Path], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    dst = tmp_path / "out.onnx"
    code, out, err = in_process(capsys, "convert", files["pt"], dst, "--graph", files["st"])
    assert code == 1 and "none of its tensors matches" in err and "--rename" in err
    assert not dst.exists()
    code, _, err = in_process(capsys, "convert", files["pt"], dst, "--graph", files["st"], "--allow-missing")
    assert code == 0, err
    assert dst.exists()


def test_help_texts_carry_no_restructuredtext_marks(capsys: pytest.CaptureFixture) -> None:
    from graphdnn.cli import build_parser

    parser = build_parser()
    for name in ("convert", "run", "inspect", "draw", "diff"):
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        out = capsys.readouterr().out
        assert "usage: graphdnn " + name in out
        assert "``" not in out, f"graphdnn {name} --help shows raw reStructuredText marks"
