"""ONNX converters for the ops that fill, crop or rearrange elements within a tensor: Pad,
DepthToSpace, SpaceToDepth, CenterCropPad, ReverseSequence, Trilu, Col2Im.
"""
from __future__ import annotations

import numpy as np

from irgraph.types import is_static_dim

from .movement import i64_const, int64_input, known_rank
from .registry import converter


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


def _pad_from_attrs(ctx, pads_attr: str):
    """Pad-1 and Pad-2 carry the pads and the fill value as attributes."""
    pads = i64_const(ctx, ctx.attr(pads_attr))
    return ctx.op("pad", [ctx.input(0), pads, _pad_value(ctx, ctx.attr("value", 0.0))],
                  {"mode": ctx.attr("mode", "constant")})


@converter("Pad", since=2)
def pad_v2(ctx):
    return _pad_from_attrs(ctx, "pads")


@converter("Pad", since=1)
def pad_v1(ctx):
    return _pad_from_attrs(ctx, "paddings")


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
    rank = known_rank(ctx)
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
        y = ctx.op("slice", [y, i64_const(ctx, starts), i64_const(ctx, ends), i64_const(ctx, crop_axes)])
    if pad_axes:
        spec = [p[0] for p in pads] + [p[1] for p in pads]
        y = ctx.op("pad", [y, i64_const(ctx, spec), None, i64_const(ctx, pad_axes)])
    return y


def _center_crop_pad_dynamic(ctx, axes):
    """The same crop-then-pad with amounts computed in the graph from the runtime sizes."""
    x, target = ctx.input(0), int64_input(ctx, 1)
    shp = ctx.op("shape", [x])
    dims = ctx.op("concat", [ctx.op("slice", [shp, i64_const(ctx, [a]), i64_const(ctx, [a + 1])]) for a in axes],
                  {"axis": 0})
    zero, two = i64_const(ctx, [0]), i64_const(ctx, [2])
    crop = ctx.op("maximum", [ctx.op("sub", [dims, target]), zero])
    start = ctx.op("div", [crop, two])  # non-negative, so truncation is floor
    end = ctx.op("add", [start, ctx.op("sub", [dims, crop])])
    y = ctx.op("slice", [x, start, end, i64_const(ctx, axes)])
    grow = ctx.op("maximum", [ctx.op("sub", [target, dims]), zero])
    before = ctx.op("div", [grow, two])
    pads = ctx.op("concat", [before, ctx.op("sub", [grow, before])], {"axis": 0})
    return ctx.op("pad", [y, pads, None, i64_const(ctx, axes)])


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
