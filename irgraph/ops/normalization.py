"""Normalizations: batch (inference and training), instance, group, layer, RMS, and LRN.

They are composites: each has a numpy reference (the oracle) and, except LRN, a
decomposition into reductions and elementwise ops for backends without a fused kernel.
Statistics are computed in a wider "stash" dtype (float32 for 16-bit floats, or the
``stash_type`` attribute where ONNX has one) and the normalized value is cast back before the
affine step, as ONNX's function bodies do.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..dtype import DType
from ..types import is_static_dim
from .declare import FLOAT_TYPES
from .registry import Attr, OpDef, register
from .shapes import broadcast_shapes, normalize_axis, out

_LOW_FLOATS = (dt.float16, dt.bfloat16)


def _compute_dtype(d: DType) -> DType:
    return dt.float32 if d in _LOW_FLOATS else d


# ---- checks shared by the inferences ----------------------------------------------------------
def _float_input(ctx, i: int, what: str):
    t = ctx.type(i)
    if t is None:
        ctx.fail(f"missing {what}", input=i)
    if t.dtype not in FLOAT_TYPES:
        ctx.fail(f"unsupported dtype for {what}", input=i,
                 expected="one of " + ", ".join(d.name for d in FLOAT_TYPES), actual=t.dtype.name)
    return t


def _same_dtype_as(ctx, i: int, ref: DType, what: str):
    t = ctx.type(i)
    if t is not None and t.dtype is not ref:
        ctx.fail(f"{what} must have the input's dtype", input=i, expected=ref.name, actual=t.dtype.name)


def _channel_param(ctx, i: int, channels, what: str, allow_full=None):
    """Input ``i`` is a (C,) vector (or, when ``allow_full`` is given, of that exact shape)."""
    t = ctx.type(i)
    if t is None or t.shape is None:
        return
    if allow_full is not None and len(t.shape) == len(allow_full) and len(t.shape) > 1:
        for got, want in zip(t.shape, allow_full):
            if is_static_dim(got) and is_static_dim(want) and got != want:
                ctx.fail(f"{what} must have shape (C,) or {tuple(allow_full)}", input=i,
                         expected=tuple(allow_full), actual=t.shape)
        return
    if len(t.shape) != 1:
        ctx.fail(f"{what} must be a vector of one value per channel", input=i,
                 expected=f"({channels},)", actual=t.shape)
    if is_static_dim(t.shape[0]) and is_static_dim(channels) and t.shape[0] != channels:
        ctx.fail(f"{what} must hold one value per channel", input=i,
                 expected=f"({channels},)", actual=t.shape)


def _check_scale_bias(ctx, x):
    """Inputs 1 and 2 are a per-channel (axis 1) scale and bias of the input's dtype."""
    c = x.shape[1] if x.shape is not None else None
    for i, what in ((1, "scale"), (2, "bias")):
        _same_dtype_as(ctx, i, x.dtype, what)
        _channel_param(ctx, i, c, what)


def _broadcasts_onto(ctx, i: int, shape, what: str):
    """Input ``i`` broadcasts onto ``shape`` without growing it (unidirectional broadcast)."""
    t = ctx.type(i)
    if t is None or t.shape is None or shape is None:
        return
    if len(t.shape) > len(shape):
        ctx.fail(f"{what} has more dims than the input", input=i, expected=f"broadcastable to {shape}",
                 actual=t.shape)
    b = broadcast_shapes(shape, t.shape, ctx=ctx)
    for got, want in zip(b, shape):
        if is_static_dim(got) and is_static_dim(want) and got != want:
            ctx.fail(f"{what} does not broadcast onto the input", input=i,
                     expected=f"broadcastable to {shape}", actual=t.shape)


def _rank_at_least(ctx, t, n: int):
    if t.shape is not None and len(t.shape) < n:
        ctx.fail(f"input must have rank >= {n} (N, C, ...)", input=0, expected=f"rank >= {n}",
                 actual=len(t.shape))


def _per_channel(p: np.ndarray, rank: int) -> np.ndarray:
    """A (C,) parameter shaped to broadcast against (N, C, D1, ...); fuller shapes pass through."""
    return p.reshape((-1,) + (1,) * (rank - 2)) if p.ndim == 1 else p


# ---- decomposition helpers -------------------------------------------------------------------
def _k(g, value, d: DType, name: str = "c"):
    return g.add_const(np.array(value, dtype=d.np), name)


def _cast(g, v, d: DType):
    return v if v.dtype is d else g.op("cast", [v], {"to": d})


def _per_channel_value(g, p, rank: int):
    if p.shape is not None and len(p.shape) == 1 and rank > 2:
        return g.op("reshape", [p, g.add_const(np.array([-1] + [1] * (rank - 2), np.int64), "shape")])
    return p


def _moments(g, x, axes):
    """(mean, centred x, biased variance) over ``axes`` (an int64 const Value), keepdims."""
    mean = g.op("reduce_mean", [x, axes], {"keepdims": 1})
    d = g.op("sub", [x, mean])
    var = g.op("reduce_mean", [g.op("mul", [d, d]), axes], {"keepdims": 1})
    return mean, d, var


def _inv_std(g, var, eps: float):
    return g.op("div", [_k(g, 1, var.dtype, "one"),
                        g.op("sqrt", [g.op("add", [var, _k(g, eps, var.dtype, "eps")])])])


def _shape_of(g, x):
    """x's shape as an int64 Value: a constant when static, so reshapes keep static dims."""
    if x.type.is_static:
        return g.add_const(np.array(x.shape, dtype=np.int64), "shape")
    return g.op("shape", [x])


def _axes(g, axes):
    return g.add_const(np.array(list(axes), dtype=np.int64), "axes")


# ---- gradient helpers -------------------------------------------------------------------------
# Closed forms (one pass of reductions each) instead of differentiating the decompositions:
# with xhat = (x - mean) * inv over the normalized axes and g = dL/dxhat,
#     dx = inv * (g - mean(g) - xhat * mean(g * xhat))      (rms_norm: without mean(g))
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


# ---- batch_norm (inference) ----------------------------------------------------------------
def _bn_infer(ctx):
    x = _float_input(ctx, 0, "input")
    _rank_at_least(ctx, x, 2)
    c = x.shape[1] if x.shape is not None else None
    full = tuple(x.shape[1:]) if x.shape is not None else None
    for i, what in enumerate(("scale", "bias", "mean", "var"), start=1):
        _float_input(ctx, i, what)
        _channel_param(ctx, i, c, what, allow_full=full)
    return [out(x.shape, x.dtype)]


def _bn_ref(ins, a):
    x, scale, bias, mean, var = ins
    cd = _compute_dtype(DType.from_numpy(x.dtype)).np
    s, b, m, v = (_per_channel(p.astype(cd), x.ndim) for p in (scale, bias, mean, var))
    y = (x.astype(cd) - m) / np.sqrt(v + cd.type(a["epsilon"])) * s + b
    return y.astype(x.dtype)


def _bn_decompose(g, inputs, attrs):
    x, scale, bias, mean, var = inputs
    cd = _compute_dtype(x.dtype)
    scale, bias, mean, var = (_cast(g, p, cd) for p in (scale, bias, mean, var))
    # y = x * a + b with a = scale / sqrt(var + eps), b = bias - mean * a
    a = g.op("mul", [scale, _inv_std(g, var, attrs["epsilon"])])
    b = g.op("sub", [bias, g.op("mul", [mean, a])])
    rank = len(x.shape)
    a, b = _per_channel_value(g, a, rank), _per_channel_value(g, b, rank)
    return [_cast(g, g.op("add", [g.op("mul", [_cast(g, x, cd), a]), b]), x.dtype)]


def _bn_grad(ctx):
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


register(OpDef(
    "batch_norm", infer=_bn_infer, reference=_bn_ref, inputs=(5, 5), kind="composite",
    attrs={"epsilon": Attr("float", 1e-5)}, differentiable=True, decompose=_bn_decompose, grad=_bn_grad,
    doc="inference batch norm: (x - mean) / sqrt(var + eps) * scale + bias per channel (axis 1); "
        "parameters are (C,) or, for the per-activation form, x.shape[1:]",
))


# ---- batch_norm_training --------------------------------------------------------------------
def _bn_train_infer(ctx):
    x = _float_input(ctx, 0, "input")
    _rank_at_least(ctx, x, 2)
    c = x.shape[1] if x.shape is not None else ctx.fresh("C")
    for i, what in enumerate(("scale", "bias", "input_mean", "input_var"), start=1):
        _float_input(ctx, i, what)
        _channel_param(ctx, i, c, what)
    _same_dtype_as(ctx, 4, ctx.type(3).dtype, "input_var (as input_mean)")
    n = ctx.num_outputs or 3
    if not 1 <= n <= 5:
        ctx.fail("batch_norm_training has 1 to 5 outputs (y, running_mean, running_var, "
                 "batch_mean, batch_var)", expected="1..5", actual=n)
    stat = out((c,), ctx.type(3).dtype)
    return [out(x.shape, x.dtype)] + [stat] * (n - 1)


def _bn_train_ref(ins, a):
    x, scale, bias, in_mean, in_var = ins
    cd = _compute_dtype(DType.from_numpy(x.dtype)).np
    axes = (0,) + tuple(range(2, x.ndim))
    xc = x.astype(cd)
    mean = xc.mean(axis=axes)
    var = xc.var(axis=axes)  # biased (population) variance, as ONNX specifies
    y = _bn_ref([x, scale, bias, mean, var], a)
    mom = cd.type(a["momentum"])
    run_mean = in_mean.astype(cd) * mom + mean * (1 - mom)
    run_var = in_var.astype(cd) * mom + var * (1 - mom)
    sd = in_mean.dtype
    return y, run_mean.astype(sd), run_var.astype(sd), mean.astype(sd), var.astype(sd)


def _bn_train_decompose(g, inputs, attrs):
    x, scale, bias, in_mean, in_var = inputs
    cd = _compute_dtype(x.dtype)
    rank = len(x.shape)
    xc = _cast(g, x, cd)
    axes = _axes(g, [0] + list(range(2, rank)))
    mean_k, d, var_k = _moments(g, xc, axes)
    s = _per_channel_value(g, _cast(g, scale, cd), rank)
    b = _per_channel_value(g, _cast(g, bias, cd), rank)
    y = g.op("add", [g.op("mul", [g.op("mul", [d, _inv_std(g, var_k, attrs["epsilon"])]), s]), b])
    vec = g.add_const(np.array([-1], np.int64), "shape")
    mean = g.op("reshape", [mean_k, vec])
    var = g.op("reshape", [var_k, vec])
    mom, rest = _k(g, attrs["momentum"], cd, "momentum"), _k(g, 1 - attrs["momentum"], cd, "one_minus")

    def blend(old, new):
        return g.op("add", [g.op("mul", [_cast(g, old, cd), mom]), g.op("mul", [new, rest])])
    sd = in_mean.dtype
    outs = [_cast(g, y, x.dtype), _cast(g, blend(in_mean, mean), sd), _cast(g, blend(in_var, var), sd),
            _cast(g, mean, sd), _cast(g, var, sd)]
    return outs


def _bn_train_grad(ctx):
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


register(OpDef(
    "batch_norm_training", infer=_bn_train_infer, reference=_bn_train_ref, inputs=(5, 5),
    kind="composite",
    attrs={"epsilon": Attr("float", 1e-5), "momentum": Attr("float", 0.9)},
    differentiable=True, decompose=_bn_train_decompose, grad=_bn_train_grad,
    doc="training batch norm: normalizes with the batch's mean and biased variance; outputs "
        "y, running_mean = input_mean * momentum + batch_mean * (1 - momentum), running_var "
        "likewise, and optionally the batch mean and variance",
))


# ---- instance_norm ---------------------------------------------------------------------------
def _in_infer(ctx):
    x = _float_input(ctx, 0, "input")
    _rank_at_least(ctx, x, 3)
    _check_scale_bias(ctx, x)
    return [out(x.shape, x.dtype)]


def _in_ref(ins, a):
    x, scale, bias = ins
    cd = _compute_dtype(DType.from_numpy(x.dtype)).np
    xc = x.astype(cd)
    axes = tuple(range(2, x.ndim))
    mean = xc.mean(axis=axes, keepdims=True)
    var = xc.var(axis=axes, keepdims=True)
    y = (xc - mean) / np.sqrt(var + cd.type(a["epsilon"]))
    y = y * _per_channel(scale.astype(cd), x.ndim) + _per_channel(bias.astype(cd), x.ndim)
    return y.astype(x.dtype)


def _in_decompose(g, inputs, attrs):
    x, scale, bias = inputs
    cd = _compute_dtype(x.dtype)
    rank = len(x.shape)
    _, d, var = _moments(g, _cast(g, x, cd), _axes(g, range(2, rank)))
    y = g.op("mul", [d, _inv_std(g, var, attrs["epsilon"])])
    y = g.op("add", [g.op("mul", [y, _per_channel_value(g, _cast(g, scale, cd), rank)]),
                     _per_channel_value(g, _cast(g, bias, cd), rank)])
    return [_cast(g, y, x.dtype)]


def _in_grad(ctx):
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


register(OpDef(
    "instance_norm", infer=_in_infer, reference=_in_ref, inputs=(3, 3), kind="composite",
    attrs={"epsilon": Attr("float", 1e-5)}, differentiable=True, decompose=_in_decompose, grad=_in_grad,
    doc="normalize each (n, c) slice over its spatial dims, then scale and bias per channel",
))


# ---- group_norm ----------------------------------------------------------------------------
def _gn_infer(ctx):
    x = _float_input(ctx, 0, "input")
    _rank_at_least(ctx, x, 2)
    g = ctx.attrs["num_groups"]
    c = x.shape[1] if x.shape is not None else None
    if g < 1:
        ctx.fail("num_groups must be positive", expected=">= 1", actual=g)
    if c is not None and is_static_dim(c) and c % g:
        ctx.fail(f"{c} channels do not split into {g} groups", input=0,
                 expected=f"C divisible by {g}", actual=c)
    _check_scale_bias(ctx, x)
    return [out(x.shape, x.dtype)]


def _gn_ref(ins, a):
    x, scale, bias = ins
    sd = a["stash_type"].np
    n, c = x.shape[:2]
    xg = x.astype(sd).reshape((n, a["num_groups"], -1))
    mean = xg.mean(axis=2, keepdims=True)
    var = xg.var(axis=2, keepdims=True)
    y = ((xg - mean) / np.sqrt(var + sd.type(a["epsilon"]))).reshape(x.shape).astype(x.dtype)
    return (y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)).astype(x.dtype)


def _gn_decompose(g, inputs, attrs):
    x, scale, bias = inputs
    rank = len(x.shape)
    xs = _cast(g, x, attrs["stash_type"])
    grouped = g.op("reshape", [xs, g.add_const(np.array([0, attrs["num_groups"], -1], np.int64), "shape")])
    _, d, var = _moments(g, grouped, _axes(g, [2]))
    y = g.op("reshape", [g.op("mul", [d, _inv_std(g, var, attrs["epsilon"])]), _shape_of(g, x)])
    y = _cast(g, y, x.dtype)
    return [g.op("add", [g.op("mul", [y, _per_channel_value(g, scale, rank)]),
                         _per_channel_value(g, bias, rank)])]


def _gn_grad(ctx):
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


register(OpDef(
    "group_norm", infer=_gn_infer, reference=_gn_ref, inputs=(3, 3), kind="composite",
    attrs={"num_groups": Attr("int"), "epsilon": Attr("float", 1e-5),
           "stash_type": Attr("dtype", dt.float32, "dtype the statistics are computed in")},
    differentiable=True, decompose=_gn_decompose, grad=_gn_grad,
    doc="split channels into num_groups groups, normalize each (n, group) over its channels and "
        "spatial dims, then scale and bias per channel (C,)",
))


# ---- layer_norm and rms_norm --------------------------------------------------------------------
def _norm_axis(ctx, x):
    return None if x.shape is None else normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)


def _ln_infer(ctx):
    x = _float_input(ctx, 0, "input")
    axis = _norm_axis(ctx, x)
    for i, what in ((1, "scale"), (2, "bias")):
        _same_dtype_as(ctx, i, x.dtype, what)
        _broadcasts_onto(ctx, i, None if axis is None else x.shape[axis:], what)
    n = ctx.num_outputs or 1
    if not 1 <= n <= 3:
        ctx.fail("layer_norm has 1 to 3 outputs (y, mean, inv_std_dev)", expected="1..3", actual=n)
    stat_shape = None if axis is None else tuple(x.shape[:axis]) + (1,) * (len(x.shape) - axis)
    stat = out(stat_shape, ctx.attrs["stash_type"])
    return [out(x.shape, x.dtype)] + [stat] * (n - 1)


def _ln_ref(ins, a):
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    sd = a["stash_type"].np
    axes = tuple(range(normalize_axis(a["axis"], x.ndim), x.ndim))
    xs = x.astype(sd)
    mean = xs.mean(axis=axes, keepdims=True)
    inv = (1 / np.sqrt(xs.var(axis=axes, keepdims=True) + sd.type(a["epsilon"]))).astype(sd)
    y = ((xs - mean) * inv).astype(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype), mean.astype(sd), inv


def _ln_decompose(g, inputs, attrs):
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    rank = len(x.shape)
    axes = _axes(g, range(normalize_axis(attrs["axis"], rank), rank))
    mean, d, var = _moments(g, _cast(g, x, attrs["stash_type"]), axes)
    inv = _inv_std(g, var, attrs["epsilon"])
    y = g.op("mul", [_cast(g, g.op("mul", [d, inv]), x.dtype), scale])
    if bias is not None:
        y = g.op("add", [y, bias])
    return [y, mean, inv]


def _ln_grad(ctx):
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


register(OpDef(
    "layer_norm", infer=_ln_infer, reference=_ln_ref, inputs=(2, 3), kind="composite",
    attrs={"axis": Attr("int", -1, "first normalized axis; all axes from it on are normalized"),
           "epsilon": Attr("float", 1e-5),
           "stash_type": Attr("dtype", dt.float32, "dtype of the statistics and of outputs 1, 2")},
    differentiable=True, decompose=_ln_decompose, grad=_ln_grad,
    doc="(x - mean) / sqrt(var + eps) * scale + bias over axes [axis, rank); optional outputs "
        "mean and 1/sqrt(var + eps), shaped x.shape[:axis] + [1] * (rank - axis)",
))


def _rms_infer(ctx):
    x = _float_input(ctx, 0, "input")
    s = _float_input(ctx, 1, "scale")
    axis = _norm_axis(ctx, x)
    _broadcasts_onto(ctx, 1, None if axis is None else x.shape[axis:], "scale")
    return [out(x.shape, s.dtype)]


def _rms_ref(ins, a):
    x, scale = ins
    sd = a["stash_type"].np
    axes = tuple(range(normalize_axis(a["axis"], x.ndim), x.ndim))
    xs = x.astype(sd)
    rms = np.sqrt(np.mean(xs * xs, axis=axes, keepdims=True) + sd.type(a["epsilon"]))
    return ((xs / rms).astype(scale.dtype) * scale).astype(scale.dtype)


def _rms_decompose(g, inputs, attrs):
    x, scale = inputs
    rank = len(x.shape)
    xs = _cast(g, x, attrs["stash_type"])
    axes = _axes(g, range(normalize_axis(attrs["axis"], rank), rank))
    ms = g.op("reduce_mean", [g.op("mul", [xs, xs]), axes], {"keepdims": 1})
    y = g.op("mul", [xs, _inv_std(g, ms, attrs["epsilon"])])
    return [g.op("mul", [_cast(g, y, scale.dtype), scale])]


def _rms_grad(ctx):
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


register(OpDef(
    "rms_norm", infer=_rms_infer, reference=_rms_ref, inputs=(2, 2), kind="composite",
    attrs={"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5),
           "stash_type": Attr("dtype", dt.float32)},
    differentiable=True, decompose=_rms_decompose, grad=_rms_grad,
    doc="x / sqrt(mean(x^2) + eps) * scale over axes [axis, rank); the output has scale's dtype",
))


# ---- lrn -------------------------------------------------------------------------------------
def _lrn_infer(ctx):
    x = _float_input(ctx, 0, "input")
    _rank_at_least(ctx, x, 2)
    if ctx.attrs["size"] < 1:
        ctx.fail("size must be positive", expected=">= 1", actual=ctx.attrs["size"])
    return [out(x.shape, x.dtype)]


def _lrn_ref(ins, a):
    x = ins[0]
    cd = _compute_dtype(DType.from_numpy(x.dtype)).np
    size = a["size"]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = x.astype(cd) ** 2
    pad = [(0, 0)] * x.ndim
    pad[1] = (lo, hi)
    # sum of squares over the channel window [c - lo, c + hi], zero outside the tensor
    window = np.lib.stride_tricks.sliding_window_view(np.pad(sq, pad), size, axis=1).sum(axis=-1)
    denom = (cd.type(a["bias"]) + cd.type(a["alpha"] / size) * window) ** cd.type(a["beta"])
    return (x.astype(cd) / denom).astype(x.dtype)


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


def _lrn_grad(ctx):
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


register(OpDef(
    "lrn", infer=_lrn_infer, reference=_lrn_ref, kind="other",
    attrs={"size": Attr("int"), "alpha": Attr("float", 1e-4), "beta": Attr("float", 0.75),
           "bias": Attr("float", 1.0)},
    differentiable=True, grad=_lrn_grad,
    doc="local response normalization across channels: x / (bias + alpha / size * "
        "sum of x^2 over a window of ``size`` channels) ** beta",
))
