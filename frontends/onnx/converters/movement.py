"""ONNX converters for data-movement operators (Pad and the other rearranging ops are in
``rearrange.py``).

Old opsets carried shape-like operands (axes, pads, split sizes, slice bounds) as attributes;
the core ops take them as int64 inputs, so the old forms become constants here.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.types import is_static_dim

from .registry import converter


def i64_const(ctx, values, name: str | None = None):
    """A 1-D int64 constant: the input form of an old opset's shape-like attribute."""
    return ctx.constant(np.array(values, dtype=np.int64).reshape(-1), name=name)


def int64_input(ctx, i: int):
    """Input ``i`` as int64 (ONNX allows int32 for some index operands); None when absent."""
    v = ctx.input(i)
    if v is None or v.dtype is dt.int64:
        return v
    known = ctx.const(i)
    if known is not None:
        return i64_const(ctx, np.asarray(known).astype(np.int64))
    if v.dtype not in (dt.int32, dt.int16, dt.int8, dt.uint8, dt.uint16, dt.uint32):
        ctx.fail("must be an integer tensor", input=i, expected="int32 | int64", actual=v.dtype.name)
    return ctx.op("cast", [v], {"to": dt.int64})


def known_rank(ctx, i: int = 0, what: str = "the input"):
    """The rank of input ``i``; converters that need it fail clearly when it is unknown."""
    t = ctx.input(i).type
    if t.shape is None:
        ctx.fail(f"the rank of {what} must be known", input=i)
    return len(t.shape)


# ---- Reshape / Flatten ----------------------------------------------------------------------
@converter("Reshape", since=5)
def reshape(ctx):
    return ctx.op("reshape", [ctx.input(0), ctx.input(1)], {"allowzero": ctx.attr("allowzero", 0)})


@converter("Reshape", since=1)
def reshape_v1(ctx):
    shape = i64_const(ctx, ctx.attr("shape"))
    return ctx.op("reshape", [ctx.input(0), shape])


@converter("Flatten")
def flatten(ctx):
    x = ctx.input(0)
    rank = known_rank(ctx)
    axis = ctx.attr("axis", 1)
    if not -rank <= axis <= rank:
        ctx.fail(f"axis {axis} out of range for rank {rank}", expected=f"[{-rank}, {rank}]", actual=axis)
    axis = axis + rank if axis < 0 else axis
    front, back = x.shape[:axis], x.shape[axis:]
    static = [all(is_static_dim(d) for d in part) for part in (front, back)]
    sizes = [int(np.prod(part)) if ok else None for part, ok in zip((front, back), static)]
    if all(static):
        spec = sizes
    elif static[0] and sizes[0] > 0:
        spec = [sizes[0], -1]
    elif static[1] and sizes[1] > 0:
        spec = [-1, sizes[1]]
    else:
        # both halves hold symbols: multiply the dims out of the runtime shape
        shp = ctx.op("shape", [x])
        parts = []
        for lo, hi in ((0, axis), (axis, rank)):
            if lo == hi:
                parts.append(i64_const(ctx, [1]))
                continue
            prod = None
            for k in range(lo, hi):
                d = ctx.op("slice", [shp, i64_const(ctx, [k]), i64_const(ctx, [k + 1])])
                prod = d if prod is None else ctx.op("mul", [prod, d])
            parts.append(prod)
        return ctx.op("reshape", [x, ctx.op("concat", parts, {"axis": 0})])
    return ctx.op("reshape", [x, i64_const(ctx, spec)])


# ---- Transpose -----------------------------------------------------------------------------
@converter("Transpose")
def transpose(ctx):
    perm = ctx.attr("perm", None)
    return ctx.op("transpose", [ctx.input(0)], {"perm": None if perm is None else tuple(perm)})


# ---- Slice ---------------------------------------------------------------------------------
@converter("Slice", since=10)
def slice_(ctx):
    ins = [ctx.input(0)] + [int64_input(ctx, i) for i in range(1, 5)]
    return ctx.op("slice", ins)


@converter("Slice", since=1)
def slice_v1(ctx):
    starts, ends = ctx.attr("starts"), ctx.attr("ends")
    axes = ctx.attr("axes", None)
    ins = [ctx.input(0), i64_const(ctx, starts), i64_const(ctx, ends), None if axes is None else i64_const(ctx, axes)]
    return ctx.op("slice", ins)


# ---- Concat --------------------------------------------------------------------------------
@converter("Concat")
def concat(ctx):
    # opset 1 had a default axis of 1; from opset 4 on it is required
    axis = ctx.attr("axis", 1) if ctx.opset < 4 else ctx.attr("axis")
    return ctx.op("concat", [v for v in ctx.inputs if v is not None], {"axis": axis})


# ---- Split ---------------------------------------------------------------------------------
def _split(ctx, sizes):
    axis = ctx.attr("axis", 0)
    n = ctx.num_outputs
    attrs = {"axis": axis}
    if sizes is None:
        attrs["num_outputs"] = ctx.attr("num_outputs", n)
    res = ctx.op("split", [ctx.input(0), sizes], attrs, num_outputs=n)
    return list(res)


@converter("Split", since=13)
def split(ctx):
    sizes = ctx.input(1)
    if sizes is not None and ctx.has_attr("num_outputs"):
        ctx.fail("Split takes either the split input or the num_outputs attribute, not both")
    return _split(ctx, sizes)


@converter("Split", since=1)
def split_v1(ctx):
    sizes = ctx.attr("split", None)
    if sizes is not None and len(sizes):
        return _split(ctx, i64_const(ctx, sizes))
    # opset 1 could also take the sizes as a second input
    return _split(ctx, ctx.input(1) if ctx.opset < 2 else None)


# ---- Squeeze / Unsqueeze -------------------------------------------------------------------
@converter("Squeeze", since=13)
def squeeze(ctx):
    return ctx.op("squeeze", [ctx.input(0), ctx.input(1)])


@converter("Squeeze", since=1)
def squeeze_v1(ctx):
    axes = ctx.attr("axes", None)
    return ctx.op("squeeze", [ctx.input(0), None if axes is None else i64_const(ctx, axes)])


@converter("Unsqueeze", since=13)
def unsqueeze(ctx):
    return ctx.op("unsqueeze", [ctx.input(0), ctx.input(1)])


@converter("Unsqueeze", since=1)
def unsqueeze_v1(ctx):
    return ctx.op("unsqueeze", [ctx.input(0), i64_const(ctx, ctx.attr("axes"))])


# ---- Expand / Tile -------------------------------------------------------------------------
@converter("Expand")
def expand(ctx):
    return ctx.op("expand", [ctx.input(0), ctx.input(1)])


@converter("Tile", since=6)
def tile(ctx):
    return ctx.op("tile", [ctx.input(0), ctx.input(1)])


@converter("Tile", since=1)
def tile_v1(ctx):
    # Tile-1 repeats along one axis: inputs (x, tiles, axis) as scalars
    tiles = int(np.asarray(ctx.require_const(1, "tiles")).reshape(-1)[0])
    axis = int(np.asarray(ctx.require_const(2, "axis")).reshape(-1)[0])
    rank = known_rank(ctx)
    reps = [1] * rank
    reps[axis] = tiles
    return ctx.op("tile", [ctx.input(0), i64_const(ctx, reps)])
