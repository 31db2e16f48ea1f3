"""ONNX converters for data-movement operators.

Old opsets carried shape-like operands (axes, pads, split sizes, slice bounds) as attributes;
the core ops take them as int64 inputs, so the old forms become constants here.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.types import is_static_dim

from .registry import converter


def _i64(ctx, values, name: str | None = None):
    return ctx.constant(np.array(values, dtype=np.int64).reshape(-1), name=name)


def _int64_input(ctx, i: int):
    """Input ``i`` as int64 (ONNX allows int32 for some index operands); None when absent."""
    v = ctx.input(i)
    if v is None or v.dtype is dt.int64:
        return v
    known = ctx.const(i)
    if known is not None:
        return _i64(ctx, np.asarray(known).astype(np.int64))
    if v.dtype not in (dt.int32, dt.int16, dt.int8, dt.uint8, dt.uint16, dt.uint32):
        ctx.fail("must be an integer tensor", input=i, expected="int32 | int64", actual=v.dtype.name)
    return ctx.op("cast", [v], {"to": dt.int64})


def _rank(ctx, i: int = 0, what: str = "the input"):
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
    shape = _i64(ctx, ctx.attr("shape"))
    return ctx.op("reshape", [ctx.input(0), shape])


@converter("Flatten")
def flatten(ctx):
    x = ctx.input(0)
    rank = _rank(ctx)
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
                parts.append(_i64(ctx, [1]))
                continue
            prod = None
            for k in range(lo, hi):
                d = ctx.op("slice", [shp, _i64(ctx, [k]), _i64(ctx, [k + 1])])
                prod = d if prod is None else ctx.op("mul", [prod, d])
            parts.append(prod)
        return ctx.op("reshape", [x, ctx.op("concat", parts, {"axis": 0})])
    return ctx.op("reshape", [x, _i64(ctx, spec)])


# ---- Transpose -----------------------------------------------------------------------------
@converter("Transpose")
def transpose(ctx):
    perm = ctx.attr("perm", None)
    return ctx.op("transpose", [ctx.input(0)], {"perm": None if perm is None else tuple(perm)})


# ---- Slice ---------------------------------------------------------------------------------
@converter("Slice", since=10)
def slice_(ctx):
    ins = [ctx.input(0)] + [_int64_input(ctx, i) for i in range(1, 5)]
    return ctx.op("slice", ins)


@converter("Slice", since=1)
def slice_v1(ctx):
    starts, ends = ctx.attr("starts"), ctx.attr("ends")
    axes = ctx.attr("axes", None)
    ins = [ctx.input(0), _i64(ctx, starts), _i64(ctx, ends), None if axes is None else _i64(ctx, axes)]
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
        return _split(ctx, _i64(ctx, sizes))
    # opset 1 could also take the sizes as a second input
    return _split(ctx, ctx.input(1) if ctx.opset < 2 else None)


# ---- Squeeze / Unsqueeze -------------------------------------------------------------------
@converter("Squeeze", since=13)
def squeeze(ctx):
    return ctx.op("squeeze", [ctx.input(0), ctx.input(1)])


@converter("Squeeze", since=1)
def squeeze_v1(ctx):
    axes = ctx.attr("axes", None)
    return ctx.op("squeeze", [ctx.input(0), None if axes is None else _i64(ctx, axes)])


@converter("Unsqueeze", since=13)
def unsqueeze(ctx):
    return ctx.op("unsqueeze", [ctx.input(0), ctx.input(1)])


@converter("Unsqueeze", since=1)
def unsqueeze_v1(ctx):
    return ctx.op("unsqueeze", [ctx.input(0), _i64(ctx, ctx.attr("axes"))])


# ---- Pad -----------------------------------------------------------------------------------
def _pad_value(ctx, value: float):
    if value == 0:
        return None  # the core op's default is a zero of the data's dtype
    return ctx.constant(np.array(value, dtype=ctx.input(0).dtype.np))


@converter("Pad", since=11)
def pad(ctx):
    value = ctx.input(2)
    if value is not None and value.type.numel == 0:
        value = None  # an empty constant_value means the default zero
    ins = [ctx.input(0), ctx.input(1), value, ctx.input(3) if ctx.opset >= 18 else None]
    return ctx.op("pad", ins, {"mode": ctx.attr("mode", "constant")})


@converter("Pad", since=2)
def pad_v2(ctx):
    pads = _i64(ctx, ctx.attr("pads"))
    return ctx.op("pad", [ctx.input(0), pads, _pad_value(ctx, ctx.attr("value", 0.0))],
                  {"mode": ctx.attr("mode", "constant")})


@converter("Pad", since=1)
def pad_v1(ctx):
    pads = _i64(ctx, ctx.attr("paddings"))
    return ctx.op("pad", [ctx.input(0), pads, _pad_value(ctx, ctx.attr("value", 0.0))],
                  {"mode": ctx.attr("mode", "constant")})


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
    rank = _rank(ctx)
    reps = [1] * rank
    reps[axis] = tiles
    return ctx.op("tile", [ctx.input(0), _i64(ctx, reps)])


# ---- DepthToSpace / SpaceToDepth -----------------------------------------------------------
@converter("DepthToSpace")
def depth_to_space(ctx):
    mode = ctx.attr("mode", "DCR") if ctx.opset >= 11 else "DCR"
    return ctx.op("depth_to_space", [ctx.input(0)], {"blocksize": ctx.attr("blocksize"), "mode": mode})


@converter("SpaceToDepth")
def space_to_depth(ctx):
    mode = ctx.attr("mode", "DCR") if ctx.opset >= 28 else "DCR"
    return ctx.op("space_to_depth", [ctx.input(0)], {"blocksize": ctx.attr("blocksize"), "mode": mode})


# ---- CenterCropPad -------------------------------------------------------------------------
@converter("CenterCropPad", since=18)
def center_crop_pad(ctx):
    x = ctx.input(0)
    rank = _rank(ctx)
    axes = ctx.attr("axes", None)
    axes = list(range(rank)) if axes is None else [a + rank if a < 0 else a for a in axes]
    if any(not 0 <= a < rank for a in axes) or len(set(axes)) != len(axes):
        ctx.fail(f"axes {ctx.attr('axes', None)} are out of range or repeated for rank {rank}")
    target = ctx.const(1)
    if target is None or any(not is_static_dim(x.shape[a]) for a in axes):
        return _center_crop_pad_dynamic(ctx, axes)
    target = [int(t) for t in np.asarray(target).reshape(-1)]
    if len(target) != len(axes):
        ctx.fail("shape must hold one size per axis", input=1, expected=len(axes), actual=len(target))
    starts, ends, crop_axes, pads, pad_axes = [], [], [], [], []
    for a, t in zip(axes, target):
        d = x.shape[a]
        if d > t:  # crop: the window starts rounded down from the centre
            s = (d - t) // 2
            starts.append(s), ends.append(s + t), crop_axes.append(a)
        elif d < t:  # pad: the odd pixel goes to the end
            pads.append(((t - d) // 2, t - d - (t - d) // 2)), pad_axes.append(a)
    y = x
    if crop_axes:
        y = ctx.op("slice", [y, _i64(ctx, starts), _i64(ctx, ends), _i64(ctx, crop_axes)])
    if pad_axes:
        spec = [p[0] for p in pads] + [p[1] for p in pads]
        y = ctx.op("pad", [y, _i64(ctx, spec), None, _i64(ctx, pad_axes)])
    return y


def _center_crop_pad_dynamic(ctx, axes):
    """The same crop-then-pad with amounts computed in the graph from the runtime sizes."""
    x, target = ctx.input(0), _int64_input(ctx, 1)
    shp = ctx.op("shape", [x])
    dims = ctx.op("concat", [ctx.op("slice", [shp, _i64(ctx, [a]), _i64(ctx, [a + 1])]) for a in axes],
                  {"axis": 0})
    zero, two = _i64(ctx, [0]), _i64(ctx, [2])
    crop = ctx.op("maximum", [ctx.op("sub", [dims, target]), zero])
    start = ctx.op("div", [crop, two])  # non-negative, so truncation is floor
    end = ctx.op("add", [start, ctx.op("sub", [dims, crop])])
    y = ctx.op("slice", [x, start, end, _i64(ctx, axes)])
    grow = ctx.op("maximum", [ctx.op("sub", [target, dims]), zero])
    before = ctx.op("div", [grow, two])
    pads = ctx.op("concat", [before, ctx.op("sub", [grow, before])], {"axis": 0})
    return ctx.op("pad", [y, pads, None, _i64(ctx, axes)])


# ---- ReverseSequence / Trilu / Col2Im -------------------------------------------------------
@converter("ReverseSequence", since=10)
def reverse_sequence(ctx):
    return ctx.op("reverse_sequence", [ctx.input(0), ctx.input(1)],
                  {"batch_axis": ctx.attr("batch_axis", 1), "time_axis": ctx.attr("time_axis", 0)})


@converter("Trilu", since=14)
def trilu(ctx):
    return ctx.op("trilu", [ctx.input(0), ctx.input(1)], {"upper": ctx.attr("upper", 1)})


@converter("Col2Im", since=18)
def col2im(ctx):
    attrs = {k: tuple(ctx.attr(k)) if ctx.has_attr(k) else None for k in ("dilations", "pads", "strides")}
    return ctx.op("col2im", [ctx.input(0), ctx.input(1), ctx.input(2)], attrs)
