"""``graphdnn demo`` end to end in a subprocess (``python -m graphdnn``), its learning-curve PNG checked by an
independent decoder, and the CLI's error handling (one line on stderr, non-zero exit)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

import graphdnn.commands.demo as demo
from graphdnn import cli
from graphdnn.errors import RestoreError

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def graphdnn(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphdnn", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def read_png(path: Path) -> np.ndarray:
    """A small, independent PNG decoder (8-bit gray/RGB/RGBA, every filter type) checking every CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(tag + body) & 0xFFFFFFFF == crc, f"bad CRC in chunk {tag!r}"
        chunks.append((tag, body))
        pos += 12 + length
    assert pos == len(data) and chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and interlace == 0 and color in (0, 2, 6)
    channels = {0: 1, 2: 3, 6: 4}[color]
    raw = zlib.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    stride = width * channels
    assert len(raw) == height * (stride + 1)
    rows, prev = [], bytearray(stride)
    for r in range(height):
        kind, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, up_left = prev[i], prev[i - channels] if i >= channels else 0
            predictor = [0, left, up, (left + up) // 2, paeth(left, up, up_left)][kind]
            line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(line))
        prev = line
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, width, channels)


def test_png_decoder_against_a_handmade_file(tmp_path):
    # Reference for the decoder itself: a 2x2 RGB image with filter 1 (Sub) on row 0, 2 (Up) on row 1.
    rows = bytes([1, 10, 20, 30, 5, 5, 5]) + bytes([2, 1, 1, 1, 0, 0, 0])

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    (tmp_path / "t.png").write_bytes(png)
    assert read_png(tmp_path / "t.png").tolist() == [[[10, 20, 30], [15, 25, 35]], [[11, 21, 31], [15, 25, 35]]]
    (tmp_path / "bad.png").write_bytes(png[:-5] + bytes([png[-5] ^ 1]) + png[-4:])
    with pytest.raises(AssertionError, match="CRC"):
        read_png(tmp_path / "bad.png")


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = graphdnn("demo", "--out-dir", str(out), "--epochs", "20", "--seed", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    match = re.fullmatch(r"test accuracy: (\d\.\d{4})", lines[-1])
    assert match, lines[-1]
    assert float(match.group(1)) >= 0.95

    # every step was narrated; the progress bars went to stderr, one final line per epoch
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == [f"[{i}/6" for i in range(1, 7)]
    assert re.search(r"^epoch 1/20 \[=+\] \d+/\d+ .*val_accuracy=", proc.stderr, re.M)
    assert "frozen hidden1/hidden2 bit-identical after training: True" in proc.stdout
    ort = re.search(r"max \|diff\| (\S+), same predictions ([\d.]+)%", proc.stdout)
    assert ort and float(ort.group(1)) < 1e-3 and float(ort.group(2)) == 100.0

    pngs = [Path(p) for p in re.findall(r"learning curves: (\S+\.png)", proc.stdout)]
    assert pngs and pngs[0] == out / "learning_curves.png"
    for path in pngs:
        pixels = read_png(path)
        assert pixels.shape[0] >= 100 and pixels.shape[1] >= 100
        colors = np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)
        assert len(colors) >= 4  # background, frame/text, and a colour per curve
        assert pixels.std() > 5
    for name in ("my_model_final.safetensors", "my_new_model_final.safetensors", "my_new_model.onnx"):
        assert (out / name).stat().st_size > 1000


def test_demo_error_is_one_line_and_nonzero_exit(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    proc = graphdnn("demo", "--out-dir", str(not_a_dir), "--quiet")
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphdnn demo: error: --out-dir") and str(not_a_dir) in lines[0]


def test_graphdnn_errors_become_one_line_in_process(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RestoreError("names do not match; nothing was restored\n  table row 1\n  table row 2")

    monkeypatch.setattr(demo, "_walkthrough", fail)
    assert cli.main(["demo", "--out-dir", str(tmp_path), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "graphdnn demo: error: names do not match; nothing was restored\n"
    with pytest.raises(RestoreError):  # --traceback re-raises for debugging
        cli.main(["--traceback", "demo", "--out-dir", str(tmp_path)])


def test_cli_usage_errors_and_entry_point(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--epochs", "0"])
    assert exc.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    assert cli.main([]) == 2 and "demo" in capsys.readouterr().err  # help lists the subcommands
    (script,) = entry_points(group="console_scripts", name="graphdnn")
    assert script.load() is cli.main


def test_a_command_that_cannot_import_reports_itself_and_the_rest_work(monkeypatch, capsys):
    import importlib
    import pkgutil

    real_iter, real_import = pkgutil.iter_modules, importlib.import_module

    def iter_modules(path=None, prefix=""):
        yield from real_iter(path, prefix)
        yield pkgutil.ModuleInfo(None, "broken", False)

    def import_module(name, package=None):
        if name.endswith(".broken"):
            raise ModuleNotFoundError("No module named 'somedependency'")
        return real_import(name, package)

    monkeypatch.setattr(cli.pkgutil, "iter_modules", iter_modules)
    monkeypatch.setattr(cli.importlib, "import_module", import_module)
    assert cli.main(["broken", "--anything"]) == 1
    assert capsys.readouterr().err == ("graphdnn broken: error: cannot be used here: "
                                       "No module named 'somedependency'\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0 and "--out-dir" in capsys.readouterr().out
