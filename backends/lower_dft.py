"""Lowering rule for dft: a dense linear map with compile-time coefficients.

A DFT along one axis (forward or inverse, full or one-sided, any dft_length) is linear in the
input's real and imaginary parts, so its coefficients ``C[p, q, k, j]`` (output part p, input
part q, output index k, input index j) are computed once at compile time — by applying numpy's
FFT, in float64, to each basis vector — and the kernel is a plain O(n * length) dot product per
output element, accumulated in float64. Fine for the signal lengths ONNX models use on CPU;
longer transforms are refused rather than stored as huge coefficient tables.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import Assign, Const, Local, Loop, LoweringError, Store, Var
from .lower_ops import _b, _need_const, _out
from .lower_tensor import Pending, delinearize, iconst, numel

MAX_COEFFS = 1 << 22


def _coefficients(n: int, cin: int, length: int, inverse: bool, onesided: bool, out_len: int,
                  cout: int) -> np.ndarray:
    """C[p, q, k, j]: output part p of index k per unit of input part q at index j."""
    C = np.zeros((cout, cin, out_len, n))
    for q in range(cin):
        for j in range(n):
            z = np.zeros(n, np.complex128)
            z[j] = 1.0 if q == 0 else 1j
            if inverse and onesided:
                y = np.fft.irfft(z, n=length)
                C[0, q, :, j] = y
                continue
            y = np.fft.ifft(z, n=length) if inverse else np.fft.fft(z, n=length)
            y = y[:out_len]
            C[0, q, :, j] = y.real
            if cout > 1:
                C[1, q, :, j] = y.imag
    return C


def rule_dft(ctx, n, ins):
    x = ins[0]
    shape, odt = _out(n)
    r = x.rank
    ax = _need_const(n, 2, "axis") if len(n.inputs) > 2 and n.inputs[2] is not None else None
    axis = (-2 if ax is None else int(ax.reshape(-1)[0])) % r
    inverse, onesided = bool(n.attrs["inverse"]), bool(n.attrs["onesided"])
    nin, cin, cout, out_len = x.shape[axis], x.shape[-1], shape[-1], shape[axis]
    ln = _need_const(n, 1, "dft_length") if len(n.inputs) > 1 and n.inputs[1] is not None else None
    length = int(ln.reshape(-1)[0]) if ln is not None else (2 * (nin - 1) if inverse and onesided else nin)
    if 4 * out_len * nin > MAX_COEFFS:
        raise LoweringError(f"dft of {nin} -> {out_len} points is too long for a dense lowering",
                            op=n.op, node=n.name)
    coef = ctx.const(_coefficients(nin, cin, length, inverse, onesided, out_len, cout), "dft_coef")
    f64 = dt.float64
    b = _b

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        with c.stage():
            o, j = c.var(), c.var()
            idx = delinearize(o, list(shape))
            k, p = idx[axis], idx[-1]
            acc = Var(f"dft{next(c._n)}", f64)
            terms = None
            for q in range(cin):
                src = list(idx[:-1]) + [iconst(q)]
                src[axis] = j
                t = b.mul(coef.at([p, iconst(q), k, j]), b.cast(x.at(src), f64))
                terms = t if terms is None else b.add(terms, t)
            body = [Local(acc, Const(0.0, f64)), Loop(j, nin, "serial", [Assign(acc, b.add(acc, terms))]),
                    Store(dest.buf, dest.flat(idx), b.cast(acc, odt))]
            par = numel(shape) * nin >= PARALLEL_MIN_WORK
            c.body.append(Loop(o, numel(shape), "parallel" if par else "serial", body))
    return [Pending(shape, odt, ctx, emit, "dft")]


RULES: dict = {"dft": rule_dft}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
