"""Normalizations: batch (inference and training), instance, group, layer, RMS, and LRN.

They are composites: each has a numpy reference (the oracle) and, except LRN, a
decomposition into reductions and elementwise ops for backends without a fused kernel.
Statistics are computed in a wider "stash" dtype (float32 for 16-bit floats, or the
``stash_type`` attribute where ONNX has one) and the normalized value is cast back before the
affine step, as ONNX's function bodies do. The gradient rules are in ``normalization_grad.py``.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..dtype import DType
from ..types import is_static_dim
from .declare import FLOAT_TYPES
from .normalization_grad import (batch_norm_grad, batch_norm_training_grad, group_norm_grad,
                                 instance_norm_grad, layer_norm_grad, lrn_grad, rms_norm_grad)
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


register(OpDef(
    "batch_norm", infer=_bn_infer, reference=_bn_ref, inputs=(5, 5), kind="composite",
    attrs={"epsilon": Attr("float", 1e-5)}, differentiable=True, decompose=_bn_decompose,
    grad=batch_norm_grad,
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


register(OpDef(
    "batch_norm_training", infer=_bn_train_infer, reference=_bn_train_ref, inputs=(5, 5),
    kind="composite",
    attrs={"epsilon": Attr("float", 1e-5), "momentum": Attr("float", 0.9)},
    differentiable=True, decompose=_bn_train_decompose, grad=batch_norm_training_grad,
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


register(OpDef(
    "instance_norm", infer=_in_infer, reference=_in_ref, inputs=(3, 3), kind="composite",
    attrs={"epsilon": Attr("float", 1e-5)}, differentiable=True, decompose=_in_decompose,
    grad=instance_norm_grad,
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


register(OpDef(
    "group_norm", infer=_gn_infer, reference=_gn_ref, inputs=(3, 3), kind="composite",
    attrs={"num_groups": Attr("int"), "epsilon": Attr("float", 1e-5),
           "stash_type": Attr("dtype", dt.float32, "dtype the statistics are computed in")},
    differentiable=True, decompose=_gn_decompose, grad=group_norm_grad,
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


register(OpDef(
    "layer_norm", infer=_ln_infer, reference=_ln_ref, inputs=(2, 3), kind="composite",
    attrs={"axis": Attr("int", -1, "first normalized axis; all axes from it on are normalized"),
           "epsilon": Attr("float", 1e-5),
           "stash_type": Attr("dtype", dt.float32, "dtype of the statistics and of outputs 1, 2")},
    differentiable=True, decompose=_ln_decompose, grad=layer_norm_grad,
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


register(OpDef(
    "rms_norm", infer=_rms_infer, reference=_rms_ref, inputs=(2, 2), kind="composite",
    attrs={"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5),
           "stash_type": Attr("dtype", dt.float32)},
    differentiable=True, decompose=_rms_decompose, grad=rms_norm_grad,
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


register(OpDef(
    "lrn", infer=_lrn_infer, reference=_lrn_ref, kind="other",
    attrs={"size": Attr("int"), "alpha": Attr("float", 1e-4), "beta": Attr("float", 0.75),
           "bias": Attr("float", 1.0)},
    differentiable=True, grad=lrn_grad,
    doc="local response normalization across channels: x / (bias + alpha / size * "
        "sum of x^2 over a window of ``size`` channels) ** beta",
))
