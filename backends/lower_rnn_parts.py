"""Building blocks of the recurrent-op lowering (lower_rnn.py): gate activations as kernel-IR
formulas, operands converted to the compute type, and the two matmul forms a recurrence needs
(the backend's GEMM template where it has one, else a row-major loop nest whose innermost loop
runs along the output row, so it vectorizes)."""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.dtype import DType

from .kernel_ir import Const, IRBuilder, LoweringError, Loop, Store
from .lower_ops import _b
from .lower_tensor import Generic, View, delinearize, iadd, iconst, imul

_ACT_DEFAULTS = {"affine": (1.0, 0.0), "leakyrelu": (0.01, 0.0), "thresholdedrelu": (1.0, 0.0),
                 "scaledtanh": (1.0, 1.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}


def activation(name: str, alpha: float, beta: float, ct: DType):
    """``x -> f(x)`` building the kernel-IR formula of one ONNX recurrent activation."""
    b = _b

    def c(v):
        return Const(v, ct)
    table = {
        "tanh": lambda x: b.tanh(x),
        # 1 / (1 + e^-x) with e^-x clamped by the exp polynomial: exact 0 / 1 in the tails
        "sigmoid": lambda x: b.div(c(1.0), b.add(c(1.0), b.exp(b.neg(x)))),
        "relu": lambda x: b.max(x, c(0.0)),
        "affine": lambda x: b.add(b.mul(c(alpha), x), c(beta)),
        "leakyrelu": lambda x: b.select(b.ge(x, c(0.0)), x, b.mul(c(alpha), x)),
        "thresholdedrelu": lambda x: b.select(b.gt(x, c(alpha)), x, c(0.0)),
        "scaledtanh": lambda x: b.mul(c(alpha), b.tanh(b.mul(c(beta), x))),
        "hardsigmoid": lambda x: b.min(b.max(b.add(b.mul(c(alpha), x), c(beta)), c(0.0)), c(1.0)),
        "elu": lambda x: b.select(b.ge(x, c(0.0)), x, b.mul(c(alpha), b.sub(b.exp(b.min(x, c(0.0))), c(1.0)))),
        "softsign": lambda x: b.div(x, b.add(c(1.0), b.abs(x))),
        "softplus": lambda x: b.add(b.max(x, c(0.0)), b.log(b.add(c(1.0), b.exp(b.neg(b.abs(x)))))),
    }
    if name not in table:
        raise LoweringError(f"rnn activation {name!r} has no lowering")
    return table[name]


def activations(default: tuple, a: dict, nd: int, ct: DType) -> list:
    """Per direction, the list of activation builders (names, alphas and betas as the op holds
    them; one set given for a bidirectional layer serves both directions)."""
    per = len(default)
    names = [s.lower() for s in (a["activations"] or default * nd)]
    alphas, betas = list(a["activation_alpha"] or []), list(a["activation_beta"] or [])
    if len(names) == per and nd == 2:
        names, alphas, betas = names * 2, alphas * 2, betas * 2
    res = []
    for k, nm in enumerate(names):
        da, db = _ACT_DEFAULTS.get(nm, (0.0, 0.0))
        res.append(activation(nm, alphas[k] if alphas else da, betas[k] if betas else db, ct))
    return [res[d * per:(d + 1) * per] for d in range(nd)]


# ---- operands ------------------------------------------------------------------------------------
def is_const(v) -> bool:
    return isinstance(v, View) and v.buf.data is not None


def temp(ctx, name: str, ct: DType, shape) -> View:
    return View.of(ctx.buffer(name, ct, shape, "temp"), ctx)


def materialize(ctx, shape, ct: DType, fn, name: str, cost: int = 1) -> View:
    """A fresh contiguous temp holding ``fn(idx)`` (stored now, into ``ctx.body``)."""
    out = temp(ctx, name, ct, shape)
    ctx.store(Generic(tuple(shape), ct, ctx, fn, cost), out)
    return out


def as_type(ctx, v: View, ct: DType, contiguous: bool = False, name: str = "rnn_op") -> View:
    """``v`` with elements of type ``ct`` (and, when asked, C-contiguous): itself when it already
    is, a re-laid-out constant when it is compile-time data, else a copy into a temp."""
    if v.dtype is ct and (v.contiguous or not contiguous):
        return v
    if is_const(v):
        c = ctx.const(np.ascontiguousarray(v.to_numpy().astype(ct.np)), v.buf.name + "_" + name)
        if isinstance(c, View):
            return c
        v = c   # a one-element constant is a Fill: give it a buffer
    return materialize(ctx, v.shape, ct, lambda idx: _b.cast(v.at(idx), ct), name)


def row_major(ctx, v: View, name: str = "rnn_rm") -> View:
    """``v`` (batch, K, N) with unit stride along N, for the loop-nest matmul's vector loop."""
    if v.strides[-1] == 1 or v.shape[-1] <= 1:
        return v
    if is_const(v):
        return ctx.const(np.ascontiguousarray(v.to_numpy()), v.buf.name + "_" + name)
    return materialize(ctx, v.shape, v.dtype, v.at, name)


# ---- matmul ----------------------------------------------------------------------------------
def templates_in_loops(templates) -> bool:
    """Whether the backend's matmul template may sit inside a loop: the CPU backend's GEMM is an
    ordinary function call, CUDA's must be a top-level launch (its printer rejects nested ones).
    A backend states it with ``templates.extern_in_loops``; without it only the CPU one does."""
    if templates is None or not hasattr(templates, "matmul"):
        return False
    flag = getattr(templates, "extern_in_loops", None)
    if flag is not None:
        return bool(flag)
    return type(templates).__module__.endswith(".cpu.codegen")


def loop_matmul(ctx, A: View, B: View, C: View) -> None:
    """``C[t] = A[t] @ B[t]`` for (nb, M, K) x (nb, K, N) views as a loop nest appended to
    ``ctx.body``: per output row, zero it, then one axpy of a B row per k. ``B`` should have
    unit stride along N (see ``row_major``) so the inner loop vectorizes."""
    nb, M, K = A.shape
    N = B.shape[2]
    fast = IRBuilder(fast=True)
    with ctx.stage():
        o, j0, k, j = ctx.var(), ctx.var(), ctx.var(), ctx.var()
        t, i = delinearize(o, (nb, M))
        init = Loop(j0, N, "vector", [Store(C.buf, C.flat([t, i, j0]), Const(0.0, C.dtype))])
        upd = Store(C.buf, C.flat([t, i, j]),
                    fast.add(C.at([t, i, j]), fast.mul(A.at([t, i, k]), B.at([t, k, j]))))
        ctx.body.append(Loop(o, nb * M, "serial", [init, Loop(k, K, "serial", [Loop(j, N, "vector", [upd])])]))


# Rows (batch items) up to which a recurrent step's h R^T is the blocked loop nest rather than
# the GEMM template: LSTM T128 B8 I256 H256, 1 thread, 6.4-6.7 ms against the template's 9-10 ms
# (it packs h each step and runs 8 rows as a 7- and a 3-row kernel); equal at B16 H64. Above it
# the template's single pass over R wins over M / STEP_ROWS passes.
STEP_MAX_ROWS = 16
# Rows and k steps one pass of the blocked loop nest folds: 8 x 4 measured best of 4x4, 4x8, 8x2,
# 6x4 (recurrence alone, T128 B8 H256: 4.3 ms against 4.5-5.2; B16 H64 0.136 against 0.14-0.15).
STEP_ROWS, STEP_KU = 8, 4


def matmul(ctx, A: View, B: View, C: View, in_loop: bool) -> list:
    """Statements computing ``C[t] = A[t] @ B[t]`` (float views of the compute type; ``C`` a
    temp). ``in_loop``: a recurrent step (they will sit inside the time loop): few rows take the
    blocked loop nest, others the backend's template only where it may sit in a loop
    (``templates_in_loops``). Setup (a re-laid-out B) goes to ``ctx.body`` now, ahead of the
    returned statements."""
    nb, M, K = A.shape
    if in_loop and M <= STEP_MAX_ROWS:
        Brm = row_major(ctx, B)
        with ctx.capture() as stmts:
            blocked_matmul(ctx, A, Brm, C, STEP_ROWS, STEP_KU)
        return stmts
    tpl = ctx.templates
    usable = tpl is not None and hasattr(tpl, "matmul") and C.dtype is dt.float32 and \
        (templates_in_loops(tpl) if in_loop else True)
    if usable and min(A.shape + B.shape) > 0:
        with ctx.capture() as stmts:
            ok = tpl.matmul(ctx, A, B, C)
        if ok:
            return stmts
    Brm = row_major(ctx, B)
    with ctx.capture() as stmts:
        loop_matmul(ctx, A, Brm, C)
    return stmts


def blocked_matmul(ctx, A: View, B: View, C: View, rows: int = 8, ku: int = 4) -> None:
    """``C[t] = A[t] @ B[t]`` (``B`` with unit stride along N) for few rows M, as in a recurrent
    step: blocks of ``rows`` output rows share each vector of B loaded (the weights, the large
    operand), each load and store of C carries ``ku`` multiply-adds (k steps folded per pass),
    and B is read M / ``rows`` times in all."""
    nb, M, K = A.shape
    N = B.shape[2]
    fast = IRBuilder(fast=True)
    with ctx.stage():
        for t in range(nb):
            tt = iconst(t)
            for i0 in range(0, M, rows):
                ii = [iconst(i) for i in range(i0, min(M, i0 + rows))]
                j0 = ctx.var()
                ctx.body.append(Loop(j0, N, "vector", [Store(C.buf, C.flat([tt, i, j0]), Const(0.0, C.dtype))
                                                       for i in ii]))

                def kpass(k0, nk):
                    j = ctx.var()
                    bv = [B.at([tt, iadd(k0, u), j]) for u in range(nk)]
                    st = []
                    for i in ii:
                        acc = C.at([tt, i, j])
                        for u in range(nk):
                            acc = fast.add(acc, fast.mul(A.at([tt, i, iadd(k0, u)]), bv[u]))
                        st.append(Store(C.buf, C.flat([tt, i, j]), acc))
                    return Loop(j, N, "vector", st)
                kb = ctx.var()
                if K // ku:
                    ctx.body.append(Loop(kb, K // ku, "serial", [kpass(imul(kb, ku), ku)]))
                if K % ku:
                    ctx.body.append(kpass(iconst(K - K % ku), K % ku))
