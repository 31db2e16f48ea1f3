"""ONNX converters for elementwise operators: arithmetic, math, activations, logic, cast, dropout."""
from __future__ import annotations

import numpy as np
import onnx

from irgraph import dtype as dt
from irgraph.dtype import DType

from .registry import converter


# ---- helpers ---------------------------------------------------------------------------
def _legacy_broadcast(ctx, a, b):
    """Opsets < 7 broadcast only when ``broadcast=1``, aligning B with A from ``axis`` on."""
    if ctx.opset >= 7 or not ctx.attr("broadcast", 0) or not ctx.has_attr("axis"):
        return a, b  # no axis: B's dims align with A's trailing dims, as numpy does
    ra, rb = a.type.rank, b.type.rank
    if ra is None or rb is None:
        ctx.fail("legacy broadcasting with 'axis' needs inputs of known rank")
    axis = ctx.attr("axis")
    axis = axis + ra if axis < 0 else axis
    trailing = ra - axis - rb
    if trailing < 0:
        ctx.fail(f"axis {ctx.attr('axis')} leaves no room for B of rank {rb} in A of rank {ra}")
    if trailing:
        # reshape's 0 copies the input dim, so this works for symbolic dims too
        shape = ctx.constant(np.array([0] * rb + [1] * trailing, dtype=np.int64))
        b = ctx.op("reshape", [b, shape])
    return a, b


def _binary(onnx_op: str, core_op: str):
    @converter(onnx_op)
    def conv(ctx):
        a, b = _legacy_broadcast(ctx, ctx.input(0), ctx.input(1))
        return ctx.op(core_op, [a, b])
    conv.__name__ = f"convert_{onnx_op}"
    return conv


def _unary(onnx_op: str, core_op: str, **attr_defaults):
    @converter(onnx_op)
    def conv(ctx):
        attrs = {k: ctx.attr(k, d) for k, d in attr_defaults.items()}
        return ctx.op(core_op, [ctx.input(0)], attrs)
    conv.__name__ = f"convert_{onnx_op}"
    return conv


for _onnx, _core in [("Add", "add"), ("Sub", "sub"), ("Mul", "mul"), ("Div", "div"),
                     ("Pow", "pow"), ("Equal", "equal"), ("Less", "less"),
                     ("LessOrEqual", "less_equal"), ("Greater", "greater"),
                     ("GreaterOrEqual", "greater_equal"), ("And", "logical_and"),
                     ("Or", "logical_or"), ("Xor", "logical_xor"), ("BitwiseAnd", "bitwise_and"),
                     ("BitwiseOr", "bitwise_or"), ("BitwiseXor", "bitwise_xor"),
                     ("PRelu", "prelu")]:
    _binary(_onnx, _core)

for _onnx, _core in [("Abs", "abs"), ("Neg", "neg"), ("Sign", "sign"), ("Reciprocal", "reciprocal"),
                     ("Exp", "exp"), ("Log", "log"), ("Sqrt", "sqrt"), ("Sin", "sin"), ("Cos", "cos"),
                     ("Tan", "tan"), ("Asin", "asin"), ("Acos", "acos"), ("Atan", "atan"),
                     ("Sinh", "sinh"), ("Cosh", "cosh"), ("Asinh", "asinh"), ("Acosh", "acosh"),
                     ("Atanh", "atanh"), ("Tanh", "tanh"), ("Floor", "floor"), ("Ceil", "ceil"),
                     ("Round", "round"), ("Erf", "erf"), ("IsNaN", "isnan"), ("Not", "logical_not"),
                     ("BitwiseNot", "bitwise_not"), ("Relu", "relu"), ("Sigmoid", "sigmoid"),
                     ("HardSwish", "hard_swish"), ("Softplus", "softplus"), ("Softsign", "softsign"),
                     ("Mish", "mish")]:
    _unary(_onnx, _core)

# Defaults are ONNX's float32 attribute values, so a node without the attribute computes
# exactly what one that spells the default out does.
_unary("LeakyRelu", "leaky_relu", alpha=float(np.float32(0.01)))
_unary("Elu", "elu", alpha=1.0)
_unary("Selu", "selu", alpha=float(np.float32(1.67326319217681884765625)),
       gamma=float(np.float32(1.05070102214813232421875)))
_unary("Celu", "celu", alpha=1.0)
_unary("HardSigmoid", "hard_sigmoid", alpha=float(np.float32(0.2)), beta=0.5)
_unary("ThresholdedRelu", "thresholded_relu", alpha=1.0)
_unary("Shrink", "shrink", bias=0.0, lambd=0.5)
_unary("Swish", "swish", alpha=1.0)


@converter("IsInf")
def isinf(ctx):
    return ctx.op("isinf", [ctx.input(0)], {"detect_negative": ctx.attr("detect_negative", 1),
                                             "detect_positive": ctx.attr("detect_positive", 1)})


@converter("Gelu")
def gelu(ctx):
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        ctx.fail("approximate must be 'none' or 'tanh'", actual=repr(approximate))
    return ctx.op("gelu", [ctx.input(0)], {"approximate": approximate})


@converter("Mod", since=10)
def mod(ctx):
    a, b = ctx.input(0), ctx.input(1)
    return ctx.op("mod", [a, b], {"fmod": ctx.attr("fmod", 0)})


@converter("BitShift", since=11)
def bit_shift(ctx):
    direction = ctx.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        ctx.fail("direction must be 'LEFT' or 'RIGHT'", actual=repr(direction))
    return ctx.op("shift_left" if direction == "LEFT" else "shift_right", [ctx.input(0), ctx.input(1)])


# ---- variadic --------------------------------------------------------------------------
def _chain(ctx, core_op: str):
    vals = [v for v in ctx.inputs if v is not None]
    if not vals:
        ctx.fail("needs at least one input")
    acc = vals[0]
    for v in vals[1:]:
        acc = ctx.op(core_op, [acc, v])
    return acc, len(vals)


@converter("Max")
def max_(ctx):
    return _chain(ctx, "maximum")[0]


@converter("Min")
def min_(ctx):
    return _chain(ctx, "minimum")[0]


@converter("Sum")
def sum_(ctx):
    return _chain(ctx, "add")[0]


@converter("Mean")
def mean(ctx):
    acc, n = _chain(ctx, "add")
    if n == 1:
        return acc
    return ctx.op("div", [acc, ctx.constant(np.array(n, dtype=acc.dtype.np))])


# ---- clip ------------------------------------------------------------------------------
def _bound(ctx, dtype: DType, value, upper: bool):
    if value is None:
        if dtype.is_float:
            value = np.inf if upper else -np.inf
        else:
            info = np.iinfo(dtype.np)
            value = info.max if upper else info.min
    return ctx.constant(np.array(value, dtype=dtype.np), name=f"{ctx.name}_{'max' if upper else 'min'}")


@converter("Clip", since=1)
def clip_v1(ctx):
    x = ctx.input(0)
    lo = _bound(ctx, x.dtype, ctx.attr("min", None), False)
    hi = _bound(ctx, x.dtype, ctx.attr("max", None), True)
    return ctx.op("clip", [x, lo, hi])


@converter("Clip", since=11)
def clip(ctx):
    x = ctx.input(0)
    lo = ctx.input(1) if ctx.has_input(1) else _bound(ctx, x.dtype, None, False)
    hi = ctx.input(2) if ctx.has_input(2) else _bound(ctx, x.dtype, None, True)
    return ctx.op("clip", [x, lo, hi])


# ---- cast ------------------------------------------------------------------------------
def _cast_attrs(ctx, to: DType) -> dict:
    return {"to": to, "saturate": ctx.attr("saturate", 1), "round_mode": ctx.attr("round_mode", "up")}


@converter("Cast")
def cast(ctx):
    to = ctx.attr("to")
    if isinstance(to, str):  # opsets 1-5 named the type: "FLOAT", "INT64", ...
        try:
            to = onnx.TensorProto.DataType.Value(to.upper())
        except ValueError:
            ctx.fail(f"unknown type name {to!r} in 'to'")
    to = DType.from_onnx(to)
    return ctx.op("cast", [ctx.input(0)], _cast_attrs(ctx, to))


@converter("CastLike", since=15)
def cast_like(ctx):
    return ctx.op("cast", [ctx.input(0)], _cast_attrs(ctx, ctx.input(1).dtype))


@converter("BitCast")
def bitcast(ctx):
    return ctx.op("bitcast", [ctx.input(0)], {"to": DType.from_onnx(ctx.attr("to"))})


# ---- where and dropout -------------------------------------------------------------------
@converter("Where", since=9)
def where(ctx):
    return ctx.op("where", [ctx.input(0), ctx.input(1), ctx.input(2)])


def _inference_dropout(ctx, mask_dtype: DType | None):
    x = ctx.input(0)
    if not ctx.output_wanted(1):
        return x
    return x, ctx.op("full_like", [x], {"value": 1.0, "dtype": mask_dtype})


@converter("Dropout", since=1)
def dropout_v1(ctx):
    # Opsets 1-6 default to training mode (is_test=0), but models exported with them are run
    # for inference in practice (opset 7 dropped the flag for that reason), so this is identity.
    # Opsets < 10 give a mask of the input's type.
    return _inference_dropout(ctx, None)


@converter("Dropout", since=10)
def dropout_v10(ctx):
    return _inference_dropout(ctx, dt.bool_)


@converter("Dropout", since=12)
def dropout(ctx):
    training = ctx.const(2) if ctx.has_input(2) else np.array(False)
    ratio = ctx.const(1) if ctx.has_input(1) else np.array(0.5)
    if (training is not None and not bool(training)) or (ratio is not None and float(ratio) == 0.0):
        return _inference_dropout(ctx, dt.bool_)
    x = ctx.input(0)
    r = ctx.input(1) if ctx.has_input(1) else ctx.constant(np.array(0.5, dtype=x.dtype.np))
    # training (or training_mode only known at run time, where the op reads it): random mask
    y, mask = ctx.op("dropout", [x, r, ctx.input(2)], {"seed": ctx.attr("seed", None)}, num_outputs=2)
    return y, mask
