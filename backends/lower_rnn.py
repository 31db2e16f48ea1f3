"""Lowering rules for the recurrent ops rnn, gru and lstm: plain loop nests over time.

Per direction (unrolled in Python) and batch row, every time step computes the input and
recurrent projections of all gates as dot products into float32 (float64 for float64 models)
temps ``Zx = x W^T + Wb`` and ``Zh = h R^T + Rb``, then the gate formulas, and writes the new
hidden state (and cell state) and its Y row. ``sequence_lens`` makes a row's step an ``If``
(padded steps leave the state alone and Y zero); reverse directions walk each row's valid
prefix backwards. Outputs are casts (and, for ``layout=1``, transposes) of the temps. Tiny
hidden sizes are what ONNX models of this family use on CPU, so no gemm template is needed.
"""
from __future__ import annotations

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import INDEX, Assign, Const, If, Local, Loop, LoweringError, Store, Var
from .lower_ops import _b, _out
from .lower_tensor import Generic, View, iadd, iconst, isub

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_DEFAULT_ACTS = {"rnn": ("tanh",), "gru": ("sigmoid", "tanh"), "lstm": ("sigmoid", "tanh", "tanh")}
_ACT_DEFAULTS = {"affine": (1.0, 0.0), "leakyrelu": (0.01, 0.0), "thresholdedrelu": (1.0, 0.0),
                 "scaledtanh": (1.0, 1.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}


def _activation(name: str, alpha: float, beta: float, ct):
    b = _b

    def c(v):
        return Const(v, ct)
    table = {
        "tanh": lambda x: b.tanh(x),
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


def _activations(kind: str, a: dict, nd: int, ct) -> list:
    per = len(_DEFAULT_ACTS[kind])
    names = [s.lower() for s in (a["activations"] or _DEFAULT_ACTS[kind] * nd)]
    alphas, betas = list(a["activation_alpha"] or []), list(a["activation_beta"] or [])
    if len(names) == per and nd == 2:
        names, alphas, betas = names * 2, alphas * 2, betas * 2
    res = []
    for k, nm in enumerate(names):
        da, db = _ACT_DEFAULTS.get(nm, (0.0, 0.0))
        res.append(_activation(nm, alphas[k] if alphas else da, betas[k] if betas else db, ct))
    return [res[d * per:(d + 1) * per] for d in range(nd)]


def rule_recurrent(ctx, n, ins):
    kind = n.op
    G = _GATES[kind]
    a = n.attrs
    ins = list(ins) + [None] * (8 - len(ins))
    X, W, R, Bb, lens, h0 = (ctx.force(t) if t is not None else None for t in ins[:6])
    c0, P = ((ctx.force(t) if t is not None else None) for t in ins[6:8]) if kind == "lstm" else (None, None)
    layout = int(a["layout"])
    nd, hid = W.shape[0], R.shape[2]
    seq, batch = (X.shape[1], X.shape[0]) if layout else (X.shape[0], X.shape[1])
    width = X.shape[2]
    ct = dt.float64 if X.dtype is dt.float64 else dt.float32
    b = _b
    acts = _activations(kind, a, nd, ct)
    clipv = a["clip"]

    def clip(v):
        return v if clipv is None else b.min(b.max(v, Const(-clipv, ct)), Const(clipv, ct))

    def f(v):
        return b.cast(v, ct)

    def tmp(name, shape):
        return View.of(ctx.buffer(name, ct, shape, "temp"), ctx)
    H, Hn = tmp("rnn_h", (nd, batch, hid)), tmp("rnn_hn", (nd, batch, hid))
    C = tmp("rnn_c", (nd, batch, hid)) if kind == "lstm" else None
    Zx, Zh = tmp("rnn_zx", (nd, batch, G * hid)), tmp("rnn_zh", (nd, batch, G * hid))
    Rg = tmp("rnn_r", (nd, batch, hid)) if kind == "gru" else None
    Y = tmp("rnn_y", (seq, nd, batch, hid))

    def dot(n_, fn):
        """Statements computing sum_k fn(k) into a fresh local; returns (stmts, local)."""
        acc, k = Var(f"dot{next(ctx._n)}", ct), ctx.var()
        return [Local(acc, Const(0.0, ct)), Loop(k, n_, "serial", [Assign(acc, b.add(acc, fn(k)))])], acc

    with ctx.stage():
        y0 = ctx.var()
        ctx.body.append(Loop(y0, Y.size, "serial", [Store(Y.buf, y0, Const(0.0, ct))]))
        for d in range(nd):
            fa = acts[d]
            reverse = a["direction"] == "reverse" or d == 1
            bi, s, j = ctx.var(), ctx.var(), ctx.var()
            hst = (lambda t: t.at([bi, iconst(d), j]) if layout else t.at([iconst(d), bi, j]))
            init = [Store(H.buf, H.flat([d, bi, j]), f(hst(h0)) if h0 is not None else Const(0.0, ct))]
            if C is not None:
                init.append(Store(C.buf, C.flat([d, bi, j]), f(hst(c0)) if c0 is not None else Const(0.0, ct)))
            row = [Loop(j, hid, "serial", init)]
            L = b.cast(lens.at([bi]), INDEX) if lens is not None else iconst(seq)
            t = isub(isub(L, 1), s) if reverse else s

            def xat(k):
                return f(X.at([bi, t, k] if layout else [t, bi, k]))

            def bias(jj):
                return f(Bb.at([iconst(d), jj])) if Bb is not None else Const(0.0, ct)
            step = []
            g = ctx.var()
            sx, ax = dot(width, lambda k: b.mul(xat(k), f(W.at([iconst(d), g, k]))))
            sh, ah = dot(hid, lambda m: b.mul(H.at([d, bi, m]), f(R.at([iconst(d), g, m]))))
            step.append(Loop(g, G * hid, "serial", sx + sh + [
                Store(Zx.buf, Zx.flat([d, bi, g]), b.add(ax, bias(g))),
                Store(Zh.buf, Zh.flat([d, bi, g]), b.add(ah, bias(iadd(g, G * hid))))]))

            def z(off, jj):
                return b.add(Zx.at([d, bi, iadd(jj, off)]), Zh.at([d, bi, iadd(jj, off)]))
            j2 = ctx.var()
            if kind == "rnn":
                step.append(Loop(j2, hid, "serial", [Store(Hn.buf, Hn.flat([d, bi, j2]), fa[0](clip(z(0, j2))))]))
            elif kind == "lstm":
                cv = C.at([d, bi, j2])
                pp = (lambda off: f(P.at([iconst(d), iadd(j2, off)]))) if P is not None else None
                cn, gi = Var(f"cn{next(ctx._n)}", ct), Var(f"gi{next(ctx._n)}", ct)
                ipre = z(0, j2) if pp is None else b.add(z(0, j2), b.mul(pp(0), cv))
                fpre = z(2 * hid, j2) if pp is None else b.add(z(2 * hid, j2), b.mul(pp(2 * hid), cv))
                fg = b.sub(Const(1.0, ct), gi) if a["input_forget"] else fa[0](clip(fpre))
                opre = z(hid, j2) if pp is None else b.add(z(hid, j2), b.mul(pp(hid), cn))
                step.append(Loop(j2, hid, "serial", [
                    Local(gi, fa[0](clip(ipre))),
                    Local(cn, b.add(b.mul(fg, cv), b.mul(gi, fa[1](clip(z(3 * hid, j2)))))),
                    Store(Hn.buf, Hn.flat([d, bi, j2]), b.mul(fa[0](clip(opre)), fa[2](cn))),
                    Store(C.buf, C.flat([d, bi, j2]), cn)]))
            else:  # gru: z, r, then the candidate (reset applied before or after R_h)
                step.append(Loop(j2, hid, "serial", [Store(Rg.buf, Rg.flat([d, bi, j2]), fa[0](clip(z(hid, j2))))]))
                j3 = ctx.var()
                rj = Rg.at([d, bi, j3])
                if a["linear_before_reset"]:
                    pre, st = b.add(Zx.at([d, bi, iadd(j3, 2 * hid)]), b.mul(rj, Zh.at([d, bi, iadd(j3, 2 * hid)]))), []
                else:
                    st, acc = dot(hid, lambda m: b.mul(b.mul(Rg.at([d, bi, m]), H.at([d, bi, m])),
                                                       f(R.at([iconst(d), iadd(j3, 2 * hid), m]))))
                    pre = b.add(b.add(Zx.at([d, bi, iadd(j3, 2 * hid)]), acc), bias(iadd(j3, 5 * hid)))
                zg = fa[0](clip(z(0, j3)))
                nn = fa[1](clip(pre))
                hv = H.at([d, bi, j3])
                step.append(Loop(j3, hid, "serial", st + [Store(Hn.buf, Hn.flat([d, bi, j3]), b.add(
                    b.mul(b.sub(Const(1.0, ct), zg), nn), b.mul(zg, hv)))]))
            j4 = ctx.var()
            hn = Hn.at([d, bi, j4])
            step.append(Loop(j4, hid, "serial", [Store(H.buf, H.flat([d, bi, j4]), hn),
                                                 Store(Y.buf, Y.flat([t, d, bi, j4]), hn)]))
            body = [If(b.lt(s, L), step)] if lens is not None else step
            row.append(Loop(s, seq, "serial", body))
            ctx.body.append(Loop(bi, batch, "serial", row))

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
