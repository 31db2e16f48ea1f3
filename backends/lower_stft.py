"""Lowering rule for stft: framed DFTs with compile-time coefficients (see lower_dft.py).

Frame f of batch entry b is the signal at positions ``f * frame_step + j``, j < frame_length,
multiplied by the window (in the signal's dtype, as the reference multiplies before its FFT).
Each output bin is a dense dot product with the DFT coefficients of ``lower_dft._coefficients``
(forward, full or one-sided), accumulated in float64. frame_step and frame_length decide the
output shape, so they are known when compiling (the cpu target specializes on them); the
window is read at run time.
"""
from __future__ import annotations

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import Assign, Const, Local, Loop, LoweringError, Store, Var
from .lower_dft import MAX_COEFFS, _coefficients
from .lower_ops import _b, _need_const, _out
from .lower_tensor import Pending, delinearize, iadd, iconst, imul, numel


def rule_stft(ctx, n, ins):
    ins = list(ins) + [None] * (4 - len(ins))
    x, window = ins[0], ins[2]
    shape, odt = _out(n)
    step = int(_need_const(n, 1, "frame_step").reshape(-1)[0])
    if len(n.inputs) > 3 and n.inputs[3] is not None:
        frame = int(_need_const(n, 3, "frame_length").reshape(-1)[0])
    elif window is not None:
        frame = window.shape[0]
    else:
        frame = x.shape[1]
    cin, bins = x.shape[2], shape[2]
    if 4 * bins * frame > MAX_COEFFS:
        raise LoweringError(f"stft frames of {frame} points are too long for a dense lowering",
                            op=n.op, node=n.name)
    coef = ctx.const(_coefficients(frame, cin, frame, False, bool(n.attrs["onesided"]), bins, 2), "stft_coef")
    f64 = dt.float64
    b = _b

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        with c.stage():
            o, j = c.var(), c.var()
            bi, fi, k, p = delinearize(o, list(shape))
            pos = iadd(imul(fi, step), j)
            terms = None
            for q in range(cin):
                v = x.at([bi, pos, iconst(q)])
                if window is not None:
                    v = b.mul(v, b.cast(window.at([j]), x.dtype))
                t = b.mul(coef.at([p, iconst(q), k, j]), b.cast(v, f64))
                terms = t if terms is None else b.add(terms, t)
            acc = Var(f"stft{next(c._n)}", f64)
            body = [Local(acc, Const(0.0, f64)), Loop(j, frame, "serial", [Assign(acc, b.add(acc, terms))]),
                    Store(dest.buf, dest.flat([bi, fi, k, p]), b.cast(acc, odt))]
            par = numel(shape) * frame >= PARALLEL_MIN_WORK
            c.body.append(Loop(o, numel(shape), "parallel" if par else "serial", body))
    return [Pending(shape, odt, ctx, emit, "stft")]


RULES: dict = {"stft": rule_stft}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
