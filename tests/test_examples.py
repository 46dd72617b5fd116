"""Smoke test: every script in ``examples/`` runs to completion and ends with the line it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

#: The last line each example prints; an example not listed here must still run and print something.
FINAL_LINES = {
    "build_train_save.py": r"build_train_save: test accuracy 0\.9\d+, reloaded model identical: True",
    "reuse_freeze_cache.py": r"reuse_freeze_cache: new model test accuracy 0\.9\d+, frozen hidden1-2 unchanged: True",
    "onnx_serving.py": r"onnx_serving: ONNX Runtime accuracy 0\.9\d+, max \|ort - torch\| below 1e-5: True",
    "finetune_onnx.py": r"finetune_onnx: accuracy on all 10 digits 0\.[89]\d+, imported fc1 unchanged: True, "
                        r"ONNX Runtime agrees: True",
    "foreign_weights.py": r"hidden1 on \[\[10, 11\]\] -> \[\[61\.0, 83\.0, 105\.0\]\]",
}


def test_the_workflow_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"build_train_save.py", "reuse_freeze_cache.py", "onnx_serving.py", "finetune_onnx.py"} <= names


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.Popen, Path]]:
    """Every example started at once (they are independent), each in its own empty working folder."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = {}
    for script in EXAMPLES:
        cwd = tmp_path_factory.mktemp(script.stem)
        procs[script.name] = (subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True, cwd=cwd, env=env), cwd)
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, started: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    proc, tmp_path = started[script.name]
    stdout, stderr = proc.communicate(timeout=300)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines, f"{script.name} printed nothing"
    pattern = FINAL_LINES.get(script.name)
    if pattern is not None:
        assert re.fullmatch(pattern, lines[-1]), f"{script.name} ended with {lines[-1]!r}"
    assert not list(tmp_path.iterdir()), f"{script.name} left files in its working folder"
