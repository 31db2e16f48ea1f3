"""Ops that fill, crop or rearrange elements within a tensor: pad, depth_to_space,
space_to_depth, reverse_sequence, trilu, col2im.

As in ``movement.py``, shape-like operands (pads, axes, image and block shapes, k) are int64
tensor inputs; inference reads them when they are known at compile time.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..types import is_static_dim
from .evaluate import known_value
from .movement import as_ints, check_int_vector, data_type, fail, raise_shape_error
from .registry import Attr, OpDef, register
from .shapes import normalize_axes, normalize_axis, out


# ---- pad -----------------------------------------------------------------------------------
PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_spec(rank, pads, axes, ctx=None):
    """Per-axis (before, after) pads for all ``rank`` axes."""
    pads = as_ints(pads)
    axes = list(range(rank)) if axes is None else as_ints(axes)
    axes = normalize_axes(axes, rank, ctx) if ctx is not None else normalize_axes(axes, rank)
    if len(pads) != 2 * len(axes):
        fail(ctx, "pads must hold a begin and an end value per padded axis",
              expected=2 * len(axes), actual=len(pads))
    spec = [(0, 0)] * rank
    for k, a in enumerate(axes):
        spec[a] = (pads[k], pads[k + len(axes)])
    return spec


def _pad_infer(ctx):
    x = data_type(ctx)
    if ctx.attrs["mode"] not in PAD_MODES:
        ctx.fail(f"unknown pad mode {ctx.attrs['mode']!r}", expected=" | ".join(PAD_MODES),
                 actual=ctx.attrs["mode"])
    check_int_vector(ctx, 1, "pads")
    if ctx.has(2):
        c = ctx.type(2)
        if c.dtype is not x.dtype:
            ctx.fail("constant_value must have the data's dtype", input=2, expected=x.dtype.name,
                     actual=c.dtype.name)
        if c.is_static and c.numel != 1:
            ctx.fail("constant_value must hold one value", input=2, expected="1 element", actual=c.shape)
    if ctx.has(3):
        check_int_vector(ctx, 3, "axes")
    if x.shape is None:
        return [out(None, x.dtype)]
    rank = len(x.shape)
    pads = ctx.const(1)
    axes = ctx.const(3) if ctx.has(3) else None
    if pads is None or (ctx.has(3) and axes is None):
        shape = list(x.shape)
        for a in (normalize_axes(as_ints(axes), rank, ctx) if axes is not None else range(rank)):
            shape[a] = ctx.fresh("pad")
        return [out(tuple(shape), x.dtype)]
    shape = []
    for a, (d, (b, e)) in enumerate(zip(x.shape, _pad_spec(rank, pads, axes, ctx))):
        if is_static_dim(d):
            if d + b + e < 0:
                ctx.fail(f"pads ({b}, {e}) remove more than the {d} elements of axis {a}")
            if ctx.attrs["mode"] != "constant" and d == 0 and (b > 0 or e > 0):
                ctx.fail(f"{ctx.attrs['mode']} padding needs a non-empty axis {a}", input=0)
            shape.append(d + b + e)
        else:
            shape.append(d if b == 0 and e == 0 else ctx.fresh("pad"))
    return [out(tuple(shape), x.dtype)]


def _zero_of(dtype: np.dtype):
    return "" if dtype == object else np.zeros((), dtype)[()]


def _pad_ref(ins, a):
    x, pads = ins[0], ins[1]
    value = ins[2] if len(ins) > 2 and ins[2] is not None else None
    axes = ins[3] if len(ins) > 3 else None
    spec = _pad_spec(x.ndim, pads, axes)
    # negative pads crop first; the positive ones then pad what is left
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(spec))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in spec]
    mode = a["mode"]
    if mode == "constant":
        fill = _zero_of(x.dtype) if value is None or np.size(value) == 0 else np.asarray(value).reshape(-1)[0]
        # filled by hand: np.pad mangles string fills on object arrays
        y = np.full(tuple(d + b + e for d, (b, e) in zip(x.shape, widths)), fill, dtype=x.dtype)
        y[tuple(slice(b, b + d) for d, (b, _) in zip(x.shape, widths))] = x
        return y
    if not any(b or e for b, e in widths):
        return x.copy()
    return np.pad(x, widths, mode=mode)


def _with_dim(ctx, v, axis: int, size: int):
    """``v``'s shape with dim ``axis`` replaced by ``size``, as an int64 vector."""
    if v.type.is_static:
        return ctx.i64([size if i == axis else d for i, d in enumerate(v.shape)])
    sh = ctx.op("shape", [v])
    parts = [ctx.op("slice", [sh, ctx.i64([0]), ctx.i64([axis])]), ctx.i64([size]),
             ctx.op("slice", [sh, ctx.i64([axis + 1]), ctx.i64([len(v.shape)])])]
    return ctx.op("concat", parts, {"axis": 0})


def _pad_grad(ctx):
    """constant: dy cut back (a pad by the negated pads, which also restores cropped parts as
    zeros); the fill value gets what fell on the padding. edge/reflect/wrap: per padded axis,
    each padded position's gradient is added (scatter-add) to the element it copied."""
    x, pads_v = ctx.inputs[0], ctx.inputs[1]
    value = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    axes_v = ctx.inputs[3] if len(ctx.inputs) > 3 else None
    pads, axes = known_value(pads_v), known_value(axes_v)
    if pads is None or (axes_v is not None and axes is None) or x.shape is None:
        raise ctx.fail("the gradient of pad needs pads (and axes) known at compile time and a known rank")
    rank = len(x.shape)
    spec = _pad_spec(rank, pads, axes)
    dy = ctx.dy()
    mode = ctx.attrs["mode"]
    if mode != "constant":
        if not all(is_static_dim(x.shape[a]) for a, (b, e) in enumerate(spec) if b > 0 or e > 0):
            raise ctx.fail(f"the gradient of {mode} padding needs static sizes on the padded axes",
                           actual=str(x.type))
        # undo the positive pads axis by axis (np.pad applies them so), then the crops
        for a, (b, e) in enumerate(spec):
            if b <= 0 and e <= 0:
                continue
            d = x.shape[a] - max(-b, 0) - max(-e, 0)      # the size after the crops
            pb, pe = max(b, 0), max(e, 0)
            src = np.pad(np.arange(d), (pb, pe), mode=mode)   # which element each position copies
            ind = ctx.i64(src.reshape([-1 if i == a else 1 for i in range(rank)]))
            ind = ctx.op("expand", [ind, ctx.shape(dy)])
            shape = _with_dim(ctx, dy, a, d)
            zeros = ctx.op("constant_of_shape", [shape], {"value": np.zeros(1, x.dtype.np)})
            dy = ctx.op("scatter_elements", [zeros, ind, dy], {"axis": a, "reduction": "add"})
        crops = [(min(b, 0), min(e, 0)) for b, e in spec]
        if any(b or e for b, e in crops):
            dy = ctx.op("pad", [dy, ctx.i64([-b for b, _ in crops] + [-e for _, e in crops])])
        return [dy, None, None, None][:len(ctx.inputs)]
    dx = ctx.op("pad", [dy, ctx.i64([-b for b, _ in spec] + [-e for _, e in spec])])
    dv = None
    if value is not None:
        # the fill's gradient: everything dy holds minus what flowed back to x
        total = ctx.op("reduce_sum", [dy], {"keepdims": 0})
        kept = ctx.op("reduce_sum", [ctx.op("pad", [dy, ctx.i64([min(-b, 0) for b, _ in spec] +
                                                                 [min(-e, 0) for _, e in spec])])],
                      {"keepdims": 0})
        dv = ctx.reshape_like(ctx.op("sub", [total, kept]), value)
    return [dx, None, dv, None][:len(ctx.inputs)]


register(OpDef(
    "pad", infer=_pad_infer, reference=_pad_ref, inputs=(2, 4), kind="movement",
    differentiable=True, grad=_pad_grad,
    attrs={"mode": Attr("str", "constant", "constant | reflect | edge | wrap")},
    doc="pad(x, pads, constant_value?, axes?): ONNX Pad; pads are [begins..., ends...], negative crops",
))


# ---- depth_to_space / space_to_depth --------------------------------------------------------
def _block_check(ctx):
    x = data_type(ctx)
    bs, mode = ctx.attrs["blocksize"], ctx.attrs["mode"]
    if bs < 1:
        ctx.fail("blocksize must be >= 1", actual=bs)
    if mode not in ("DCR", "CRD"):
        ctx.fail(f"unknown mode {mode!r}", expected="DCR | CRD", actual=mode)
    if x.shape is not None and len(x.shape) != 4:
        ctx.fail("input must be 4-D (N, C, H, W)", input=0, expected="rank 4", actual=f"rank {len(x.shape)}")
    return x, bs


def _scaled(ctx, d, mul=1, div=1):
    if not is_static_dim(d):
        return d if mul == div else ctx.fresh(ctx.op.name)
    return d * mul // div


def _d2s_infer(ctx):
    x, bs = _block_check(ctx)
    if x.shape is None:
        return [out(tuple(ctx.fresh("d2s") for _ in range(4)), x.dtype)]
    n, c, h, w = x.shape
    if is_static_dim(c) and c % (bs * bs):
        ctx.fail(f"channels must be a multiple of blocksize**2 = {bs * bs}", input=0, actual=c)
    return [out((n, _scaled(ctx, c, 1, bs * bs), _scaled(ctx, h, bs), _scaled(ctx, w, bs)), x.dtype)]


def _d2s_ref(ins, a):
    x, bs = ins[0], a["blocksize"]
    n, c, h, w = x.shape
    if a["mode"] == "DCR":
        t = x.reshape(n, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(n, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return t.reshape(n, c // (bs * bs), h * bs, w * bs)


def _s2d_infer(ctx):
    x, bs = _block_check(ctx)
    if x.shape is None:
        return [out(tuple(ctx.fresh("s2d") for _ in range(4)), x.dtype)]
    n, c, h, w = x.shape
    for i, d in ((2, h), (3, w)):
        if is_static_dim(d) and d % bs:
            ctx.fail(f"spatial dim {i} must be a multiple of blocksize {bs}", input=0, actual=d)
    return [out((n, _scaled(ctx, c, bs * bs), _scaled(ctx, h, 1, bs), _scaled(ctx, w, 1, bs)), x.dtype)]


def _s2d_ref(ins, a):
    x, bs = ins[0], a["blocksize"]
    n, c, h, w = x.shape
    t = x.reshape(n, c, h // bs, bs, w // bs, bs)
    t = t.transpose(0, 3, 5, 1, 2, 4) if a["mode"] == "DCR" else t.transpose(0, 1, 3, 5, 2, 4)
    return t.reshape(n, c * bs * bs, h // bs, w // bs)


def _d2s_grad(ctx):
    # space_to_depth with the same blocksize and mode is depth_to_space's inverse permutation
    return [ctx.op("space_to_depth", [ctx.dy()], dict(ctx.attrs))]


def _s2d_grad(ctx):
    return [ctx.op("depth_to_space", [ctx.dy()], dict(ctx.attrs))]


_BLOCK_ATTRS = {"blocksize": Attr("int"),
                "mode": Attr("str", "DCR", "DCR: depth-column-row order of the channel; CRD: column-row-depth")}
register(OpDef(
    "depth_to_space", infer=_d2s_infer, reference=_d2s_ref, kind="movement", differentiable=True,
    grad=_d2s_grad,
    attrs=_BLOCK_ATTRS, doc="move channel blocks into spatial blocks (N, C, H, W) -> (N, C/b², Hb, Wb)",
))
register(OpDef(
    "space_to_depth", infer=_s2d_infer, reference=_s2d_ref, kind="movement", differentiable=True,
    grad=_s2d_grad,
    attrs=dict(_BLOCK_ATTRS), doc="move spatial blocks into channels (N, C, H, W) -> (N, Cb², H/b, W/b)",
))


# ---- reverse_sequence ----------------------------------------------------------------------
def _rs_axes(rank, a, ctx=None):
    b = normalize_axis(a["batch_axis"], rank, ctx, "batch_axis")
    t = normalize_axis(a["time_axis"], rank, ctx, "time_axis")
    if b == t:
        fail(ctx, "batch_axis and time_axis must differ", actual=(b, t))
    return b, t


def _reverse_sequence_infer(ctx):
    x = data_type(ctx)
    check_int_vector(ctx, 1, "sequence_lens")
    if x.shape is not None:
        if len(x.shape) < 2:
            ctx.fail("input must have rank >= 2", input=0, expected="rank >= 2", actual=f"rank {len(x.shape)}")
        b, _ = _rs_axes(len(x.shape), ctx.attrs, ctx)
        lens = ctx.type(1)
        if lens.shape is not None and is_static_dim(lens.shape[0]) and is_static_dim(x.shape[b]) \
                and lens.shape[0] != x.shape[b]:
            ctx.fail("sequence_lens needs one length per batch entry", input=1, expected=x.shape[b],
                     actual=lens.shape[0])
    return [out(x.shape, x.dtype)]


def _reverse_sequence_ref(ins, a):
    x, lens = ins[0], np.asarray(ins[1]).astype(np.int64).reshape(-1)
    b, t = _rs_axes(x.ndim, a)
    y = np.moveaxis(x, (b, t), (0, 1))
    nb, nt = y.shape[0], y.shape[1]
    if lens.shape[0] != nb or np.any(lens < 0) or np.any(lens > nt):
        raise_shape_error(f"sequence_lens {lens.tolist()} must hold {nb} lengths in [0, {nt}]")
    steps = np.arange(nt)[None, :]
    # within the first lens[b] steps index lens[b]-1-t, beyond them t itself
    idx = np.where(steps < lens[:, None], lens[:, None] - 1 - steps, steps)
    res = y[np.arange(nb)[:, None], idx]
    return np.ascontiguousarray(np.moveaxis(res, (0, 1), (b, t)))


def _reverse_sequence_grad(ctx):
    # reversing the first lens[b] steps is its own inverse (and a symmetric permutation)
    return [ctx.op("reverse_sequence", [ctx.dy(), ctx.inputs[1]], dict(ctx.attrs)), None]


register(OpDef(
    "reverse_sequence", infer=_reverse_sequence_infer, reference=_reverse_sequence_ref,
    inputs=(2, 2), kind="movement", differentiable=True, grad=_reverse_sequence_grad,
    attrs={"batch_axis": Attr("int", 1), "time_axis": Attr("int", 0)},
    doc="reverse_sequence(x, lens): reverse the first lens[b] steps of each batch entry b",
))


# ---- trilu ---------------------------------------------------------------------------------
def _trilu_infer(ctx):
    x = data_type(ctx)
    if ctx.has(1):
        t = ctx.type(1)
        if t.dtype is not dt.int64 or (t.is_static and t.numel != 1):
            ctx.fail("k must be one int64 value", input=1, expected="int64 scalar", actual=t)
    if x.shape is not None and len(x.shape) < 2:
        ctx.fail("input must have rank >= 2", input=0, expected="rank >= 2", actual=f"rank {len(x.shape)}")
    return [out(x.shape, x.dtype)]


def _trilu_ref(ins, a):
    x = ins[0]
    k = int(np.asarray(ins[1]).reshape(-1)[0]) if len(ins) > 1 and ins[1] is not None else 0
    rows, cols = x.shape[-2], x.shape[-1]
    k = min(max(k, -rows - 1), cols + 1)  # beyond these every element is kept or dropped
    keep = np.triu(np.ones((rows, cols), bool), k) if a["upper"] else np.tril(np.ones((rows, cols), bool), k)
    return np.where(keep, x, np.zeros((), x.dtype) if x.dtype != object else "").astype(x.dtype, copy=False)


def _trilu_grad(ctx):
    # the same mask applied to dy
    return [ctx.op("trilu", [ctx.dy()] + list(ctx.inputs[1:]), dict(ctx.attrs)), None][:len(ctx.inputs)]


register(OpDef(
    "trilu", infer=_trilu_infer, reference=_trilu_ref, inputs=(1, 2), kind="other",
    differentiable=True, grad=_trilu_grad,
    attrs={"upper": Attr("int", 1, "1 keeps the upper triangle, 0 the lower")},
    doc="trilu(x, k?): keep the upper (or lower) triangle of the last two axes from diagonal k",
))


# ---- col2im --------------------------------------------------------------------------------
def _col2im_params(n, a, ctx=None):
    dil = a["dilations"] or (1,) * n
    strides = a["strides"] or (1,) * n
    pads = a["pads"] or (0,) * (2 * n)
    if len(dil) != n or len(strides) != n or len(pads) != 2 * n:
        fail(ctx, f"dilations, strides and pads must have {n}, {n} and {2 * n} entries",
              actual=(len(dil), len(strides), len(pads)))
    if any(v < 1 for v in tuple(dil) + tuple(strides)) or any(p < 0 for p in pads):
        fail(ctx, "dilations and strides must be >= 1 and pads >= 0", actual=(dil, strides, pads))
    return dil, strides, pads


def _col2im_blocks(image, block, dil, strides, pads, ctx=None):
    """Number of block positions along each spatial axis."""
    res = []
    for i, (s, k) in enumerate(zip(image, block)):
        span = s + pads[i] + pads[i + len(image)] - dil[i] * (k - 1) - 1
        if span < 0:
            fail(ctx, f"block {tuple(block)} does not fit the padded image {tuple(image)} on axis {i}")
        res.append(span // strides[i] + 1)
    return res


def _col2im_infer(ctx):
    x = data_type(ctx)
    n1 = check_int_vector(ctx, 1, "image_shape")
    n2 = check_int_vector(ctx, 2, "block_shape")
    if n1 is not None and n2 is not None and n1 != n2:
        ctx.fail("image_shape and block_shape differ in length", input=2, expected=n1, actual=n2)
    n = n1 if n1 is not None else n2
    if x.shape is not None and len(x.shape) != 3:
        ctx.fail("input must be 3-D (N, C*prod(block), L)", input=0, expected="rank 3", actual=f"rank {len(x.shape)}")
    if n is None:
        return [out(None, x.dtype)]
    dil, strides, pads = _col2im_params(n, ctx.attrs, ctx)
    image, block = ctx.const(1), ctx.const(2)
    batch = x.shape[0] if x.shape is not None else ctx.fresh("col2im")
    chans = ctx.fresh("col2im")
    if block is not None:
        block = as_ints(block)
        if any(k < 1 for k in block):
            ctx.fail("block_shape entries must be >= 1", input=2, actual=tuple(block))
        kprod = int(np.prod(block))
        if x.shape is not None and is_static_dim(x.shape[1]):
            if x.shape[1] % kprod:
                ctx.fail(f"input dim 1 must be a multiple of prod(block_shape) = {kprod}", input=0,
                         actual=x.shape[1])
            chans = x.shape[1] // kprod
    if image is None:
        return [out((batch, chans) + tuple(ctx.fresh("col2im") for _ in range(n)), x.dtype)]
    image = as_ints(image)
    if block is not None and x.shape is not None and is_static_dim(x.shape[2]):
        blocks = int(np.prod(_col2im_blocks(image, block, dil, strides, pads, ctx)))
        if blocks != x.shape[2]:
            ctx.fail("input dim 2 must be the number of block positions", input=0, expected=blocks,
                     actual=x.shape[2])
    return [out((batch, chans) + tuple(image), x.dtype)]


def _col2im_ref(ins, a):
    x, image, block = ins[0], as_ints(ins[1]), as_ints(ins[2])
    n = len(image)
    dil, strides, pads = _col2im_params(n, a)
    counts = _col2im_blocks(image, block, dil, strides, pads)
    nb, ck, nl = x.shape
    kprod = int(np.prod(block))
    if ck % kprod or nl != int(np.prod(counts)):
        raise_shape_error(f"col2im input {x.shape} does not match blocks {tuple(block)} over image {tuple(image)}")
    c = ck // kprod
    cols = x.reshape((nb, c, kprod) + tuple(counts))
    padded = np.zeros((nb, c) + tuple(s + pads[i] + pads[i + n] for i, s in enumerate(image)), x.dtype)
    # one strided accumulation per position inside the block (as im2col has one gather per position)
    for k, pos in enumerate(np.ndindex(*block)):
        index = tuple(slice(p * dil[i], p * dil[i] + strides[i] * (counts[i] - 1) + 1, strides[i])
                      for i, p in enumerate(pos))
        padded[(slice(None), slice(None)) + index] += cols[:, :, k]
    crop = tuple(slice(pads[i], pads[i] + s) for i, s in enumerate(image))
    return np.ascontiguousarray(padded[(slice(None), slice(None)) + crop])


def _col2im_grad(ctx):
    """col2im sums blocks into the image, so its gradient reads the blocks back out (im2col):
    one conv of dy, batch and channels folded together, with a one-hot kernel per block
    position (dy (N*C, 1, *image) -> (N*C, prod(block), *counts))."""
    x = ctx.inputs[0]
    image, block = known_value(ctx.inputs[1]), known_value(ctx.inputs[2])
    if image is None or block is None:
        raise ctx.fail("the gradient of col2im needs image_shape and block_shape known at compile time")
    image, block = as_ints(image), as_ints(block)
    n = len(image)
    dil, strides, pads = _col2im_params(n, ctx.attrs)
    kprod = int(np.prod(block))
    onehot = np.eye(kprod).reshape((kprod, 1) + tuple(block))
    dy = ctx.op("reshape", [ctx.dy(), ctx.i64([-1, 1] + image)])
    cols = ctx.op("conv", [dy, ctx.const(onehot, like=x)], {"strides": list(strides), "dilations": list(dil),
                                                            "pads": list(pads)})
    return [ctx.reshape_like(cols, x), None, None]


register(OpDef(
    "col2im", infer=_col2im_infer, reference=_col2im_ref, inputs=(3, 3), kind="other",
    differentiable=True, grad=_col2im_grad,
    attrs={"dilations": Attr("ints", None), "pads": Attr("ints", None), "strides": Attr("ints", None)},
    doc="col2im(cols, image_shape, block_shape): sum column blocks back into an image (torch fold)",
))
