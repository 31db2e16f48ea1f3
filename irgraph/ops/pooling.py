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
from .declare import FLOAT_TYPES, INT_TYPES
from .registry import Attr, OpDef, register
from .shapes import out
from .windows import (WindowPlan, acc_dtype, check_input, check_rank, padded, per_axis, raiser,
                      split_pads, static_eq, window_plan, window_taps)

MAX_POOL_TYPES = FLOAT_TYPES + INT_TYPES


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


register(OpDef(
    "avg_pool", infer=_avg_pool_infer, reference=_avg_pool_ref, kind="reduction", differentiable=True,
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


register(OpDef(
    "lp_pool", infer=_lp_pool_infer, reference=_lp_pool_ref, kind="reduction", differentiable=True,
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


register(OpDef(
    "global_pool", infer=_global_infer, reference=_global_ref, kind="reduction", differentiable=True,
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


register(OpDef(
    "max_unpool", infer=_max_unpool_infer, reference=_max_unpool_ref, inputs=(2, 3), kind="index",
    differentiable=True,
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


register(OpDef(
    "max_roi_pool", infer=_roi_infer, reference=_roi_ref, inputs=(2, 2), kind="reduction",
    differentiable=True,
    attrs={"pooled_shape": Attr("ints", doc="(height, width) of each pooled region"),
           "spatial_scale": Attr("float", 1.0, "scales roi coordinates into the input")},
    doc="max pool of each region of interest into pooled_shape bins (ONNX MaxRoiPool)",
))
