"""ONNX converters for the reduction family: Reduce*, ArgMax/ArgMin, CumSum/CumProd, Softmax & co.

Old opsets carry a reduction's axes as an attribute; the core ops take them as an int64 input,
so the attribute becomes a constant. ReduceL1/L2/LogSum/LogSumExp/SumSquare are composed
from the core reductions and elementwise ops rather than being core ops themselves.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt

from .registry import converter

_CORE = {"ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean", "ReduceMax": "reduce_max",
         "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod"}

# opset from which each Reduce* op takes its axes as input 1 instead of an attribute
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
               "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def _reduce_args(ctx, axes_as_input: bool):
    """(axes Value or None, attrs) of a Reduce* node, whichever opset it comes from."""
    attrs = {"keepdims": ctx.attr("keepdims", 1)}
    if axes_as_input:
        attrs["noop_with_empty_axes"] = ctx.attr("noop_with_empty_axes", 0)
        axes = ctx.input(1)
    else:
        axes = ctx.attr("axes", None)
        axes = None if axes is None else ctx.constant(np.array(axes, dtype=np.int64), name=f"{ctx.name}_axes")
    return axes, attrs


def _float_view(ctx, x):
    """x in a float dtype (ints go through float64) and a function casting results back."""
    if x.dtype.is_float:
        return x, lambda v: v
    return ctx.op("cast", [x], {"to": dt.float64}), lambda v: ctx.op("cast", [v], {"to": x.dtype})


def _compose(ctx, op_type: str, x, axes, attrs):
    def red(core, v, **over):
        return ctx.op(core, [v, axes], {**attrs, **over})

    if op_type in _CORE:
        return red(_CORE[op_type], x)
    if op_type == "ReduceL1":
        return red("reduce_sum", ctx.op("abs", [x]))
    if op_type == "ReduceSumSquare":
        return red("reduce_sum", ctx.op("mul", [x, x]))
    xf, back = _float_view(ctx, x)
    if op_type == "ReduceL2":
        return back(ctx.op("sqrt", [red("reduce_sum", ctx.op("mul", [xf, xf]))]))
    if op_type == "ReduceLogSum":
        return back(ctx.op("log", [red("reduce_sum", xf)]))
    if op_type == "ReduceLogSumExp":
        # log(sum(exp(x - m))) + m with m the max, kept finite so that rows of +-inf and
        # empty sets do not turn into inf - inf = NaN.
        m = red("reduce_max", xf, keepdims=1)
        inf = ctx.constant(np.array(np.inf, dtype=xf.dtype.np), name=f"{ctx.name}_inf")
        zero = ctx.constant(np.array(0, dtype=xf.dtype.np), name=f"{ctx.name}_zero")
        m = ctx.op("where", [ctx.op("equal", [ctx.op("abs", [m]), inf]), zero, m])
        s = red("reduce_sum", ctx.op("exp", [ctx.op("sub", [xf, m])]))
        # reducing m (already size 1 on the reduced axes) again only drops those axes when
        # keepdims=0, so this works with axes known only at run time
        return back(ctx.op("add", [ctx.op("log", [s]), red("reduce_max", m)]))
    ctx.fail(f"no composition for {op_type}")


def _make_reduce(op_type: str):
    def attr_form(ctx):
        axes, attrs = _reduce_args(ctx, axes_as_input=False)
        return _compose(ctx, op_type, ctx.input(0), axes, attrs)

    def input_form(ctx):
        axes, attrs = _reduce_args(ctx, axes_as_input=True)
        return _compose(ctx, op_type, ctx.input(0), axes, attrs)

    converter(op_type, since=1)(attr_form)
    converter(op_type, since=_AXES_INPUT_SINCE.get(op_type, 18))(input_form)


for _op in _REDUCE_OPS:
    _make_reduce(_op)


# ---- ArgMax / ArgMin ---------------------------------------------------------------------------
def _make_arg(op_type: str, core: str):
    @converter(op_type, since=1)
    def conv(ctx):
        return ctx.op(core, [ctx.input(0)], {"axis": ctx.attr("axis", 0),
                                             "keepdims": ctx.attr("keepdims", 1),
                                             "select_last_index": ctx.attr("select_last_index", 0)})
    return conv


_make_arg("ArgMax", "argmax")
_make_arg("ArgMin", "argmin")


# ---- CumSum / CumProd ----------------------------------------------------------------------------
def _make_cum(op_type: str, core: str, since: int):
    @converter(op_type, since=since)
    def conv(ctx):
        return ctx.op(core, [ctx.input(0), ctx.input(1)], {"exclusive": ctx.attr("exclusive", 0),
                                                           "reverse": ctx.attr("reverse", 0)})
    return conv


_make_cum("CumSum", "cumsum", 11)
_make_cum("CumProd", "cumprod", 26)


# ---- Softmax / LogSoftmax / Hardmax -------------------------------------------------------------
def _make_axis_op(op_type: str, core: str):
    @converter(op_type, since=13)
    def per_axis(ctx):
        return ctx.op(core, [ctx.input(0)], {"axis": ctx.attr("axis", -1)})

    @converter(op_type, since=1)
    def coerced(ctx):
        # Before opset 13 the input is viewed as 2-D [prod(shape[:axis]), prod(shape[axis:])]
        # and the op runs over the second dim, i.e. over all axes from ``axis`` on at once.
        x = ctx.input(0)
        if x.shape is None:
            ctx.fail(f"{op_type} before opset 13 needs the input's rank to be known", input=0)
        rank = len(x.shape)
        axis = ctx.attr("axis", 1)
        if not -rank <= axis <= rank:
            ctx.fail(f"axis {axis} out of range for rank {rank}", expected=f"[{-rank}, {rank}]", actual=axis)
        axis = axis + rank if axis < 0 else axis
        if axis == rank - 1:
            return ctx.op(core, [x], {"axis": -1})
        return _on_view(ctx, core, x, axis)

    return per_axis, coerced


def _on_view(ctx, core: str, x, axis: int):
    """Run ``core`` over the last axis of x reshaped to shape[:axis] + [-1], then reshape back."""
    spec = np.array([0] * axis + [-1], dtype=np.int64)
    flat = ctx.op("reshape", [x, ctx.constant(spec, name=f"{ctx.name}_2d")])
    y = ctx.op(core, [flat], {"axis": -1})
    return ctx.op("reshape", [y, ctx.op("shape", [x])])


_make_axis_op("Softmax", "softmax")
_make_axis_op("LogSoftmax", "log_softmax")
_make_axis_op("Hardmax", "hardmax")
