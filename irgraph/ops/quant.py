"""Quantization: quantize/dequantize (per tensor, per axis, blocked), integer matmul and conv,
requantization of int32 accumulators, dynamic quantization.

Every integer result is exact: rounding is half to even (``np.rint``) and out-of-range values
saturate to the target type's range; integer products are accumulated in float64 (exact below
2**53, so for any realistic reduction length) and wrapped to int32 like an int32 accumulator.
"""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from .. import dtype as dt
from ..dtype import DType
from ..types import is_static_dim
from .registry import Attr, OpDef, register
from .shapes import normalize_axis, out

INT_QUANT_TYPES = (dt.int8, dt.uint8, dt.int16, dt.uint16, dt.int4, dt.uint4, dt.int2, dt.uint2)
FLOAT8_TYPES = (dt.float8e4m3fn, dt.float8e4m3fnuz, dt.float8e5m2, dt.float8e5m2fnuz)
QUANT_TYPES = INT_QUANT_TYPES + FLOAT8_TYPES + (dt.float4e2m1,)
SCALE_TYPES = (dt.float32, dt.float16, dt.bfloat16)
# what QuantizeLinear accepts as x (int32: requantizing an accumulator with a float scale)
QUANTIZE_INPUT_TYPES = SCALE_TYPES + (dt.int32,)
# DequantizeLinear also reads int32 (a bias or an accumulator)
DEQUANT_INPUT_TYPES = QUANT_TYPES + (dt.int32,)
INT8_TYPES = (dt.int8, dt.uint8)


def int_range(d: DType) -> tuple[int, int]:
    info = ml_dtypes.iinfo(d.np)
    return int(info.min), int(info.max)


def _names(types) -> str:
    return "one of " + ", ".join(t.name for t in types)


# ---- scale / zero-point layouts ----------------------------------------------------------------
def _check_param(ctx, i: int, x_shape, axis: int, block_size: int, what: str) -> None:
    """A scale or zero point is per-tensor (scalar / one element), per-axis (1-D of x's size
    along ``axis``) or blocked (x's rank, ceil(size/block_size) along ``axis``)."""
    p = ctx.type(i)
    if p is None or p.shape is None or x_shape is None:
        return
    if _one_element(p.shape):
        return
    rank = len(x_shape)
    ax = normalize_axis(axis, rank, ctx)
    n = x_shape[ax]
    if block_size <= 0:
        if len(p.shape) != 1:
            ctx.fail(f"{what} must be a scalar or a 1-D tensor (per-axis); set block_size for "
                     "blocked quantization", input=i, expected=f"[] or [{n}]", actual=p.shape)
        if is_static_dim(n) and is_static_dim(p.shape[0]) and p.shape[0] != n:
            ctx.fail(f"per-axis {what} must have one entry per element along axis {ax}", input=i,
                     expected=f"[{n}]", actual=p.shape)
        return
    if len(p.shape) != rank:
        ctx.fail(f"blocked {what} must have the input's rank", input=i, expected=f"rank {rank}",
                 actual=p.shape)
    for k, (pd, xd) in enumerate(zip(p.shape, x_shape)):
        if not (is_static_dim(pd) and is_static_dim(xd)):
            continue
        want = math.ceil(xd / block_size) if k == ax else xd
        if pd != want:
            ctx.fail(f"blocked {what} has the wrong size along axis {k} (block_size={block_size})",
                     input=i, expected=want, actual=pd)


def _one_element(shape) -> bool:
    return len(shape) == 0 or (len(shape) == 1 and shape[0] == 1)


def expand_param(p: np.ndarray, shape, axis: int, block_size: int) -> np.ndarray:
    """A scale or zero point as an array that broadcasts against an input of ``shape``."""
    p = np.asarray(p)
    if p.ndim == 0 or p.size == 1 and p.ndim == 1:
        return p.reshape(())
    ax = axis + len(shape) if axis < 0 else axis
    if block_size <= 0:
        dims = [1] * len(shape)
        dims[ax] = p.size
        return p.reshape(dims)
    return np.repeat(p, block_size, axis=ax).take(np.arange(shape[ax]), axis=ax)


def _quant_attrs():
    return {
        "axis": Attr("int", 1, "the axis a 1-D (per-axis) or blocked scale runs along"),
        "block_size": Attr("int", 0, "> 0: blocked quantization, one scale per block_size elements"),
    }


# ---- quantize_linear ---------------------------------------------------------------------------
def _quantize_out_dtype(zp_dtype, attr_dtype):
    if zp_dtype is not None:
        return zp_dtype
    return attr_dtype if attr_dtype is not None else dt.uint8


def _quantize_infer(ctx):
    x, s = ctx.type(0), ctx.type(1)
    if x.dtype not in QUANTIZE_INPUT_TYPES:
        ctx.fail("unsupported dtype", input=0, expected=_names(QUANTIZE_INPUT_TYPES), actual=x.dtype.name)
    if s.dtype not in QUANTIZE_INPUT_TYPES:
        ctx.fail("unsupported scale dtype", input=1, expected=_names(QUANTIZE_INPUT_TYPES),
                 actual=s.dtype.name)
    zp = ctx.type(2)
    want = ctx.attrs["dtype"]
    if zp is not None and want is not None and zp.dtype is not want:
        ctx.fail("the zero point's dtype and the output dtype differ", input=2, expected=want.name,
                 actual=zp.dtype.name)
    odt = _quantize_out_dtype(zp.dtype if zp is not None else None, want)
    if odt not in QUANT_TYPES:
        ctx.fail("unsupported quantized dtype", input=2 if zp is not None else None,
                 expected=_names(QUANT_TYPES), actual=odt.name)
    a = ctx.attrs
    _check_param(ctx, 1, x.shape, a["axis"], a["block_size"], "scale")
    if zp is not None:
        _check_param(ctx, 2, x.shape, a["axis"], a["block_size"], "zero point")
        if s.shape is not None and zp.shape is not None and _one_element(s.shape) != _one_element(zp.shape):
            ctx.fail("scale and zero point must both be per-tensor or both per-axis/blocked",
                     input=2, expected=s.shape, actual=zp.shape)
    return [out(x.shape, odt)]


def quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, odt: DType, *,
             axis: int = 1, block_size: int = 0, saturate: bool = True,
             precision: DType | None = None) -> np.ndarray:
    """saturate(round_half_even(x / scale) + zero_point) in ``odt`` (numpy, for references)."""
    x = np.asarray(x)
    s = expand_param(scale, x.shape, axis, block_size)
    if precision is None and (s.dtype.kind == "f" or s.dtype == dt.bfloat16.np):
        precision = DType.from_numpy(s.dtype)  # the scale's type sets the division's precision
    if precision is not None:
        q = x.astype(precision.np) / s.astype(precision.np)
    else:  # an integer scale: divide in float64
        q = np.true_divide(x.astype(np.float64), s)
    if odt in INT_QUANT_TYPES:
        r = np.rint(q).astype(np.float64)
        r = np.where(np.isnan(r), 0.0, r)
        if zero_point is not None:
            r = r + expand_param(zero_point, x.shape, axis, block_size).astype(np.float64)
        lo, hi = int_range(odt)
        return np.clip(r, lo, hi).astype(np.int64).astype(odt.np)
    if odt in FLOAT8_TYPES:
        # the zero point of a float8 type is always 0
        if saturate:
            m = float(ml_dtypes.finfo(odt.np).max)
            q = np.clip(q, -m, m)
        return q.astype(odt.np)
    if odt is dt.float4e2m1:
        q = q.astype(np.float32)
        if zero_point is not None:
            q = q + expand_param(zero_point, x.shape, axis, block_size).astype(np.float32)
        return q.astype(odt.np)  # no inf/nan encodings: the cast itself saturates
    raise ValueError(f"not a quantized dtype: {odt.name}")


def _quantize_ref(ins, a):
    x, s = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    odt = _quantize_out_dtype(None if zp is None else DType.from_numpy(zp.dtype), a["dtype"])
    return quantize(x, s, zp, odt, axis=a["axis"], block_size=a["block_size"],
                    saturate=a["saturate"], precision=a["precision"])


register(OpDef(
    "quantize_linear", infer=_quantize_infer, reference=_quantize_ref, inputs=(2, 3), kind="other",
    attrs={**_quant_attrs(),
           "saturate": Attr("bool", True, "float8 targets: clamp to the finite range instead of inf/nan"),
           "dtype": Attr("dtype", None, "output dtype when there is no zero point (default uint8)"),
           "precision": Attr("dtype", None, "compute x / scale in this float type (default: the scale's)")},
    differentiable=False,
    doc="quantize_linear(x, scale, zero_point?): saturate(round_half_even(x / scale) + zero_point)",
))


# ---- dequantize_linear -------------------------------------------------------------------------
def _dequantize_infer(ctx):
    x, s, zp = ctx.type(0), ctx.type(1), ctx.type(2)
    if x.dtype not in DEQUANT_INPUT_TYPES:
        ctx.fail("unsupported dtype", input=0, expected=_names(DEQUANT_INPUT_TYPES), actual=x.dtype.name)
    if s.dtype not in SCALE_TYPES:
        ctx.fail("unsupported scale dtype", input=1, expected=_names(SCALE_TYPES), actual=s.dtype.name)
    if zp is not None and zp.dtype is not x.dtype:
        ctx.fail("the zero point must have the input's dtype", input=2, expected=x.dtype.name,
                 actual=zp.dtype.name)
    a = ctx.attrs
    _check_param(ctx, 1, x.shape, a["axis"], a["block_size"], "scale")
    if zp is not None:
        _check_param(ctx, 2, x.shape, a["axis"], a["block_size"], "zero point")
    odt = a["dtype"] if a["dtype"] is not None else s.dtype
    if odt not in SCALE_TYPES:
        ctx.fail("unsupported output dtype", expected=_names(SCALE_TYPES), actual=odt.name)
    return [out(x.shape, odt)]


def dequantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, odt: DType, *,
               axis: int = 1, block_size: int = 0) -> np.ndarray:
    """(x - zero_point) * scale in ``odt`` (numpy, for references)."""
    x = np.asarray(x)
    xdt = DType.from_numpy(x.dtype)
    # int32 differences need float64; narrower ones are exact in float32, which is also where
    # the product is rounded (the ONNX reference rounds there too, before the final cast)
    cdt = np.float64 if xdt is dt.int32 else np.float32
    if xdt.is_int:
        d = x.astype(np.int64)
        if zero_point is not None:
            d = d - expand_param(zero_point, x.shape, axis, block_size).astype(np.int64)
        xf = d.astype(cdt)
    else:  # float8 / float4: the zero point is 0 by definition
        xf = x.astype(cdt)
    y = xf * expand_param(scale, x.shape, axis, block_size).astype(cdt)
    return y.astype(odt.np)


def _dequantize_ref(ins, a):
    x, s = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    odt = a["dtype"] if a["dtype"] is not None else DType.from_numpy(s.dtype)
    return dequantize(x, s, zp, odt, axis=a["axis"], block_size=a["block_size"])


register(OpDef(
    "dequantize_linear", infer=_dequantize_infer, reference=_dequantize_ref, inputs=(2, 3),
    kind="other",
    attrs={**_quant_attrs(),
           "dtype": Attr("dtype", None, "output dtype (default: the scale's)")},
    differentiable=False,
    doc="dequantize_linear(x, scale, zero_point?): (x - zero_point) * scale",
))


# ---- integer matmul ------------------------------------------------------------------------------
def _int_accumulate(fn, *arrays) -> np.ndarray:
    """Run an integer contraction in float64 (BLAS; exact below 2**53) and wrap to int32."""
    res = fn(*[a.astype(np.float64) for a in arrays])
    return np.asarray(res).astype(np.int64).astype(np.int32)


def _check_int8(ctx, i, what):
    t = ctx.type(i)
    if t is not None and t.dtype not in INT8_TYPES:
        ctx.fail(f"unsupported dtype for {what}", input=i, expected=_names(INT8_TYPES), actual=t.dtype.name)
    return t


def _int8_operands(ctx, first: str, second: str):
    """The two 8-bit operands of matmul_integer/conv_integer (inputs 0, 1), each with an optional
    zero point of its own dtype (inputs 2, 3)."""
    a, b = _check_int8(ctx, 0, first), _check_int8(ctx, 1, second)
    for i, src in ((2, 0), (3, 1)):
        zp = _check_int8(ctx, i, "zero point")
        if zp is not None and zp.dtype is not ctx.type(src).dtype:
            ctx.fail("the zero point must have its operand's dtype", input=i,
                     expected=ctx.type(src).dtype.name, actual=zp.dtype.name)
    return a, b


def _matmul_integer_infer(ctx):
    from .linalg import matmul_shape
    a, b = _int8_operands(ctx, "A", "B")
    if a.shape is not None and b.shape is not None:
        _check_row_zp(ctx, 2, a.shape, -2, "per-row")
        _check_row_zp(ctx, 3, b.shape, -1, "per-column")
    return [out(matmul_shape(a.shape, b.shape, ctx), dt.int32)]


def _check_row_zp(ctx, i, shape, axis, what):
    zp = ctx.type(i)
    if zp is None or zp.shape is None or len(zp.shape) != 1 or len(shape) < 2:
        return
    n = shape[axis]
    if is_static_dim(n) and is_static_dim(zp.shape[0]) and zp.shape[0] not in (1, n):
        ctx.fail(f"a 1-D zero point is {what} and needs one entry per {'row' if axis == -2 else 'column'}",
                 input=i, expected=f"[{n}]", actual=zp.shape)


def _centered(x: np.ndarray, zp, axis: int) -> np.ndarray:
    """x - zero_point in int64; a 1-D zero point runs along ``axis`` (rows of A, columns of B)."""
    x = x.astype(np.int64)
    if zp is None:
        return x
    zp = np.asarray(zp).astype(np.int64)
    if zp.ndim == 1 and x.ndim >= 2 and zp.size > 1:
        zp = zp.reshape((-1, 1) if axis == -2 else (-1,))
    return x - zp


def _matmul_integer_ref(ins, a):
    A, B = ins[0], ins[1]
    azp = ins[2] if len(ins) > 2 else None
    bzp = ins[3] if len(ins) > 3 else None
    return _int_accumulate(np.matmul, _centered(A, azp, -2), _centered(B, bzp, -1))


register(OpDef(
    "matmul_integer", infer=_matmul_integer_infer, reference=_matmul_integer_ref, inputs=(2, 4),
    kind="contraction", differentiable=False,
    doc="(A - a_zero_point) @ (B - b_zero_point) over int8/uint8, accumulated in int32",
))


# ---- integer convolution ---------------------------------------------------------------------------
def _conv_attrs():
    return {
        "strides": Attr("ints", None),
        "pads": Attr("ints", None, "begin pads of every spatial axis, then end pads"),
        "dilations": Attr("ints", None),
        "group": Attr("int", 1),
        "auto_pad": Attr("str", "NOTSET", "NOTSET | SAME_UPPER | SAME_LOWER | VALID"),
    }


def conv_geometry(in_spatial, kernel, a):
    """Output sizes and (begin, end) pads per spatial axis; dims may be symbols (then None)."""
    n = len(kernel)
    strides = a["strides"] or (1,) * n
    dil = a["dilations"] or (1,) * n
    pads = a["pads"] or (0,) * (2 * n)
    if len(strides) != n or len(dil) != n or len(pads) != 2 * n:
        raise ValueError(f"strides/dilations need {n} entries and pads {2 * n}")
    mode = a["auto_pad"]
    outs, pb, pe = [], [], []
    for i in range(n):
        size, k, s, d = in_spatial[i], kernel[i], strides[i], dil[i]
        ek = (k - 1) * d + 1 if is_static_dim(k) else None
        if not is_static_dim(size) or ek is None:
            outs.append(None)
            pb.append(0)
            pe.append(0)
            continue
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-size // s)
            total = max(0, (o - 1) * s + ek - size)
            lo = total // 2 if mode == "SAME_UPPER" else total - total // 2
            outs.append(o)
            pb.append(lo)
            pe.append(total - lo)
        elif mode == "VALID":
            outs.append(max(0, (size - ek) // s + 1))
            pb.append(0)
            pe.append(0)
        else:
            b, e = pads[i], pads[i + n]
            outs.append((size + b + e - ek) // s + 1)
            pb.append(b)
            pe.append(e)
    return outs, pb, pe, strides, dil


def check_conv_operands(ctx, x, w, w_input: int) -> None:
    """Ranks, group and channels of a conv of x (N, C, D1, ...) by w (M, C/group, k1, ...), w
    being input ``w_input``; both ranks known."""
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        ctx.fail("conv needs x (N, C, D1, ...) and w (M, C/group, k1, ...) of the same rank >= 3",
                 input=w_input, expected=f"rank {len(x.shape)}", actual=w.shape)
    g = ctx.attrs["group"]
    c, cw, m = x.shape[1], w.shape[1], w.shape[0]
    if g < 1:
        ctx.fail(f"group must be >= 1, got {g}")
    if is_static_dim(c) and is_static_dim(cw) and c != cw * g:
        ctx.fail(f"input channels {c} != weight channels {cw} x group {g}", input=w_input,
                 expected=f"w.shape[1] = {c // g if c % g == 0 else c / g}", actual=cw)
    if is_static_dim(m) and m % g:
        ctx.fail(f"output channels {m} are not a multiple of group {g}", input=w_input)


def conv_output_shape(ctx, x, w) -> tuple:
    """(N, M, *spatial) of that conv under the node's window attributes; unknown spatial sizes
    become fresh symbols."""
    try:
        outs, *_ = conv_geometry(x.shape[2:], w.shape[2:], ctx.attrs)
    except ValueError as e:
        ctx.fail(str(e))
    for i, o in enumerate(outs):
        if o is not None and o <= 0:
            ctx.fail(f"the kernel does not fit spatial axis {i}: output size {o}", input=0, actual=x.shape)
    return (x.shape[0], w.shape[0]) + tuple(ctx.fresh("conv") if o is None else o for o in outs)


def _conv_integer_infer(ctx):
    x, w = _int8_operands(ctx, "x", "w")
    if x.shape is None or w.shape is None:
        return [out(None if x.shape is None else (x.shape[0], ctx.fresh("c")) + tuple(
            ctx.fresh("conv") for _ in x.shape[2:]), dt.int32)]
    check_conv_operands(ctx, x, w, 1)
    m = w.shape[0]
    wzp = ctx.type(3)
    if wzp is not None and wzp.shape is not None and len(wzp.shape) == 1 and is_static_dim(m) \
            and is_static_dim(wzp.shape[0]) and wzp.shape[0] not in (1, m):
        ctx.fail("a 1-D weight zero point needs one entry per output channel", input=3,
                 expected=f"[{m}]", actual=wzp.shape)
    return [out(conv_output_shape(ctx, x, w), dt.int32)]


def conv_nd(x: np.ndarray, w: np.ndarray, a: dict) -> np.ndarray:
    """Grouped N-d convolution by im2col (a strided view) and one batched matmul per group."""
    n = w.ndim - 2
    outs, pb, pe, strides, dil = conv_geometry(x.shape[2:], w.shape[2:], a)
    x = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe)))
    N, C = x.shape[:2]
    M, Cg = w.shape[:2]
    G = a["group"]
    ks = w.shape[2:]
    st = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, shape=(N, C) + tuple(outs) + tuple(ks),
        strides=st[:2] + tuple(st[2 + i] * strides[i] for i in range(n))
        + tuple(st[2 + i] * dil[i] for i in range(n)), writeable=False)
    # (N, G, Cg, out..., k...) -> (N, G, P, Cg*K)
    P = int(np.prod(outs)) if outs else 1
    K = int(np.prod(ks)) if ks else 1
    cols = view.reshape((N, G, Cg) + tuple(outs) + tuple(ks))
    order = (0, 1) + tuple(range(3, 3 + n)) + (2,) + tuple(range(3 + n, 3 + 2 * n))
    cols = cols.transpose(order).reshape(N, G, P, Cg * K)
    wm = w.reshape(G, M // G, Cg * K).transpose(0, 2, 1)          # (G, Cg*K, M/G)
    y = np.matmul(cols, wm)                                        # (N, G, P, M/G)
    return y.transpose(0, 1, 3, 2).reshape((N, M) + tuple(outs))


def _conv_integer_ref(ins, a):
    x, w = ins[0], ins[1]
    xzp = ins[2] if len(ins) > 2 else None
    wzp = ins[3] if len(ins) > 3 else None
    xc = x.astype(np.int64) - (0 if xzp is None else np.asarray(xzp).astype(np.int64).reshape(()))
    wc = w.astype(np.int64)
    if wzp is not None:
        z = np.asarray(wzp).astype(np.int64)
        wc = wc - (z.reshape((-1,) + (1,) * (w.ndim - 1)) if z.size > 1 else z.reshape(()))
    return _int_accumulate(lambda p, q: conv_nd(p, q, a), xc, wc)


register(OpDef(
    "conv_integer", infer=_conv_integer_infer, reference=_conv_integer_ref, inputs=(2, 4),
    kind="contraction", attrs=_conv_attrs(), differentiable=False,
    doc="convolution of (x - x_zero_point) and (w - w_zero_point) over int8/uint8, int32 result",
))


# ---- requantize ----------------------------------------------------------------------------------
def _requantize_infer(ctx):
    acc, m, zp = ctx.type(0), ctx.type(1), ctx.type(2)
    if acc.dtype is not dt.int32:
        ctx.fail("the accumulator must be int32", input=0, expected="int32", actual=acc.dtype.name)
    if m.dtype not in SCALE_TYPES + (dt.float64,):
        ctx.fail("the multiplier must be a float", input=1, expected=_names(SCALE_TYPES), actual=m.dtype.name)
    want = ctx.attrs["dtype"]
    odt = zp.dtype if zp is not None else (want or dt.uint8)
    if odt not in INT_QUANT_TYPES:
        ctx.fail("unsupported quantized dtype", input=2 if zp is not None else None,
                 expected=_names(INT_QUANT_TYPES), actual=odt.name)
    if zp is not None and want is not None and zp.dtype is not want:
        ctx.fail("the zero point's dtype and the output dtype differ", input=2, expected=want.name,
                 actual=zp.dtype.name)
    from .shapes import broadcast_shapes
    shapes = [acc.shape, m.shape] + ([zp.shape] if zp is not None else [])
    shape = broadcast_shapes(*shapes, ctx=ctx)
    if shape is not None and acc.shape is not None and len(shape) != len(acc.shape):
        ctx.fail("the multiplier and zero point must broadcast to the accumulator's shape",
                 input=1, expected=acc.shape, actual=m.shape)
    return [out(shape, odt)]


def _requantize_ref(ins, a):
    acc, m = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    odt = DType.from_numpy(zp.dtype) if zp is not None else (a["dtype"] or dt.uint8)
    # float64: the int32 x float product is exact-rounded once, as ONNX's reference does it
    r = acc.astype(np.float64) * np.asarray(m).astype(np.float64)
    if zp is not None:
        r = r + np.asarray(zp).astype(np.float64)
    lo, hi = int_range(odt)
    r = np.clip(np.rint(r), lo, hi)
    return np.where(np.isnan(r), 0, r).astype(np.int64).astype(odt.np)


register(OpDef(
    "requantize", infer=_requantize_infer, reference=_requantize_ref, inputs=(2, 3), kind="other",
    attrs={"dtype": Attr("dtype", None, "output dtype when there is no zero point (default uint8)")},
    differentiable=False,
    doc="requantize(acc:int32, multiplier, zero_point?): "
        "saturate(round_half_even(acc * multiplier + zero_point)); the epilogue of quantized "
        "matmul/conv (multiplier = in_scale * w_scale / out_scale)",
))


# ---- dynamic quantization ------------------------------------------------------------------------
def _dql_infer(ctx):
    x = ctx.type(0)
    if x.dtype is not dt.float32:
        ctx.fail("unsupported dtype", input=0, expected="float32", actual=x.dtype.name)
    return [out(x.shape, dt.uint8), out((), dt.float32), out((), dt.uint8)]


def _dql_ref(ins, a):
    x = np.asarray(ins[0], dtype=np.float32)
    qmin, qmax = 0, 255
    # the range always includes 0 so that 0 is exactly representable
    hi = np.float32(max(0.0, float(np.max(x)))) if x.size else np.float32(0)
    lo = np.float32(min(0.0, float(np.min(x)))) if x.size else np.float32(0)
    span = np.float32(1.0) if hi == lo else np.float32(hi - lo)
    scale = np.float32(span / np.float32(qmax - qmin))
    zp = np.float32(np.float32(qmin) - lo / scale)
    zp = np.rint(np.clip(zp, qmin, qmax))
    y = np.clip(np.rint(x / scale) + zp, qmin, qmax)
    return y.astype(np.uint8), np.array(scale, np.float32), np.array(zp).astype(np.uint8)


register(OpDef(
    "dynamic_quantize_linear", infer=_dql_infer, reference=_dql_ref, kind="other",
    differentiable=False,
    doc="uint8 quantization with scale and zero point computed from x's range (which includes 0)",
))
