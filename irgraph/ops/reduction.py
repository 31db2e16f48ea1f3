"""Reductions (sum, mean, max, min, prod), arg-reductions, cumulative scans and the softmax family.

Reductions take their axes as an optional int64[n] input, as ONNX does from opset 13/18: no
axes input means "all axes"; an empty axes tensor means "all axes" too unless
``noop_with_empty_axes`` is set, in which case the input passes through unchanged. Reducing
an empty set gives the reduction's identity element (0 for sum, 1 for prod, -inf for max ...).

A reduction's ``scalar`` formula is its combine step ``scalar(b, acc, x)``; the value the
accumulator starts from is ``REDUCTION_IDENTITY[op](dtype)`` and ``reduce_mean`` divides the
sum by the number of elements reduced.

float16/bfloat16 inputs are accumulated in float32 and the result cast back, so long sums do
not lose their low bits.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .. import dtype as dt
from ..dtype import DType
from ..types import is_static_dim
from .declare import ALL_TYPES, FLOAT_TYPES, NUMERIC_TYPES
from .elementwise_grad import GradOps
from .evaluate import known_value
from .registry import Attr, OpDef, register
from .shapes import normalize_axis, normalize_axes, out

_LOW_FLOATS = (np.dtype(np.float16), dt.bfloat16.np)


def _acc_dtype(x: np.ndarray) -> np.dtype:
    """The dtype a reduction accumulates in: float32 for 16-bit floats, else the input's."""
    return np.dtype(np.float32) if x.dtype in _LOW_FLOATS else x.dtype


# ---- axes ------------------------------------------------------------------------------------
def _check_axes_input(ctx, i: int = 1) -> None:
    t = ctx.type(i)
    if t is None:
        return
    if t.dtype is not dt.int64 or t.rank != 1:
        ctx.fail("axes must be a 1-D int64 tensor", input=i, expected="int64[n]", actual=t)


def reduced_shape(shape, axes, keepdims: bool):
    """``shape`` with ``axes`` (normalized) removed, or set to 1 when ``keepdims``."""
    axes = set(axes)
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_out_shape(ctx, x, keepdims: bool, noop: bool):
    """Output shape of a reduction of ``x`` by axes input 1 (known, unknown or absent)."""
    if x.shape is None:
        return None
    rank = len(x.shape)
    if not ctx.has(1):
        return x.shape if noop else reduced_shape(x.shape, range(rank), keepdims)
    axes = ctx.const(1)
    if axes is not None:
        axes = [int(a) for a in np.asarray(axes).reshape(-1)]
        if not axes:
            return x.shape if noop else reduced_shape(x.shape, range(rank), keepdims)
        return reduced_shape(x.shape, normalize_axes(axes, rank, ctx), keepdims)
    # Axes only known when the graph runs: keep what can be known.
    n = ctx.type(1).shape[0]
    if keepdims:
        # every dim either stays or becomes 1; a dim of 1 stays 1 either way
        return tuple(1 if d == 1 else ctx.fresh("reduce") for d in x.shape)
    if not is_static_dim(n):
        return None
    if n == 0:
        return x.shape if noop else ()
    if n > rank:
        ctx.fail(f"{n} axes for a rank-{rank} input", input=1, expected=f"at most {rank}", actual=n)
    return tuple(ctx.fresh("reduce") for _ in range(rank - n))


def _axes_tuple(x: np.ndarray, axes, noop: bool):
    """Normalized axes for the reference; None means "return the input unchanged"."""
    if axes is None or np.size(axes) == 0:
        return None if noop else tuple(range(x.ndim))
    return normalize_axes([int(a) for a in np.asarray(axes).reshape(-1)], x.ndim)


# ---- the five primitive reductions -----------------------------------------------------------
def _lowest(d: DType):
    if d.is_bool:
        return False
    if d.is_float:
        return -np.inf
    return np.iinfo(d.np).min


def _highest(d: DType):
    if d.is_bool:
        return True
    if d.is_float:
        return np.inf
    return np.iinfo(d.np).max


REDUCTION_IDENTITY: dict[str, Callable[[DType], object]] = {
    "reduce_sum": lambda d: 0,
    "reduce_mean": lambda d: 0,
    "reduce_prod": lambda d: 1,
    "reduce_max": _lowest,
    "reduce_min": _highest,
}


def _ref_sum(x, axes, keep):
    return np.sum(x, axis=axes, keepdims=keep, dtype=_acc_dtype(x))


def _ref_prod(x, axes, keep):
    return np.prod(x, axis=axes, keepdims=keep, dtype=_acc_dtype(x))


def _ref_max(x, axes, keep):
    return np.max(x, axis=axes, keepdims=keep, initial=_lowest(DType.from_numpy(x.dtype)))


def _ref_min(x, axes, keep):
    return np.min(x, axis=axes, keepdims=keep, initial=_highest(DType.from_numpy(x.dtype)))


def _ref_mean(x, axes, keep):
    n = 1
    for a in axes:
        n *= x.shape[a]
    if x.dtype.kind in "iu":
        # integer mean truncates toward zero (what a cast of the exact mean gives)
        return np.trunc(np.sum(x, axis=axes, keepdims=keep, dtype=np.float64) / n)
    s = np.sum(x, axis=axes, keepdims=keep, dtype=_acc_dtype(x))
    return s / s.dtype.type(n)  # an empty set gives 0/0 = NaN


# ---- gradients of the reductions ---------------------------------------------------------------
def _grad_axes(ctx):
    """The reduced axes (normalized, sorted) of a reduction node; None when it passes its input
    through (empty axes with noop_with_empty_axes); ``...`` when only the graph run knows them."""
    x = ctx.inputs[0]
    rank = len(x.shape)
    if len(ctx.inputs) < 2 or ctx.inputs[1] is None:
        return list(range(rank))
    axes = known_value(ctx.inputs[1])
    if axes is None:
        return ...
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    if not axes:
        return None if ctx.attrs["noop_with_empty_axes"] else list(range(rank))
    return sorted(normalize_axes(axes, rank))


def _kept(ctx, o, v, axes):
    """``v`` (shaped like the reduction's output) with the reduced axes kept as size 1."""
    if ctx.attrs["keepdims"]:
        return v
    if axes is ...:
        raise ctx.fail("the gradient of a keepdims=0 reduction needs its axes known at compile time")
    return o.unsqueeze(v, ctx.i64(axes)) if axes else v


def _sum_grad(ctx):
    o, x, dy = GradOps(ctx), ctx.inputs[0], ctx.dy()
    axes = _grad_axes(ctx)
    if axes is None:
        return [dy]
    return [o.expand(_kept(ctx, o, dy, axes), ctx.shape(x))]


def _mean_grad(ctx):
    o, x, y, dy = GradOps(ctx), ctx.inputs[0], ctx.outputs[0], ctx.dy()
    axes = _grad_axes(ctx)
    if axes is None:
        return [dy]
    dims = [x.shape[a] for a in axes] if axes is not ... else [None]
    if all(isinstance(d, int) for d in dims):
        n = o.k(int(np.prod(dims, dtype=np.int64)), dy)
    else:  # symbolic sizes: the count is size(x) / size(y)
        n = o.div(o.cast(o.size(x), to=dy.dtype), o.cast(o.size(y), to=dy.dtype))
    return [o.expand(o.div(_kept(ctx, o, dy, axes), n), ctx.shape(x))]


def _extremum_grad(ctx):
    o, x, y, dy = GradOps(ctx), ctx.inputs[0], ctx.outputs[0], ctx.dy()
    axes = _grad_axes(ctx)
    if axes is None:
        return [dy]
    # the gradient is shared evenly by the elements equal to the extremum (PyTorch's amax rule)
    hit = o.cast(o.equal(x, _kept(ctx, o, y, axes)), to=x.dtype)
    count = o.reduce_sum(hit, *ctx.inputs[1:], keepdims=1,
                         noop_with_empty_axes=ctx.attrs["noop_with_empty_axes"])
    return [o.mul(hit, o.div(_kept(ctx, o, dy, axes), count))]


def _prod_grad(ctx):
    o, x, dy = GradOps(ctx), ctx.inputs[0], ctx.dy()
    axes = _grad_axes(ctx)
    if axes is None:
        return [dy]
    if axes is ...:
        raise ctx.fail("the gradient of reduce_prod needs its axes known at compile time")
    # d/dx_i prod(x) is the product of the other elements: an exclusive running product from
    # each side, exact where x holds zeros (unlike prod / x_i)
    rank = len(x.shape)
    kept = [a for a in range(rank) if a not in axes]
    perm = kept + axes
    xt = x if perm == list(range(rank)) else o.transpose(x, perm=perm)
    flat = xt if len(axes) == 1 else o.reshape(xt, ctx.i64([0] * len(kept) + [-1]))
    last = ctx.i64(len(kept))
    others = o.mul(o.cumprod(flat, last, exclusive=1), o.cumprod(flat, last, exclusive=1, reverse=1))
    if flat is not xt:
        others = o.reshape(others, ctx.shape(xt))
    if xt is not x:
        others = o.transpose(others, perm=[perm.index(a) for a in range(rank)])
    return [o.mul(others, _kept(ctx, o, dy, axes))]


def _reduction(name: str, ref: Callable, combine: Callable, dtypes, doc: str, grad) -> OpDef:
    def infer(ctx):
        x = ctx.type(0)
        if x.dtype not in dtypes:
            ctx.fail("unsupported dtype", input=0,
                     expected="one of " + ", ".join(d.name for d in dtypes), actual=x.dtype.name)
        _check_axes_input(ctx)
        a = ctx.attrs
        return [out(_reduce_out_shape(ctx, x, bool(a["keepdims"]), bool(a["noop_with_empty_axes"])),
                    x.dtype)]

    def reference(ins, a):
        x = ins[0]
        axes = _axes_tuple(x, ins[1] if len(ins) > 1 else None, bool(a["noop_with_empty_axes"]))
        if axes is None:
            return x
        r = ref(x, axes, bool(a["keepdims"]))
        return np.asarray(r).astype(x.dtype, copy=False)

    return register(OpDef(
        name, infer=infer, reference=reference, inputs=(1, 2), kind="reduction",
        attrs={"keepdims": Attr("int", 1, "keep reduced axes as size 1"),
               "noop_with_empty_axes": Attr("int", 0, "an empty axes input returns the input unchanged")},
        differentiable=True, grad=grad, scalar=combine, doc=doc,
    ))


_reduction("reduce_sum", _ref_sum, lambda b, acc, x: b.add(acc, x), NUMERIC_TYPES,
           "sum over axes (input 1, int64[n]; absent = all axes)", _sum_grad)
_reduction("reduce_mean", _ref_mean, lambda b, acc, x: b.add(acc, x), NUMERIC_TYPES,
           "mean over axes: the sum divided by the number of elements reduced", _mean_grad)
_reduction("reduce_prod", _ref_prod, lambda b, acc, x: b.mul(acc, x), NUMERIC_TYPES,
           "product over axes", _prod_grad)
_reduction("reduce_max", _ref_max, lambda b, acc, x: b.max(acc, x), ALL_TYPES,
           "maximum over axes; NaN propagates; -inf (or the dtype's lowest value) for an empty set",
           _extremum_grad)
_reduction("reduce_min", _ref_min, lambda b, acc, x: b.min(acc, x), ALL_TYPES,
           "minimum over axes; NaN propagates; +inf (or the dtype's highest value) for an empty set",
           _extremum_grad)


# ---- argmax / argmin ---------------------------------------------------------------------------
def _arg_infer(ctx):
    x = ctx.type(0)
    if x.dtype not in NUMERIC_TYPES:
        ctx.fail("unsupported dtype", input=0, expected="a numeric dtype", actual=x.dtype.name)
    if x.shape is None:
        return [out(None, dt.int64)]
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    if not x.shape:
        ctx.fail("cannot take an arg-reduction of a scalar", input=0, expected="rank >= 1", actual=0)
    if x.shape[axis] == 0:
        ctx.fail(f"axis {axis} has size 0: there is no element to pick", input=0)
    return [out(reduced_shape(x.shape, (axis,), bool(ctx.attrs["keepdims"])), dt.int64)]


def _arg_ref(fn):
    def ref(ins, a):
        x = ins[0]
        axis = normalize_axis(a["axis"], x.ndim)
        if a["select_last_index"]:
            r = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            r = fn(x, axis=axis)
        if a["keepdims"]:
            r = np.expand_dims(r, axis)
        return np.asarray(r, dtype=np.int64)
    return ref


_ARG_ATTRS = {"axis": Attr("int", 0), "keepdims": Attr("int", 1),
              "select_last_index": Attr("int", 0, "on ties, the last index instead of the first")}

register(OpDef(
    "argmax", infer=_arg_infer, reference=_arg_ref(np.argmax), attrs=_ARG_ATTRS,
    kind="reduction", differentiable=False,
    doc="int64 index of the largest element along ``axis`` (first on ties unless select_last_index)",
))
register(OpDef(
    "argmin", infer=_arg_infer, reference=_arg_ref(np.argmin), attrs=_ARG_ATTRS,
    kind="reduction", differentiable=False,
    doc="int64 index of the smallest element along ``axis`` (first on ties unless select_last_index)",
))


# ---- cumulative sum / product ---------------------------------------------------------------
def _cum_infer(ctx):
    x, ax = ctx.type(0), ctx.type(1)
    if x.dtype not in NUMERIC_TYPES:
        ctx.fail("unsupported dtype", input=0, expected="a numeric dtype", actual=x.dtype.name)
    if ax.dtype not in (dt.int32, dt.int64) or ax.rank not in (0, 1) or (
            ax.rank == 1 and is_static_dim(ax.shape[0]) and ax.shape[0] != 1):
        ctx.fail("axis must be an int32/int64 scalar", input=1, expected="int64[] or int64[1]", actual=ax)
    axis = ctx.const(1)
    if axis is not None and x.shape is not None:
        normalize_axis(int(np.asarray(axis).reshape(-1)[0]), len(x.shape), ctx)
    return [out(x.shape, x.dtype)]


def _cum_ref(fn, identity):
    def ref(ins, a):
        x, axis = ins
        axis = normalize_axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim)
        y = np.flip(x, axis) if a["reverse"] else x
        if a["exclusive"]:
            # shift by one along the axis, filling the front with the identity
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            y = np.pad(y, pad, constant_values=identity)
            y = np.take(y, np.arange(x.shape[axis]), axis=axis)
        r = fn(y, axis=axis, dtype=_acc_dtype(x))
        if a["reverse"]:
            r = np.flip(r, axis)
        return np.ascontiguousarray(r).astype(x.dtype, copy=False)
    return ref


_CUM_ATTRS = {"exclusive": Attr("int", 0, "element i excludes x[i]"),
              "reverse": Attr("int", 0, "accumulate from the end of the axis")}

def _cumsum_grad(ctx):
    a = ctx.attrs
    # each input feeds the outputs after it in scan order: a running sum the other way round
    return [GradOps(ctx).cumsum(ctx.dy(), ctx.inputs[1], exclusive=a["exclusive"],
                                reverse=1 - a["reverse"]), None]


def _cumprod_grad(ctx):
    o, (x, axis), y, dy = GradOps(ctx), ctx.inputs, ctx.outputs[0], ctx.dy()
    ex, rev = ctx.attrs["exclusive"], ctx.attrs["reverse"]
    one = o.k(1, x)

    def scan(v, exclusive=ex):  # running product in the op's direction
        return o.cumprod(v, axis, exclusive=exclusive, reverse=rev)

    def back(v):  # running sum the other way round
        return o.cumsum(v, axis, exclusive=ex, reverse=1 - rev)
    # Before the first zero (in scan order) dx_j = back(dy * y)_j / x_j. At the first zero z,
    # dx_z = prod(x before z) * back(dy * prod(x after z up to i)) -- the products restarted
    # after z -- and every later element gets 0: each of its terms holds x_z. No division by 0.
    nz = o.cast(o.logical_not(o.equal(x, o.k(0, x))), to=x.dtype)
    clean = scan(nz, exclusive=1)                 # 1 while no zero came strictly before
    safe = o.add(x, o.sub(one, nz))               # zeros replaced by 1
    before_zero = o.mul(o.div(back(o.mul(dy, y)), safe), o.mul(clean, nz))
    restarted = scan(o.add(o.mul(x, o.sub(one, clean)), clean))  # x with 1 up to the first zero
    at_zero = o.mul(o.mul(scan(x, exclusive=1), back(o.mul(dy, restarted))), o.mul(clean, o.sub(one, nz)))
    return [o.add(before_zero, at_zero), None]


register(OpDef(
    "cumsum", infer=_cum_infer, reference=_cum_ref(np.cumsum, 0), attrs=_CUM_ATTRS,
    inputs=(2, 2), kind="other", differentiable=True, grad=_cumsum_grad,
    doc="running sum along axis (input 1, an int scalar)",
))
register(OpDef(
    "cumprod", infer=_cum_infer, reference=_cum_ref(np.cumprod, 1), attrs=_CUM_ATTRS,
    inputs=(2, 2), kind="other", differentiable=True, grad=_cumprod_grad,
    doc="running product along axis (input 1, an int scalar)",
))


# ---- softmax, log_softmax, hardmax ----------------------------------------------------------
def _axis_op_infer(ctx):
    x = ctx.type(0)
    if x.dtype not in FLOAT_TYPES:
        ctx.fail("unsupported dtype", input=0,
                 expected="one of " + ", ".join(d.name for d in FLOAT_TYPES), actual=x.dtype.name)
    if x.shape is not None:
        normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    return [out(x.shape, x.dtype)]


# The softmax references round every step to the input's dtype, as their decompositions
# (and ONNX's function bodies) do; only the sum accumulates wider, like reduce_sum.
def _softmax_ref(ins, a):
    x = ins[0]
    if x.size == 0:
        return x.copy()
    axis = normalize_axis(a["axis"], x.ndim)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return (e / _ref_sum(e, (axis,), True).astype(x.dtype)).astype(x.dtype, copy=False)


def _log_softmax_ref(ins, a):
    x = ins[0]
    if x.size == 0:
        return x.copy()
    axis = normalize_axis(a["axis"], x.ndim)
    s = x - np.max(x, axis=axis, keepdims=True)
    lse = np.log(_ref_sum(np.exp(s), (axis,), True).astype(x.dtype))
    return (s - lse).astype(x.dtype, copy=False)


def _hardmax_ref(ins, a):
    x = ins[0]
    axis = normalize_axis(a["axis"], x.ndim)
    y = np.zeros_like(x)
    if x.size:
        idx = np.expand_dims(np.argmax(x, axis=axis), axis)
        np.put_along_axis(y, idx, np.ones((), x.dtype), axis=axis)
    return y


def _axes_const(g, axis: int):
    return g.add_const(np.array([axis], dtype=np.int64), "axes")


def _softmax_decompose(g, inputs, attrs):
    x = inputs[0]
    axes = _axes_const(g, attrs["axis"])
    m = g.op("reduce_max", [x, axes], {"keepdims": 1})
    e = g.op("exp", [g.op("sub", [x, m])])
    return [g.op("div", [e, g.op("reduce_sum", [e, axes], {"keepdims": 1})])]


def _log_softmax_decompose(g, inputs, attrs):
    x = inputs[0]
    axes = _axes_const(g, attrs["axis"])
    s = g.op("sub", [x, g.op("reduce_max", [x, axes], {"keepdims": 1})])
    lse = g.op("log", [g.op("reduce_sum", [g.op("exp", [s]), axes], {"keepdims": 1})])
    return [g.op("sub", [s, lse])]


def _softmax_grad(ctx):
    o, y, dy = GradOps(ctx), ctx.outputs[0], ctx.dy()
    axes = ctx.i64([ctx.attrs["axis"]])
    # dx = y * (dy - sum(dy * y))
    return [o.mul(y, o.sub(dy, o.reduce_sum(o.mul(dy, y), axes, keepdims=1)))]


def _log_softmax_grad(ctx):
    o, y, dy = GradOps(ctx), ctx.outputs[0], ctx.dy()
    axes = ctx.i64([ctx.attrs["axis"]])
    # dx = dy - softmax(x) * sum(dy), softmax(x) = exp(y)
    return [o.sub(dy, o.mul(o.exp(y), o.reduce_sum(dy, axes, keepdims=1)))]


_AXIS_ATTR = {"axis": Attr("int", -1)}

register(OpDef(
    "softmax", infer=_axis_op_infer, reference=_softmax_ref, attrs=_AXIS_ATTR,
    kind="composite", differentiable=True, decompose=_softmax_decompose, grad=_softmax_grad,
    doc="exp(x - max) / sum(exp(x - max)) along one axis",
))
register(OpDef(
    "log_softmax", infer=_axis_op_infer, reference=_log_softmax_ref, attrs=_AXIS_ATTR,
    kind="composite", differentiable=True, decompose=_log_softmax_decompose, grad=_log_softmax_grad,
    doc="x - max - log(sum(exp(x - max))) along one axis",
))
register(OpDef(
    "hardmax", infer=_axis_op_infer, reference=_hardmax_ref, attrs=_AXIS_ATTR,
    kind="other", differentiable=False,
    doc="1 at the first maximum along the axis, 0 elsewhere",
))
