"""Griffe extension for the API reference: the converters as ``graphdnn.converters``.

The format converters live in the top-level ``converters/`` folder and install as ``graphdnn.converters``
(a setuptools ``package-dir`` mapping). An installed wheel has them under ``graphdnn/``, where Griffe finds
them; an editable install or a source tree keeps them beside the ``graphdnn`` folder, so this extension
loads that folder and attaches it to the ``graphdnn`` package under the name ``converters``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe


class ConvertersPackage(griffe.Extension):
    """Attach the ``converters/`` folder beside ``graphdnn/`` as the ``graphdnn.converters`` package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "graphdnn" or "converters" in pkg.members or pkg.filepath is None:
            return
        init = pkg.filepath if isinstance(pkg.filepath, Path) else pkg.filepath[0]
        folder = init.parent.parent / "converters"
        if not (folder / "__init__.py").is_file():
            return
        converters = griffe.load(
            "converters",
            search_paths=[folder.parent],
            docstring_parser=loader.docstring_parser,
            docstring_options=loader.docstring_options,
            lines_collection=loader.lines_collection,
            try_relative_path=False,
        )
        pkg.set_member("converters", converters)
