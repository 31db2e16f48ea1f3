"""ONNX converters for the quant family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
