"""Gradient rules of the normalizations (``normalization.py``).

Closed forms (one pass of reductions each) instead of differentiating the decompositions: with
xhat = (x - mean) * inv over the normalized axes and g = dL/dxhat,
    dx = inv * (g - mean(g) - xhat * mean(g * xhat))      (rms_norm: without mean(g)).
Statistics are recomputed in the same wider dtype the forward uses, unless the forward already
returns them (batch_norm_training's batch statistics, layer_norm's mean and inv_std_dev).
"""
from __future__ import annotations

import numpy as np

from ..dtype import DType
from ..types import is_static_dim
from .shapes import normalize_axis


def _compute_dtype(d: DType) -> DType:
    """The dtype the forward computes statistics in (float32 for 16-bit floats)."""
    from .normalization import _compute_dtype as compute   # normalization.py imports this module
    return compute(d)


# ---- helpers ------------------------------------------------------------------------------
def _gcast(ctx, v, d: DType):
    return v if v.dtype is d else ctx.op("cast", [v], {"to": d})


def _gk(ctx, value, d: DType):
    return ctx.const(value, dtype=d)


def _count(ctx, x, axes, d: DType):
    """How many elements the reduction over ``axes`` of ``x`` covers, as a scalar of dtype d."""
    dims = [x.shape[a] for a in axes]
    if all(is_static_dim(v) for v in dims):
        return _gk(ctx, int(np.prod(dims)), d)
    dims_v = ctx.op("gather", [ctx.op("shape", [x]), ctx.i64(list(axes))])
    n = ctx.op("reduce_prod", [dims_v], {"keepdims": 0})
    return ctx.op("cast", [n], {"to": d})


def _gmean(ctx, v, axes):
    return ctx.op("reduce_mean", [v, ctx.i64(list(axes))], {"keepdims": 1})


def _gsum(ctx, v, axes, keepdims=1):
    return ctx.op("reduce_sum", [v, ctx.i64(list(axes))], {"keepdims": keepdims})


def _ginv_std(ctx, var, eps: float):
    one = _gk(ctx, 1, var.dtype)
    return ctx.op("div", [one, ctx.op("sqrt", [ctx.op("add", [var, _gk(ctx, eps, var.dtype)])])])


def _grad_moments(ctx, xs, axes, eps: float):
    """(mean, inv_std) over ``axes`` with keepdims, recomputed in the backward graph."""
    mean = _gmean(ctx, xs, axes)
    d = ctx.op("sub", [xs, mean])
    return mean, _ginv_std(ctx, _gmean(ctx, ctx.op("mul", [d, d]), axes), eps)


def _normalized_backward(ctx, g, xhat, inv, axes, centered: bool = True):
    """dL/dx from g = dL/dxhat, for xhat = (x - mean) * inv (or x * inv when not centered)."""
    t = ctx.op("mul", [xhat, _gmean(ctx, ctx.op("mul", [g, xhat]), axes)])
    if centered:
        t = ctx.op("add", [t, _gmean(ctx, g, axes)])
    return ctx.op("mul", [inv, ctx.op("sub", [g, t])])


def _pc(ctx, p, rank: int):
    """A (C,) parameter shaped (C, 1, ...) to broadcast against (N, C, D1, ...)."""
    if p.shape is not None and len(p.shape) == 1 and rank > 2:
        return ctx.op("reshape", [p, ctx.i64([-1] + [1] * (rank - 2))])
    return p


def _param_grad(ctx, v, axes, p):
    """``v`` summed over ``axes`` into the shape and dtype of parameter ``p`` (None when absent)."""
    if p is None:
        return None
    return _gcast(ctx, ctx.reshape_like(_gsum(ctx, v, axes, keepdims=0), p), p.dtype)


# ---- batch_norm ---------------------------------------------------------------------------
def batch_norm_grad(ctx):
    x, scale, bias, mean, var = ctx.inputs
    cd = _compute_dtype(x.dtype)
    rank = len(x.shape)
    full = scale.shape is not None and len(scale.shape) > 1
    axes = [0] if full else [0] + list(range(2, rank))
    s, m, v = (_pc(ctx, _gcast(ctx, p, cd), rank) for p in (scale, mean, var))
    inv = _ginv_std(ctx, v, ctx.attrs["epsilon"])
    a = ctx.op("mul", [s, inv])
    dy = _gcast(ctx, ctx.dy(), cd)
    d = ctx.op("sub", [_gcast(ctx, x, cd), m])
    dx = _gcast(ctx, ctx.op("mul", [dy, a]), x.dtype)
    dyd = ctx.op("mul", [dy, d])
    dscale = ctx.op("mul", [dyd, inv])
    dmean = ctx.op("neg", [ctx.op("mul", [dy, a])])
    # d inv/d var = -inv^3 / 2
    dvar = ctx.op("mul", [dyd, ctx.op("mul", [s, ctx.op("mul", [_gk(ctx, -0.5, cd), ctx.op(
        "mul", [inv, ctx.op("mul", [inv, inv])])])])])
    return [dx, _param_grad(ctx, dscale, axes, scale), _param_grad(ctx, dy, axes, bias),
            _param_grad(ctx, dmean, axes, mean), _param_grad(ctx, dvar, axes, var)]


# ---- batch_norm_training ------------------------------------------------------------------
def batch_norm_training_grad(ctx):
    """Closed form through the batch statistics; gradients reaching the running and batch
    statistics (outputs 1-4) join through d mean / dx = 1/M and d var / dx = 2 (x - mean) / M."""
    x, scale, bias, in_mean, in_var = ctx.inputs
    cd = _compute_dtype(x.dtype)
    rank = len(x.shape)
    axes = [0] + list(range(2, rank))
    xs = _gcast(ctx, x, cd)
    if len(ctx.outputs) >= 5 and in_mean.dtype is cd:
        # the forward's own batch statistics (outputs 3 and 4)
        mean, var = _pc(ctx, ctx.outputs[3], rank), _pc(ctx, ctx.outputs[4], rank)
        inv = _ginv_std(ctx, var, ctx.attrs["epsilon"])
    else:
        mean, inv = _grad_moments(ctx, xs, axes, ctx.attrs["epsilon"])
    d = ctx.op("sub", [xs, mean])
    xhat = ctx.op("mul", [d, inv])
    s = _pc(ctx, _gcast(ctx, scale, cd), rank)
    dy = _gcast(ctx, ctx.dy(0), cd)
    sdy = _gsum(ctx, dy, axes)
    sdyx = _gsum(ctx, ctx.op("mul", [dy, xhat]), axes)
    cnt = _count(ctx, x, axes, cd)
    # dx = s * inv / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))
    inner = ctx.op("sub", [ctx.op("sub", [ctx.op("mul", [dy, cnt]), sdy]), ctx.op("mul", [xhat, sdyx])])
    dx = ctx.op("mul", [ctx.op("div", [ctx.op("mul", [s, inv]), cnt]), inner])
    mom = ctx.attrs["momentum"]
    dmean = dvar = None
    grads_in = [None, None]
    for i, (stat, blend) in enumerate(((1, True), (2, True), (3, False), (4, False))):
        if stat >= len(ctx.outputs) or not ctx.has_dy(stat):
            continue
        g = _gcast(ctx, ctx.dy(stat), cd)
        if blend:  # running = input * momentum + batch * (1 - momentum)
            grads_in[stat - 1] = _gcast(ctx, ctx.op("mul", [g, _gk(ctx, mom, cd)]), in_mean.dtype)
            g = ctx.op("mul", [g, _gk(ctx, 1 - mom, cd)])
        if stat in (1, 3):
            dmean = g if dmean is None else ctx.op("add", [dmean, g])
        else:
            dvar = g if dvar is None else ctx.op("add", [dvar, g])
    if dmean is not None or dvar is not None:
        extra = None
        if dmean is not None:
            extra = _pc(ctx, dmean, rank)
        if dvar is not None:
            t = ctx.op("mul", [ctx.op("mul", [_pc(ctx, dvar, rank), _gk(ctx, 2, cd)]), d])
            extra = t if extra is None else ctx.op("add", [extra, t])
        dx = ctx.op("add", [dx, ctx.op("div", [extra, cnt])])
    return [_gcast(ctx, dx, x.dtype), _gcast(ctx, ctx.reshape_like(sdyx, scale), scale.dtype),
            _gcast(ctx, ctx.reshape_like(sdy, bias), bias.dtype)] + grads_in


# ---- instance_norm ------------------------------------------------------------------------
def instance_norm_grad(ctx):
    x, scale, bias = ctx.inputs
    cd = _compute_dtype(x.dtype)
    rank = len(x.shape)
    axes = list(range(2, rank))
    xs = _gcast(ctx, x, cd)
    mean, inv = _grad_moments(ctx, xs, axes, ctx.attrs["epsilon"])
    xhat = ctx.op("mul", [ctx.op("sub", [xs, mean]), inv])
    dy = _gcast(ctx, ctx.dy(), cd)
    g = ctx.op("mul", [dy, _pc(ctx, _gcast(ctx, scale, cd), rank)])
    dx = _normalized_backward(ctx, g, xhat, inv, axes)
    pa = [0] + axes
    return [_gcast(ctx, dx, x.dtype), _param_grad(ctx, ctx.op("mul", [dy, xhat]), pa, scale),
            _param_grad(ctx, dy, pa, bias)]


# ---- group_norm ---------------------------------------------------------------------------
def group_norm_grad(ctx):
    x, scale, bias = ctx.inputs
    sd = ctx.attrs["stash_type"]
    rank = len(x.shape)
    grouped = ctx.op("reshape", [_gcast(ctx, x, sd), ctx.i64([0, ctx.attrs["num_groups"], -1])])
    mean, inv = _grad_moments(ctx, grouped, [2], ctx.attrs["epsilon"])
    xhat_g = ctx.op("mul", [ctx.op("sub", [grouped, mean]), inv])
    xhat = _gcast(ctx, ctx.reshape_like(xhat_g, x), x.dtype)   # y = xhat * scale + bias, in x's dtype
    dy = ctx.dy()
    g = ctx.op("mul", [dy, _pc(ctx, scale, rank)])
    g = ctx.op("reshape", [_gcast(ctx, g, sd), ctx.i64([0, ctx.attrs["num_groups"], -1])])
    dx = ctx.reshape_like(_normalized_backward(ctx, g, xhat_g, inv, [2]), x)
    pa = [0] + list(range(2, rank))
    return [_gcast(ctx, dx, x.dtype), _param_grad(ctx, ctx.op("mul", [dy, xhat]), pa, scale),
            _param_grad(ctx, dy, pa, bias)]


# ---- layer_norm and rms_norm --------------------------------------------------------------
def layer_norm_grad(ctx):
    """Uses the forward's mean and inv_std_dev outputs when it has them; gradients reaching those
    outputs join through d mean / dx = 1/D and d inv / dx = -inv^3 (x - mean) / D."""
    x, scale = ctx.inputs[0], ctx.inputs[1]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    sd = ctx.attrs["stash_type"]
    rank = len(x.shape)
    axes = list(range(normalize_axis(ctx.attrs["axis"], rank), rank))
    xs = _gcast(ctx, x, sd)
    if len(ctx.outputs) == 3:
        mean, inv = ctx.outputs[1], ctx.outputs[2]
    else:
        mean, inv = _grad_moments(ctx, xs, axes, ctx.attrs["epsilon"])
        if len(ctx.outputs) == 2:
            mean = ctx.outputs[1]
    xhat = ctx.op("mul", [ctx.op("sub", [xs, mean]), inv])
    xhat_x = _gcast(ctx, xhat, x.dtype)
    dy = ctx.dy(0)
    g = _gcast(ctx, ctx.op("mul", [dy, scale]), sd)
    dx = _normalized_backward(ctx, g, xhat, inv, axes)
    dmean = ctx.dy(1) if len(ctx.outputs) > 1 and ctx.has_dy(1) else None
    dinv = ctx.dy(2) if len(ctx.outputs) > 2 and ctx.has_dy(2) else None
    if dmean is not None or dinv is not None:
        extra = dmean
        if dinv is not None:
            t = ctx.op("neg", [ctx.op("mul", [ctx.op("mul", [dinv, ctx.op("mul", [inv, inv])]), xhat])])
            extra = t if extra is None else ctx.op("add", [extra, t])
        dx = ctx.op("add", [dx, ctx.op("div", [extra, _count(ctx, x, axes, sd)])])
    dscale = ctx.sum_to(ctx.op("mul", [dy, xhat_x]), scale)
    return [_gcast(ctx, dx, x.dtype), dscale, ctx.sum_to(dy, bias)][:len(ctx.inputs)]


def rms_norm_grad(ctx):
    x, scale = ctx.inputs
    sd = ctx.attrs["stash_type"]
    rank = len(x.shape)
    axes = list(range(normalize_axis(ctx.attrs["axis"], rank), rank))
    xs = _gcast(ctx, x, sd)
    inv = _ginv_std(ctx, _gmean(ctx, ctx.op("mul", [xs, xs]), axes), ctx.attrs["epsilon"])
    xhat = ctx.op("mul", [xs, inv])
    dy = ctx.dy()
    g = _gcast(ctx, ctx.op("mul", [dy, scale]), sd)
    dx = _normalized_backward(ctx, g, xhat, inv, axes, centered=False)
    dscale = ctx.sum_to(ctx.op("mul", [dy, _gcast(ctx, xhat, scale.dtype)]), scale)
    return [_gcast(ctx, dx, x.dtype), dscale]


# ---- lrn ----------------------------------------------------------------------------------
def _channel_window_sum(ctx, v, before: int, after: int):
    """sum of v over channels [c - before, c + after] (zero outside): ``size`` shifted slices of
    v zero-padded along axis 1, added (one elementwise chain a backend fuses)."""
    c = v.shape[1]
    if not is_static_dim(c):
        raise ctx.fail("the gradient of lrn needs a static channel count", actual=str(v.type))
    vp = ctx.op("pad", [v, ctx.i64([before, after]), None, ctx.i64([1])]) if before or after else v
    total = None
    for t in range(before + after + 1):
        part = ctx.op("slice", [vp, ctx.i64([t]), ctx.i64([t + c]), ctx.i64([1])]) if before or after else vp
        total = part if total is None else ctx.op("add", [total, part])
    return total


def lrn_grad(ctx):
    """y = x * D^-beta with D = bias + alpha/size * S, S the window sum of x^2, so
    dx = dy * D^-beta - 2 alpha beta / size * x * W^T(dy * x * D^(-beta-1)), where the
    transposed window W^T swaps the number of channels before and after."""
    x = ctx.inputs[0]
    cd = _compute_dtype(x.dtype)
    size, alpha, beta = ctx.attrs["size"], ctx.attrs["alpha"], ctx.attrs["beta"]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    xs = _gcast(ctx, x, cd)
    sq = _channel_window_sum(ctx, ctx.op("mul", [xs, xs]), lo, hi)
    den = ctx.op("add", [_gk(ctx, ctx.attrs["bias"], cd), ctx.op("mul", [_gk(ctx, alpha / size, cd), sq])])
    dpow = ctx.op("pow", [den, _gk(ctx, -beta, cd)])                # D^-beta
    dy = _gcast(ctx, ctx.dy(), cd)
    t = ctx.op("div", [ctx.op("mul", [ctx.op("mul", [dy, xs]), dpow]), den])
    back = _channel_window_sum(ctx, t, hi, lo)
    dx = ctx.op("sub", [ctx.op("mul", [dy, dpow]),
                        ctx.op("mul", [_gk(ctx, 2 * alpha * beta / size, cd), ctx.op("mul", [xs, back])])])
    return [_gcast(ctx, dx, x.dtype)]
