"""The README opens with the two commands CI runs verbatim."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines()]


def test_readme_starts_with_demo_and_test_commands():
    text = (ROOT / "README.md").read_text()
    assert text.index("```bash") < 40, "the two commands must open the README"
    demo, tests = _readme_commands()
    assert demo.startswith("pip install torch==2.13.0") and demo.endswith("graphdnn demo")
    assert tests.startswith("pip install torch==2.13.0") and "pytest" in tests


def test_ci_runs_the_readme_commands_verbatim():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in _readme_commands():
        assert command in ci, f".ci/run must run the README command {command!r} verbatim"


def test_constraints_pin_every_direct_dependency_inside_pyproject_ranges():
    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"constraints.txt does not pin {req.name}; run `bash .ci/lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {spec}"


def test_low_end_test_files_exist():
    from conftest import LOW_END_FILES

    missing = sorted(f for f in LOW_END_FILES if not (ROOT / "tests" / f).exists())
    assert not missing, f"conftest.LOW_END_FILES names files that do not exist: {missing}"
