"""Tests and benchmarks stay apart: no test imports ``benchmarks/`` and no benchmark imports ``tests/``; the code
both need lives in the package (``graphdnn.testing``, ``graphdnn.converters.onnx_conformance``...)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = sorted(p for p in (ROOT / "tests").glob("*.py") if p.name != Path(__file__).name)  # this file names the folder
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


def _imported(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports (module level and inside functions), the module name it
    hands to ``spec_from_file_location`` (importing a file by its path), and ``"benchmarks"`` where that string
    is a path part (``ROOT / "benchmarks" / ...``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("spec_from_file_location") and node.args:
            names.add(node.args[0].value if isinstance(node.args[0], ast.Constant) else ast.unparse(node.args[0]))
        elif isinstance(node, ast.Constant) and node.value == "benchmarks":
            names.add(node.value)
    return names


def test_every_kind_of_import_is_found(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import a.b\nfrom c.d import e\nfrom . import f\n\n\ndef g():\n    import h\n"
                      "    return importlib.util.spec_from_file_location('x', ROOT / 'benchmarks' / 'x.py')\n")
    assert _imported(source) == {"a", "c", "h", "x", "benchmarks"}


def test_no_test_imports_a_benchmark() -> None:
    benchmark_modules = {p.stem for p in BENCHMARKS} - {p.stem for p in TESTS}
    found = {p.name: sorted(n for n in _imported(p) if n == "benchmarks" or n in benchmark_modules
                            or "benchmarks" in n) for p in TESTS}
    bad = {k: v for k, v in found.items() if v}
    assert not bad, f"tests that import benchmarks (move what they need into the package): {bad}"


def test_no_benchmark_imports_a_test_module() -> None:
    test_modules = {p.stem for p in TESTS} - {p.stem for p in BENCHMARKS}
    found = {p.name: sorted(n for n in _imported(p) if n == "tests" or n in test_modules) for p in BENCHMARKS}
    bad = {k: v for k, v in found.items() if v}
    assert not bad, f"benchmarks that import tests (move what they need into the package): {bad}"
