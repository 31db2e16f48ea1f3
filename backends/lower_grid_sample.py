"""Lowering rule for grid_sample: an index function (one output element at a time).

For output (n, c, o1..or) each spatial dim d reads its grid coordinate, maps it to input
pixels (align_corners), applies the padding mode (border clamps, reflection mirrors) and
yields taps: 1 (nearest), 2 (linear) or 4 (cubic, a = -0.75) per dim; the output is the sum
over the product of taps of weight x value, accumulated in float64 as the reference does.
Taps outside the input read a clamped index and are masked (zeros padding).
"""
from __future__ import annotations

import itertools

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import INDEX, Const
from .lower_ops import _b, _out
from .lower_tensor import Generic, iconst


def _reflect(b, v, lo: float, hi: float, d):
    """Mirror v into [lo, hi] (repeated reflection), for v outside; float expressions of dtype d."""
    if hi - lo <= 0:
        return Const(lo, d)
    c = lambda x: Const(x, d)  # noqa: E731
    span = hi - lo
    below = b.lt(v, c(lo))
    dist = b.select(below, b.sub(c(lo), v), b.sub(v, c(hi)))
    k = b.floor(b.div(dist, c(span)))
    rem = b.sub(dist, b.mul(k, c(span)))
    even = b.eq(b.mul(b.floor(b.div(k, c(2.0))), c(2.0)), k)
    lo_r, hi_r = b.add(c(lo), rem), b.sub(c(hi), rem)
    inside = b.select(below, b.select(even, lo_r, hi_r), b.select(even, hi_r, lo_r))
    return b.select(b.or_(b.lt(v, c(lo)), b.gt(v, c(hi))), inside, v)


def _cubic(b, t, d):
    a = -0.75
    c = lambda x: Const(x, d)  # noqa: E731
    t = b.abs(t)
    near = b.add(b.mul(b.mul(b.sub(b.mul(c(a + 2), t), c(a + 3)), t), t), c(1.0))
    far = b.sub(b.mul(b.add(b.mul(b.sub(b.mul(c(a), t), c(5 * a)), t), c(8 * a)), t), c(4 * a))
    return b.select(b.le(t, c(1.0)), near, b.select(b.lt(t, c(2.0)), far, c(0.0)))


def rule_grid_sample(ctx, n, ins):
    x, grid = ins
    shape, odt = _out(n)
    spatial = x.shape[2:]
    r = len(spatial)
    mode, padding, align = n.attrs["mode"], n.attrs["padding_mode"], bool(n.attrs["align_corners"])
    cdt = dt.float64 if grid.dtype is dt.float64 else dt.float32
    f64 = dt.float64
    b = _b

    def taps_for(idx, d):
        """[(index expr, weight expr (f64), valid expr | None)] for spatial dim d."""
        L = spatial[d]
        c = lambda v: Const(v, cdt)  # noqa: E731
        v = b.cast(grid.at([idx[0]] + list(idx[2:]) + [iconst(r - 1 - d)]), cdt)
        if align:
            coord = b.mul(b.div(b.add(v, c(1.0)), c(2.0)), c(float(L - 1)))
            lo, hi = 0.0, float(L - 1)
        else:
            coord = b.div(b.sub(b.mul(b.add(v, c(1.0)), c(float(L))), c(1.0)), c(2.0))
            lo, hi = -0.5, L - 0.5
        if mode == "nearest":
            coord = b.round(coord)
        outside = b.or_(b.lt(coord, c(lo)), b.gt(coord, c(hi)))
        if padding == "border":
            coord = b.select(outside, b.min(b.max(coord, c(0.0)), c(float(L - 1))), coord)
        elif padding == "reflection":
            coord = b.select(outside, _reflect(b, coord, lo, hi, cdt), coord)
        coord = b.cast(coord, f64)
        one = Const(1.0, f64)
        if mode == "nearest":
            raw = [(b.sub(coord, b.fmod(coord, one)), one)]     # trunc toward zero
        else:
            fl = b.floor(coord)
            t = b.sub(coord, fl)
            if mode == "linear":
                raw = [(fl, b.sub(one, t)), (b.add(fl, one), t)]
            else:
                raw = [(b.add(fl, Const(float(o), f64)), _cubic(b, w, f64))
                       for o, w in zip((-1, 0, 1, 2), (b.add(t, one), t, b.sub(one, t), b.sub(Const(2.0, f64), t)))]
        out = []
        for fi, w in raw:
            valid = None
            if padding == "zeros":
                valid = b.and_(b.ge(fi, Const(0.0, f64)), b.le(fi, Const(float(L - 1), f64)))
            elif padding == "reflection":
                rf = _reflect(b, fi, lo, hi, f64)
                fi = b.sub(rf, b.fmod(rf, one))        # trunc toward zero
            fi = b.min(b.max(fi, Const(0.0, f64)), Const(float(L - 1), f64))
            out.append((b.cast(fi, INDEX), w, valid))
        return out

    def fn(idx):
        per_dim = [taps_for(idx, d) for d in range(r)]
        acc = None
        for combo in itertools.product(*per_dim):
            w, ok = None, None
            for _, wd, vd in combo:
                w = wd if w is None else b.mul(w, wd)
                if vd is not None:
                    ok = vd if ok is None else b.and_(ok, vd)
            val = b.cast(x.at([idx[0], idx[1]] + [t[0] for t in combo]), f64)
            if ok is not None:
                val = b.select(ok, val, Const(0.0, f64))
            term = b.mul(val, w)
            acc = term if acc is None else b.add(acc, term)
        return b.cast(acc, odt)
    ntaps = {"nearest": 1, "linear": 2, "cubic": 4}[mode] ** r
    return [Generic(shape, odt, ctx, fn, 8 * ntaps + 20 * r)]


RULES: dict = {"grid_sample": rule_grid_sample}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
