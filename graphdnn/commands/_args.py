"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
import re


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 10**3, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
          "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}


def byte_size(text: str) -> int:
    """An ``argparse`` type: a number of bytes, with an optional unit (``2GiB``, ``500MB``, ``1.5G``, ``4096``);
    K/M/G/T alone and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write bytes, or a number with a unit "
                                         "such as 512MiB, 2GiB, 4GB")
    return int(float(match.group(1)) * _UNITS[unit])


def add_max_bytes(parser: argparse.ArgumentParser) -> None:
    """The ``--max-bytes`` option of the commands that load models (``graphdnn.load(max_bytes=)``)."""
    from graphdnn.budget import FACTOR, FLOOR

    parser.add_argument("--max-bytes", type=byte_size, default=None, metavar="SIZE",
                        help=f"memory budget for loading a model, e.g. 8GiB (default: {FACTOR} x the model's "
                        f"files + {FLOOR >> 20} MiB)")
