"""ONNX converters for the training family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
