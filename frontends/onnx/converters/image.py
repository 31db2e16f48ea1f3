"""ONNX converters for the image family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
