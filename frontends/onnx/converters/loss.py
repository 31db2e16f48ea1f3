"""ONNX converters for the loss family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
