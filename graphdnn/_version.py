"""The package version, in a module that imports nothing (read by ``graphdnn.__version__`` and the exporters)."""

__version__ = "0.1.0"
