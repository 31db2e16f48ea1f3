"""ONNX converters for the random family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
