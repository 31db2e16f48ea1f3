"""Lowering rule for linear_attention: the recurrence over time as an explicit loop nest.

Per (batch, kv head) — a parallel loop — the float32 state ``S[dk, dv]`` lives in a temp
buffer and every time step runs, in order: decay (``S *= exp(g)``), the delta rule's
corrected value ``u = beta * (v - S^T k)`` (else ``u = v``), the rank-1 update
``S += k u^T``, and for each query head of the group ``o = scale * S^T q``. The loop nest is
emitted when the rule runs (its inputs are forced to memory first, they are read many times);
the two outputs are casts of the float32 temps.
"""
from __future__ import annotations

import math

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import Assign, Const, Local, Loop, LoweringError, Store, Var
from .lower_ops import _b, _out
from .lower_tensor import Generic, View, delinearize, iadd, iconst, idiv, imod, imul, numel


def rule_linear_attention(ctx, n, ins):
    from .lower import PARALLEL_MIN_WORK
    ins = list(ins) + [None] * (6 - len(ins))
    q, k, v, past, decay, beta = ins
    a = n.attrs
    hq, hkv = int(a["q_num_heads"]), int(a["kv_num_heads"])
    B, T, _ = q.shape
    dk, dv = q.shape[2] // hq, v.shape[2] // hkv
    group = hq // hkv
    scale = float(a["scale"]) or 1.0 / math.sqrt(dk)
    yshape, ydt = _out(n, 0)
    sshape, sdt = _out(n, 1)
    f32 = dt.float32
    b = _b
    q, k, v = ctx.force(q), ctx.force(k), ctx.force(v)
    past = ctx.force(past) if past is not None else None
    decay = ctx.force(decay) if decay is not None else None
    beta = ctx.force(beta) if beta is not None else None
    S = View.of(ctx.buffer("la_state", f32, (B, hkv, dk, dv), "temp"), ctx)
    O = View.of(ctx.buffer("la_out", f32, (B, hq, T, dv), "temp"), ctx)
    U = View.of(ctx.buffer("la_u", f32, (B, hkv, dv), "temp"), ctx)

    def f(x):
        return b.cast(x, f32)

    with ctx.stage():
        o = ctx.var()
        bi, h = delinearize(o, [B, hkv])
        body = []
        d, m = ctx.var(), ctx.var()
        init = f(past.at([bi, h, d, m])) if past is not None else Const(0.0, f32)
        body.append(Loop(d, dk, "serial", [Loop(m, dv, "serial", [Store(S.buf, S.flat([bi, h, d, m]), init)])]))
        i = ctx.var()
        step = []
        if decay is not None:
            d2, m2 = ctx.var(), ctx.var()
            per_head = decay.shape[2] == hkv
            g = decay.at([bi, i, h]) if per_head else decay.at([bi, i, iadd(imul(h, dk), d2)])
            sv = S.at([bi, h, d2, m2])
            step.append(Loop(d2, dk, "serial", [Loop(m2, dv, "serial", [
                Store(S.buf, S.flat([bi, h, d2, m2]), b.mul(sv, b.exp(f(g))))])]))
        m3 = ctx.var()
        vt = f(v.at([bi, i, iadd(imul(h, dv), m3)]))
        if beta is not None:
            d3 = ctx.var()
            acc = Var(f"kv{next(ctx._n)}", f32)
            kd = f(k.at([bi, i, iadd(imul(h, dk), d3)]))
            bt = f(beta.at([bi, i, h if beta.shape[2] == hkv else iconst(0)]))
            ustmts = [Local(acc, Const(0.0, f32)),
                      Loop(d3, dk, "serial", [Assign(acc, b.add(acc, b.mul(S.at([bi, h, d3, m3]), kd)))]),
                      Store(U.buf, U.flat([bi, h, m3]), b.mul(bt, b.sub(vt, acc)))]
        else:
            ustmts = [Store(U.buf, U.flat([bi, h, m3]), vt)]
        step.append(Loop(m3, dv, "serial", ustmts))
        d4, m4 = ctx.var(), ctx.var()
        kd4 = f(k.at([bi, i, iadd(imul(h, dk), d4)]))
        step.append(Loop(d4, dk, "serial", [Loop(m4, dv, "serial", [
            Store(S.buf, S.flat([bi, h, d4, m4]), b.add(S.at([bi, h, d4, m4]), b.mul(kd4, U.at([bi, h, m4]))))])]))
        gq, m5, d5 = ctx.var(), ctx.var(), ctx.var()
        qh = iadd(imul(h, group), gq)
        acc2 = Var(f"qs{next(ctx._n)}", f32)
        qd = f(q.at([bi, i, iadd(imul(qh, dk), d5)]))
        step.append(Loop(gq, group, "serial", [Loop(m5, dv, "serial", [
            Local(acc2, Const(0.0, f32)),
            Loop(d5, dk, "serial", [Assign(acc2, b.add(acc2, b.mul(qd, S.at([bi, h, d5, m5]))))]),
            Store(O.buf, O.flat([bi, qh, i, m5]), b.mul(acc2, Const(scale, f32)))])]))
        body.append(Loop(i, T, "serial", step))
        par = B * hkv > 1 and B * T * hq * dk * dv >= PARALLEL_MIN_WORK
        ctx.body.append(Loop(o, B * hkv, "parallel" if par else "serial", body))

    def y_at(idx):
        bi_, t_, j = idx
        return b.cast(O.at([bi_, idiv(j, dv), t_, imod(j, dv)]), ydt)

    def s_at(idx):
        return b.cast(S.at(list(idx)), sdt)
    if numel(yshape) == 0:
        raise LoweringError("linear_attention with an empty output", op=n.op, node=n.name)
    return [Generic(yshape, ydt, ctx, y_at, 2), Generic(sshape, sdt, ctx, s_at, 1)]


RULES: dict = {"linear_attention": rule_linear_attention}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
