"""ONNX converters for the text family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
