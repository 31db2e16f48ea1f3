"""Dtype conversions: cast (numbers, strings, float8 saturation, float8e8m0 rounding) and bitcast.

``cast`` follows ONNX Cast: float -> int truncates toward zero, int -> int wraps, float8
targets saturate out-of-range values to +-max by default (``saturate``), strings parse and
print numbers, and float8e8m0 targets (powers of two) round by ``round_mode``. ``bitcast``
reinterprets each element's bits as another dtype of the same width. The gradient of cast is
in ``elementwise_grad.py``; bitcast is not differentiable.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from .. import dtype as dt
from ..dtype import DType
from .elementwise_grad import cast_grad
from .registry import Attr, OpDef, register
from .shapes import out

_FLOAT8 = ("float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz")
_E8M0 = "float8e8m0"
_ROUND_MODES = ("up", "down", "nearest")
_HALF_NP = (dt.float16.np, dt.bfloat16.np)


def _float8_max(to: DType) -> float:
    return float(ml_dtypes.finfo(to.np).max)


def _cast_infer(ctx):
    x = ctx.type(0)
    if ctx.attrs["round_mode"] not in _ROUND_MODES:
        ctx.fail(f"round_mode must be one of {', '.join(_ROUND_MODES)}", actual=ctx.attrs["round_mode"])
    to = ctx.attrs["to"]
    if x.dtype.kind == "c" and to.kind != "c":
        ctx.fail("cannot cast complex to a real type", input=0, actual=x.dtype.name)
    return [out(x.shape, to)]


# ---- strings ---------------------------------------------------------------------------------
def _to_string(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.bool_:
        x = x.astype(np.int64)
    elif x.dtype.kind == "f" and x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)  # numpy prints ml_dtypes values through float32 anyway
    flat = [str(v) for v in x.ravel().tolist()] if x.dtype.kind in "iu" else list(x.ravel().astype(str))
    return np.array(flat, dtype=object).reshape(x.shape)


def _parse_number(s, integer: bool):
    if isinstance(s, bytes):
        s = s.decode()
    s = str(s).strip()
    if integer:
        try:
            return int(s)
        except ValueError:
            return int(float(s))  # "100.5" -> 100, as the ONNX spec allows
    return float(s)  # accepts "INF", "+inf", "-Inf", "NaN", "1e-5", case-insensitively


def _from_string(x: np.ndarray, to: DType, saturate: bool, round_mode: str) -> np.ndarray:
    if to.kind == "b":
        vals = [_parse_number(s, False) != 0 for s in x.ravel()]
        return np.array(vals, dtype=np.bool_).reshape(x.shape)
    if to.kind in "iu":
        return np.array([_parse_number(s, True) for s in x.ravel()], dtype=np.int64).reshape(
            x.shape).astype(to.np)
    f = np.array([_parse_number(s, False) for s in x.ravel()], dtype=np.float64).reshape(x.shape)
    return _cast_numeric(f, to, saturate, round_mode)


# ---- numbers ---------------------------------------------------------------------------------
def _to_e8m0(x: np.ndarray, to: DType, saturate: bool, round_mode: str) -> np.ndarray:
    """Power-of-two rounding of |x| (e8m0 has no sign or mantissa): 2**-127 .. 2**127, NaN."""
    v = np.abs(x.astype(np.float64))
    m, e = np.frexp(v)  # v = m * 2**e with 0.5 <= m < 1, so 2**(e-1) <= v < 2**e
    if round_mode == "up":
        k = np.where(m == 0.5, e - 1, e)
    elif round_mode == "down":
        k = e - 1
    else:  # nearest, ties up: the midpoint of [2**(e-1), 2**e) is m = 0.75
        k = np.where(m >= 0.75, e, e - 1)
    bad = np.isnan(v)
    if saturate:
        k = np.where(np.isinf(v), 127, np.where(v == 0, -127, np.clip(k, -127, 127)))
    else:
        bad = bad | np.isinf(v) | (v == 0) | (k < -127) | (k > 127)
        k = np.clip(k, -127, 127)
    r = np.ldexp(1.0, k.astype(np.int32))
    return np.where(bad, np.nan, r).astype(to.np)


def _cast_numeric(x: np.ndarray, to: DType, saturate: bool, round_mode: str) -> np.ndarray:
    if to.name == _E8M0:
        return _to_e8m0(x, to, saturate, round_mode)
    if saturate and to.name in _FLOAT8 and x.dtype.kind in "fiu":
        # ONNX saturates finite and infinite values to +-max (NaN stays NaN); ml_dtypes alone
        # would give NaN (or inf for e5m2)
        lim = _float8_max(to)
        if x.dtype.kind == "f":
            x = np.clip(x.astype(np.float32) if x.dtype in _HALF_NP else x, -lim, lim)
        else:
            x = np.clip(x.astype(np.float64), -lim, lim)
    return x.astype(to.np)


def _cast_ref(ins, a):
    x = ins[0]
    to, saturate, round_mode = a["to"], a["saturate"], a["round_mode"]
    src = DType.from_numpy(x.dtype)
    if to is src:
        return x
    if to is dt.string:
        return _to_string(x)
    if src is dt.string:
        return _from_string(x, to, saturate, round_mode)
    return _cast_numeric(x, to, saturate, round_mode)


def _cast_formula(b, x, to, saturate=True, round_mode="up"):
    src = b.dtype_of(x)
    if saturate and to.name in _FLOAT8 and (src.is_float or src.is_int):
        lim = _float8_max(to)
        if src.is_float or np.iinfo(src.np).max > lim:
            c = b.min(x, b.const(lim, x))
            if src.is_signed:
                c = b.max(c, b.const(-lim, x))
            if src.is_float:
                c = b.select(b.isnan(x), x, c)  # min/max may drop NaN on some targets
            x = c
    return b.cast(x, to)


register(OpDef(
    "cast", infer=_cast_infer, reference=_cast_ref, kind="elementwise", differentiable=True,
    grad=cast_grad,
    attrs={"to": Attr("dtype"),
           "saturate": Attr("bool", True, "float8 targets: clamp out-of-range values to +-max"),
           "round_mode": Attr("str", "up", "float8e8m0 targets: up, down or nearest")},
    scalar=_cast_formula,
    doc="convert to dtype ``to`` (float->int truncates toward zero; int->int wraps)",
))


# ---- bitcast ---------------------------------------------------------------------------------
def _bitcast_infer(ctx):
    x = ctx.type(0)
    to = ctx.attrs["to"]
    if x.dtype.kind == "s" or to.kind == "s":
        ctx.fail("cannot bitcast strings", input=0, actual=f"{x.dtype.name} -> {to.name}")
    if x.dtype.bits != to.bits:
        ctx.fail(f"bit widths differ ({x.dtype.name} -> {to.name})", input=0,
                 expected=f"{x.dtype.bits} bits", actual=f"{to.bits} bits")
    return [out(x.shape, to)]


register(OpDef(
    "bitcast", infer=_bitcast_infer, kind="movement", differentiable=False,
    attrs={"to": Attr("dtype")},
    reference=lambda ins, a: (ins[0] if ins[0].flags.c_contiguous else ins[0].copy()).view(a["to"].np),
    doc="reinterpret the bits of each element as dtype ``to`` of the same width (a view)",
))
