"""Pooling: max_pool, avg_pool, lp_pool, global_pool, max_unpool, max_roi_pool.

Window geometry (strides, dilations, pads, auto_pad, ceil_mode) is shared with the convolutions
through ``windows.py``; references combine the taps' strided slices with whole-tensor
maximum/add, looping only over kernel taps.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..errors import ShapeError
from ..types import is_static_dim
from .conv_grad import conv_input_grad, grad_raiser, spatial_sizes
from .declare import FLOAT_TYPES, INT_TYPES
from .evaluate import known_value
from .registry import Attr, OpDef, register
from .shapes import out
from .windows import (WindowPlan, acc_dtype, check_input, check_rank, padded, per_axis, raiser,
                      split_pads, static_eq, window_plan, window_taps)

MAX_POOL_TYPES = FLOAT_TYPES + INT_TYPES


# ---- gradient helpers ----------------------------------------------------------------------------
def _grad_plan(ctx, x, kernel, ceil_mode: bool):
    """The forward's resolved window geometry (static spatial dims needed)."""
    sizes = spatial_sizes(ctx, x)
    return sizes, window_plan(sizes, kernel, ctx.attrs, grad_raiser(ctx), ceil_mode=ceil_mode)


def _window_spread(ctx, g, x, sizes, kernel, plan: WindowPlan):
    """The transpose of a (zero-padded) window sum: each input element gets the sum of ``g`` over
    the windows that hold it, as an array of ``x``'s shape."""
    nsp = len(kernel)
    if (tuple(plan.strides) == tuple(kernel) and all(d == 1 for d in plan.dilations)
            and not any(plan.pads_begin)):
        # non-overlapping windows from the origin (the usual 2x2/2 pool): each element's one
        # window value, broadcast over its block -- views and one copy, no window loop
        lead = ctx.op("unsqueeze", [g, ctx.i64([3 + 2 * j for j in range(nsp)])])
        shape = [1, 1]   # expand broadcasts: batch and channels stay as they are
        for o, k in zip(plan.out, kernel):
            shape += [o, k]
        big = ctx.op("expand", [lead, ctx.i64(shape)])
        flat = ctx.op("reshape", [big, ctx.i64([0, 0] + [o * k for o, k in zip(plan.out, kernel)])])
        rest = [sz - o * k for sz, o, k in zip(sizes, plan.out, kernel)]
        if any(rest):  # a tail no window reached (zeros), or ceil_mode's window past the end (cut)
            flat = ctx.op("pad", [flat, ctx.i64([0] * (nsp + 2) + [0, 0] + rest)])
        return flat
    # general windows: a transposed depthwise conv of g with a ones kernel (one channel: the
    # batch and channel axes are folded together)
    g1 = ctx.op("reshape", [g, ctx.i64([-1, 1] + list(plan.out))])
    ones = ctx.const(np.ones((1, 1) + tuple(kernel)), like=g)
    dx = conv_input_grad(ctx, g1, ones, sizes, kernel, plan.strides, plan.dilations, plan.pads_begin, 1)
    return ctx.reshape_like(dx, x)


def _scatter_to_argmax(ctx, x, dy, idx):
    """dy added at the flat positions ``idx`` (max_pool's row-major indices) of a zero tensor
    shaped like x: each window's gradient goes to its first maximum, as in PyTorch."""
    flat = ctx.op("reshape", [ctx.zeros_like(x), ctx.i64([-1])])
    dx = ctx.op("scatter_elements", [flat, ctx.op("reshape", [idx, ctx.i64([-1])]),
                                     ctx.op("reshape", [dy, ctx.i64([-1])])], {"reduction": "add"})
    return ctx.reshape_like(dx, x)


def _check_windows_see_input(ctx, sizes, kernel, plan: WindowPlan):
    """A window holding only padding has max -inf and no element to pass its gradient to."""
    for j, (sz, k) in enumerate(zip(sizes, kernel)):
        for o in range(plan.out[j]):
            start = o * plan.strides[j] - plan.pads_begin[j]
            if not any(0 <= start + t * plan.dilations[j] < sz for t in range(k)):
                raise ctx.fail(f"window {o} of spatial axis {j} lies entirely in the padding: its "
                               "maximum has no input element to take the gradient",
                               hint="use pads smaller than the (dilated) kernel")


def _max_pool_grad(ctx):
    x = ctx.inputs[0]
    kernel = tuple(ctx.attrs["kernel_shape"])
    sizes, plan = _grad_plan(ctx, x, kernel, ctx.attrs["ceil_mode"])
    _check_windows_see_input(ctx, sizes, kernel, plan)
    if len(ctx.outputs) > 1 and ctx.attrs["storage_order"] == 0:
        idx = ctx.outputs[1]
    else:
        # the forward's argmax, row major; max_pool's ties keep the first tap like PyTorch's
        attrs = dict(ctx.attrs, indices=True, storage_order=0)
        idx = ctx.op("max_pool", [x], attrs, num_outputs=2)[1]
    return [_scatter_to_argmax(ctx, x, ctx.dy(0), idx)]


def _lp_scale(ctx, dy, y, p: float):
    """dy * y^(1 - p), the outer factor of d||v||_p/dv; 0 where the norm is 0 (every element of
    the window is 0: the subgradient PyTorch's torch.norm also picks there)."""
    zero = ctx.const(0, like=y)
    pos = ctx.op("greater", [y, zero])
    safe = ctx.op("where", [pos, y, ctx.const(1, like=y)])
    if p == 2:
        g = ctx.op("div", [dy, safe])
    elif p == 1:
        g = dy
    else:
        g = ctx.op("mul", [dy, ctx.op("pow", [safe, ctx.const(1 - p, like=y)])])
    return ctx.op("where", [pos, g, zero])


def _lp_inner(ctx, x, p: float):
    """d|x|^p/dx / p = sign(x) |x|^(p-1)."""
    if p == 2:
        return x
    if p == 1:
        return ctx.op("sign", [x])
    return ctx.op("mul", [ctx.op("sign", [x]), ctx.op("pow", [ctx.op("abs", [x]), ctx.const(p - 1, like=x)])])


# ---- pools -----------------------------------------------------------------------------------
_POOL_ATTRS = {
    "kernel_shape": Attr("ints", doc="window size per spatial axis"),
    "strides": Attr("ints", None, "per spatial axis; default 1"),
    "pads": Attr("ints", None, "begin pads then end pads; default 0"),
    "dilations": Attr("ints", None, "per spatial axis; default 1"),
    "ceil_mode": Attr("bool", False, "round the output size up (a window starting in the end "
                                     "padding is still dropped)"),
    "auto_pad": Attr("str", "NOTSET", "NOTSET | SAME_UPPER | SAME_LOWER | VALID"),
}


def _pool_infer_common(ctx, allowed):
    x = check_input(ctx, 0, allowed)
    check_rank(ctx, x, 0, "input")
    kernel = ctx.attrs["kernel_shape"]
    if any(k < 1 for k in kernel):
        ctx.fail("kernel_shape entries must be >= 1", actual=kernel)
    if x.shape is None:
        return x, None
    if len(kernel) != len(x.shape) - 2:
        ctx.fail(f"kernel_shape has {len(kernel)} entries but the input has {len(x.shape) - 2} "
                 "spatial dims", input=0, expected=len(x.shape) - 2, actual=len(kernel))
    plan = window_plan(x.shape[2:], kernel, ctx.attrs, ctx.fail, ctx.fresh, ctx.attrs["ceil_mode"])
    return x, x.shape[:2] + plan.out


def _pool_plan(x, a, op):
    return window_plan(x.shape[2:], a["kernel_shape"], a, raiser(op), ceil_mode=a["ceil_mode"])


def _max_pool_infer(ctx):
    x, shape = _pool_infer_common(ctx, MAX_POOL_TYPES)
    if ctx.attrs["storage_order"] not in (0, 1):
        ctx.fail("storage_order must be 0 (row major) or 1 (column major)",
                 actual=ctx.attrs["storage_order"])
    res = [out(shape, x.dtype)]
    if ctx.attrs["indices"]:
        res.append(out(shape, dt.int64))
    return res


def _lowest(d: np.dtype):
    return np.iinfo(d).min if d.kind in "iu" else -np.inf  # bfloat16 has kind 'V'


def _max_pool_ref(ins, a):
    x = ins[0]
    plan = _pool_plan(x, a, "max_pool")
    kernel = tuple(a["kernel_shape"])
    want_idx = a["indices"]
    y = arg = None
    for i, (_, v) in enumerate(window_taps(padded(x, kernel, plan, _lowest(x.dtype)), kernel, plan)):
        if y is None:
            y = v.copy()
            arg = np.zeros(y.shape, np.int64) if want_idx else None
            continue
        if want_idx:
            np.putmask(arg, v > y, i)  # strict: ties keep the first tap, as a scan in order would
        np.maximum(y, v, out=y)
    if not want_idx:
        return y
    nsp = len(kernel)
    n, c = x.shape[:2]
    sizes = x.shape[2:]
    taps = np.unravel_index(arg, kernel)
    coords = []
    for j in range(nsp):
        o = np.arange(plan.out[j]).reshape((-1,) + (1,) * (nsp - 1 - j))
        coords.append(o * plan.strides[j] - plan.pads_begin[j] + taps[j] * plan.dilations[j])
    sp = np.zeros_like(arg)
    # storage_order 1 numbers the spatial axes column major (the first one fastest)
    for j in (reversed(range(nsp)) if a["storage_order"] == 1 else range(nsp)):
        sp = sp * sizes[j] + coords[j]
    plane = int(np.prod(sizes))
    nc = np.arange(n * c, dtype=np.int64).reshape((n, c) + (1,) * nsp)
    return y, nc * plane + sp


register(OpDef(
    "max_pool", infer=_max_pool_infer, reference=_max_pool_ref, kind="reduction", differentiable=True,
    grad=_max_pool_grad,
    attrs={**_POOL_ATTRS,
           "indices": Attr("bool", False, "also return the flat index of each maximum (int64)"),
           "storage_order": Attr("int", 0, "indices count spatial axes row (0) or column (1) major")},
    doc="max over windows; optional second output: argmax as a flat index into x (N*C*spatial)",
))


def _avg_pool_infer(ctx):
    x, shape = _pool_infer_common(ctx, FLOAT_TYPES)
    return [out(shape, x.dtype)]


def _window_sum(x: np.ndarray, kernel, plan: WindowPlan, fn=None) -> np.ndarray:
    """Sum over each window of zero-padded ``x`` (of ``fn(tap view)`` when given)."""
    total = None
    for _, v in window_taps(padded(x, kernel, plan, 0), kernel, plan):
        v = v if fn is None else fn(v)
        total = v.copy() if total is None else np.add(total, v, out=total)
    return total


def _window_counts(sizes, kernel, plan: WindowPlan, include_pad: bool, dtype) -> np.ndarray:
    """How many elements each window holds: input elements only, or also the explicit pads (never
    the extra room ceil_mode adds past the end pads)."""
    counted = np.ones((1, 1) + tuple(sizes), dtype)
    if include_pad:
        counted = np.pad(counted, [(0, 0), (0, 0)] + list(zip(plan.pads_begin, plan.pads_end)),
                         constant_values=1)
        plan = plan._replace(pads_begin=(0,) * len(sizes))
    return _window_sum(counted, kernel, plan)[0, 0]


def _avg_pool_ref(ins, a):
    x = ins[0]
    plan = _pool_plan(x, a, "avg_pool")
    kernel = tuple(a["kernel_shape"])
    acc = acc_dtype(x.dtype)
    total = _window_sum(x.astype(acc, copy=False), kernel, plan)
    cnt = _window_counts(x.shape[2:], kernel, plan, a["count_include_pad"], acc)
    return (total / cnt).astype(x.dtype, copy=False)


def _avg_pool_grad(ctx):
    x = ctx.inputs[0]
    kernel = tuple(ctx.attrs["kernel_shape"])
    sizes, plan = _grad_plan(ctx, x, kernel, ctx.attrs["ceil_mode"])
    cnt = _window_counts(sizes, kernel, plan, ctx.attrs["count_include_pad"], np.float64)
    g = ctx.op("mul", [ctx.dy(0), ctx.const(1.0 / cnt, like=x)])
    return [_window_spread(ctx, g, x, sizes, kernel, plan)]


register(OpDef(
    "avg_pool", infer=_avg_pool_infer, reference=_avg_pool_ref, kind="reduction", differentiable=True,
    grad=_avg_pool_grad,
    attrs={**_POOL_ATTRS,
           "count_include_pad": Attr("bool", False, "divide by the window size including pads")},
    doc="mean over windows (pads excluded from the divisor unless count_include_pad)",
))


def _lp_pool_infer(ctx):
    x, shape = _pool_infer_common(ctx, FLOAT_TYPES)
    return [out(shape, x.dtype)]


def _abs_pow(p: float):
    if p == 1:
        return np.abs
    if p == 2:
        return np.square
    return lambda v: np.abs(v) ** p


def _root(total: np.ndarray, p: float) -> np.ndarray:
    return total if p == 1 else np.sqrt(total) if p == 2 else total ** (1.0 / p)


def _lp_pool_ref(ins, a):
    x = ins[0]
    plan = _pool_plan(x, a, "lp_pool")
    kernel = tuple(a["kernel_shape"])
    p = a["p"]
    total = _window_sum(x.astype(acc_dtype(x.dtype), copy=False), kernel, plan, _abs_pow(p))
    return _root(total, p).astype(x.dtype, copy=False)


def _lp_pool_grad(ctx):
    x = ctx.inputs[0]
    kernel = tuple(ctx.attrs["kernel_shape"])
    sizes, plan = _grad_plan(ctx, x, kernel, ctx.attrs["ceil_mode"])
    p = ctx.attrs["p"]
    g = _lp_scale(ctx, ctx.dy(0), ctx.outputs[0], p)
    return [ctx.op("mul", [_window_spread(ctx, g, x, sizes, kernel, plan), _lp_inner(ctx, x, p)])]


register(OpDef(
    "lp_pool", infer=_lp_pool_infer, reference=_lp_pool_ref, kind="reduction", differentiable=True,
    grad=_lp_pool_grad,
    attrs={**_POOL_ATTRS, "p": Attr("float", 2.0, "the norm's order")},
    doc="p-norm over windows: (sum |x|^p)^(1/p)",
))


# ---- global_pool ---------------------------------------------------------------------------
_GLOBAL_MODES = ("avg", "max", "lp")


def _global_infer(ctx):
    mode = ctx.attrs["mode"]
    if mode not in _GLOBAL_MODES:
        ctx.fail(f"unknown mode {mode!r}", expected=" | ".join(_GLOBAL_MODES), actual=mode)
    x = check_input(ctx, 0, MAX_POOL_TYPES if mode == "max" else FLOAT_TYPES)
    check_rank(ctx, x, 0, "input")
    if x.shape is None:
        return [out(None, x.dtype)]
    return [out(x.shape[:2] + (1,) * (len(x.shape) - 2), x.dtype)]


def _global_ref(ins, a):
    x = ins[0]
    axes = tuple(range(2, x.ndim))
    mode = a["mode"]
    if mode == "max":
        return x.max(axis=axes, keepdims=True)
    acc = acc_dtype(x.dtype)
    xa = x.astype(acc, copy=False)
    if mode == "avg":
        y = xa.mean(axis=axes, keepdims=True, dtype=acc)
    else:
        y = _root(_abs_pow(a["p"])(xa).sum(axis=axes, keepdims=True), a["p"])
    return y.astype(x.dtype, copy=False)


def _global_grad(ctx):
    x, y = ctx.inputs[0], ctx.outputs[0]
    dy = ctx.dy(0)
    mode = ctx.attrs["mode"]
    if mode == "max":
        # the first maximum of each (n, c) plane, as max_pool over the whole plane picks it
        sizes = spatial_sizes(ctx, x)
        idx = ctx.op("max_pool", [x], {"kernel_shape": list(sizes), "indices": True}, num_outputs=2)[1]
        return [_scatter_to_argmax(ctx, x, dy, idx)]
    if mode == "avg":
        sizes = spatial_sizes(ctx, x)
        g = ctx.op("mul", [dy, ctx.const(1.0 / int(np.prod(sizes)), like=x)])
        return [ctx.op("expand", [g, ctx.shape(x)])]
    p = ctx.attrs["p"]
    return [ctx.op("mul", [_lp_scale(ctx, dy, y, p), _lp_inner(ctx, x, p)])]


register(OpDef(
    "global_pool", infer=_global_infer, reference=_global_ref, kind="reduction", differentiable=True,
    grad=_global_grad,
    attrs={"mode": Attr("str", doc="avg | max | lp"), "p": Attr("float", 2.0, "order of lp")},
    doc="reduce all spatial axes of x[N,C,*s] to size 1 (avg, max or p-norm)",
))


# ---- max_unpool ----------------------------------------------------------------------------
def _unpool_default(sizes, a, fail):
    n = len(sizes)
    kernel = a["kernel_shape"]
    if len(kernel) != n:
        fail(f"kernel_shape has {len(kernel)} entries but the input has {n} spatial dims",
             expected=n, actual=len(kernel))
    strides = per_axis(a, "strides", n, 1, fail)
    pb, pe = split_pads(a, n, fail)
    return tuple((sz - 1) * s + k - b - e if is_static_dim(sz) else None
                 for sz, s, k, b, e in zip(sizes, strides, kernel, pb, pe))


def _max_unpool_infer(ctx):
    x = check_input(ctx, 0, FLOAT_TYPES)
    ix = ctx.type(1)
    if ix.dtype is not dt.int64:
        ctx.fail("indices must be int64", input=1, expected="int64", actual=ix.dtype.name)
    check_rank(ctx, x, 0, "input")
    if x.shape is not None and ix.shape is not None and (
            len(x.shape) != len(ix.shape) or not all(static_eq(a, b) for a, b in zip(x.shape, ix.shape))):
        ctx.fail("indices must have the input's shape", input=1, expected=x.shape, actual=ix)
    if ctx.has(2):
        st = ctx.type(2)
        if st.dtype is not dt.int64 or st.rank != 1:
            ctx.fail("output_shape must be a 1-D int64 tensor", input=2, expected="int64[rank]", actual=st)
        shape = ctx.const(2)
        if shape is not None:
            shape = tuple(int(d) for d in shape)
            if x.shape is not None and len(shape) != len(x.shape):
                ctx.fail("output_shape must have one entry per input dim", input=2,
                         expected=len(x.shape), actual=len(shape))
            if x.shape is not None and not all(static_eq(a, b) for a, b in zip(shape[:2], x.shape[:2])):
                ctx.fail("output_shape must keep the batch and channel dims", input=2,
                         expected=x.shape[:2], actual=shape)
            if any(d < 0 for d in shape):
                ctx.fail("output_shape must not be negative", input=2, actual=shape)
            return [out(shape, x.dtype)]
        if x.shape is not None:
            return [out(x.shape[:2] + tuple(ctx.fresh("unpool") for _ in x.shape[2:]), x.dtype)]
        n = st.shape[0]
        return [out(tuple(ctx.fresh("unpool") for _ in range(n)) if is_static_dim(n) else None, x.dtype)]
    if x.shape is None:
        return [out(None, x.dtype)]
    sp = _unpool_default(x.shape[2:], ctx.attrs, ctx.fail)
    for i, d in enumerate(sp):
        if d is not None and d < 1:
            ctx.fail(f"output size {d} along spatial axis {i} is not positive", actual=d)
    return [out(x.shape[:2] + tuple(ctx.fresh("unpool") if d is None else d for d in sp), x.dtype)]


def _max_unpool_ref(ins, a):
    x, ix = ins[0], ins[1]
    # indices are flat positions in the default unpooled shape (the pooled input's shape);
    # an explicit output_shape only grows (or shrinks) that canvas at the end of each axis
    default = x.shape[:2] + _unpool_default(x.shape[2:], a, raiser("max_unpool"))
    shape = tuple(int(d) for d in ins[2]) if len(ins) > 2 and ins[2] is not None else default
    total = int(np.prod(default))
    flat = ix.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= total):
        raise ShapeError(f"an index is outside the unpooled tensor of {total} elements", op="max_unpool",
                         expected=f"[0, {total})", actual=(int(flat.min()), int(flat.max())))
    if shape != default:
        coords = np.unravel_index(flat, default)
        if any((cd >= d).any() for cd, d in zip(coords, shape)):
            raise ShapeError(f"an index falls outside output_shape {shape}", op="max_unpool")
        flat = np.ravel_multi_index(coords, shape)
    y = np.zeros(int(np.prod(shape)), x.dtype)
    y[flat] = x.reshape(-1)
    return y.reshape(shape)


def _max_unpool_grad(ctx):
    """Each x element went to one flat position of the default canvas: its gradient is dy read
    back there. Repeated indices (overlapping pools can share a maximum) kept the last write, as
    the reference's assignment does, so only that element gets the gradient."""
    x, ix = ctx.inputs[0], ctx.inputs[1]
    sizes = spatial_sizes(ctx, x)
    default = [x.shape[0], x.shape[1]] + list(_unpool_default(sizes, ctx.attrs, grad_raiser(ctx)))
    dy = ctx.dy(0)
    if len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
        shape = known_value(ctx.inputs[2])
        if shape is None:
            raise ctx.fail("the gradient of max_unpool needs output_shape known at compile time",
                           input=ctx.inputs[2].name)
        grow = [0 if j < 2 else d - int(s) for j, (d, s) in enumerate(zip(default, shape))]
        if any(grow):  # back onto the default canvas: cut the added tail, zeros where it shrank
            dy = ctx.op("pad", [dy, ctx.i64([0] * len(grow) + grow)])
    flat_ix = ctx.op("reshape", [ix, ctx.i64([-1])])
    flat_dy = ctx.op("reshape", [dy, ctx.i64([-1])])
    got = ctx.op("gather", [flat_dy, flat_ix])
    # the position in x of the last write to each canvas element
    if x.type.is_static:
        order = ctx.i64(np.arange(int(np.prod(x.shape))))
    else:
        order = ctx.op("range", [ctx.i64(0), ctx.op("size", [x]), ctx.i64(1)])
    canvas = ctx.op("constant_of_shape", [ctx.shape(flat_dy)], {"value": np.array([-1], np.int64)})
    last = ctx.op("scatter_elements", [canvas, flat_ix, order], {"reduction": "max"})
    won = ctx.op("equal", [ctx.op("gather", [last, flat_ix]), order])
    g = ctx.op("where", [won, got, ctx.const(0, like=x)])
    return [ctx.reshape_like(g, x), None, None][:len(ctx.inputs)]


register(OpDef(
    "max_unpool", infer=_max_unpool_infer, reference=_max_unpool_ref, inputs=(2, 3), kind="index",
    differentiable=True, grad=_max_unpool_grad,
    attrs={"kernel_shape": Attr("ints", doc="the max_pool's window size"),
           "strides": Attr("ints", None, "the max_pool's strides"),
           "pads": Attr("ints", None, "the max_pool's pads")},
    doc="max_unpool(x, indices, output_shape?): zeros with x scattered at max_pool's flat indices",
))


# ---- max_roi_pool --------------------------------------------------------------------------
def _roi_infer(ctx):
    x = check_input(ctx, 0, FLOAT_TYPES)
    r = check_input(ctx, 1, FLOAT_TYPES, like=0)
    ps = ctx.attrs["pooled_shape"]
    if len(ps) != 2 or any(d < 1 for d in ps):
        ctx.fail("pooled_shape must be two positive sizes (height, width)", actual=ps)
    if x.shape is not None and len(x.shape) != 4:
        ctx.fail("input must be 4-D (N, C, H, W)", input=0, expected="rank 4", actual=x)
    if r.shape is not None and (len(r.shape) != 2 or not static_eq(r.shape[1], 5)):
        ctx.fail("rois must be (num_rois, 5): batch index, x1, y1, x2, y2", input=1,
                 expected="[num_rois,5]", actual=r)
    nr = r.shape[0] if r.shape is not None else ctx.fresh("rois")
    c = x.shape[1] if x.shape is not None else ctx.fresh("channels")
    return [out((nr, c) + tuple(ps), x.dtype)]


def _roi_ref(ins, a):
    x, rois = ins
    ph, pw = a["pooled_shape"]
    scale = a["spatial_scale"]
    n, c, h, w = x.shape
    y = np.zeros((rois.shape[0], c, ph, pw), x.dtype)
    for r, roi in enumerate(rois.astype(np.float64)):
        bi = int(roi[0])
        if not 0 <= bi < n:
            raise ShapeError(f"roi {r} names batch {bi} of {n}", op="max_roi_pool")
        x1, y1, x2, y2 = (int(np.round(v * scale)) for v in roi[1:])
        bin_h = max(y2 - y1 + 1, 1) / ph
        bin_w = max(x2 - x1 + 1, 1) / pw
        hs = [min(max(int(np.floor(i * bin_h)) + y1, 0), h) for i in range(ph)]
        he = [min(max(int(np.ceil((i + 1) * bin_h)) + y1, 0), h) for i in range(ph)]
        ws = [min(max(int(np.floor(j * bin_w)) + x1, 0), w) for j in range(pw)]
        we = [min(max(int(np.ceil((j + 1) * bin_w)) + x1, 0), w) for j in range(pw)]
        img = x[bi]
        for i in range(ph):
            if he[i] <= hs[i]:
                continue
            rows = img[:, hs[i]:he[i], :].max(axis=1)        # (C, W): reduce the bin's rows once
            for j in range(pw):
                if we[j] > ws[j]:
                    y[r, :, i, j] = rows[:, ws[j]:we[j]].max(axis=1)
    return y


# max_roi_pool's gradient compares every bin with the whole feature map: beyond this many
# elements (rois * channels * bins * H * W) it refuses rather than allocate without bound
ROI_GRAD_MAX_ELEMENTS = 1 << 27


def _roi_grad(ctx):
    """Each bin's gradient goes to its first maximum in row-major order (PyTorch's roi_pool
    convention); empty bins pass none. Bins are found with the reference's arithmetic in
    float64, as masks over the feature map, so the argmax is one reduction. The rois get no
    gradient: the bins move in integer steps (rounding), piecewise constant."""
    x, rois = ctx.inputs
    dy = ctx.dy(0)
    ph, pw = ctx.attrs["pooled_shape"]
    scale = ctx.attrs["spatial_scale"]
    if x.shape is None or not all(is_static_dim(d) for d in x.shape[1:]):
        raise ctx.fail("the gradient of max_roi_pool needs static channels, height and width",
                       actual=str(x.type))
    _, c, h, w = x.shape
    nr = rois.shape[0] if rois.shape is not None else None
    if is_static_dim(nr) and nr * c * ph * pw * h * w > ROI_GRAD_MAX_ELEMENTS:
        raise ctx.fail(f"the gradient of max_roi_pool would compare {nr * c * ph * pw * h * w} "
                       f"elements (more than {ROI_GRAD_MAX_ELEMENTS})",
                       hint="use fewer rois or a smaller map")
    f64 = dt.float64
    r = ctx.op("cast", [rois], {"to": f64})

    def col(j):
        return ctx.op("gather", [r, ctx.i64([j])], {"axis": 1})           # (R, 1)

    def k(v):
        return ctx.const(v, dtype=f64)
    bi = ctx.op("cast", [ctx.op("reshape", [col(0), ctx.i64([-1])])], {"to": dt.int64})
    x1, y1, x2, y2 = (ctx.op("round", [ctx.op("mul", [col(j), k(scale)])]) for j in (1, 2, 3, 4))

    def bins(lo, hi, n, size):
        """(start, end) of each of the n bins along one axis, clipped to [0, size]: (R, n)."""
        span = ctx.op("maximum", [ctx.op("add", [ctx.op("sub", [hi, lo]), k(1)]), k(1)])
        step = ctx.op("div", [span, k(n)])
        i = ctx.const(np.arange(n).reshape(1, n), dtype=f64)
        start = ctx.op("add", [ctx.op("floor", [ctx.op("mul", [i, step])]), lo])
        end = ctx.op("add", [ctx.op("ceil", [ctx.op("mul", [ctx.op("add", [i, k(1)]), step])]), lo])
        return (ctx.op("clip", [start, k(0), k(size)]), ctx.op("clip", [end, k(0), k(size)]))

    def inside(start, end, size):
        """(R, n, size): whether each position lies in each bin."""
        pos = ctx.const(np.arange(size).reshape(1, 1, size), dtype=f64)
        s3, e3 = (ctx.op("unsqueeze", [v, ctx.i64([2])]) for v in (start, end))
        return ctx.op("logical_and", [ctx.op("greater_equal", [pos, s3]), ctx.op("less", [pos, e3])])
    hs, he = bins(y1, y2, ph, h)
    ws, we = bins(x1, x2, pw, w)
    in_h = ctx.op("reshape", [inside(hs, he, h), ctx.i64([-1, 1, ph, 1, h, 1])])
    in_w = ctx.op("reshape", [inside(ws, we, w), ctx.i64([-1, 1, 1, pw, 1, w])])
    in_bin = ctx.op("logical_and", [in_h, in_w])                               # (R, 1, ph, pw, h, w)
    xb = ctx.op("unsqueeze", [ctx.op("gather", [x, bi]), ctx.i64([2, 3])])     # (R, C, 1, 1, h, w)
    vals = ctx.op("where", [in_bin, xb, ctx.const(-np.inf, like=x)])
    arg = ctx.op("argmax", [ctx.op("reshape", [vals, ctx.i64([0, 0, ph, pw, h * w])])],
                 {"axis": 4, "keepdims": 0})                                   # (R, C, ph, pw)
    nonempty = ctx.op("logical_and", [
        ctx.op("reshape", [ctx.op("greater", [he, hs]), ctx.i64([-1, 1, ph, 1])]),
        ctx.op("reshape", [ctx.op("greater", [we, ws]), ctx.i64([-1, 1, 1, pw])])])
    g = ctx.op("where", [nonempty, dy, ctx.const(0, like=x)])
    plane = ctx.op("add", [ctx.op("mul", [ctx.op("reshape", [bi, ctx.i64([-1, 1, 1, 1])]), ctx.i64(c)]),
                           ctx.i64(np.arange(c).reshape(1, c, 1, 1))])
    flat = ctx.op("add", [ctx.op("mul", [plane, ctx.i64(h * w)]), arg])
    return [_scatter_to_argmax(ctx, x, g, flat), None]


register(OpDef(
    "max_roi_pool", infer=_roi_infer, reference=_roi_ref, inputs=(2, 2), kind="reduction",
    differentiable=True, grad=_roi_grad,
    attrs={"pooled_shape": Attr("ints", doc="(height, width) of each pooled region"),
           "spatial_scale": Attr("float", 1.0, "scales roi coordinates into the input")},
    doc="max pool of each region of interest into pooled_shape bins (ONNX MaxRoiPool)",
))
