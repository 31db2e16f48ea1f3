"""ONNX converters for MatMul, Gemm, Einsum and friends."""
from __future__ import annotations

from .registry import converter


@converter("MatMul")
def matmul(ctx):
    return ctx.op("matmul", [ctx.input(0), ctx.input(1)])
