"""ONNX converters for the rnn family."""
from __future__ import annotations

from .registry import converter  # noqa: F401
