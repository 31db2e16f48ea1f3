"""Elementwise ops: arithmetic, math functions, activations, comparisons, logic, select, cast.

Each op carries a scalar formula (``b`` is a scalar builder, see ``scalar.py``) from which
backends generate loops, and a numpy reference for the interpreter.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..types import TensorType
from .declare import (ALL_TYPES, FLOAT_TYPES, INT_TYPES, NUMERIC_TYPES, elementwise)
from .registry import Attr, OpDef, register
from .shapes import broadcast_shapes, out

# ---- arithmetic ------------------------------------------------------------------------
elementwise("add", 2, scalar=lambda b, x, y: b.add(x, y), reference=np.add, dtypes=NUMERIC_TYPES)
elementwise("sub", 2, scalar=lambda b, x, y: b.sub(x, y), reference=np.subtract, dtypes=NUMERIC_TYPES)
elementwise("mul", 2, scalar=lambda b, x, y: b.mul(x, y), reference=np.multiply, dtypes=NUMERIC_TYPES)
elementwise("div", 2, scalar=lambda b, x, y: b.div(x, y), dtypes=NUMERIC_TYPES,
            doc="x / y; integer division truncates toward zero")
elementwise("neg", 1, scalar=lambda b, x: b.neg(x), reference=np.negative,
            dtypes=FLOAT_TYPES + (dt.int8, dt.int16, dt.int32, dt.int64))

# ---- math --------------------------------------------------------------------------------
elementwise("exp", 1, scalar=lambda b, x: b.exp(x), reference=np.exp)

# ---- activations -------------------------------------------------------------------------
elementwise("relu", 1, scalar=lambda b, x: b.max(x, b.const(0, x)),
            reference=lambda x: np.maximum(x, np.zeros((), x.dtype)),
            dtypes=FLOAT_TYPES + (dt.int8, dt.int16, dt.int32, dt.int64))

# ---- comparisons ---------------------------------------------------------------------------
elementwise("equal", 2, scalar=lambda b, x, y: b.eq(x, y), reference=np.equal, dtypes=ALL_TYPES,
            out_dtype=dt.bool_, differentiable=False)


# ---- select ------------------------------------------------------------------------------
def _where_infer(ctx):
    c, x, y = ctx.types
    if c.dtype is not dt.bool_:
        ctx.fail("condition must be bool", input=0, expected="bool", actual=c.dtype.name)
    if x.dtype is not y.dtype:
        ctx.fail("branches must share one dtype", input=2, expected=x.dtype.name, actual=y.dtype.name)
    return [out(broadcast_shapes(c.shape, x.shape, y.shape, ctx=ctx), x.dtype)]


register(OpDef(
    "where", infer=_where_infer, inputs=(3, 3), kind="elementwise", differentiable=True,
    reference=lambda ins, a: np.where(ins[0], ins[1], ins[2]),
    scalar=lambda b, c, x, y: b.select(c, x, y),
    doc="select(cond, x, y) with broadcasting",
))


# ---- cast ----------------------------------------------------------------------------------
def _cast_infer(ctx):
    return [out(ctx.type(0).shape, ctx.attrs["to"])]


def _cast_ref(ins, a):
    x = ins[0]
    to = a["to"]
    return x.astype(to.np)


register(OpDef(
    "cast", infer=_cast_infer, reference=_cast_ref, attrs={"to": Attr("dtype")},
    kind="elementwise", differentiable=True,
    scalar=lambda b, x, to: b.cast(x, to),
    doc="convert to dtype ``to`` (float->int truncates toward zero, saturates as numpy does)",
))
