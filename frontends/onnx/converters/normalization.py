"""ONNX converters for the normalization family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
