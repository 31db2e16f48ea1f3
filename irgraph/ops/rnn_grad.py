"""Backpropagation through time for rnn, gru and lstm (``rnn.py``), unrolled over the static
sequence length so that every backend (the CPU one natively) runs it as plain ops.

Per direction, the hidden state before each step is read back from ``Y`` (``Y_t`` is the state
after step t; with ``sequence_lens`` a padded step keeps the previous state), so the gate
pre-activations of all steps come from two batched matmuls and the gates from batched
elementwise ops. Only the cell-state recurrence (lstm, elementwise) and the gradient recurrence
``dh_{t-1} = dz_t R`` (one (B, G*H) x (G*H, H) matmul per step) run step by step; the weight
gradients are then one matmul each over all steps: ``dW = dZ^T X``, ``dR = dZ^T H_prev``,
``dX = dZ W``, as cuDNN's backward does.

With ``sequence_lens`` every direction walks all steps (reverse: from the last) and step t is
active for the rows with t < length: an inactive step passes the state (and its gradient)
through and writes zeros to Y. That is the reference's per-row walk, reverse included.

Subgradients at kinks follow PyTorch: relu'(0) = 0, leakyrelu'(0) = alpha, elu'(0) = alpha,
thresholdedrelu and hardsigmoid have derivative 0 at their thresholds, and clip passes the
gradient where -clip <= x <= clip (inclusive, as torch.clamp).
"""
from __future__ import annotations

import numpy as np

from ..types import is_static_dim
from .grad import add_grads

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


class _B:
    """Short op builders over a GradCtx in the compute dtype; ``None`` stands for a zero gradient."""

    def __init__(self, ctx, ct):
        self.ctx, self.ct = ctx, ct

    def op(self, name, ins, attrs=None, **kw):
        return self.ctx.op(name, ins, attrs, **kw)

    def c(self, v):
        return self.ctx.const(v, dtype=self.ct)

    def add(self, a, b):
        return add_grads(self.ctx, a, b)

    def mul(self, a, b):
        return None if a is None or b is None else self.op("mul", [a, b])

    def sub(self, a, b):
        return self.op("sub", [a, b])

    def mm(self, a, b):
        return self.op("matmul", [a, b])

    def tr(self, x, perm=(1, 0)):
        return self.op("transpose", [x], {"perm": perm})

    def cast(self, x, dtype=None):
        dtype = dtype or self.ct
        return x if x is None or x.dtype is dtype else self.op("cast", [x], {"to": dtype})

    def pick(self, x, i: int, axis: int = 0):
        return self.op("gather", [x, self.ctx.i64(i)], {"axis": axis})

    def sl(self, x, start: int, end: int, axis: int):
        ctx = self.ctx
        return self.op("slice", [x, ctx.i64([start]), ctx.i64([end]), ctx.i64([axis])])

    def split(self, x, n: int, axis: int) -> list:
        if len(x.shape) == 0:
            return [x] * n           # a scalar derivative (affine) is the same at every step
        if n == 1:
            return [x]
        return list(self.op("split", [x], {"axis": axis, "num_outputs": n}, num_outputs=n))

    def cat(self, xs, axis: int):
        return xs[0] if len(xs) == 1 else self.op("concat", list(xs), {"axis": axis})

    def where(self, m, a, b):
        return self.op("where", [m, a, b])

    def sum(self, x, axes):
        return self.op("reduce_sum", [x, self.ctx.i64(list(axes))], {"keepdims": 0})

    def flat(self, x, cols: int):
        return self.op("reshape", [x, self.ctx.i64([-1, cols])])

    def wgrad(self, dz, x, m: int, n: int):
        """sum over steps and rows of dz^T x: (T, B, m), (T, B, n) -> (m, n). (The sizes are
        given: gradients may carry fresh symbolic dims.)"""
        return self.mm(self.tr(self.flat(dz, m)), self.flat(x, n))


def _activation(b: _B, spec, x, clip):
    """(f(clip(x)), f'(clip(x)) * clip'(x)) with registry ops."""
    name, alpha, beta = spec
    op, c = b.op, b.c
    mask = None
    if clip is not None:
        mask = b.cast(op("less_equal", [op("abs", [x]), c(clip)]))
        x = op("clip", [x, c(-clip), c(clip)])

    def pos(v, at=0.0):
        return b.cast(op("greater", [v, c(at)]))
    if name == "tanh":
        y = op("tanh", [x])
        d = b.sub(c(1.0), b.mul(y, y))
    elif name == "sigmoid":
        y = op("sigmoid", [x])
        d = b.mul(y, b.sub(c(1.0), y))
    elif name == "relu":
        y, d = op("relu", [x]), pos(x)
    elif name == "affine":
        y, d = b.add(b.mul(x, c(alpha)), c(beta)), c(alpha)
    elif name == "leakyrelu":
        y = op("leaky_relu", [x], {"alpha": alpha})
        d = b.where(op("greater", [x, c(0.0)]), c(1.0), c(alpha))
    elif name == "thresholdedrelu":
        y, d = op("thresholded_relu", [x], {"alpha": alpha}), pos(x, alpha)
    elif name == "scaledtanh":
        t = op("tanh", [b.mul(x, c(beta))])
        y = b.mul(t, c(alpha))
        d = b.mul(b.sub(c(1.0), b.mul(t, t)), c(alpha * beta))
    elif name == "hardsigmoid":
        y = op("hard_sigmoid", [x], {"alpha": alpha, "beta": beta})
        u = b.add(b.mul(x, c(alpha)), c(beta))
        inside = op("logical_and", [op("greater", [u, c(0.0)]), op("less", [u, c(1.0)])])
        d = b.mul(b.cast(inside), c(alpha))
    elif name == "elu":
        y = op("elu", [x], {"alpha": alpha})
        d = b.where(op("greater", [x, c(0.0)]), c(1.0),
                    b.mul(op("exp", [op("minimum", [x, c(0.0)])]), c(alpha)))
    elif name == "softsign":
        y = op("softsign", [x])
        r = op("reciprocal", [b.add(op("abs", [x]), c(1.0))])
        d = b.mul(r, r)
    elif name == "softplus":
        y, d = op("softplus", [x]), op("sigmoid", [x])
    else:
        raise b.ctx.fail(f"rnn activation {name!r} has no gradient")
    return y, (d if mask is None else b.mul(d, mask))


def recurrent_grad(ctx):
    from .rnn import activation_specs   # rnn.py imports this module
    kind = ctx.node.op
    gates = _GATES[kind]
    ins = (list(ctx.inputs) + [None] * 8)[:8]
    X, W, R, Bias, lens, h0 = ins[:6]
    c0, P = (ins[6], ins[7]) if kind == "lstm" else (None, None)
    a = ctx.attrs
    layout = a["layout"]
    for v in (X, W, R):
        if v.shape is None or not all(is_static_dim(d) for i, d in enumerate(v.shape)
                                      if not (v is X and i == (0 if layout else 1))):
            raise ctx.fail(f"the {kind} gradient needs static shapes (the batch may be symbolic)",
                           input=v.name, actual=str(v.type))
    ct = X.dtype if X.dtype.itemsize >= 4 else _f32()    # half types compute in float32
    b = _B(ctx, ct)
    nd, hid = W.shape[0], R.shape[2]
    T = X.shape[1] if layout else X.shape[0]
    specs = activation_specs(kind, a, nd)
    clip = a["clip"]

    def to_l0(v, perm):       # layout 1 -> 0, cast to the compute dtype
        return None if v is None else b.cast(b.tr(v, perm) if layout else v)
    X0 = to_l0(X, (1, 0, 2))
    Y0 = to_l0(ctx.outputs[0], (1, 2, 0, 3))                     # (T, nd, B, H)
    dY0 = to_l0(ctx.dy(0), (1, 2, 0, 3)) if ctx.has_dy(0) else None
    h00, c00 = to_l0(h0, (1, 0, 2)), to_l0(c0, (1, 0, 2))         # (nd, B, H)
    dYh = to_l0(ctx.dy(1), (1, 0, 2)) if ctx.has_dy(1) else None
    dYc = to_l0(ctx.dy(2), (1, 0, 2)) if kind == "lstm" and ctx.has_dy(2) else None
    W, R, Bias, P = (b.cast(v) for v in (W, R, Bias, P))
    masks = None
    if lens is not None:   # step t is active for rows with t < length: (T, B, 1) bool, per step
        m = ctx.op("less", [ctx.i64(np.arange(T).reshape(T, 1)),
                            ctx.op("unsqueeze", [b.cast(lens, _i64()), ctx.i64([0])])])
        masks = b.split(ctx.op("unsqueeze", [m, ctx.i64([2])]), T, 0)

    dX = None
    per_dir = {k: [] for k in ("W", "R", "B", "h", "c", "P")}
    for d in range(nd):
        reverse = a["direction"] == "reverse" or d == 1
        dirx = _Direction(b, kind, d, T, hid, gates, specs[d], clip, reverse, masks, a)
        dirx.forward(X0, Y0, h00, c00, W, R, Bias, P)
        res = dirx.backward(None if dY0 is None else b.pick(dY0, d, 1),
                            None if dYh is None else b.sl(dYh, d, d + 1, 0),
                            None if dYc is None else b.sl(dYc, d, d + 1, 0))
        dX = b.add(dX, res["X"])
        for k in per_dir:
            per_dir[k].append(res.get(k))

    def stack(parts, lead=True):
        parts = [ctx.op("unsqueeze", [p, ctx.i64([0])]) if lead else p for p in parts]
        return b.cat(parts, 0)

    def back(v, like, perm):
        if v is None or like is None:
            return None
        return b.cast(b.tr(v, perm) if layout else v, like.dtype)
    grads = [back(dX, X, (1, 0, 2)), b.cast(stack(per_dir["W"]), ins[1].dtype),
             b.cast(stack(per_dir["R"]), ins[2].dtype),
             None if Bias is None else b.cast(stack(per_dir["B"]), ins[3].dtype), None,
             back(stack(per_dir["h"], lead=False), h0, (1, 0, 2))]
    if kind == "lstm":
        grads += [back(stack(per_dir["c"], lead=False), c0, (1, 0, 2)),
                  None if P is None else b.cast(stack(per_dir["P"]), ins[7].dtype)]
    return grads[:len(ctx.inputs)]


class _Direction:
    """One direction's recomputed forward values and its backward, in layout 0 (time first)."""

    def __init__(self, b: _B, kind, d, T, hid, gates, specs, clip, reverse, masks, attrs):
        self.b, self.kind, self.d, self.T, self.hid, self.gates = b, kind, d, T, hid, gates
        self.specs, self.clip, self.masks, self.attrs = specs, clip, masks, attrs
        self.order = list(range(T - 1, -1, -1)) if reverse else list(range(T))

    # ---- forward recomputation -----------------------------------------------------------
    def forward(self, X0, Y0, h00, c00, W, R, Bias, P):
        b, d, T, H = self.b, self.d, self.T, self.hid
        gh = self.gates * H
        self.X0 = X0
        self.Wd, self.Rd = b.pick(W, d), b.pick(R, d)                  # (G*H, I), (G*H, H)
        Bd = None if Bias is None else b.pick(Bias, d)
        self.wb = None if Bd is None else b.sl(Bd, 0, gh, 0)
        self.rb = None if Bd is None else b.sl(Bd, gh, 2 * gh, 0)
        self.Pd = None if P is None else b.pick(P, d)
        Yd = b.pick(Y0, d, 1)                                             # (T, B, H)
        h_init = None if h00 is None else b.sl(h00, d, d + 1, 0)          # (1, B, H)
        self.zeros = b.ctx.zeros_like(b.sl(Yd, 0, 1, 0))
        self.h_init = h_init if h_init is not None else self.zeros
        c_init = None if c00 is None else b.sl(c00, d, d + 1, 0)
        self.c_init = c_init if c_init is not None else self.zeros
        if self.masks is None:   # the state before step t is Y of the step walked before it
            if T == 1:
                self.Hp = self.h_init
            elif self.order[0] == 0:
                self.Hp = b.cat([self.h_init, b.sl(Yd, 0, T - 1, 0)], 0)
            else:
                self.Hp = b.cat([b.sl(Yd, 1, T, 0), self.h_init], 0)
        else:
            ys, prev, state = b.split(Yd, T, 0), [None] * T, self.h_init
            for t in self.order:
                prev[t] = state
                state = b.where(self.masks[t], ys[t], state)
            self.Hp = b.cat(prev, 0)
        self.zx = b.add(b.mm(X0, b.tr(self.Wd)), self.wb)                # (T, B, G*H)
        getattr(self, "_forward_" + self.kind)()

    def _forward_rnn(self):
        b = self.b
        z = b.add(b.add(self.zx, b.mm(self.Hp, b.tr(self.Rd))), self.rb)
        _, D = _activation(b, self.specs[0], z, self.clip)
        self.Ds = b.split(D, self.T, 0)

    def _forward_gru(self):
        b, H = self.b, self.hid
        f, g = self.specs
        zx_zr, zx_h = b.sl(self.zx, 0, 2 * H, 2), b.sl(self.zx, 2 * H, 3 * H, 2)
        self.Rzr, self.Rh = b.sl(self.Rd, 0, 2 * H, 0), b.sl(self.Rd, 2 * H, 3 * H, 0)
        rb_zr = None if self.rb is None else b.sl(self.rb, 0, 2 * H, 0)
        rb_h = None if self.rb is None else b.sl(self.rb, 2 * H, 3 * H, 0)
        zr = b.add(b.add(zx_zr, b.mm(self.Hp, b.tr(self.Rzr))), rb_zr)
        self.Z, self.DZ = _activation(b, f, b.sl(zr, 0, H, 2), self.clip)
        self.Rg, self.DR = _activation(b, f, b.sl(zr, H, 2 * H, 2), self.clip)
        if self.attrs["linear_before_reset"]:
            self.HR = b.add(b.mm(self.Hp, b.tr(self.Rh)), rb_h)
            pre_n = b.add(zx_h, b.mul(self.Rg, self.HR))
        else:
            self.RH = b.mul(self.Rg, self.Hp)
            pre_n = b.add(b.add(zx_h, b.mm(self.RH, b.tr(self.Rh))), rb_h)
        self.N, self.DN = _activation(b, g, pre_n, self.clip)
        names = ["Z", "DZ", "Rg", "DR", "N", "DN", "Hp"] + (
            ["HR"] if self.attrs["linear_before_reset"] else [])
        self.gsteps = {k: b.split(getattr(self, k), self.T, 0) for k in names}

    def _forward_lstm(self):
        b, H, T = self.b, self.hid, self.T
        f, g, h = self.specs
        clip = self.clip
        z = b.add(b.add(self.zx, b.mm(self.Hp, b.tr(self.Rd))), self.rb)
        zi, zo, zf, zc = b.split(z, 4, 2)
        couple = bool(self.attrs["input_forget"])
        one = b.c(1.0)
        if self.Pd is not None:
            self.pi, self.po, self.pf = (b.sl(self.Pd, k * H, (k + 1) * H, 0) for k in range(3))
        steps = {k: [None] * T for k in ("I", "DI", "F", "DF", "G", "DG", "O", "DO", "CP", "CN")}
        if self.Pd is None:   # gates of all steps at once; only c runs step by step
            I_, DI = _activation(b, f, zi, clip)
            F_, DF = (b.sub(one, I_), None) if couple else _activation(b, f, zf, clip)
            G_, DG = _activation(b, g, zc, clip)
            O_, DO = _activation(b, f, zo, clip)
            for k, v in (("I", I_), ("DI", DI), ("F", F_), ("DF", DF), ("G", G_), ("DG", DG),
                         ("O", O_), ("DO", DO)):
                steps[k] = [None] * T if v is None else b.split(v, T, 0)
        zs = {k: b.split(v, T, 0) for k, v in (("i", zi), ("o", zo), ("f", zf), ("c", zc))}
        state = self.c_init
        for t in self.order:
            cp = state
            if self.Pd is not None:   # peepholes: i, f see c_{t-1}; o sees c_t
                steps["I"][t], steps["DI"][t] = _activation(b, f, b.add(zs["i"][t], b.mul(self.pi, cp)), clip)
                if couple:
                    steps["F"][t] = b.sub(one, steps["I"][t])
                else:
                    steps["F"][t], steps["DF"][t] = _activation(b, f, b.add(zs["f"][t], b.mul(self.pf, cp)), clip)
                steps["G"][t], steps["DG"][t] = _activation(b, g, zs["c"][t], clip)
            cn = b.add(b.mul(steps["F"][t], cp), b.mul(steps["I"][t], steps["G"][t]))
            if self.Pd is not None:
                steps["O"][t], steps["DO"][t] = _activation(b, f, b.add(zs["o"][t], b.mul(self.po, cn)), clip)
            steps["CP"][t], steps["CN"][t] = cp, cn
            state = cn if self.masks is None else b.where(self.masks[t], cn, cp)
        self.CN = b.cat(steps["CN"], 0)                                    # (T, B, H)
        self.CP = b.cat(steps["CP"], 0)
        HC, DHC = _activation(b, h, self.CN, None)
        steps["HC"], steps["DHC"] = b.split(HC, T, 0), b.split(DHC, T, 0)
        self.steps = steps

    # ---- backward ----------------------------------------------------------------------------
    def backward(self, dY, dYh, dYc):
        """Gradients of this direction: X (T, B, I) and W, R, B, h, c, P entries."""
        b, T = self.b, self.T
        dys = [None] * T if dY is None else b.split(dY, T, 0)
        gh = dYh if dYh is not None else self.zeros
        gc = (dYc if dYc is not None else self.zeros) if self.kind == "lstm" else None
        step = getattr(self, "_step_" + self.kind)
        saved = [None] * T
        for t in reversed(self.order):
            dh = b.add(gh, dys[t])
            pass_h = pass_c = None
            dcs = gc
            if self.masks is not None:   # an inactive step passes the state's gradient through
                m = self.masks[t]
                pass_h, dh = b.where(m, self.zeros, gh), b.where(m, dh, self.zeros)
                if gc is not None:
                    pass_c, dcs = b.where(m, self.zeros, gc), b.where(m, gc, self.zeros)
            gh, gc, saved[t] = step(t, dh, dcs)
            gh = b.add(gh, pass_h)
            if gc is not None:
                gc = b.add(gc, pass_c)
        res = getattr(self, "_weights_" + self.kind)(saved)
        res["h"], res["c"] = gh, gc
        return res

    def _common(self, dZ, dR=None):
        """X, W, R and input-bias gradients from the pre-activation gradients dZ (T, B, G*H);
        ``dR`` given where the recurrent weights met other values than H_prev (gru)."""
        b, gh = self.b, self.gates * self.hid
        if dR is None:
            dR = b.wgrad(dZ, self.Hp, gh, self.hid)
        return {"X": b.mm(dZ, self.Wd), "W": b.wgrad(dZ, self.X0, gh, self.Wd.shape[1]), "R": dR,
                "dbw": b.sum(dZ, (0, 1))}

    def _finish(self, res, dbr):
        """Adds the bias gradient [d Wb, d Rb] (when the node has a bias)."""
        res["B"] = self.b.cat([res["dbw"], dbr], 0) if self.wb is not None else None
        return res

    def _step_rnn(self, t, dh, _):
        b = self.b
        dz = b.mul(dh, self.Ds[t])
        return b.mm(dz, self.Rd), None, dz

    def _weights_rnn(self, dzs):
        res = self._common(self.b.cat(dzs, 0))
        return self._finish(res, res["dbw"])

    def _step_gru(self, t, dh, _):
        b = self.b
        s = {k: v[t] for k, v in self.gsteps.items()}
        one = b.c(1.0)
        dpn = b.mul(b.mul(dh, b.sub(one, s["Z"])), s["DN"])
        dpz = b.mul(b.mul(dh, b.sub(s["Hp"], s["N"])), s["DZ"])
        dhp = b.mul(dh, s["Z"])
        if self.attrs["linear_before_reset"]:
            dpr = b.mul(b.mul(dpn, s["HR"]), s["DR"])
            dhr = b.mul(dpn, s["Rg"])
            a3 = b.cat([dpz, dpr, dhr], 2)
            return b.add(b.mm(a3, self.Rd), dhp), None, (a3, dpn)
        drh = b.mm(dpn, self.Rh)
        dpr = b.mul(b.mul(drh, s["Hp"]), s["DR"])
        zr = b.cat([dpz, dpr], 2)
        gh = b.add(b.add(b.mm(zr, self.Rzr), b.mul(drh, s["Rg"])), dhp)
        return gh, None, (b.cat([zr, dpn], 2), None)

    def _weights_gru(self, saved):
        b, H = self.b, self.hid
        if self.attrs["linear_before_reset"]:
            A = b.cat([s[0] for s in saved], 0)                         # (T, B, 3H): dzr, dhr
            dPN = b.cat([s[1] for s in saved], 0)
            dZ = b.cat([b.sl(A, 0, 2 * H, 2), dPN], 2)
            res = self._common(dZ, b.wgrad(A, self.Hp, 3 * H, H))
            return self._finish(res, b.sum(A, (0, 1)))
        dZ = b.cat([s[0] for s in saved], 0)
        dzr, dpn = b.sl(dZ, 0, 2 * H, 2), b.sl(dZ, 2 * H, 3 * H, 2)
        res = self._common(dZ, b.cat([b.wgrad(dzr, self.Hp, 2 * H, H), b.wgrad(dpn, self.RH, H, H)], 0))
        return self._finish(res, res["dbw"])      # d Rb_h = d Wb_h: both add to the n gate

    def _step_lstm(self, t, dh, dcs):
        b, s = self.b, {k: v[t] for k, v in self.steps.items()}
        dzo = b.mul(b.mul(dh, s["HC"]), s["DO"])
        dc = b.add(dcs, b.mul(b.mul(dh, s["O"]), s["DHC"]))
        if self.Pd is not None:
            dc = b.add(dc, b.mul(dzo, self.po))
        di, dg, df = b.mul(dc, s["G"]), b.mul(dc, s["I"]), b.mul(dc, s["CP"])
        dcp = b.mul(dc, s["F"])
        if self.attrs["input_forget"]:      # f = 1 - i
            di, dzf = b.sub(di, df), self.zeros
        else:
            dzf = b.mul(df, s["DF"])
        dzi, dzg = b.mul(di, s["DI"]), b.mul(dg, s["DG"])
        if self.Pd is not None:
            dcp = b.add(dcp, b.mul(dzi, self.pi))
            if not self.attrs["input_forget"]:
                dcp = b.add(dcp, b.mul(dzf, self.pf))
        dz = b.cat([dzi, dzo, dzf, dzg], 2)
        return b.mm(dz, self.Rd), dcp, dz

    def _weights_lstm(self, dzs):
        b, H = self.b, self.hid
        dZ = b.cat(dzs, 0)
        res = self._common(dZ)
        if self.Pd is not None:
            dzi, dzo, dzf = (b.sl(dZ, k * H, (k + 1) * H, 2) for k in range(3))
            res["P"] = b.cat([b.sum(b.mul(dzi, self.CP), (0, 1)), b.sum(b.mul(dzo, self.CN), (0, 1)),
                              b.sum(b.mul(dzf, self.CP), (0, 1))], 0)
        return self._finish(res, res["dbw"])


def _f32():
    from .. import dtype as dt
    return dt.float32


def _i64():
    from .. import dtype as dt
    return dt.int64
