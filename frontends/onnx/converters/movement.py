"""ONNX converters for data-movement operators."""
from __future__ import annotations

import numpy as np

from .registry import converter


@converter("Reshape", since=5)
def reshape(ctx):
    return ctx.op("reshape", [ctx.input(0), ctx.input(1)], {"allowzero": ctx.attr("allowzero", 0)})


@converter("Reshape", since=1)
def reshape_v1(ctx):
    shape = ctx.constant(np.array(ctx.attr("shape"), dtype=np.int64))
    return ctx.op("reshape", [ctx.input(0), shape])
