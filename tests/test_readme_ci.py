"""The README opens with the two commands CI runs verbatim."""

from pathlib import Path

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
