"""ONNX converters for the index family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
