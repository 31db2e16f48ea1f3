"""ONNX converters for Shape, Size, ConstantOfShape, Range, EyeLike, Constant, Identity."""
from __future__ import annotations

import numpy as np

from .registry import converter


@converter("Shape")
def shape(ctx):
    attrs = {}
    if ctx.opset >= 15:
        attrs = {"start": ctx.attr("start", 0), "end": ctx.attr("end", None)}
    return ctx.op("shape", [ctx.input(0)], attrs)


@converter("Identity")
def identity(ctx):
    return ctx.input(0)


@converter("Constant")
def constant(ctx):
    for key in ("value", "sparse_value"):
        if ctx.has_attr(key):
            return ctx.constant(ctx.attr(key))
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64), ("value_string", object)):
        if ctx.has_attr(key):
            return ctx.constant(np.array(ctx.attr(key), dtype=dtype))
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64), ("value_strings", object)):
        if ctx.has_attr(key):
            return ctx.constant(np.array(ctx.attr(key), dtype=dtype))
    ctx.fail("Constant has no value attribute")
