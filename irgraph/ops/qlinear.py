"""Quantized contractions with their requantization epilogue: ``quant_matmul`` and ``quant_conv``.

One node is one int8 kernel: an integer contraction of 8-bit operands accumulated exactly in
int32, then, on each accumulator, in float32 and in this order::

    acc = (x - x_zero_point) . (w - w_zero_point) + acc_bias       # int32
    f   = float32(acc) * multiplier                                # per output channel or scalar
    f   = f + bias                                                 # float32
    f   = activation(f)                                            # none, relu, clip, gelu ...
    y   = f                                                        # no y_zero_point: float32 out
    y   = saturate(round_half_even(f * output_scale) + y_zero_point)   # else uint8 / int8 out

Inputs: ``x, x_zero_point?, w, w_zero_point?, multiplier, acc_bias?, bias?, y_zero_point?``.
The quantization passes choose the numbers: an ONNX ``QLinearConv`` is ``multiplier = x_scale *
w_scale / y_scale`` with its int32 bias as ``acc_bias``; a dynamically quantized MatMul is
``multiplier = x_scale * w_scale`` (a run-time value) with a float32 output; a layer whose
activation does not commute with scaling (GELU, sigmoid …) keeps ``multiplier`` in real units
and puts ``1 / y_scale`` in ``output_scale``. The output channel is the last axis for
``quant_matmul`` (``w`` is (K, N)) and axis 1 for ``quant_conv`` (``w`` is (M, C/group, k...)).
The CPU backend runs both on its VNNI / pmaddwd GEMM (backends/cpu/gemm_int8.py) with the
epilogue applied in registers; the decomposition into integer ops serves every other backend.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..dtype import DType
from ..types import is_static_dim
from .quant import INT8_TYPES, check_conv_operands, conv_nd, conv_output_shape, int_range
from .registry import Attr, OpDef, get_op, register
from .shapes import out

ACTIVATIONS = ("none", "relu", "clip", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu")
# the activations f(a*x) = a*f(x) for a > 0 (clip with scaled bounds): the output scale can be
# folded into the multiplier and bias
HOMOGENEOUS = ("none", "relu", "clip", "leaky_relu")


def _attrs(conv: bool) -> dict:
    a = {
        "activation": Attr("str", "none", " | ".join(ACTIVATIONS)),
        "alpha": Attr("float", 0.0, "clip: lower bound; leaky_relu: slope"),
        "beta": Attr("float", 0.0, "clip: upper bound"),
        "output_scale": Attr("float", 1.0, "quantized output: f * output_scale is rounded"),
    }
    if conv:
        a.update({
            "strides": Attr("ints", None),
            "pads": Attr("ints", None, "begin pads of every spatial axis, then end pads"),
            "dilations": Attr("ints", None),
            "group": Attr("int", 1),
            "auto_pad": Attr("str", "NOTSET", "NOTSET | SAME_UPPER | SAME_LOWER | VALID"),
        })
    return a


# ---- inference -------------------------------------------------------------------------------------
def _check_common(ctx, channels):
    """Dtypes and per-channel shapes of every input but x's and w's shapes; returns the output dtype."""
    names = ("x", "x_zero_point", "w", "w_zero_point", "multiplier", "acc_bias", "bias", "y_zero_point")
    x, w = ctx.type(0), ctx.type(2)
    for i in (0, 2):
        if ctx.type(i).dtype not in INT8_TYPES:
            ctx.fail(f"{names[i]} must be 8-bit", input=i, expected="uint8 or int8", actual=ctx.type(i).dtype.name)
    for i, src in ((1, x), (3, w)):
        t = ctx.type(i)
        if t is not None and t.dtype is not src.dtype:
            ctx.fail(f"{names[i]} must have its operand's dtype", input=i, expected=src.dtype.name,
                     actual=t.dtype.name)
    zx = ctx.type(1)
    if zx is not None and zx.shape is not None and not _scalar(zx.shape):
        ctx.fail("x_zero_point must be a scalar (per-tensor activations)", input=1, expected="[]",
                 actual=zx.shape)
    want = {3: dt.int8 if w.dtype is dt.int8 else dt.uint8, 4: dt.float32, 5: dt.int32, 6: dt.float32}
    for i in (3, 4, 5, 6):
        t = ctx.type(i)
        if t is None:
            if i == 4:
                ctx.fail("missing the multiplier (input 4)")
            continue
        if t.dtype is not want[i]:
            ctx.fail(f"{names[i]} has the wrong dtype", input=i, expected=want[i].name, actual=t.dtype.name)
        if t.shape is None:
            continue
        if i in (5, 6) and len(t.shape) != 1:
            ctx.fail(f"{names[i]} must be 1-D, one value per output channel", input=i,
                     expected=f"[{channels}]", actual=t.shape)
        if not _scalar(t.shape) and (len(t.shape) != 1 or (is_static_dim(channels) and is_static_dim(t.shape[0])
                                                           and t.shape[0] != channels)):
            ctx.fail(f"{names[i]} must be a scalar or hold one value per output channel", input=i,
                     expected=f"[] or [{channels}]", actual=t.shape)
    y = ctx.type(7)
    if y is None:
        return dt.float32
    if y.dtype not in INT8_TYPES or (y.shape is not None and not _scalar(y.shape)):
        ctx.fail("y_zero_point must be a uint8 or int8 scalar", input=7, expected="uint8[] or int8[]",
                 actual=repr(y))
    a = ctx.attrs
    if a["activation"] not in ACTIVATIONS:
        ctx.fail(f"unknown activation {a['activation']!r}", expected=" | ".join(ACTIVATIONS),
                 actual=a["activation"])
    return y.dtype


def _scalar(shape) -> bool:
    return len(shape) == 0 or (len(shape) == 1 and shape[0] == 1)


def _quant_matmul_infer(ctx):
    from .linalg import matmul_shape
    x, w = ctx.type(0), ctx.type(2)
    if w.shape is not None and len(w.shape) != 2:
        ctx.fail("w must be a (K, N) matrix", input=2, expected="rank 2", actual=w.shape)
    n = w.shape[1] if w.shape is not None else None
    odt = _check_common(ctx, n)
    if x.shape is not None and len(x.shape) < 1:
        ctx.fail("x must have rank >= 1", input=0, actual=x.shape)
    return [out(matmul_shape(x.shape, w.shape, ctx), odt)]


def _quant_conv_infer(ctx):
    x, w = ctx.type(0), ctx.type(2)
    m = w.shape[0] if w.shape is not None else None
    odt = _check_common(ctx, m)
    if x.shape is None or w.shape is None:
        return [out(None, odt)]
    check_conv_operands(ctx, x, w, 2)
    return [out(conv_output_shape(ctx, x, w), odt)]


# ---- reference ---------------------------------------------------------------------------------------
def _inputs(ins):
    ins = list(ins) + [None] * (8 - len(ins))
    return ins[:8]


def _centered(a, zp, per_channel_axis=None):
    a = np.asarray(a).astype(np.int64)
    if zp is None:
        return a
    z = np.asarray(zp).astype(np.int64)
    if z.size > 1:
        shape = [1] * a.ndim
        shape[per_channel_axis] = z.size
        z = z.reshape(shape)
    else:
        z = z.reshape(())
    return a - z


def _channel(p, ndim: int, axis: int) -> np.ndarray:
    """A scalar or per-channel parameter shaped to broadcast along ``axis`` of an ndim result."""
    p = np.asarray(p)
    if p.size == 1:
        return p.reshape(())
    shape = [1] * ndim
    shape[axis] = p.size
    return p.reshape(shape)


def apply_activation(f: np.ndarray, activation: str, alpha: float, beta: float) -> np.ndarray:
    """The activation in float32, as the kernels compute it (NaN passes through relu/clip)."""
    if activation == "none":
        return f
    if activation == "relu":
        return np.where(f < 0, np.float32(0), f)
    if activation == "clip":
        f = np.where(f < np.float32(alpha), np.float32(alpha), f)
        return np.where(np.float32(beta) < f, np.float32(beta), f).astype(np.float32)
    if activation == "leaky_relu":
        return np.where(f < 0, f * np.float32(alpha), f).astype(np.float32)
    if activation == "sigmoid":
        return (np.float32(1) / (np.float32(1) + np.exp(-f))).astype(np.float32)
    if activation == "tanh":
        return np.tanh(f)
    if activation in ("gelu", "gelu_tanh"):
        approx = "tanh" if activation == "gelu_tanh" else "none"
        return get_op("gelu").run_reference([f], {"approximate": approx})[0].astype(np.float32)
    if activation == "silu":
        return (f / (np.float32(1) + np.exp(-f))).astype(np.float32)
    raise ValueError(f"unknown activation {activation!r}")


def epilogue(acc: np.ndarray, multiplier, bias, attrs: dict, y_zero_point, axis: int) -> np.ndarray:
    """The float32 epilogue on an int32 accumulator (``axis``: the output channel axis)."""
    f = acc.astype(np.float32) * _channel(multiplier, acc.ndim, axis).astype(np.float32)
    if bias is not None:
        f = f + _channel(bias, acc.ndim, axis).astype(np.float32)
    f = apply_activation(f.astype(np.float32), attrs["activation"], attrs["alpha"], attrs["beta"])
    if y_zero_point is None:
        return f.astype(np.float32)
    odt = DType.from_numpy(np.asarray(y_zero_point).dtype)
    lo, hi = int_range(odt)
    with np.errstate(invalid="ignore"):
        r = np.rint(f * np.float32(attrs["output_scale"])) + np.float32(np.asarray(y_zero_point).reshape(()))
        r = np.clip(np.where(np.isnan(r), 0, r), lo, hi)
    return r.astype(odt.np)


def _wrap32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64).astype(np.int32)


def _quant_matmul_ref(ins, a):
    x, xz, w, wz, mult, accb, bias, yz = _inputs(ins)
    prod = np.matmul(_centered(x, xz).astype(np.float64), _centered(w, wz, 1).astype(np.float64))
    acc = np.asarray(prod).astype(np.int64)      # exact: |products| summed < 2**53
    if accb is not None:
        acc = acc + np.asarray(accb).astype(np.int64)
    return epilogue(_wrap32(acc), mult, bias, a, yz, -1)


def _quant_conv_ref(ins, a):
    x, xz, w, wz, mult, accb, bias, yz = _inputs(ins)
    xc = _centered(x, xz)
    wc = _centered(w, wz, 0)
    acc = np.asarray(conv_nd(xc.astype(np.float64), wc.astype(np.float64), a)).astype(np.int64)
    if accb is not None:
        acc = acc + _channel(accb, acc.ndim, 1).astype(np.int64)
    return epilogue(_wrap32(acc), mult, bias, a, yz, 1)


# ---- decomposition (for backends without an int8 kernel) ---------------------------------------------
def _decompose(conv: bool):
    def build(g, ins, a):
        x, xz, w, wz, mult, accb, bias, yz = _inputs(ins)
        if conv:
            cattrs = {k: a[k] for k in ("strides", "pads", "dilations", "group", "auto_pad")}
            acc = g.op("conv_integer", [x, w, xz, wz], cattrs)
        else:
            acc = g.op("matmul_integer", [x, w, xz, wz])
        rank = acc.type.rank

        def per_channel(v):
            if v.type.shape is not None and len(v.type.shape) == 1 and conv and v.type.shape[0] != 1:
                shape = np.array([1, -1] + [1] * (rank - 2), np.int64)
                return g.op("reshape", [v, g.add_const(shape, "channel_shape")])
            return v
        if accb is not None:
            acc = g.op("add", [acc, per_channel(accb)])
        f = g.op("mul", [g.op("cast", [acc], {"to": dt.float32}), per_channel(mult)])
        if bias is not None:
            f = g.op("add", [f, per_channel(bias)])
        f = _activation_nodes(g, f, a)
        if yz is None:
            return [f]
        odt = yz.dtype
        lo, hi = int_range(odt)
        if a["output_scale"] != 1.0:
            f = g.op("mul", [f, g.add_const(np.float32(a["output_scale"]), "output_scale")])
        r = g.op("add", [g.op("round", [f]), g.op("cast", [yz], {"to": dt.float32})])
        r = g.op("clip", [r, g.add_const(np.float32(lo), "qmin"), g.add_const(np.float32(hi), "qmax")])
        return [g.op("cast", [r], {"to": odt})]
    return build


def _activation_nodes(g, f, a):
    act = a["activation"]
    if act == "none":
        return f
    if act == "clip":
        return g.op("clip", [f, g.add_const(np.float32(a["alpha"]), "lo"), g.add_const(np.float32(a["beta"]), "hi")])
    if act == "leaky_relu":
        return g.op("leaky_relu", [f], {"alpha": a["alpha"]})
    if act in ("gelu", "gelu_tanh"):
        return g.op("gelu", [f], {"approximate": "tanh" if act == "gelu_tanh" else "none"})
    if act == "silu":
        return g.op("mul", [f, g.op("sigmoid", [f])])
    return g.op(act, [f])


register(OpDef(
    "quant_matmul", infer=_quant_matmul_infer, reference=_quant_matmul_ref, inputs=(5, 8),
    kind="contraction", attrs=_attrs(False), differentiable=False, decompose=_decompose(False),
    doc="int8 x @ w (K, N) accumulated in int32, then multiplier, bias, activation and "
        "requantization to uint8/int8 (with y_zero_point) or float32",
))

register(OpDef(
    "quant_conv", infer=_quant_conv_infer, reference=_quant_conv_ref, inputs=(5, 8),
    kind="contraction", attrs=_attrs(True), differentiable=False, decompose=_decompose(True),
    doc="int8 convolution accumulated in int32, then multiplier, bias, activation and "
        "requantization to uint8/int8 (with y_zero_point) or float32; channels on axis 1",
))


# ---- quantized residual add ----------------------------------------------------------------------
def _quant_add_infer(ctx):
    from .shapes import broadcast_shapes
    a, b, yz = ctx.type(0), ctx.type(3), ctx.type(7)
    for i in (0, 3):
        if ctx.type(i).dtype not in INT8_TYPES:
            ctx.fail("the operands must be 8-bit", input=i, expected="uint8 or int8", actual=ctx.type(i).dtype.name)
    for i, src in ((2, a), (5, b)):
        if ctx.type(i).dtype is not src.dtype:
            ctx.fail("a zero point must have its operand's dtype", input=i, expected=src.dtype.name,
                     actual=ctx.type(i).dtype.name)
    if yz.dtype not in INT8_TYPES:
        ctx.fail("y_zero_point must be uint8 or int8", input=7, actual=yz.dtype.name)
    for i in (1, 2, 4, 5, 6, 7):
        t = ctx.type(i)
        if t.shape is not None and not _scalar(t.shape):
            ctx.fail("scales and zero points are per tensor (scalars)", input=i, expected="[]", actual=t.shape)
        if i in (1, 4, 6) and t.dtype is not dt.float32:
            ctx.fail("scales are float32", input=i, expected="float32", actual=t.dtype.name)
    if ctx.attrs["activation"] not in ("none", "relu"):
        ctx.fail(f"unknown activation {ctx.attrs['activation']!r}", expected="none | relu")
    return [out(broadcast_shapes(a.shape, b.shape, ctx=ctx), yz.dtype)]


def _quant_add_ref(ins, a):
    from .quant import dequantize, quantize
    x = (dequantize(ins[0], ins[1], ins[2], dt.float32) + dequantize(ins[3], ins[4], ins[5], dt.float32))
    if a["activation"] == "relu":
        x = np.where(x < 0, np.float32(0), x)
    odt = DType.from_numpy(np.asarray(ins[7]).dtype)
    return quantize(x.astype(np.float32), ins[6], ins[7], odt)


def _quant_add_decompose(g, ins, a):
    x = g.op("add", [g.op("dequantize_linear", [ins[0], ins[1], ins[2]]),
                     g.op("dequantize_linear", [ins[3], ins[4], ins[5]])])
    if a["activation"] == "relu":
        x = g.op("relu", [x])
    return [g.op("quantize_linear", [x, ins[6], ins[7]])]


register(OpDef(
    "quant_add", infer=_quant_add_infer, reference=_quant_add_ref, inputs=(8, 8), kind="other",
    attrs={"activation": Attr("str", "none", "none | relu")}, differentiable=False,
    decompose=_quant_add_decompose,
    doc="quant_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp): "
        "Q(activation(DQ(a) + DQ(b))), all per tensor (ONNX Runtime's QLinearAdd; ResNet's residual)",
))
