"""ONNX converters for the reduction family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
