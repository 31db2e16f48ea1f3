"""Recurrent layers: rnn, gru, lstm, with ONNX semantics.

Inputs follow ONNX: ``X, W, R, B?, sequence_lens?, initial_h?`` (lstm adds ``initial_c?, P?``);
gates are packed as ONNX packs them (gru ``z, r, h``; lstm ``i, o, f, c``). Outputs are always
all produced: ``Y, Y_h`` (lstm adds ``Y_c``); unused ones are left for dead-code elimination.

``activations`` holds one lower-case name per function and direction (``ACTIVATIONS`` lists
them) and ``activation_alpha``/``activation_beta`` one value per activation (the frontend
resolves ONNX's "consumed in order" lists into this aligned form).

The references are vectorized over the batch: one matmul per time step, the input projection
of all time steps in one matmul up front. With ``sequence_lens`` each batch row stops after its
own length: ``Y`` is zero past it and ``Y_h``/``Y_c`` hold the state after its last step
(reverse direction starts at its last valid step).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .. import dtype as dt
from ..errors import InputError
from ..types import is_static_dim
from .declare import FLOAT_TYPES
from .registry import Attr, OpDef, register
from .rnn_grad import recurrent_grad
from .shapes import out


def _sigmoid(x, a, b):
    # exp(-log(1 + exp(-x))) stays accurate in both tails, unlike 1 / (1 + exp(-x)) for x << 0
    return np.exp(-np.logaddexp(np.zeros((), x.dtype), -x))


# name -> (function(x, alpha, beta), default alpha, default beta); None: takes no alpha/beta
ACTIVATIONS: dict[str, tuple[Callable, float | None, float | None]] = {
    "relu": (lambda x, a, b: np.maximum(x, np.zeros((), x.dtype)), None, None),
    "tanh": (lambda x, a, b: np.tanh(x), None, None),
    "sigmoid": (_sigmoid, None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, np.zeros((), x.dtype)), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))), 1.0, None),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), None, None),
    "softplus": (lambda x, a, b: np.logaddexp(np.zeros((), x.dtype), x), None, None),
}

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_DEFAULT_ACTIVATIONS = {"rnn": ("tanh",), "gru": ("sigmoid", "tanh"),
                        "lstm": ("sigmoid", "tanh", "tanh")}
_DIRECTIONS = ("forward", "reverse", "bidirectional")
_MAX_INPUTS = {"rnn": 6, "gru": 6, "lstm": 8}


def activation_defaults(name: str) -> tuple[float, float]:
    """The alpha and beta an activation uses when none is given (0.0 where it takes none)."""
    _, a, b = ACTIVATIONS[name.lower()]
    return (0.0 if a is None else a), (0.0 if b is None else b)


def _common_attrs() -> dict:
    return {
        "hidden_size": Attr("int", None, "size of the hidden state; taken from R when absent"),
        "direction": Attr("str", "forward", "forward | reverse | bidirectional"),
        "activations": Attr("strs", None, "lower-case names, per direction (see ACTIVATIONS)"),
        "activation_alpha": Attr("floats", None, "one per activation"),
        "activation_beta": Attr("floats", None, "one per activation"),
        "clip": Attr("float", None, "gate pre-activations are clipped to [-clip, clip]"),
        "layout": Attr("int", 0, "0: X is [seq, batch, input]; 1: X is [batch, seq, input]"),
    }


# ---- inference -------------------------------------------------------------------------------
def _check_shape(ctx, i: int, want: tuple, what: str) -> None:
    """Input ``i`` has shape ``want`` (None entries: any size); static mismatches fail."""
    t = ctx.type(i)
    if t is None or t.shape is None:
        return
    shown = tuple("?" if d is None else d for d in want)
    if len(t.shape) != len(want):
        ctx.fail(f"{what} has the wrong rank", input=i, expected=shown, actual=t.shape)
    for got, exp in zip(t.shape, want):
        if exp is not None and is_static_dim(exp) and is_static_dim(got) and got != exp:
            ctx.fail(f"{what} has the wrong shape", input=i, expected=shown, actual=t.shape)


def _resolved_activations(kind: str, attrs: dict, num_dirs: int, ctx=None) -> list:
    """Per direction, a list of (function, alpha, beta); validates names and counts."""
    return [[(ACTIVATIONS[n][0], a, b) for n, a, b in d]
            for d in activation_specs(kind, attrs, num_dirs, ctx)]


def activation_specs(kind: str, attrs: dict, num_dirs: int, ctx=None) -> list:
    """Per direction, a list of (lower-case name, alpha, beta); validates names and counts."""
    per_dir = len(_DEFAULT_ACTIVATIONS[kind])
    names = attrs["activations"]
    if names is None or len(names) == 0:
        names = _DEFAULT_ACTIVATIONS[kind] * num_dirs
    names = [n.lower() for n in names]
    alphas, betas = attrs["activation_alpha"], attrs["activation_beta"]
    for n in names:
        if n not in ACTIVATIONS:
            _fail(ctx, f"unknown activation {n!r}", expected="one of " + ", ".join(ACTIVATIONS))
    for what, vals in (("activation_alpha", alphas), ("activation_beta", betas)):
        if vals is not None and len(vals) and len(vals) != len(names):
            _fail(ctx, f"{what} must hold one value per activation", expected=len(names), actual=len(vals))
    if len(names) == per_dir and num_dirs == 2:
        # one set given for a bidirectional layer: both directions use it
        names = names * 2
        alphas = None if not alphas else tuple(alphas) * 2
        betas = None if not betas else tuple(betas) * 2
    if len(names) != per_dir * num_dirs:
        _fail(ctx, f"{kind} takes {per_dir} activations per direction",
              expected=per_dir * num_dirs, actual=len(names))
    res = []
    for k, n in enumerate(names):
        _, da, db = ACTIVATIONS[n]
        a = alphas[k] if alphas else (0.0 if da is None else da)
        b = betas[k] if betas else (0.0 if db is None else db)
        res.append((n, a, b))
    return [res[d * per_dir:(d + 1) * per_dir] for d in range(num_dirs)]


def _fail(ctx, msg, **kw):
    if ctx is not None:
        ctx.fail(msg, **kw)
    raise InputError(msg, **kw)


def _make_infer(kind: str):
    gates = _GATES[kind]

    def infer(ctx):
        a = ctx.attrs
        if a["direction"] not in _DIRECTIONS:
            ctx.fail(f"unknown direction {a['direction']!r}", expected=" | ".join(_DIRECTIONS),
                     actual=a["direction"])
        nd = 2 if a["direction"] == "bidirectional" else 1
        if a["layout"] not in (0, 1):
            ctx.fail("layout must be 0 or 1", actual=a["layout"])
        if a["clip"] is not None and not a["clip"] > 0:
            ctx.fail("clip must be positive", actual=a["clip"])
        _resolved_activations(kind, a, nd, ctx)
        x = ctx.type(0)
        for i in range(3):
            if not ctx.has(i):
                ctx.fail("X, W and R are required", input=i)
        if x.dtype not in FLOAT_TYPES:
            ctx.fail("unsupported dtype", input=0, expected="a float type", actual=x.dtype.name)
        for i in range(1, len(ctx.inputs)):
            t = ctx.type(i)
            if t is None or i == 4:
                continue
            if t.dtype is not x.dtype:
                ctx.fail("inputs must share X's dtype", input=i, expected=x.dtype.name, actual=t.dtype.name)
        if ctx.has(4) and ctx.type(4).dtype not in (dt.int32, dt.int64):
            ctx.fail("sequence_lens must be int32", input=4, expected="int32", actual=ctx.type(4).dtype.name)
        if x.shape is not None and len(x.shape) != 3:
            ctx.fail("X must have rank 3", input=0, expected="rank 3", actual=x.shape)
        xs = x.shape or (None, None, None)
        seq, batch = (xs[1], xs[0]) if a["layout"] else (xs[0], xs[1])
        width = xs[2]
        r = ctx.type(2)
        hidden = a["hidden_size"]
        if hidden is not None and hidden <= 0:
            ctx.fail("hidden_size must be positive", actual=hidden)
        if hidden is None and r.shape is not None and len(r.shape) == 3:
            hidden = r.shape[2]
        gh = gates * hidden if is_static_dim(hidden) else None
        _check_shape(ctx, 1, (nd, gh, width), "W")
        _check_shape(ctx, 2, (nd, gh, hidden), "R")
        _check_shape(ctx, 3, (nd, None if gh is None else 2 * gh), "B")
        _check_shape(ctx, 4, (batch,), "sequence_lens")
        state = (batch, nd, hidden) if a["layout"] else (nd, batch, hidden)
        _check_shape(ctx, 5, state, "initial_h")
        if kind == "lstm":
            _check_shape(ctx, 6, state, "initial_c")
            _check_shape(ctx, 7, (nd, 3 * hidden if is_static_dim(hidden) else None), "P")
        seq = ctx.fresh("seq") if seq is None else seq
        batch = ctx.fresh("batch") if batch is None else batch
        hidden = ctx.fresh("hidden") if hidden is None else hidden
        y = (batch, seq, nd, hidden) if a["layout"] else (seq, nd, batch, hidden)
        state = (batch, nd, hidden) if a["layout"] else (nd, batch, hidden)
        outs = [out(y, x.dtype), out(state, x.dtype)]
        if kind == "lstm":
            outs.append(out(state, x.dtype))
        return outs
    return infer


# ---- reference -----------------------------------------------------------------------------
def _clipper(clip):
    if clip is None:
        return lambda v: v
    return lambda v: np.clip(v, -clip, clip)


def _rnn_step(R, rb, acts, clip, attrs):
    rt = np.ascontiguousarray(R.T)
    (f, fa, fb), = acts

    def step(xw, h, c):
        return f(clip(xw + h @ rt + rb), fa, fb), None
    return step


def _gru_step(R, rb, acts, clip, attrs):
    hid = R.shape[1]
    rt_zr = np.ascontiguousarray(R[:2 * hid].T)
    rt_h = np.ascontiguousarray(R[2 * hid:].T)
    rb_zr, rb_h = rb[:2 * hid], rb[2 * hid:]
    (f, fa, fb), (g, ga, gb) = acts
    before_reset = bool(attrs["linear_before_reset"])

    def step(xw, h, c):
        zr = xw[:, :2 * hid] + h @ rt_zr + rb_zr
        z = f(clip(zr[:, :hid]), fa, fb)
        r = f(clip(zr[:, hid:]), fa, fb)
        if before_reset:
            n = g(clip(xw[:, 2 * hid:] + r * (h @ rt_h + rb_h)), ga, gb)
        else:
            n = g(clip(xw[:, 2 * hid:] + (r * h) @ rt_h + rb_h), ga, gb)
        return (1 - z) * n + z * h, None
    return step


def _lstm_step(R, rb, acts, clip, attrs, P=None):
    hid = R.shape[1]
    rt = np.ascontiguousarray(R.T)
    (f, fa, fb), (g, ga, gb), (hf, ha, hb) = acts
    couple = bool(attrs["input_forget"])
    pi, po, pf = (None, None, None) if P is None else (P[:hid], P[hid:2 * hid], P[2 * hid:])

    def step(xw, h, c):
        z = xw + h @ rt + rb
        i, o, fg, cg = z[:, :hid], z[:, hid:2 * hid], z[:, 2 * hid:3 * hid], z[:, 3 * hid:]
        if P is not None:
            i = i + pi * c
            fg = fg + pf * c
        i = f(clip(i), fa, fb)
        # input_forget couples the gates: what is let in is exactly what is forgotten
        fg = 1 - i if couple else f(clip(fg), fa, fb)
        c_new = fg * c + i * g(clip(cg), ga, gb)
        if P is not None:
            o = o + po * c_new
        o = f(clip(o), fa, fb)
        return o * hf(c_new, ha, hb), c_new
    return step


def _run_time(xw, h, c, lens, reverse: bool, step):
    """Run ``step`` over the time axis of ``xw`` [seq, batch, G*H]; returns Y, last h, last c."""
    seq, batch = xw.shape[:2]
    y = np.zeros((seq, batch, h.shape[-1]), xw.dtype)
    if lens is None:
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            h, c = step(xw[t], h, c)
            y[t] = h
        return y, h, c
    rows = np.arange(batch)
    for s in range(int(lens.max()) if batch else 0):
        active = s < lens
        # each row walks its own valid prefix; reverse starts at the row's last valid step
        t = np.clip(lens - 1 - s if reverse else np.full(batch, s), 0, max(seq - 1, 0))
        hn, cn = step(xw[t, rows], h, c)
        keep = active[:, None]
        h = np.where(keep, hn, h)
        if c is not None:
            c = np.where(keep, cn, c)
        y[t[active], rows[active]] = hn[active]
    return y, h, c


_STEPS = {"rnn": _rnn_step, "gru": _gru_step, "lstm": _lstm_step}


def _make_reference(kind: str):
    gates = _GATES[kind]

    def reference(inputs, attrs):
        ins = list(inputs) + [None] * (_MAX_INPUTS[kind] - len(inputs))
        X, W, R, B, lens, h0 = ins[:6]
        c0, P = (ins[6], ins[7]) if kind == "lstm" else (None, None)
        out_dtype = X.dtype
        # half types accumulate in float32, as a backend would
        ct = np.float32 if X.dtype.itemsize < 4 else X.dtype
        layout = attrs["layout"]
        if layout:
            X = X.swapaxes(0, 1)
            h0 = None if h0 is None else h0.swapaxes(0, 1)
            c0 = None if c0 is None else c0.swapaxes(0, 1)
        X, W, R = X.astype(ct), W.astype(ct), R.astype(ct)
        seq, batch, _ = X.shape
        nd = W.shape[0]
        hid = R.shape[2]
        gh = gates * hid
        if lens is not None:
            lens = np.asarray(lens).astype(np.int64)
            if lens.shape != (batch,) or (lens.size and (lens.min() < 0 or lens.max() > seq)):
                raise InputError("sequence_lens must hold one length in [0, seq_length] per batch row",
                                 expected=f"[{batch}] values in [0, {seq}]", actual=lens.tolist())
            if np.all(lens == seq):
                lens = None
        acts = _resolved_activations(kind, attrs, nd)
        clip = _clipper(attrs["clip"])
        ys, hs, cs = [], [], []
        for d in range(nd):
            reverse = attrs["direction"] == "reverse" or d == 1
            b = np.zeros(2 * gh, ct) if B is None else B[d].astype(ct)
            # the input projection of every time step at once: one big matmul
            xw = X @ np.ascontiguousarray(W[d].T) + b[:gh]
            if kind == "lstm":
                step = _lstm_step(R[d], b[gh:], acts[d], clip, attrs,
                                  None if P is None else P[d].astype(ct))
            else:
                step = _STEPS[kind](R[d], b[gh:], acts[d], clip, attrs)
            h = np.zeros((batch, hid), ct) if h0 is None else h0[d].astype(ct)
            c = None
            if kind == "lstm":
                c = np.zeros((batch, hid), ct) if c0 is None else c0[d].astype(ct)
            y, h, c = _run_time(xw, h, c, lens, reverse, step)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        Y = np.stack(ys, axis=1)
        Yh = np.stack(hs, axis=0)
        outs = [Y, Yh] + ([np.stack(cs, axis=0)] if kind == "lstm" else [])
        if layout:
            outs = [outs[0].transpose(2, 0, 1, 3)] + [o.swapaxes(0, 1) for o in outs[1:]]
        return tuple(np.ascontiguousarray(o).astype(out_dtype, copy=False) for o in outs)
    return reference


_DOCS = {
    "rnn": "simple RNN: H = f(X W^T + H R^T + Wb + Rb); inputs X, W, R, B?, sequence_lens?, initial_h?",
    "gru": "GRU (gates z, r, h); inputs X, W, R, B?, sequence_lens?, initial_h?; outputs Y, Y_h",
    "lstm": "LSTM (gates i, o, f, c); inputs X, W, R, B?, sequence_lens?, initial_h?, initial_c?, P?; "
            "outputs Y, Y_h, Y_c",
}

for _kind in ("rnn", "gru", "lstm"):
    _attrs = _common_attrs()
    if _kind == "gru":
        _attrs["linear_before_reset"] = Attr("int", 0, "apply R_h before multiplying by the reset gate")
    if _kind == "lstm":
        _attrs["input_forget"] = Attr("int", 0, "couple the input and forget gates (f = 1 - i)")
    register(OpDef(
        _kind, infer=_make_infer(_kind), reference=_make_reference(_kind), attrs=_attrs,
        inputs=(3, _MAX_INPUTS[_kind]), kind="other", differentiable=True, grad=recurrent_grad,
        doc=_DOCS[_kind],
    ))
