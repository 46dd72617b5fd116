"""Print pins at the lowest versions pyproject.toml allows for the runtime dependencies (torch excepted,
which CI pins itself) and the Keras extra, one `name==version` a line, for the low-end CI job."""

import re
import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
requirements = project["dependencies"] + project["optional-dependencies"]["keras"]
for requirement in requirements:
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9.]*)(?:\s*,.*)?", requirement)
    if match is None:
        sys.exit(f"pyproject.toml: {requirement!r} has no '>=' lower bound to test")
    name, low = match.groups()
    if name != "torch":
        print(f"{name}=={low}")
