"""Lowering rule for roi_align: one output element per iteration, its samples in a loop nest.

Per roi the box arithmetic runs in the rois' dtype, as in the reference (it decides the grid
size), and the sampling in float64: bin (ph, pw) holds gh x gw sample points, each read
bilinearly from its 2 x 2 corners (``irgraph.ops.image._roi_axis``: samples more than one pixel
outside weigh zero, positions at the last pixel clamp). ``avg`` sums the weighted corners and
divides by gh * gw; ``max`` takes the largest weighted corner (ORT's definition).

With ``sampling_ratio > 0`` the sample grid is fixed. With ``sampling_ratio = 0`` it is
``ceil(roi size / bins)`` per axis, read from the rois at run time, while kernel-IR loops have
compile-time extents. A bounded loop covers it exactly: when that count g is 2 or more the
samples are more than half a pixel apart, so at most ``2 * length + 3`` of them fall within the
one-pixel margin around the input where weights can be non-zero; every other sample weighs
zero. The loop runs over a window of ``2 * length + 8`` samples starting just before the first
one that can count (found by solving the sample position for -1), guarded by ``i < g``; in
``max`` mode a zero joins the maximum when some of the g samples lie outside the window
(their corners weigh zero, as in the reference).
"""
from __future__ import annotations

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import INDEX, Assign, Const, If, Local, Loop, Store, Var
from .lower_ops import _b, _out
from .lower_tensor import Pending, delinearize, iadd, iclamp, iconst, numel

_F64 = dt.float64
# counts above this (a roi 2**40 pixels across) are clamped before they become integers
_MAX_GRID = float(2 ** 40)


def _c(v: float) -> Const:
    return Const(float(v), _F64)


def _window(length: int) -> int:
    """Loop extent that covers every sample which can weigh anything when g >= 2 (see above);
    the last term absorbs float16 rois' rounding of the grid count."""
    return 2 * length + 8 + (2 * length + 2) // 512


def _taps(b, start, size, bins: int, grid, p, i, length: int):
    """(low, high, weight low, weight high) of sample i of bin p along one axis (float64, as
    ``_roi_axis``: pos = start + p * bin + (i + 0.5) * bin / grid)."""
    bin_size = b.div(size, _c(bins))
    pos = b.add(b.add(start, b.mul(b.cast(p, _F64), bin_size)),
                b.div(b.mul(b.add(b.cast(i, _F64), _c(0.5)), bin_size), grid))
    valid = b.and_(b.ge(pos, _c(-1.0)), b.le(pos, _c(float(length))))
    pos = b.max(pos, _c(0.0))
    low_f = b.min(b.floor(pos), _c(float(length - 1)))   # clamp first: no huge float -> int cast
    at_end = b.ge(low_f, _c(float(length - 1)))
    low = b.cast(low_f, INDEX)
    high = b.select(at_end, low, iadd(low, 1))
    frac = b.select(at_end, _c(0.0), b.sub(pos, low_f))
    w_low = b.select(valid, b.sub(_c(1.0), frac), _c(0.0))
    w_high = b.select(valid, frac, _c(0.0))
    return low, high, w_low, w_high


def rule_roi_align(ctx, n, ins):
    x, rois, batch = ins
    shape, odt = _out(n)
    a = n.attrs
    N, C, H, W = x.shape
    num, _, oh, ow = shape
    half = a["coordinate_transformation_mode"] == "half_pixel"
    ratio = int(a["sampling_ratio"])
    is_max = a["mode"] == "max"
    rdt = rois.dtype
    b = _b

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        with c.stage():
            o = c.var()
            k, ch, ph, pw = delinearize(o, list(shape))
            scale, offset = Const(a["spatial_scale"], rdt), Const(0.5 if half else 0.0, rdt)
            x0, y0, x1, y1 = (b.sub(b.mul(rois.at([k, iconst(j)]), scale), offset) for j in range(4))
            rw, rh = b.sub(x1, x0), b.sub(y1, y0)
            if not half:   # malformed rois become 1 x 1
                rw, rh = b.max(rw, Const(1, rdt)), b.max(rh, Const(1, rdt))
            bi = iclamp(b.cast(batch.at([k]), INDEX), 0, N - 1)
            if ratio > 0:
                gy = gx = _c(float(ratio))
            else:
                gy = b.cast(b.ceil(b.div(rh, Const(oh, rdt))), _F64)
                gx = b.cast(b.ceil(b.div(rw, Const(ow, rdt))), _F64)
                gy, gx = (b.min(g, _c(_MAX_GRID)) for g in (gy, gx))
            start_y, start_x = b.cast(y0, _F64), b.cast(x0, _F64)
            size_y, size_x = b.cast(rh, _F64), b.cast(rw, _F64)
            acc = Var(f"acc{next(c._n)}", _F64)

            def axis(start, size, bins, grid, p, length, t):
                """(sample index, its guard or None, loop extent, first sample index as float or None)."""
                if ratio > 0:
                    return t, None, ratio, None
                bin_size = b.div(size, _c(bins))
                a0 = b.add(start, b.mul(b.cast(p, _F64), bin_size))
                # first i with a0 + (i + 0.5) * bin / g >= -1, less a margin for rounding
                at_minus_one = b.sub(b.div(b.mul(b.sub(_c(-1.0), a0), grid), bin_size), _c(0.5))
                first = b.sub(b.floor(at_minus_one), _c(1.0))
                first = b.min(b.max(first, _c(0.0)), grid)
                lo = b.cast(first, INDEX)
                i = iadd(lo, t)
                return i, b.lt(b.cast(i, _F64), grid), _window(length), first

            ty, tx = c.var(), c.var()
            iy, guard_y, ext_y, first_y = axis(start_y, size_y, oh, gy, ph, H, ty)
            ix, guard_x, ext_x, first_x = axis(start_x, size_x, ow, gx, pw, W, tx)
            ylo, yhi, ywl, ywh = _taps(b, start_y, size_y, oh, gy, ph, iy, H)
            xlo, xhi, xwl, xwh = _taps(b, start_x, size_x, ow, gx, pw, ix, W)
            upd = []
            for yi, yw in ((ylo, ywl), (yhi, ywh)):
                for xi, xw in ((xlo, xwl), (xhi, xwh)):
                    v = b.mul(b.cast(x.at([bi, ch, yi, xi]), _F64), b.mul(yw, xw))
                    upd.append(Assign(acc, b.max(acc, v) if is_max else b.add(acc, v)))
            inner = upd if guard_x is None else [If(guard_x, upd)]
            row = [Loop(tx, ext_x, "serial", inner)]
            outer = Loop(ty, ext_y, "serial", row if guard_y is None else [If(guard_y, row)])
            count = b.mul(gy, gx)
            if is_max:
                init = _c(float("-inf"))
                if ratio == 0:   # samples beyond the window weigh zero: a zero joins the maximum
                    seen_y = b.min(b.max(b.sub(gy, first_y), _c(0.0)), _c(float(ext_y)))
                    seen_x = b.min(b.max(b.sub(gx, first_x), _c(0.0)), _c(float(ext_x)))
                    init = b.select(b.lt(b.mul(seen_y, seen_x), count), _c(0.0), init)
                res = acc
            else:
                init = _c(0.0)
                res = b.div(acc, b.max(count, _c(1.0)))
            if ratio == 0:   # no samples (an empty or inverted roi): the output stays zero
                res = b.select(b.and_(b.gt(gy, _c(0.0)), b.gt(gx, _c(0.0))), res, _c(0.0))
            body = [Local(acc, init), outer, Store(dest.buf, dest.flat([k, ch, ph, pw]), b.cast(res, odt))]
            work = numel(shape) * 4 * ext_y * ext_x
            c.body.append(Loop(o, numel(shape), "parallel" if work >= PARALLEL_MIN_WORK else "serial", body))
    return [Pending(shape, odt, ctx, emit, "roi_align")]


RULES: dict = {"roi_align": rule_roi_align}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
