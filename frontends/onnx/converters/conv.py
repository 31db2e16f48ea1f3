"""ONNX converters for the conv family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
