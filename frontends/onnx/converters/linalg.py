"""ONNX converters for MatMul, Gemm, Einsum and Det."""
from __future__ import annotations

import numpy as np

from .registry import converter


@converter("MatMul")
def matmul(ctx):
    return ctx.op("matmul", [ctx.input(0), ctx.input(1)])


def _scalar_like(ctx, value: float, v, what: str):
    """``value`` as a 0-d constant of ``v``'s dtype (integer Gemm takes integral alpha/beta only)."""
    npdt = v.dtype.np
    if v.dtype.is_int and float(value) != int(value):
        ctx.fail(f"{what}={value} is not an integer but the inputs are {v.dtype.name}")
    return ctx.constant(np.array(value, dtype=npdt), name=f"{ctx.name}_{what}")


@converter("Gemm")
def gemm(ctx):
    """Y = alpha * A' @ B' + beta * C, as transposes, one matmul, and the scalings that are not 1."""
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    for i, v in enumerate((a, b)):
        if v.type.rank is not None and v.type.rank != 2:
            ctx.fail("Gemm takes 2-D A and B", input=i, expected="rank 2", actual=v.type.rank)
    if ctx.attr("transA", 0):
        a = ctx.op("transpose", [a], {"perm": (1, 0)})
    if ctx.attr("transB", 0):
        b = ctx.op("transpose", [b], {"perm": (1, 0)})
    y = ctx.op("matmul", [a, b])
    alpha = float(ctx.attr("alpha", 1.0))
    if alpha != 1.0:
        y = ctx.op("mul", [y, _scalar_like(ctx, alpha, y, "alpha")])
    if c is not None:
        beta = float(ctx.attr("beta", 1.0))
        if beta == 0.0:
            # beta * C contributes nothing; C still decides the broadcast output shape
            c = ctx.op("mul", [c, _scalar_like(ctx, 0.0, c, "beta")])
        elif beta != 1.0:
            c = ctx.op("mul", [c, _scalar_like(ctx, beta, c, "beta")])
        y = ctx.op("add", [y, c])
    return y


@converter("Einsum", since=12)
def einsum(ctx):
    return ctx.op("einsum", list(ctx.inputs), {"equation": ctx.attr("equation")})


@converter("Det", since=11)
def det(ctx):
    return ctx.op("det", [ctx.input(0)])
