"""ONNX converters for the control family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
