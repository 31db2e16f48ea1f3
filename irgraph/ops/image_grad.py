"""Gradient rules of the image ops (``image.py``): resize, affine_grid, grid_sample, roi_align.

- resize is linear in x and separable: along each resized axis it is a (out, in) matrix built
  at compile time from the same coordinate and tap helpers as the reference, so its gradient
  is one matmul by that matrix per axis.
- affine_grid is linear in theta: d theta = dgrid^T [base coords, 1] (one batched matmul).
- grid_sample and roi_align gather input pixels at runtime positions with weights: the input's
  gradient scatter-adds (``scatter_elements`` with reduction add) the weighted output
  gradient back to those pixels in one op; grid_sample's grid gets the derivative of the
  interpolation weights times the coordinate transform's (padding modes included).

roi (resize), scales/sizes and rois (roi_align) get no gradient, as in ONNX and torchvision.
"""
from __future__ import annotations

import math

import numpy as np

from .evaluate import known_value

def _along(ctx, g, m: np.ndarray, axis: int):
    """sum_i g[..., i, ...] * m[i, k] along ``axis`` (m is (len of g's axis, new len))."""
    r = len(g.shape)
    mc = ctx.const(m, like=g)
    if axis == r - 1:
        return ctx.op("matmul", [g, mc])
    if axis == r - 2:
        return ctx.op("matmul", [ctx.const(np.ascontiguousarray(m.T), like=g), g])
    perm = [i for i in range(r) if i != axis] + [axis]
    inv = list(np.argsort(perm))
    moved = ctx.op("matmul", [ctx.op("transpose", [g], {"perm": perm}), mc])
    return ctx.op("transpose", [moved], {"perm": inv})


# ---- resize ------------------------------------------------------------------------------------
def resize_grad(ctx):
    from . import image as im
    x = ctx.inputs[0]
    ins = list(ctx.inputs) + [None] * (4 - len(ctx.inputs))
    a = ctx.attrs
    roi, scales, sizes = (known_value(v) for v in ins[1:4])
    if x.shape is None or not x.type.is_static or (ins[3] is not None and sizes is None) or (
            ins[2] is not None and sizes is None and scales is None):
        raise ctx.fail("the resize gradient needs a static input shape and compile-time scales or sizes",
                       actual=str(x.type))
    plan, rois = im.resize_geometry(x.shape, a, roi, scales, sizes)
    ctm = a["coordinate_transformation_mode"]
    if ctm == "tf_crop_and_resize" and not im._given(roi) and ins[1] is not None:
        raise ctx.fail("the resize gradient needs a compile-time roi")
    g = ctx.dy()
    for (ax, scale, m), roi_ax in zip(plan, rois):
        length = x.shape[ax]
        if im.resize_keeps_axis(ctm, scale, m, length, roi_ax):
            continue
        mat = np.zeros((m, length))
        if m and length:
            src, outside = im._source_coords(ctm, m, length, scale, roi_ax)
            rows = np.arange(m)
            if a["mode"] == "nearest":
                mat[rows, im._nearest_index(src, a["nearest_mode"], length)] = 1.0
            else:
                idx, w = im._interp_taps(src, length, a["mode"], scale, a["cubic_coeff_a"],
                                         a["antialias"], a["exclude_outside"])
                for k in range(idx.shape[1]):
                    np.add.at(mat, (rows, idx[:, k]), w[:, k])
            if outside is not None:
                mat[outside] = 0.0        # extrapolated positions are the constant fill
        g = _along(ctx, g, mat, ax)
    return [g, None, None, None][:len(ctx.inputs)]


# ---- affine_grid -------------------------------------------------------------------------------
def affine_grid_grad(ctx):
    from . import image as im
    theta, size = ctx.inputs
    dims = known_value(size)
    if dims is None:
        raise ctx.fail("the affine_grid gradient needs a compile-time size")
    dims = [int(d) for d in np.asarray(dims).ravel()[2:]]
    r = len(dims)
    mesh = np.meshgrid(*[im._base_coords(d, ctx.attrs["align_corners"]) for d in dims], indexing="ij")
    homo = np.stack(list(mesh[::-1]) + [np.ones(dims)], axis=-1).reshape(-1, r + 1)    # (P, r+1)
    dy = ctx.op("reshape", [ctx.dy(), ctx.i64([0, homo.shape[0], r])])                # (N, P, r)
    dt = ctx.op("matmul", [ctx.op("transpose", [dy], {"perm": (0, 2, 1)}), ctx.const(homo, like=theta)])
    return [dt, None]


# ---- shared: weighted gathers and their scatter-add --------------------------------------------
def _scatter_add(ctx, base_shape_like, idx, upd, axis: int):
    """zeros shaped like ``base_shape_like`` with ``upd`` added at ``idx`` along ``axis``."""
    return ctx.op("scatter_elements", [ctx.zeros_like(base_shape_like), idx, upd],
                  {"axis": axis, "reduction": "add"})


class _Ops:
    def __init__(self, ctx, like):
        self.ctx, self.like = ctx, like

    def __call__(self, name, *ins, **attrs):
        return self.ctx.op(name, list(ins), attrs or None)

    def c(self, v):
        return self.ctx.const(v, like=self.like)

    def f(self, mask):
        return self("cast", mask, to=self.like.dtype)


# ---- grid_sample -------------------------------------------------------------------------------
def grid_sample_grad(ctx):
    x, grid = ctx.inputs
    if x.shape is None or grid.shape is None or not x.type.is_static or not grid.type.is_static:
        raise ctx.fail("the grid_sample gradient needs static shapes", actual=str(x.type))
    a = ctx.attrs
    mode, padding, align = a["mode"], a["padding_mode"], a["align_corners"]
    n, c = x.shape[:2]
    spatial = list(x.shape[2:])
    r = len(spatial)
    p = int(np.prod(grid.shape[1:-1]))
    o = _Ops(ctx, grid)
    gflat = o("reshape", grid, ctx.i64([n, p, r]))
    taps = []       # per spatial dim: (int64 index (N, nt, P), weight, d weight / d coord, valid, d coord / d grid)
    for d, length in enumerate(spatial):
        v = o("gather", gflat, ctx.i64(r - 1 - d), axis=2)                          # (N, P)
        k = (length - 1) / 2 if align else length / 2
        lo, hi = (0.0, float(length - 1)) if align else (-0.5, length - 0.5)
        coord = o("add", o("mul", v, o.c(k)), o.c(k if align else (length - 1) / 2))
        if mode == "nearest":
            coord = o("round", coord)
        der = o.c(k)
        if padding != "zeros":
            outside = o("logical_or", o("less", coord, o.c(lo)), o("greater", coord, o.c(hi)))
            if padding == "border":
                coord = o("where", outside, o("clip", coord, o.c(0.0), o.c(float(length - 1))), coord)
                der = o("mul", der, o.f(o("logical_not", outside)))
            else:
                refl, sign = _reflect(o, coord, lo, hi)
                coord = o("where", outside, refl, coord)
                der = o("mul", der, o("where", outside, sign, o.c(1.0)))
        taps.append(_taps(o, coord, mode, padding, length, lo, hi) + (der,))
    # all tap combinations at once: (N, K, P) with K = nt^r, dim 0 varying slowest
    nt = taps[0][0].shape[1]
    strides = [int(np.prod(spatial[d + 1:])) for d in range(r)]

    def comb(vals, op_name):
        out = None
        for d, val in enumerate(vals):
            shape = [n] + [nt if e == d else 1 for e in range(r)] + [p]
            t = o("reshape", val, ctx.i64(shape))
            out = t if out is None else o(op_name, out, t)
        return o("reshape", out, ctx.i64([n, nt ** r, p]))
    flat = comb([o("mul", t[0], ctx.i64(s)) for t, s in zip(taps, strides)], "add")
    w = comb([t[1] for t in taps], "mul")
    valid = comb([t[3] for t in taps], "mul") if padding == "zeros" else None
    if valid is not None:
        w = o("mul", w, valid)
    kp = nt ** r * p
    idx = o("expand", o("reshape", flat, ctx.i64([n, 1, kp])), ctx.i64([n, c, kp]))
    dy = o("reshape", ctx.dy(), ctx.i64([n, c, 1, p]))
    upd = o("reshape", o("mul", dy, o("unsqueeze", w, ctx.i64([1]))), ctx.i64([n, c, kp]))
    xflat = o("reshape", x, ctx.i64([n, c, int(np.prod(spatial))]))
    dx = o("reshape", _scatter_add(ctx, xflat, idx, upd, 2), ctx.i64(list(x.shape)))
    if mode == "nearest":    # piecewise constant in the grid
        return [dx, ctx.zeros_like(grid)]
    vals = o("reshape", o("gather_elements", xflat, idx, axis=2), ctx.i64([n, c, nt ** r, p]))
    s = o("reduce_sum", o("mul", dy, vals), ctx.i64([1]), keepdims=0)             # (N, K, P)
    if valid is not None:
        s = o("mul", s, valid)
    parts = []
    for d in range(r):
        wd = comb([t[2] if e == d else t[1] for e, t in enumerate(taps)], "mul")
        dcoord = o("reduce_sum", o("mul", s, wd), ctx.i64([1]), keepdims=0)       # (N, P)
        parts.append(o("unsqueeze", o("mul", dcoord, taps[d][4]), ctx.i64([2])))
    dgrid = o("reshape", o("concat", *parts[::-1], axis=2), ctx.i64(list(grid.shape)))
    return [dx, dgrid]


def _reflect(o, v, lo: float, hi: float):
    """The reference's reflection of ``v`` into [lo, hi] with ops, and its derivative (+-1)."""
    span = hi - lo
    if span <= 0:
        return o("mul", v, o.c(0.0)), o.c(0.0)
    below = o("less", v, o.c(lo))
    d = o("where", below, o("sub", o.c(lo), v), o("sub", v, o.c(hi)))
    k = o("floor", o("div", d, o.c(span)))
    rem = o("sub", d, o("mul", k, o.c(span)))
    even = o("equal", o("sub", k, o("mul", o("floor", o("mul", k, o.c(0.5))), o.c(2.0))), o.c(0.0))
    up, down = o("add", o.c(lo), rem), o("sub", o.c(hi), rem)
    val = o("where", below, o("where", even, up, down), o("where", even, down, up))
    return val, o("where", even, o.c(-1.0), o.c(1.0))


def _taps(o, coord, mode: str, padding: str, length: int, lo: float, hi: float):
    """Tap indices (int64), weights, weight derivatives and validity, each (N, nt, P)."""
    def stack(vals):
        return o("concat", *[o("unsqueeze", v, o.ctx.i64([1])) for v in vals], axis=1)
    if mode == "nearest":
        ind = [coord]
        w_stack, dw_stack = o("add", o("mul", stack(ind), o.c(0.0)), o.c(1.0)), None
    else:
        f = o("floor", coord)
        t = o("sub", coord, f)
        one = o.c(1.0)
        if mode == "linear":
            ind = [f, o("add", f, one)]
            zero = o("mul", t, o.c(0.0))
            w, dw = [o("sub", one, t), t], [o("sub", zero, one), o("add", zero, one)]
        else:
            ind = [o("add", f, o.c(float(j))) for j in (-1, 0, 1, 2)]
            args = [o("add", t, one), t, o("sub", one, t), o("sub", o.c(2.0), t)]
            w = [_cubic(o, s) for s in args]
            dw = [_cubic_d(o, s) for s in args]
            dw[2], dw[3] = o("neg", dw[2]), o("neg", dw[3])     # d(1 - t) = d(2 - t) = -dt
        w_stack, dw_stack = stack(w), stack(dw)
    idx = stack(ind)
    valid = None
    if padding == "zeros":
        valid = o.f(o("logical_and", o("greater_equal", idx, o.c(0.0)),
                      o("less_equal", idx, o.c(float(length - 1)))))
    elif padding == "reflection":
        idx, _ = _reflect(o, idx, lo, hi)
        outside = o("logical_or", o("less", stack(ind), o.c(lo)), o("greater", stack(ind), o.c(hi)))
        idx = o("where", outside, idx, stack(ind))
    ii = o("cast", o("clip", idx, o.c(0.0), o.c(float(length - 1))), to=_i64())   # truncates
    return ii, w_stack, dw_stack, valid


_A = -0.75   # grid_sample's cubic coefficient (as the reference's)


def _cubic(o, s):
    """The cubic convolution kernel at s >= 0: near for s <= 1, far for 1 < s < 2, else 0."""
    a = _A
    near = o("add", o("mul", o("mul", o("sub", o("mul", s, o.c(a + 2)), o.c(a + 3)), s), s), o.c(1.0))
    far = o("sub", o("mul", o("add", o("mul", o("sub", o("mul", s, o.c(a)), o.c(5 * a)), s), o.c(8 * a)), s),
            o.c(4 * a))
    return o("where", o("less_equal", s, o.c(1.0)), near,
             o("where", o("less", s, o.c(2.0)), far, o.c(0.0)))


def _cubic_d(o, s):
    a = _A
    near = o("mul", o("sub", o("mul", s, o.c(3 * (a + 2))), o.c(2 * (a + 3))), s)
    far = o("add", o("mul", o("sub", o("mul", s, o.c(3 * a)), o.c(10 * a)), s), o.c(8 * a))
    return o("where", o("less_equal", s, o.c(1.0)), near,
             o("where", o("less", s, o.c(2.0)), far, o.c(0.0)))


def _i64():
    from .. import dtype as dt
    return dt.int64


# ---- roi_align -----------------------------------------------------------------------------------
def roi_align_grad(ctx):
    """dx scatter-adds dy times each sample's bilinear corner weights (avg: / samples per bin;
    max: to the corner value(s) that won, ties sharing evenly). Samples per bin must be known at
    compile time: sampling_ratio > 0, or rois that are constants."""
    x, rois, batch = ctx.inputs
    a = ctx.attrs
    if x.shape is None or not x.type.is_static or rois.shape is None or not rois.type.is_static:
        raise ctx.fail("the roi_align gradient needs static shapes", actual=str(x.type))
    n, c, h, w_ = x.shape
    nr = rois.shape[0]
    oh, ow = a["output_height"], a["output_width"]
    half = a["coordinate_transformation_mode"] == "half_pixel"
    ratio = a["sampling_ratio"]
    o = _Ops(ctx, x)
    rv = o("cast", rois, to=x.dtype)
    # samples per bin along each axis, per roi: (R, 1, G) masks of the samples that exist
    if ratio > 0:
        gy = gx = np.full(nr, ratio)
    else:
        known = known_value(rois)
        if known is None:
            raise ctx.fail("the roi_align gradient with sampling_ratio 0 needs compile-time rois "
                           "(the number of samples depends on each roi's size)")
        rdt = known.dtype.type
        scale, off = rdt(a["spatial_scale"]), rdt(0.5 if half else 0.0)
        b = known * scale - off
        rw, rh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        if not half:
            rw, rh = np.maximum(rw, rdt(1)), np.maximum(rh, rdt(1))
        gy = np.array([int(math.ceil(v / rdt(oh))) for v in rh])
        gx = np.array([int(math.ceil(v / rdt(ow))) for v in rw])
    gy, gx = np.maximum(gy, 0), np.maximum(gx, 0)
    skip = (gy <= 0) | (gx <= 0)
    Gy, Gx = max(int(gy.max(initial=1)), 1), max(int(gx.max(initial=1)), 1)
    col = [o("gather", rv, ctx.i64(j), axis=1) for j in range(4)]                    # (R,) each
    sc, off = o.c(a["spatial_scale"]), o.c(0.5 if half else 0.0)
    x0, y0, x1, y1 = (o("sub", o("mul", v, sc), off) for v in col)
    rw, rh = o("sub", x1, x0), o("sub", y1, y0)
    if not half:   # malformed rois become 1x1
        rw, rh = o("maximum", rw, o.c(1.0)), o("maximum", rh, o.c(1.0))
    iy, wy = _roi_taps(o, ctx, y0, rh, oh, gy, Gy, h)                                # (R, oh, Gy, 2)
    ix, wx = _roi_taps(o, ctx, x0, rw, ow, gx, Gx, w_)
    m = oh * ow
    taps = Gy * 2 * Gx * 2

    def outer(yv, xv, op_name):    # (R, oh, Gy, 2) x (R, ow, Gx, 2) -> (R, oh*ow, Gy*2*Gx*2)
        yy = o("reshape", yv, ctx.i64([nr, oh, 1, Gy, 2, 1, 1]))
        xx = o("reshape", xv, ctx.i64([nr, 1, ow, 1, 1, Gx, 2]))
        return o("reshape", o(op_name, yy, xx), ctx.i64([nr, m, taps]))
    flat = outer(o("mul", iy, ctx.i64(w_)), ix, "add")
    bofs = o("mul", o("cast", batch, to=_i64()), ctx.i64(h * w_))
    flat = o("add", flat, o("reshape", bofs, ctx.i64([nr, 1, 1])))
    wt = outer(wy, wx, "mul")
    count = np.where(skip, 1, gy * gx).astype(np.float64)
    exists = np.ones((nr, 1, 1)) if ratio > 0 else _outer_mask(gy, gx, Gy, Gx, oh, ow)
    exists = exists * (~skip).reshape(nr, 1, 1)
    dy = o("transpose", o("reshape", ctx.dy(), ctx.i64([nr, c, m])), perm=(1, 0, 2))   # (C, R, Q)
    dy = o("unsqueeze", dy, ctx.i64([3]))
    size = nr * m * taps
    idx = o("expand", o("reshape", flat, ctx.i64([1, size])), ctx.i64([c, size]))
    xt = o("reshape", o("transpose", x, perm=(1, 0, 2, 3)), ctx.i64([c, n * h * w_]))
    if a["mode"] == "avg":
        scale_w = o("mul", wt, o.c((exists / count.reshape(nr, 1, 1))))
        upd = o("mul", dy, scale_w)
    else:
        vals = o("reshape", o("gather_elements", xt, idx, axis=1), ctx.i64([c, nr, m, taps]))
        prod = o("mul", vals, wt)
        live = ctx.graph.add_const(np.broadcast_to(exists > 0, (nr, m, taps)).copy(), f"{ctx._prefix}/live")
        prod = o("where", live, prod, o.c(-np.inf))
        best = o.f(o("equal", prod, o("reduce_max", prod, ctx.i64([3]), keepdims=1)))
        share = o("div", best, o("reduce_sum", best, ctx.i64([3]), keepdims=1))
        upd = o("mul", o("mul", dy, share), o("mul", wt, o.c(exists)))
    upd = o("reshape", upd, ctx.i64([c, size]))
    dxt = _scatter_add(ctx, xt, idx, upd, 1)
    dx = o("transpose", o("reshape", dxt, ctx.i64([c, n, h, w_])), perm=(1, 0, 2, 3))
    return [dx, None, None]


def _outer_mask(gy, gx, Gy: int, Gx: int, oh: int, ow: int) -> np.ndarray:
    """1 for the (roi, bin, tap) entries of samples that exist (roi k has gy[k] x gx[k])."""
    my = (np.arange(Gy)[None, :] < gy[:, None]).astype(np.float64)                 # (R, Gy)
    mx = (np.arange(Gx)[None, :] < gx[:, None]).astype(np.float64)
    full = (my[:, None, None, :, None, None, None] * mx[:, None, None, None, None, :, None]
            * np.ones((1, oh, ow, 1, 2, 1, 2)))
    return full.reshape(len(gy), oh * ow, Gy * 2 * Gx * 2)


def _roi_taps(o, ctx, start, size, bins: int, grid, G: int, length: int):
    """The reference's ``_roi_axis`` with ops for every roi: corner indices (int64) and weights,
    (R, bins, G, 2); samples beyond a roi's own count get weight 0."""
    nr = len(grid)
    steps = np.arange(bins)[None, :, None] + (np.arange(G)[None, None, :] + 0.5) / np.maximum(
        grid, 1).reshape(nr, 1, 1)                                                    # (R, bins, G)
    bin_size = o("div", size, o.c(float(bins)))
    pos = o("add", o("reshape", start, ctx.i64([nr, 1, 1])),
            o("mul", o("reshape", bin_size, ctx.i64([nr, 1, 1])), o.c(steps)))
    valid = o.f(o("logical_and", o("greater_equal", pos, o.c(-1.0)), o("less_equal", pos, o.c(float(length)))))
    pos = o("maximum", pos, o.c(0.0))
    low = o("floor", pos)
    at_end = o("greater_equal", low, o.c(float(length - 1)))
    low = o("where", at_end, o.c(float(length - 1)), low)
    high = o("where", at_end, low, o("add", low, o.c(1.0)))
    frac = o("where", at_end, o.c(0.0), o("sub", pos, low))

    def pair(p, q):
        return o("concat", o("unsqueeze", p, ctx.i64([3])), o("unsqueeze", q, ctx.i64([3])), axis=3)
    idx = o("cast", pair(low, high), to=_i64())
    w = o("mul", pair(o("sub", o.c(1.0), frac), frac), o("unsqueeze", valid, ctx.i64([3])))
    return idx, w
