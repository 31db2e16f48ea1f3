"""Ops about shapes: shape, size, constant_of_shape, range, eye_like."""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from .registry import Attr, OpDef, register
from .shapes import out


def _shape_bounds(rank, a):
    start, end = a["start"], a["end"]
    if end is None:
        end = rank
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return start, max(end, start)


def _shape_infer(ctx):
    x = ctx.type(0)
    if x.shape is None:
        return [out((ctx.fresh("rank"),), dt.int64)]
    s, e = _shape_bounds(len(x.shape), ctx.attrs)
    return [out((e - s,), dt.int64)]


register(OpDef(
    "shape", infer=_shape_infer, kind="index", differentiable=False,
    attrs={"start": Attr("int", 0), "end": Attr("int", None)},
    reference=lambda ins, a: np.array(ins[0].shape[slice(*_shape_bounds(ins[0].ndim, a))], dtype=np.int64),
    value=lambda ctx: [np.array(ctx.type(0).shape[slice(*_shape_bounds(ctx.type(0).rank, ctx.attrs))], dtype=np.int64)]
    if ctx.type(0).is_static else None,
    doc="the input's shape as int64[rank] (optionally a slice of it)",
))
