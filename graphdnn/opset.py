"""Operator domains and the opset versions graphdnn writes by default and accepts when reading."""

from __future__ import annotations

ONNX_DOMAIN = ""
GRAPHDNN_DOMAIN = "graphdnn"
#: Opset versions graphdnn writes by default and accepts when reading.
DEFAULT_OPSET = {ONNX_DOMAIN: 17, GRAPHDNN_DOMAIN: 1}
MIN_ONNX_OPSET = 1
MAX_ONNX_OPSET = 28
