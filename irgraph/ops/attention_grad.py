"""Gradient rules of the transformer ops (``attention.py``): attention, rotary_embedding, swiglu,
and the unrolled decomposition that linear_attention is differentiated through.

attention's backward is written out (as flash-attention does) instead of being derived from its
decomposition: the probabilities are recomputed from Q and K, and with ``dO`` the output's
gradient, ``dV = P^T dO``, ``dP = dO V^T``, ``dS = P * (dP - rowsum(dP * P))``,
``dQ = scale * dS K``, ``dK = scale * dS^T Q``. Grouped-query heads are handled by viewing Q as
(B, Hkv, group * Sq, D), so the matmuls read K/V once and sum over the group themselves.
"""
from __future__ import annotations

import math

import numpy as np

from ..types import is_static_dim
from .grad import add_grads


class _Emit:
    """A ``Graph``-like view of a GradCtx (``op``/``add_const``), so helpers written for
    decompositions (``g.op(...)``) also build backward nodes."""

    def __init__(self, ctx):
        self.ctx = ctx

    def op(self, op, inputs, attrs=None, **kw):
        return self.ctx.op(op, inputs, attrs, **kw)

    def add_const(self, array, name="c", dtype=None):
        return self.ctx.graph.add_const(array, f"{self.ctx._prefix}/{name}", dtype)


def _slice(ctx, x, start: int, end: int, axis: int):
    return ctx.op("slice", [x, ctx.i64([start]), ctx.i64([end]), ctx.i64([axis])])


def _tr(ctx, x):
    return ctx.op("transpose", [x], {"perm": (0, 1, 3, 2)})


# ---- attention ---------------------------------------------------------------------------------
def attention_grad(ctx):
    from .attention import _decomposed_bias   # same family; imported here to avoid an import cycle
    q, k, v, mask, pk, pv, nonpad = (list(ctx.inputs) + [None] * 7)[:7]
    a = ctx.attrs
    for i, x in enumerate((q, k, v, mask, pk, pv)):
        if x is not None and (x.shape is None or not all(is_static_dim(d) for d in x.shape[1:])):
            raise ctx.fail("the attention gradient needs static dims (the batch may be symbolic)",
                           input=x.name, actual=str(x.type))
    if nonpad is not None and not is_static_dim(q.shape[0]):
        raise ctx.fail("the attention gradient with nonpad_kv_seqlen needs a static batch size",
                       actual=str(q.type))
    _, hq, sq, d = q.shape
    hkv, dv = k.shape[1], v.shape[3]
    grp = hq // hkv
    past = 0 if pk is None else pk.shape[2]
    nout = len(ctx.outputs)
    mode = a["qk_matmul_output_mode"]
    dy_y = ctx.dy(0) if ctx.has_dy(0) else None
    dy_qk = ctx.dy(3) if nout > 3 and ctx.has_dy(3) else None
    pres_k = ctx.outputs[1] if nout > 1 else (k if pk is None else ctx.op("concat", [pk, k], {"axis": 2}))
    pres_v = ctx.outputs[2] if nout > 2 else (v if pv is None else ctx.op("concat", [pv, v], {"axis": 2}))
    t = pres_k.shape[2]

    # (B, Hq, S, X) <-> (B, Hkv, group * S, X): query heads h = kv_head * group + j share K/V
    # (gradients may carry fresh symbolic dims: the sizes come from the inputs' static ones)
    def grouped(x, rows: int, cols: int):
        return x if grp == 1 else ctx.op("reshape", [x, ctx.i64([0, hkv, grp * rows, cols])])

    def ungrouped(x, rows: int, cols: int):
        return x if grp == 1 else ctx.op("reshape", [x, ctx.i64([0, hq, rows, cols])])

    dq = dkp = dvp = dmask = None
    if dy_y is not None or dy_qk is not None:
        # recompute the probabilities (the forward keeps none of them)
        scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(d)
        qs = ctx.op("mul", [q, ctx.const(scale, like=q)])
        qg = grouped(qs, sq, d)
        qk = ungrouped(ctx.op("matmul", [qg, _tr(ctx, pres_k)]), sq, t)
        th = None
        if a["softcap"] > 0:
            c = ctx.const(a["softcap"], like=q)
            th = ctx.op("tanh", [ctx.op("div", [qk, c])])
            qk = ctx.op("mul", [th, c])
        bias = _decomposed_bias(_Emit(ctx), q, mask, nonpad, past, t, a)
        scores = ctx.op("add", [qk, bias])
        sp = a["softmax_precision"]
        cast_sp = sp is not None and sp is not q.dtype
        x = ctx.op("cast", [scores], {"to": sp}) if cast_sp else scores
        probs = ctx.op("softmax", [x], {"axis": -1})
        probs = _zero_dead_rows(ctx, probs, bias)
        probs_q = ctx.op("cast", [probs], {"to": q.dtype}) if cast_sp else probs

        dp = None
        if dy_y is not None:
            dyg = grouped(dy_y, sq, dv)
            dvp = ctx.op("matmul", [_tr(ctx, grouped(probs_q, sq, t)), dyg])
            dp = ungrouped(ctx.op("matmul", [dyg, _tr(ctx, pres_v)]), sq, t)
        if dy_qk is not None and mode == 3:
            dp = add_grads(ctx, dp, dy_qk)
        dscores = None
        if dp is not None:
            dps = ctx.op("cast", [dp], {"to": sp}) if cast_sp else dp
            row = ctx.op("reduce_sum", [ctx.op("mul", [dps, probs]), ctx.i64([-1])], {"keepdims": 1})
            ds = ctx.op("mul", [probs, ctx.op("sub", [dps, row])])
            dscores = ctx.op("cast", [ds], {"to": q.dtype}) if cast_sp else ds
        if dy_qk is not None and mode == 2:
            dscores = add_grads(ctx, dscores, dy_qk)
        dqk = add_grads(ctx, dscores, dy_qk if dy_qk is not None and mode in (0, 1) else None)
        if dqk is not None:
            if th is not None:   # d(c tanh(x / c)) = 1 - tanh^2
                one = ctx.const(1.0, like=q)
                dqk = ctx.op("mul", [dqk, ctx.op("sub", [one, ctx.op("mul", [th, th])])])
            dg = grouped(dqk, sq, t)
            dq = ctx.op("mul", [ungrouped(ctx.op("matmul", [dg, pres_k]), sq, d), ctx.const(scale, like=q)])
            dkp = ctx.op("matmul", [_tr(ctx, dg), qg])
        if dscores is not None and mask is not None and mask.dtype.is_float:
            # the bias is the mask (padded with -inf where it is shorter than the keys)
            dm = dscores if mask.shape[-1] == t else _slice(ctx, dscores, 0, mask.shape[-1], 3)
            dmask = ctx.sum_to(dm, mask)
    if nout > 1 and ctx.has_dy(1):
        dkp = add_grads(ctx, dkp, ctx.dy(1))
    if nout > 2 and ctx.has_dy(2):
        dvp = add_grads(ctx, dvp, ctx.dy(2))
    dk, dpk = _split_past(ctx, dkp, past, t)
    dv, dpv = _split_past(ctx, dvp, past, t)
    return [dq, dk, dv, dmask, dpk, dpv, None][:len(ctx.inputs)]


def _zero_dead_rows(ctx, probs, bias):
    """Rows whose bias is all -inf attend to nothing: their probabilities are 0 (softmax gives NaN)."""
    zero = ctx.const(0.0, like=probs)
    if bias.is_const:
        dead = np.isneginf(np.max(bias.const, axis=-1, keepdims=True))
        if not dead.any():
            return probs
        return ctx.op("where", [ctx.graph.add_const(dead, f"{ctx._prefix}/dead"), zero, probs])
    row_max = ctx.op("reduce_max", [bias, ctx.i64([-1])], {"keepdims": 1})
    dead = ctx.op("isinf", [row_max], {"detect_positive": False})
    return ctx.op("where", [dead, zero, probs])


def _split_past(ctx, g, past: int, t: int):
    """The gradient of present = concat(past, new) along the sequence: (d_new, d_past)."""
    if g is None or past == 0:
        return g, None
    return _slice(ctx, g, past, t, 2), _slice(ctx, g, 0, past, 2)


# ---- rotary embedding --------------------------------------------------------------------------
def rotary_grad(ctx):
    """A rotation is orthogonal: dx is dy rotated back (sin negated). The caches get
    d cos = dr x1 + di x2, d sin = di x1 - dr x2 summed over heads (scattered to positions)."""
    x, cos, sin = ctx.inputs[:3]
    pos = ctx.inputs[3] if len(ctx.inputs) > 3 else None
    a = ctx.attrs
    dy = ctx.dy()
    ins = [dy, cos, ctx.op("neg", [sin])] + ([pos] if pos is not None else [])
    dx = ctx.op("rotary_embedding", ins, a)
    if x.shape is None or not is_static_dim(x.shape[-1]):
        raise ctx.fail("the rotary_embedding gradient needs a static hidden size", actual=str(x.type))
    if len(x.shape) == 3:   # (B, S, H*D) -> (B, S, H, D): heads on axis 2
        head_axis = 2
        x4 = ctx.op("reshape", [x, ctx.i64([0, 0, a["num_heads"], -1])])
        dy4 = ctx.op("reshape", [dy, ctx.i64([0, 0, a["num_heads"], -1])])
    else:
        head_axis, x4, dy4 = 1, x, dy
    d = x.shape[-1] // (a["num_heads"] if len(x.shape) == 3 else 1)
    rd = a["rotary_embedding_dim"] or d
    x1, x2 = _halves(ctx, x4, d, rd, a["interleaved"])
    dr, di = _halves(ctx, dy4, d, rd, a["interleaved"])
    dcos = ctx.op("add", [ctx.op("mul", [dr, x1]), ctx.op("mul", [di, x2])])
    dsin = ctx.op("sub", [ctx.op("mul", [di, x1]), ctx.op("mul", [dr, x2])])
    res = []
    for g, cache in ((dcos, cos), (dsin, sin)):
        g = ctx.op("reduce_sum", [g, ctx.i64([head_axis])], {"keepdims": 0})      # (B, S, rd/2)
        if pos is None:
            res.append(ctx.sum_to(g, cache))
        else:   # cache rows picked by position: rows used several times sum their gradients
            idx = ctx.op("unsqueeze", [pos, ctx.i64([-1])])
            res.append(ctx.op("scatter_nd", [ctx.zeros_like(cache), idx, g], {"reduction": "add"}))
    return [dx, res[0], res[1], None][:len(ctx.inputs)]


def _halves(ctx, x, d: int, rd: int, interleaved: bool):
    """The two rotated components of the first ``rd`` of ``d`` features: (..., rd/2) each."""
    xr = x if rd == d else _slice(ctx, x, 0, rd, -1)
    if not interleaved:
        return _slice(ctx, xr, 0, rd // 2, -1), _slice(ctx, xr, rd // 2, rd, -1)
    pairs = ctx.op("reshape", [xr, ctx.i64([0] * (len(x.shape) - 1) + [rd // 2, 2])])
    return tuple(ctx.op("squeeze", [_slice(ctx, pairs, j, j + 1, -1), ctx.i64([-1])]) for j in (0, 1))


# ---- swiglu --------------------------------------------------------------------------------------
def swiglu_grad(ctx):
    """y = a s b with s = sigmoid(alpha a): db = dy a s, da = dy b s (1 + alpha a (1 - s))."""
    a, b = ctx.inputs
    alpha = ctx.attrs["alpha"]
    dy = ctx.dy()
    za = a if alpha == 1.0 else ctx.op("mul", [a, ctx.const(alpha, like=a)])
    s = ctx.op("sigmoid", [za])
    one = ctx.const(1.0, like=a)
    db = ctx.op("mul", [dy, ctx.op("mul", [a, s])])
    ds = ctx.op("mul", [s, ctx.op("add", [one, ctx.op("mul", [za, ctx.op("sub", [one, s])])])])
    da = ctx.op("mul", [ctx.op("mul", [dy, b]), ds])
    return [da, db]


# ---- linear attention: an unrolled decomposition autodiff goes through ----------------------------
def linear_attention_decompose(g, inputs, attrs):
    """The recurrence unrolled over a static sequence length with matmul/mul/exp primitives,
    computing in float32 (float64 for float64 inputs) as the reference does. Returns
    [Y, present_state]."""
    from ..errors import IrgraphError
    q, k, v, past, decay, beta = (list(inputs) + [None] * 6)[:6]
    hq, hkv = attrs["q_num_heads"], attrs["kv_num_heads"]
    for x in (q, k, v):
        if x.shape is None or not all(is_static_dim(s) for s in x.shape[1:]):
            raise IrgraphError("linear_attention decomposes only with a static sequence length and "
                               "hidden sizes", op="linear_attention", actual=str(x.type))
    _, t, qh = q.shape
    dk, dv = qh // hq, v.shape[2] // hkv
    grp = hq // hkv
    ct = q.dtype if q.dtype.name == "float64" else _f32()

    def cast(x):
        return x if x.dtype is ct else g.op("cast", [x], {"to": ct})

    def heads(x, h):  # (B, T, h*D) -> (B, h, T, D)
        x = g.op("reshape", [cast(x), g.add_const(np.array([0, t, h, -1], np.int64), "la_shape")])
        return g.op("transpose", [x], {"perm": (0, 2, 1, 3)})

    def step(x, i):  # (B, H, T, D) -> (B, H, 1, D)
        c = [g.add_const(np.array([s], np.int64), "la_i") for s in (i, i + 1, 2)]
        return g.op("slice", [x] + c)

    q4, k4, v4 = heads(q, hq), heads(k, hkv), heads(v, hkv)
    g4 = None if decay is None else heads(decay, hkv)                       # (B, Hkv, T, 1|dk)
    b4 = None
    if beta is not None:                                                      # (B, Hkv|1, T, 1)
        b4 = g.op("unsqueeze", [g.op("transpose", [cast(beta)], {"perm": (0, 2, 1)}),
                                g.add_const(np.array([3], np.int64), "la_axis")])
    if past is not None:
        state = cast(past)
    elif is_static_dim(q.shape[0]):
        state = g.add_const(np.zeros((q.shape[0], hkv, dk, dv), ct.np), "la_state0")
    else:   # zeros of a symbolic batch size: 0 * k, broadcast to (B, Hkv, dk, dv)
        zeros = g.op("mul", [step(k4, 0), g.add_const(np.zeros((), ct.np), "la_zero")])   # (B,Hkv,1,dk)
        state = g.op("mul", [g.op("transpose", [zeros], {"perm": (0, 1, 3, 2)}),
                             g.add_const(np.zeros((1, 1, 1, dv), ct.np), "la_zero_row")])
    scale = attrs["scale"] or 1.0 / math.sqrt(dk)
    sc = g.add_const(np.array(scale, ct.np), "la_scale")
    qrows = g.add_const(np.array([0, hkv, grp, dk], np.int64), "la_qrows")
    orows = g.add_const(np.array([0, hq, 1, dv], np.int64), "la_orows")
    outs = []
    for i in range(t):
        kt, vt = step(k4, i), step(v4, i)
        if g4 is not None:   # S *= exp(g): per head (B,Hkv,1,1) or per key feature (B,Hkv,dk,1)
            e = g.op("exp", [g.op("transpose", [step(g4, i)], {"perm": (0, 1, 3, 2)})])
            state = g.op("mul", [state, e])
        if b4 is not None:   # u = beta (v - k^T S)
            vt = g.op("mul", [step(b4, i), g.op("sub", [vt, g.op("matmul", [kt, state])])])
        state = g.op("add", [state, g.op("matmul", [g.op("transpose", [kt], {"perm": (0, 1, 3, 2)}), vt])])
        qt = g.op("reshape", [step(q4, i), qrows])                          # (B, Hkv, group, dk)
        o = g.op("reshape", [g.op("matmul", [qt, state]), orows])            # (B, Hq, 1, dv)
        outs.append(g.op("mul", [o, sc]))
    y = outs[0] if t == 1 else g.op("concat", outs, {"axis": 2})             # (B, Hq, T, dv)
    y = g.op("reshape", [g.op("transpose", [y], {"perm": (0, 2, 1, 3)}),
                         g.add_const(np.array([0, t, hq * dv], np.int64), "la_y")])
    y = y if y.dtype is q.dtype else g.op("cast", [y], {"to": q.dtype})
    sdt = past.dtype if past is not None else q.dtype
    state = state if state.dtype is sdt else g.op("cast", [state], {"to": sdt})
    return [y, state]


def _f32():
    from .. import dtype as dt
    return dt.float32
