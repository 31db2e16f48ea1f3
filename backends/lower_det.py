"""Lowering rule for det: LU factorization with partial pivoting, one matrix per iteration.

Each (M, M) matrix is copied into a float64 scratch (the reference also widens to float64 before
``np.linalg.det``) and reduced in place, column by column: the row holding the largest |value|
on or below the diagonal (the first such row, as LAPACK's pivot search picks) is swapped up,
flipping the sign, the pivot multiplies the determinant, and the rows below are eliminated.
A zero pivot makes the determinant zero; its elimination is skipped (no division by zero).

Kernel-IR loops have compile-time extents, so the triangular loops run over the full range
with a guard (``i > k``): M**3 steps instead of M**3 / 3, irrelevant at the sizes det sees.
Matrices are independent: the loop over them is parallel when there is enough work.
"""
from __future__ import annotations

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import Assign, Const, If, Local, Loop, Store, Var
from .lower_ops import _b, _out
from .lower_tensor import Fill, Pending, View, delinearize, numel

_F64 = dt.float64


def rule_det(ctx, n, ins):
    x = ins[0]
    shape, odt = _out(n)
    M = x.shape[-1]
    batch = list(x.shape[:-2])
    nb = numel(batch)
    if M == 0:
        return [Fill(Const(1, odt), shape, ctx)]
    b = _b

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        work = View.of(c.buffer("lu", _F64, (nb, M, M), "temp"), c)
        with c.stage():
            o = c.var()
            bidx = delinearize(o, batch) if batch else []

            def A(i, j):
                return work.at([o, i, j])

            def put(i, j, v):
                return Store(work.buf, work.flat([o, i, j]), v)
            r, s = c.var(), c.var()
            widen = put(r, s, b.cast(x.at(bidx + [r, s]), _F64))
            copy = Loop(r, M, "serial", [Loop(s, M, "vector", [widen])])
            det = Var(f"det{next(c._n)}", _F64)
            k, i, j = c.var(), c.var(), c.var()
            best, p = Var(f"best{next(c._n)}", _F64), Var(f"piv{next(c._n)}", dt.int64)
            cand = b.abs(A(i, k))
            better = b.and_(b.gt(i, k), b.gt(cand, best))
            search = [Local(best, b.abs(A(k, k))), Local(p, k),
                      Loop(i, M, "serial", [Assign(p, b.select(better, i, p)),
                                            Assign(best, b.select(better, cand, best))])]
            tmp = Var(f"swap{next(c._n)}", _F64)
            js = c.var()
            swap = If(b.ne(p, k), [Loop(js, M, "serial", [Local(tmp, A(k, js)), put(k, js, A(p, js)),
                                                          put(p, js, tmp)]),
                                   Assign(det, b.neg(det))])
            piv = A(k, k)
            f = Var(f"f{next(c._n)}", _F64)
            i2 = c.var()
            update = put(i2, j, b.sub(A(i2, j), b.mul(f, A(k, j))))
            elim_row = [Local(f, b.div(A(i2, k), piv)), Loop(j, M, "serial", [If(b.gt(j, k), [update])])]
            elim = If(b.ne(piv, Const(0.0, _F64)),
                      [Loop(i2, M, "serial", [If(b.gt(i2, k), elim_row)])])
            step = search + [swap, Assign(det, b.mul(det, piv)), elim]
            body = [copy, Local(det, Const(1.0, _F64)), Loop(k, M, "serial", step),
                    Store(dest.buf, dest.flat(bidx), b.cast(det, odt))]
            par = nb > 1 and nb * M * M * M >= PARALLEL_MIN_WORK
            c.body.append(Loop(o, nb, "parallel" if par else "serial", body))
    return [Pending(shape, odt, ctx, emit, "det")]


RULES: dict = {"det": rule_det}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
