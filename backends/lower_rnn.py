"""Lowering rules for the recurrent ops rnn, gru and lstm: GEMMs plus fused gate loops.

One kernel per node; every direction shares one time loop::

    Zx = X W^T                  one GEMM over all time steps and directions:
                                (seq*batch, width) x (width, nd*G*hid)
    H, C = initial states       compute-type temps (nd, batch, hid)
    for s in 0..seq:
        Zh = H R^T              one GEMM per step, batched over the directions
        for d, row:             an If on s < sequence_lens[row] when lengths are given
            t = s (reverse: len-1-s)
            one vector loop over hid: gates from Zx[t, row] + Zh[row] + bias, the new H (and
            C) written in place, and Y[t]

GRU without ``linear_before_reset`` needs ``(r * h) R_h^T``: its step is the z/r GEMM, a loop
storing ``r * h``, a second GEMM and then the gate loop. Biases are summed per gate once
(``Wb + Rb``; GRU's ``linear_before_reset`` candidate keeps ``Rb_h`` apart, as it is scaled by
r). Padded steps (``sequence_lens``) leave the state alone and Y zero. Outputs are casts (and,
for ``layout=1``, transposes) of the temps.

GEMMs go through the backend's float32 template (``LowerCtx.templates``; the per-step one only
where the backend allows a template inside a loop), else a vectorized loop nest
(``lower_rnn_parts``). float16/bfloat16 compute in float32, float64 in float64.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import INDEX, Const, If, Local, Loop, Store, Var
from .lower_ops import _b, _out
from .lower_rnn_parts import activations, as_type, is_const, materialize, matmul, temp
from .lower_tensor import Generic, View, iadd, iconst, imul, isub

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_DEFAULT_ACTS = {"rnn": ("tanh",), "gru": ("sigmoid", "tanh"), "lstm": ("sigmoid", "tanh", "tanh")}


def _biases(ctx, Bb, nd: int, G: int, hid: int, ct, split_h: bool):
    """``(bx, bh)``: ``bx`` (nd, G*hid) is added to every gate's pre-activation (Wb + Rb, or
    only Wb for the candidate when ``split_h``); ``bh`` (nd, hid) is the candidate's Rb when
    ``split_h`` (else None). Both None without B."""
    GH = G * hid
    if Bb is None:
        return None, None
    if is_const(Bb):
        arr = Bb.to_numpy().astype(np.float64)
        wb, rb = arr[:, :GH], arr[:, GH:]
        bx = wb + rb
        bh = None
        if split_h:
            bx[:, 2 * hid:] = wb[:, 2 * hid:]
            bh = ctx.const(np.ascontiguousarray(rb[:, 2 * hid:]).astype(ct.np), "rnn_bias_h")
        return ctx.const(bx.astype(ct.np), "rnn_bias"), bh
    b = _b

    def fx(idx):
        d, g = idx
        wv = b.cast(Bb.at([d, g]), ct)
        both = b.add(wv, b.cast(Bb.at([d, iadd(g, GH)]), ct))
        return b.select(b.ge(g, iconst(2 * hid)), wv, both) if split_h else both
    bx = materialize(ctx, (nd, GH), ct, fx, "rnn_bias", 3)
    bh = None
    if split_h:
        bh = materialize(ctx, (nd, hid), ct, lambda idx: b.cast(Bb.at([idx[0], iadd(idx[1], GH + 2 * hid)]), ct),
                         "rnn_bias_h")
    return bx, bh


def _state(ctx, src, layout: int, shape, ct, name: str) -> View:
    """The initial hidden / cell state as a contiguous (nd, batch, hid) temp of the compute type."""
    if src is None:
        return materialize(ctx, shape, ct, lambda idx: Const(0.0, ct), name)
    def fn(idx):
        return _b.cast(src.at([idx[1], idx[0], idx[2]] if layout else list(idx)), ct)
    return materialize(ctx, shape, ct, fn, name)


def rule_recurrent(ctx, n, ins):
    kind = n.op
    G = _GATES[kind]
    a = n.attrs
    ins = list(ins) + [None] * (8 - len(ins))
    X, W, R, Bb, lens, h0 = (ctx.force(t) if t is not None else None for t in ins[:6])
    c0, P = ((ctx.force(t) if t is not None else None) for t in ins[6:8]) if kind == "lstm" else (None, None)
    layout = int(a["layout"])
    nd, hid = W.shape[0], R.shape[2]
    GH = G * hid
    seq, batch = (X.shape[1], X.shape[0]) if layout else (X.shape[0], X.shape[1])
    width = X.shape[2]
    ct = dt.float64 if X.dtype is dt.float64 else dt.float32
    b = _b
    acts = activations(_DEFAULT_ACTS[kind], a, nd, ct)
    clipv = a["clip"]
    lbr = kind == "gru" and bool(a["linear_before_reset"])
    two_gemms = kind == "gru" and not lbr

    def clip(v):
        return v if clipv is None else b.min(b.max(v, Const(-clipv, ct)), Const(clipv, ct))

    def one(v):
        return b.sub(Const(1.0, ct), v)

    with ctx.stage():
        # the input projection of every step and direction: one GEMM
        rows = seq * batch
        Xc = as_type(ctx, X, ct, contiguous=True, name="x").reshape((1, rows, width))
        Wc = as_type(ctx, W, ct, contiguous=True, name="w").reshape((1, nd * GH, width))
        zx_buf = ctx.buffer("rnn_zx", ct, (rows, nd * GH), "temp")
        ctx.body.extend(matmul(ctx, Xc, Wc.permute((0, 2, 1)), View.of(zx_buf, ctx, (1, rows, nd * GH)), False))
        Zx = View.of(zx_buf, ctx)
        bx, bh = _biases(ctx, Bb, nd, G, hid, ct, lbr)
        state = (nd, batch, hid)
        H = _state(ctx, h0, layout, state, ct, "rnn_h")
        C = _state(ctx, c0, layout, state, ct, "rnn_c") if kind == "lstm" else None
        Y = temp(ctx, "rnn_y", ct, (seq, nd, batch, hid))
        if lens is not None:   # padded steps leave Y zero
            y0 = ctx.var()
            ctx.body.append(Loop(y0, Y.size, "vector", [Store(Y.buf, y0, Const(0.0, ct))]))
        Rc = as_type(ctx, R, ct, name="r")
        Zh = temp(ctx, "rnn_zh", ct, (nd, batch, GH))
        RH = temp(ctx, "rnn_rh", ct, state) if two_gemms else None
        if two_gemms:
            gemm1 = matmul(ctx, H, Rc.slice(1, 0, 1, 2 * hid).permute((0, 2, 1)), Zh.slice(2, 0, 1, 2 * hid), True)
            gemm2 = matmul(ctx, RH, Rc.slice(1, 2 * hid, 1, hid).permute((0, 2, 1)), Zh.slice(2, 2 * hid, 1, hid),
                           True)
        else:
            gemm1 = matmul(ctx, H, Rc.permute((0, 2, 1)), Zh, True)
            gemm2 = []

        s = ctx.var("s")

        def rows_loop(d: int, body_fn) -> Loop:
            """for row: [if s < len:] for j (vector): body_fn(row, t, j)."""
            bi, j = ctx.var(), ctx.var()
            L = b.cast(lens.at([bi]), INDEX) if lens is not None else iconst(seq)
            reverse = a["direction"] == "reverse" or d == 1
            t = isub(isub(L, 1), s) if reverse else s
            inner = Loop(j, hid, "vector", body_fn(bi, t, j))
            return Loop(bi, batch, "serial", [If(b.lt(s, L), [inner])] if lens is not None else [inner])

        def gate_fns(d: int):
            dd = iconst(d)

            def pre(bi, t, j, off, with_h=True):
                zrow = iadd(imul(bi, seq), t) if layout else iadd(imul(t, batch), bi)
                v = Zx.at([zrow, iadd(j, d * GH + off)])
                if with_h:
                    v = b.add(v, Zh.at([dd, bi, iadd(j, off)]))
                return v if bx is None else b.add(v, bx.at([dd, iadd(j, off)]))

            def finish(bi, t, j, hn_value):
                hn = Var(f"hn{next(ctx._n)}", ct)
                return [Local(hn, hn_value), Store(H.buf, H.flat([dd, bi, j]), hn),
                        Store(Y.buf, Y.flat([t, dd, bi, j]), hn)]
            fa = acts[d]
            if kind == "rnn":
                return [lambda bi, t, j: finish(bi, t, j, fa[0](clip(pre(bi, t, j, 0))))]
            if kind == "lstm":
                def lstm(bi, t, j):
                    cv = C.at([dd, bi, j])

                    def peep(off, v):
                        return b.mul(b.cast(P.at([dd, iadd(j, off)]), ct), v)
                    ipre, fpre = pre(bi, t, j, 0), pre(bi, t, j, 2 * hid)
                    if P is not None:
                        ipre, fpre = b.add(ipre, peep(0, cv)), b.add(fpre, peep(2 * hid, cv))
                    gi, cn = Var(f"gi{next(ctx._n)}", ct), Var(f"cn{next(ctx._n)}", ct)
                    fg = one(gi) if a["input_forget"] else fa[0](clip(fpre))
                    opre = pre(bi, t, j, hid)
                    if P is not None:
                        opre = b.add(opre, peep(hid, cn))
                    return [Local(gi, fa[0](clip(ipre))),
                            Local(cn, b.add(b.mul(fg, cv), b.mul(gi, fa[1](clip(pre(bi, t, j, 3 * hid)))))),
                            Store(C.buf, C.flat([dd, bi, j]), cn)] + \
                        finish(bi, t, j, b.mul(fa[0](clip(opre)), fa[2](cn)))
                return [lstm]

            def gru_out(bi, t, j, npre):
                z = Var(f"z{next(ctx._n)}", ct)
                hv = H.at([dd, bi, j])
                return [Local(z, fa[0](clip(pre(bi, t, j, 0))))] + finish(
                    bi, t, j, b.add(b.mul(one(z), fa[1](clip(npre))), b.mul(z, hv)))
            if lbr:
                def gru_lbr(bi, t, j):
                    r = fa[0](clip(pre(bi, t, j, hid)))
                    zh = Zh.at([dd, bi, iadd(j, 2 * hid)])
                    if bh is not None:
                        zh = b.add(zh, bh.at([dd, j]))
                    return gru_out(bi, t, j, b.add(pre(bi, t, j, 2 * hid, with_h=False), b.mul(r, zh)))
                return [gru_lbr]

            def gru_reset(bi, t, j):
                r = fa[0](clip(pre(bi, t, j, hid)))
                return [Store(RH.buf, RH.flat([dd, bi, j]), b.mul(r, H.at([dd, bi, j])))]
            return [gru_reset, lambda bi, t, j: gru_out(bi, t, j, pre(bi, t, j, 2 * hid))]

        fns = [gate_fns(d) for d in range(nd)]
        body = list(gemm1) + [rows_loop(d, fns[d][0]) for d in range(nd)]
        if two_gemms:
            body += list(gemm2) + [rows_loop(d, fns[d][1]) for d in range(nd)]
        ctx.body.append(Loop(s, seq, "serial", body))

    outs = []
    for i, o in enumerate(n.outputs):
        shape, odt = _out(n, i)
        if i == 0:
            fn = (lambda idx, _o=odt: b.cast(Y.at([idx[1], idx[2], idx[0], idx[3]]), _o)) if layout else \
                 (lambda idx, _o=odt: b.cast(Y.at(list(idx)), _o))
        else:
            src = H if i == 1 else C
            fn = (lambda idx, _o=odt, _s=src: b.cast(_s.at([idx[1], idx[0], idx[2]]), _o)) if layout else \
                 (lambda idx, _o=odt, _s=src: b.cast(_s.at(list(idx)), _o))
        outs.append(Generic(shape, odt, ctx, fn, 1))
    return outs


RULES: dict = {"rnn": rule_recurrent, "gru": rule_recurrent, "lstm": rule_recurrent}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
