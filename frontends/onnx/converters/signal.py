"""ONNX converters for the signal family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
