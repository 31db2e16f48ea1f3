"""Data-movement ops: reshape, transpose, slice, concat, split, pad, expand, tile, squeeze …

Shape-like operands (a reshape's target shape, slice bounds, pads) are int64 tensor inputs as
in ONNX, so shapes computed in the graph work; inference reads them when they are known at
compile time (constants, or values the importer could compute) and makes symbols otherwise.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..types import is_static_dim
from .registry import Attr, OpDef, register
from .shapes import out, shape_numel


# ---- reshape -------------------------------------------------------------------------------
def _reshape_target(in_shape, spec, allowzero, ctx=None):
    spec = [int(s) for s in spec]
    res = []
    for i, s in enumerate(spec):
        if s == 0 and not allowzero:
            if in_shape is None or i >= len(in_shape):
                (ctx.fail if ctx else _raise)(f"shape entry {i} is 0 (copy) but the input has rank "
                                              f"{None if in_shape is None else len(in_shape)}")
            res.append(in_shape[i])
        else:
            res.append(s)
    if res.count(-1) > 1:
        (ctx.fail if ctx else _raise)(f"target shape {tuple(spec)} has more than one -1")
    if -1 in res:
        known = shape_numel([d for d in res if d != -1])
        total = shape_numel(in_shape) if in_shape is not None else None
        if known is None or total is None:
            res[res.index(-1)] = ctx.fresh("reshape") if ctx else -1
        else:
            if known == 0 or total % known:
                (ctx.fail if ctx else _raise)(f"cannot reshape {tuple(in_shape)} into {tuple(spec)}")
            res[res.index(-1)] = total // known
    else:
        a, b = shape_numel(in_shape) if in_shape is not None else None, shape_numel(res)
        if a is not None and b is not None and a != b:
            (ctx.fail if ctx else _raise)(f"cannot reshape {tuple(in_shape)} ({a} elements) into {tuple(spec)} ({b} elements)")
    return tuple(res)


def _raise(msg):
    from ..errors import ShapeError
    raise ShapeError(msg)


def _reshape_infer(ctx):
    x, s = ctx.type(0), ctx.type(1)
    if s.dtype is not dt.int64 or s.rank != 1:
        ctx.fail("shape must be a 1-D int64 tensor", input=1, expected="int64[n]", actual=s)
    spec = ctx.const(1)
    if spec is None:
        n = s.shape[0]
        if not is_static_dim(n):
            return [out(None, x.dtype)]
        return [out(tuple(ctx.fresh("reshape") for _ in range(n)), x.dtype)]
    return [out(_reshape_target(x.shape, spec, ctx.attrs["allowzero"], ctx), x.dtype)]


def _reshape_ref(ins, a):
    x, spec = ins
    return x.reshape(_reshape_target(x.shape, spec, a["allowzero"]))


register(OpDef(
    "reshape", infer=_reshape_infer, reference=_reshape_ref, inputs=(2, 2), kind="movement",
    attrs={"allowzero": Attr("int", 0, "a 0 in shape means size 0, not 'copy the input dim'")},
    differentiable=True,
    doc="reshape(x, shape): -1 infers one dim; 0 copies the input dim unless allowzero",
))
