"""Lowering rule for deform_conv: sampled columns, then a grouped dot product per output.

As in the reference, the input is first gathered into im2col columns ``cols[n, c, k, p]``: the
value of channel c at tap k of output pixel p, sampled multi-linearly at the tap's regular
position plus its learned offset (corners outside the input count zero; corners are added in
the reference's order, then the optional mask multiplies). Then
``y[n, m, p] = sum over (c in m's group, k) of w[m, c, k] * cols[n, c, k, p]`` plus the bias.
Everything is computed in the reference's accumulation dtype (float64 for float32/float64 data,
float32 for 16-bit floats) and rounded once at the end.

The columns live in a scratch buffer (N x C x K x P values); the dot products run in a parallel
loop over output elements. Offsets that are NaN or far outside the input only ever select
zero-weight corners: positions are clamped just outside the input before they become indices.
"""
from __future__ import annotations

import itertools

from irgraph import dtype as dt
from irgraph.ops.windows import raiser, window_plan

from . import lower_ops
from .kernel_ir import INDEX, Assign, Const, Local, Loop, Store, Var
from .lower_ops import _b, _out
from .lower_tensor import Generic, Pending, delinearize, iadd, iclamp, iconst, imul, numel


def rule_deform_conv(ctx, n, ins):
    ins = list(ins) + [None] * (5 - len(ins))
    x, w, off, bias, mask = ins[:5]
    shape, odt = _out(n)
    a = n.attrs
    sizes, kernel = x.shape[2:], w.shape[2:]
    plan = window_plan(sizes, kernel, a, raiser("deform_conv"))
    nsp = len(sizes)
    N, C = x.shape[:2]
    M = w.shape[0]
    group, og = a["group"], a["offset_group"]
    K, P = numel(kernel), numel(plan.out)
    cg, mg, cpo = C // group, M // group, C // og
    acc = dt.float64 if odt in (dt.float32, dt.float64) else dt.float32
    b = _b
    offv = off.reshape((N, og, K, nsp, P))
    maskv = mask.reshape((N, og, K, P)) if mask is not None else None

    def col(idx):
        """cols[n, c, k, p] in the accumulation dtype."""
        nn, c, k, p = idx
        g = iclamp(b.idx_div(c, iconst(cpo)), 0, og - 1) if og > 1 else iconst(0)
        outs = delinearize(p, list(plan.out))
        taps = delinearize(k, list(kernel))
        lo, frac = [], []
        for j in range(nsp):
            base = iadd(imul(outs[j], plan.strides[j]), imul(taps[j], plan.dilations[j]))
            base = iadd(base, -plan.pads_begin[j])
            pos = b.add(b.cast(base, acc), b.cast(offv.at([nn, g, k, iconst(j), p]), acc))
            pos = b.min(b.max(pos, Const(-2.0, acc)), Const(float(sizes[j] + 1), acc))
            fl = b.floor(pos)
            lo.append(b.cast(fl, INDEX))
            frac.append(b.sub(pos, fl))
        total = None
        for corner in itertools.product((0, 1), repeat=nsp):
            wgt, ok, src = Const(1.0, acc), None, [nn, c]
            for j in range(nsp):
                ij = iadd(lo[j], corner[j])
                v = b.and_(b.ge(ij, iconst(0)), b.lt(ij, iconst(sizes[j])))
                ok = v if ok is None else b.and_(ok, v)
                wgt = b.mul(wgt, frac[j] if corner[j] else b.sub(Const(1.0, acc), frac[j]))
                src.append(iclamp(ij, 0, sizes[j] - 1))
            term = b.mul(b.cast(x.at(src), acc), b.select(ok, wgt, Const(0.0, acc)))
            total = term if total is None else b.add(total, term)
        if maskv is not None:
            total = b.mul(total, b.cast(maskv.at([nn, g, k, p]), acc))
        return total

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        cols = c.force(Generic((N, C, K, P), acc, c, col, 30 * (1 << nsp)))
        wv = w.reshape((M, cg * K))
        with c.stage():
            o, r = c.var(), c.var()
            nn, m, p = delinearize(o, [N, M, P])
            g = b.idx_div(m, iconst(mg)) if group > 1 else iconst(0)
            ci = b.idx_div(r, iconst(K)) if K > 1 else r
            k = b.idx_mod(r, iconst(K)) if K > 1 else iconst(0)
            chan = iadd(imul(g, cg), ci)
            s = Var(f"acc{next(c._n)}", acc)
            term = b.mul(b.cast(wv.at([m, r]), acc), cols.at([nn, chan, k, p]))
            res = s if bias is None else b.add(s, b.cast(bias.at([m]), acc))
            body = [Local(s, Const(0.0, acc)), Loop(r, cg * K, "serial", [Assign(s, b.add(s, term))]),
                    Store(dest.buf, dest.flat([nn, m] + delinearize(p, list(plan.out))), b.cast(res, odt))]
            par = N * M * P * cg * K >= PARALLEL_MIN_WORK
            c.body.append(Loop(o, N * M * P, "parallel" if par else "serial", body))
    return [Pending(shape, odt, ctx, emit, "deform_conv")]


RULES: dict = {"deform_conv": rule_deform_conv}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
