"""Elementwise ops: arithmetic, math functions, activations, comparisons, logic, bits, select,
dropout (cast is in ``cast.py``).

Each op carries a scalar formula (``b`` is a scalar builder, see ``scalar.py``) from which
backends generate loops, and a numpy reference for the interpreter. Integer semantics follow
ONNX: division truncates toward zero, ``mod`` takes the divisor's sign (``fmod=1``: the
dividend's), shifts by a negative amount or by the bit width or more give the sign fill.
The gradient rules are in ``elementwise_grad.py``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtype as dt
from ..dtype import DType
from .declare import (ALL_TYPES, FLOAT_TYPES, INT_TYPES, NUMERIC_TYPES, SIGNED_INT_TYPES,
                      elementwise)
from .elementwise_grad import (UNARY_RULES, add_grad, clip_grad, div_grad, dropout_grad,
                               extremum_grad, gelu_grad, identity_grad, mod_grad, mul_grad,
                               pow_grad, prelu_grad, sub_grad, where_grad, zero_grad)
from .registry import Attr, OpDef, register
from .shapes import broadcast_shapes, out

SIGNED_TYPES = FLOAT_TYPES + SIGNED_INT_TYPES
BITWISE_TYPES = INT_TYPES
_HALF = (dt.float16, dt.bfloat16)
_HALF_NP = tuple(d.np for d in _HALF)


# ---- helpers ---------------------------------------------------------------------------
def _in_f32(fn):
    """Wrap a numpy reference so half-precision inputs are computed in float32 and rounded once.

    That is how hardware evaluates half-precision transcendental functions, and the scalar
    formulas below (``_f32_formula``) do the same, so backends and the reference agree.
    """
    def wrapped(*xs, **attrs):
        odt = xs[0].dtype
        if odt in _HALF_NP:
            xs = [x.astype(np.float32) if x.dtype == odt else x for x in xs]
            return np.asarray(fn(*xs, **attrs)).astype(odt)
        return fn(*xs, **attrs)
    wrapped.__name__ = getattr(fn, "__name__", "ref")
    return wrapped


def _f32_formula(f):
    """Scalar-formula counterpart of ``_in_f32``."""
    def formula(b, *xs, **attrs):
        d = b.dtype_of(xs[0])
        if d in _HALF:
            ys = [b.cast(x, dt.float32) if b.dtype_of(x) is d else x for x in xs]
            return b.cast(f(b, *ys, **attrs), d)
        return f(b, *xs, **attrs)
    formula.__name__ = getattr(f, "__name__", "formula")
    return formula


def _c(b, value, like):
    return b.const(value, like)


def _expm1(b, x):
    """exp(x) - 1 without cancellation near 0 (Kahan: (u - 1) * x / log(u), u = exp(x))."""
    one = _c(b, 1, x)
    u = b.exp(x)
    um1 = b.sub(u, one)
    r = b.div(b.mul(um1, x), b.log(u))
    r = b.select(b.eq(um1, b.neg(one)), b.neg(one), r)
    r = b.select(b.isinf(u), u, r)
    return b.select(b.eq(u, one), x, r)


# ---- erf ---------------------------------------------------------------------------------
# erfc(z) ~ t * exp(-z^2 + P(t)), t = 1 / (1 + z/2): the Chebyshev fit of Press et al.
# (Numerical Recipes, "erfcc"), fractional error < 1.2e-7 for z >= 0 -- exact enough for float32.
_ERFC_P = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
           -1.13520398, 1.48851587, -0.82215223, 0.17087277)
# Maclaurin series erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)), used for |x| < 0.5
# where 1 - erfc(x) would lose relative precision.
_ERF_TAYLOR = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(10))
_erf_exact = np.vectorize(math.erf, otypes=[np.float64])
_erfc_exact = np.vectorize(math.erfc, otypes=[np.float64])


def _erf_parts(v: np.ndarray):
    """For float64 ``v``: (|v| < 0.5, erf(v) by series there, erfc(|v|) by the fit elsewhere)."""
    z = np.abs(v)
    t = 1.0 / (1.0 + 0.5 * z)
    p = np.zeros_like(t)
    for c in reversed(_ERFC_P):
        p = p * t + c
    erfc_abs = t * np.exp(-z * z + p)
    v2 = v * v
    s = np.zeros_like(v)
    for c in reversed(_ERF_TAYLOR):
        s = s * v2 + c
    return z < 0.5, (2.0 / math.sqrt(math.pi)) * v * s, erfc_abs


def _from_erf_parts(x, exact, combine) -> np.ndarray:
    """``exact(x)`` for float64 ``x``; otherwise ``combine(v, *_erf_parts(v))`` over v = x in
    float64, rounded back to x's dtype."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return exact(x) if x.size else x.copy()
    v = x.astype(np.float64)
    with np.errstate(all="ignore"):  # inf/nan reach the unselected branch
        return combine(v, *_erf_parts(v)).astype(x.dtype)


def erf_np(x: np.ndarray) -> np.ndarray:
    """Vectorized erf in ``x``'s dtype: exact for float64, ~1e-7 relative (1-2 ulp) for smaller floats."""
    return _from_erf_parts(x, _erf_exact, lambda v, small, series, erfc_abs: np.where(
        small, series, np.copysign(1.0 - erfc_abs, v)))


def erfc_np(x: np.ndarray) -> np.ndarray:
    """Vectorized erfc = 1 - erf without cancellation for large x; precision as ``erf_np``."""
    return _from_erf_parts(x, _erfc_exact, lambda v, small, series, erfc_abs: np.where(
        small, 1.0 - series, np.where(v < 0, 2.0 - erfc_abs, erfc_abs)))


# ---- arithmetic --------------------------------------------------------------------------
def _div_ref(x, y):
    if x.dtype.kind not in "iu":
        return np.divide(x, y)
    # floor division rounds toward -inf; ONNX (like C) truncates toward zero
    q = np.floor_divide(x, y)
    if x.dtype.kind == "i":
        inexact = np.not_equal(np.remainder(x, y), 0) & ((x < 0) != (y < 0))
        q = q + inexact.astype(q.dtype)
    return q


def _mod_ref(x, y, fmod=False):
    return np.fmod(x, y) if fmod else np.mod(x, y)


def _mod_formula(b, x, y, fmod=False):
    return b.fmod(x, y) if fmod else b.mod(x, y)


def _int_pow(x, y):
    """x ** y in x's integer dtype (wrapping); negative exponents give trunc(1 / x**|y|)."""
    yy = y.astype(np.int64)
    r = np.power(x.astype(np.int64) if x.dtype.kind == "i" else x, np.maximum(yy, 0))
    if (yy < 0).any():
        xi = x.astype(np.int64)
        neg = np.where(xi == 1, 1, np.where(xi == -1, 1 - 2 * (np.abs(yy) % 2), 0))
        r = np.where(yy < 0, neg, r)
    return r.astype(x.dtype)


def _pow_ref(x, y):
    # classify through DType: ml_dtypes' bfloat16/float8 have numpy kind 'V', not 'f'
    if DType.from_numpy(x.dtype).is_float:
        if x.dtype in _HALF_NP:
            return np.power(x.astype(np.float32), y.astype(np.float32)).astype(x.dtype)
        return np.power(x, y.astype(x.dtype))
    if DType.from_numpy(y.dtype).is_float:  # integer base, float exponent: float64, truncate back
        return np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)
    return _int_pow(x, y)


def _pow_formula(b, x, y):
    dx, dy = b.dtype_of(x), b.dtype_of(y)
    if dx.is_float:
        if dx in _HALF:
            return b.cast(b.pow(b.cast(x, dt.float32), b.cast(y, dt.float32)), dx)
        return b.pow(x, b.cast(y, dx) if dy is not dx else y)
    if dy.is_float:
        return b.cast(b.pow(b.cast(x, dt.float64), b.cast(y, dt.float64)), dx)
    return b.pow(x, b.cast(y, dx) if dy is not dx else y)


elementwise("add", 2, scalar=lambda b, x, y: b.add(x, y), reference=np.add, dtypes=NUMERIC_TYPES,
            grad=add_grad)
elementwise("sub", 2, scalar=lambda b, x, y: b.sub(x, y), reference=np.subtract, dtypes=NUMERIC_TYPES,
            grad=sub_grad)
elementwise("mul", 2, scalar=lambda b, x, y: b.mul(x, y), reference=np.multiply, dtypes=NUMERIC_TYPES,
            grad=mul_grad)
elementwise("div", 2, scalar=lambda b, x, y: b.div(x, y), reference=_div_ref, dtypes=NUMERIC_TYPES,
            grad=div_grad,
            doc="x / y; integer division truncates toward zero")
elementwise("mod", 2, scalar=_mod_formula, reference=_mod_ref, dtypes=NUMERIC_TYPES,
            attrs={"fmod": Attr("bool", False)}, grad=mod_grad,
            doc="remainder with the divisor's sign (fmod=False) or the dividend's (fmod=True, C fmod)")
elementwise("pow", 2, scalar=_pow_formula, reference=_pow_ref, dtypes=NUMERIC_TYPES, same_dtype=False,
            differentiable=True, grad=pow_grad,
            doc="x ** y in x's dtype; y may be of another numeric dtype")
elementwise("maximum", 2, scalar=lambda b, x, y: b.max(x, y), reference=np.maximum, dtypes=NUMERIC_TYPES,
            grad=extremum_grad,
            doc="elementwise max; NaN propagates")
elementwise("minimum", 2, scalar=lambda b, x, y: b.min(x, y), reference=np.minimum, dtypes=NUMERIC_TYPES,
            grad=extremum_grad,
            doc="elementwise min; NaN propagates")
elementwise("identity", 1, scalar=lambda b, x: x, reference=lambda x: np.array(x, copy=True),
            dtypes=ALL_TYPES, grad=identity_grad,
            doc="a copy of x (names a value, e.g. a gradient output; simplify_algebra removes it)")
elementwise("neg", 1, scalar=lambda b, x: b.neg(x), reference=np.negative, dtypes=SIGNED_TYPES,
            grad=UNARY_RULES["neg"])
elementwise("abs", 1, scalar=lambda b, x: b.abs(x), reference=np.abs, dtypes=NUMERIC_TYPES,
            grad=UNARY_RULES["abs"])
elementwise("sign", 1, scalar=lambda b, x: b.sign(x), reference=np.sign, dtypes=NUMERIC_TYPES,
            grad=zero_grad)
elementwise("reciprocal", 1, scalar=lambda b, x: b.div(_c(b, 1, x), x),
            reference=lambda x: np.divide(np.ones((), x.dtype), x),
            grad=UNARY_RULES["reciprocal"])

# ---- math --------------------------------------------------------------------------------
for _name, _np_fn in [("exp", np.exp), ("log", np.log), ("sqrt", np.sqrt), ("sin", np.sin),
                      ("cos", np.cos), ("tan", np.tan), ("asin", np.arcsin), ("acos", np.arccos),
                      ("atan", np.arctan), ("sinh", np.sinh), ("cosh", np.cosh),
                      ("asinh", np.arcsinh), ("acosh", np.arccosh), ("atanh", np.arctanh),
                      ("tanh", np.tanh), ("floor", np.floor), ("ceil", np.ceil)]:
    elementwise(_name, 1, scalar=lambda b, x, _m=_name: getattr(b, _m)(x), reference=_np_fn,
                grad=UNARY_RULES.get(_name, zero_grad))
elementwise("round", 1, scalar=lambda b, x: b.round(x), reference=np.round, grad=zero_grad,
            doc="round half to even")
elementwise("erf", 1, scalar=lambda b, x: b.erf(x), reference=erf_np, grad=UNARY_RULES["erf"])
elementwise("isnan", 1, scalar=lambda b, x: b.isnan(x), reference=np.isnan, out_dtype=dt.bool_)


def _isinf_ref(x, detect_negative=True, detect_positive=True):
    r = np.isinf(x)
    if not detect_negative:
        r &= x > 0
    if not detect_positive:
        r &= x < 0
    return r


def _isinf_formula(b, x, detect_negative=True, detect_positive=True):
    r = b.isinf(x)
    if not detect_negative:
        r = b.and_(r, b.gt(x, _c(b, 0, x)))
    if not detect_positive:
        r = b.and_(r, b.lt(x, _c(b, 0, x)))
    return r


elementwise("isinf", 1, scalar=_isinf_formula, reference=_isinf_ref, out_dtype=dt.bool_,
            attrs={"detect_negative": Attr("bool", True), "detect_positive": Attr("bool", True)})


# ---- activations -------------------------------------------------------------------------
def _sigmoid_np(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _sigmoid_f(b, x):
    one = _c(b, 1, x)
    e = b.exp(b.neg(b.abs(x)))
    return b.select(b.ge(x, _c(b, 0, x)), b.div(one, b.add(one, e)), b.div(e, b.add(one, e)))


def _softplus_np(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _softplus_f(b, x):
    # max(x, 0) + log1p(exp(-|x|)); log1p(e) ~ e - e^2/2 when 1 + e would round to 1
    e = b.exp(b.neg(b.abs(x)))
    l1p = b.select(b.lt(e, _c(b, 1e-4, x)), b.sub(e, b.mul(_c(b, 0.5, x), b.mul(e, e))),
                   b.log(b.add(_c(b, 1, x), e)))
    return b.add(b.max(x, _c(b, 0, x)), l1p)


def _gelu_np(x, approximate="none"):
    if approximate == "tanh":
        # 0.5 * (1 + tanh(u)) == sigmoid(2u), which does not cancel for x << 0
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))
        return x * _sigmoid_np(2 * inner)
    return 0.5 * x * erfc_np(x * (-1 / math.sqrt(2)))


def _gelu_f(b, x, approximate="none"):
    if approximate == "tanh":
        cube = b.mul(b.mul(x, x), x)
        inner = b.mul(_c(b, 2 * math.sqrt(2 / math.pi), x), b.add(x, b.mul(_c(b, 0.044715, x), cube)))
        return b.mul(x, _sigmoid_f(b, inner))
    half, one = _c(b, 0.5, x), _c(b, 1, x)
    return b.mul(b.mul(half, x), b.add(one, b.erf(b.mul(x, _c(b, 1 / math.sqrt(2), x)))))


def _hard_sigmoid_f(b, x, alpha=0.2, beta=0.5):
    y = b.add(b.mul(_c(b, alpha, x), x), _c(b, beta, x))
    return b.max(_c(b, 0, x), b.min(_c(b, 1, x), y))


def _validated(opdef: OpDef, check) -> OpDef:
    """Run ``check(ctx)`` (attribute validation) before the op's broadcasting inference."""
    infer = opdef.infer

    def checked(ctx):
        check(ctx)
        return infer(ctx)
    opdef.infer = checked
    return opdef


def _gelu_attrs(ctx):
    if ctx.attrs["approximate"] not in ("none", "tanh"):
        ctx.fail("approximate must be 'none' or 'tanh'", actual=repr(ctx.attrs["approximate"]))


elementwise("relu", 1, scalar=lambda b, x: b.max(x, _c(b, 0, x)),
            grad=UNARY_RULES["relu"],
            reference=lambda x: np.maximum(x, np.zeros((), x.dtype)), dtypes=SIGNED_TYPES)
elementwise("sigmoid", 1, scalar=_f32_formula(_sigmoid_f), reference=_in_f32(_sigmoid_np),
            grad=UNARY_RULES["sigmoid"],
            doc="1 / (1 + exp(-x)), computed without overflow")
elementwise("leaky_relu", 1, attrs={"alpha": Attr("float", 0.01)},
            grad=UNARY_RULES["leaky_relu"],
            scalar=_f32_formula(lambda b, x, alpha: b.select(b.lt(x, _c(b, 0, x)), b.mul(_c(b, alpha, x), x), x)),
            reference=_in_f32(lambda x, alpha: np.where(x < 0, x * np.asarray(alpha, x.dtype), x)))
elementwise("prelu", 2, scalar=lambda b, x, s: b.select(b.lt(x, _c(b, 0, x)), b.mul(s, x), x),
            grad=prelu_grad,
            reference=lambda x, s: np.where(x < 0, x * s, x), dtypes=NUMERIC_TYPES,
            doc="x < 0 ? slope * x : x (slope broadcasts)")
elementwise("elu", 1, grad=UNARY_RULES["elu"], attrs={"alpha": Attr("float", 1.0)},
            scalar=_f32_formula(lambda b, x, alpha: b.select(
                b.lt(x, _c(b, 0, x)), b.mul(_c(b, alpha, x), _expm1(b, x)), x)),
            reference=_in_f32(lambda x, alpha: np.where(x < 0, alpha * np.expm1(x), x)))
elementwise("selu", 1, attrs={"alpha": Attr("float", 1.6732632423543772),
                              "gamma": Attr("float", 1.0507009873554805)},
            grad=UNARY_RULES["selu"],
            scalar=_f32_formula(lambda b, x, alpha, gamma: b.mul(_c(b, gamma, x), b.select(
                b.gt(x, _c(b, 0, x)), x, b.mul(_c(b, alpha, x), _expm1(b, x))))),
            reference=_in_f32(lambda x, alpha, gamma: gamma * np.where(x > 0, x, alpha * np.expm1(x))))
elementwise("celu", 1, grad=UNARY_RULES["celu"], attrs={"alpha": Attr("float", 1.0)},
            scalar=_f32_formula(lambda b, x, alpha: b.select(
                b.gt(x, _c(b, 0, x)), x,
                b.mul(_c(b, alpha, x), _expm1(b, b.div(x, _c(b, alpha, x)))))),
            reference=_in_f32(lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(x / alpha))),
            doc="max(0, x) + min(0, alpha * (exp(x / alpha) - 1))")
elementwise("hard_sigmoid", 1, attrs={"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)},
            grad=UNARY_RULES["hard_sigmoid"],
            scalar=_f32_formula(_hard_sigmoid_f),
            reference=_in_f32(lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1)))
elementwise("hard_swish", 1, grad=UNARY_RULES["hard_swish"],
            scalar=_f32_formula(lambda b, x: b.mul(x, _hard_sigmoid_f(b, x, 1 / 6, 0.5))),
            reference=_in_f32(lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
            doc="x * max(0, min(1, x / 6 + 1/2))")
elementwise("softplus", 1, scalar=_f32_formula(_softplus_f), reference=_in_f32(_softplus_np),
            grad=UNARY_RULES["softplus"],
            doc="log(1 + exp(x)), computed without overflow")
elementwise("softsign", 1, scalar=_f32_formula(lambda b, x: b.div(x, b.add(_c(b, 1, x), b.abs(x)))),
            grad=UNARY_RULES["softsign"],
            reference=_in_f32(lambda x: x / (1 + np.abs(x))))
elementwise("thresholded_relu", 1, attrs={"alpha": Attr("float", 1.0)},
            grad=UNARY_RULES["thresholded_relu"],
            scalar=_f32_formula(lambda b, x, alpha: b.select(b.gt(x, _c(b, alpha, x)), x, _c(b, 0, x))),
            reference=_in_f32(lambda x, alpha: np.where(x > alpha, x, np.zeros((), x.dtype))))
_validated(elementwise("gelu", 1, attrs={"approximate": Attr("str", "none", "'none' (erf) or 'tanh'")},
                       scalar=_f32_formula(_gelu_f), reference=_in_f32(_gelu_np), grad=gelu_grad),
           _gelu_attrs)
elementwise("mish", 1, scalar=_f32_formula(lambda b, x: b.mul(x, b.tanh(_softplus_f(b, x)))),
            grad=UNARY_RULES["mish"],
            reference=_in_f32(lambda x: x * np.tanh(_softplus_np(x))), doc="x * tanh(softplus(x))")
elementwise("swish", 1, grad=UNARY_RULES["swish"], attrs={"alpha": Attr("float", 1.0)},
            scalar=_f32_formula(lambda b, x, alpha: b.mul(x, _sigmoid_f(b, b.mul(_c(b, alpha, x), x)))),
            reference=_in_f32(lambda x, alpha: x * _sigmoid_np(alpha * x)), doc="x * sigmoid(alpha * x)")
elementwise("shrink", 1, attrs={"bias": Attr("float", 0.0), "lambd": Attr("float", 0.5)},
            grad=UNARY_RULES["shrink"],
            dtypes=NUMERIC_TYPES,
            scalar=_f32_formula(lambda b, x, bias, lambd: b.select(
                b.lt(x, _c(b, -lambd, x)), b.add(x, _c(b, bias, x)),
                b.select(b.gt(x, _c(b, lambd, x)), b.sub(x, _c(b, bias, x)), _c(b, 0, x)))),
            reference=_in_f32(lambda x, bias, lambd: np.where(
                x < -lambd, x + bias, np.where(x > lambd, x - bias, 0))))
elementwise("clip", 3, grad=clip_grad, scalar=lambda b, x, lo, hi: b.min(b.max(x, lo), hi),
            reference=lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi), dtypes=NUMERIC_TYPES,
            doc="min(max(x, lo), hi): every element is hi when lo > hi")

# ---- comparisons ---------------------------------------------------------------------------
elementwise("equal", 2, scalar=lambda b, x, y: b.eq(x, y), reference=np.equal,
            dtypes=ALL_TYPES + (dt.string,), out_dtype=dt.bool_, differentiable=False)
for _name, _m, _np_fn in [("less", "lt", np.less), ("less_equal", "le", np.less_equal),
                          ("greater", "gt", np.greater), ("greater_equal", "ge", np.greater_equal)]:
    elementwise(_name, 2, scalar=lambda b, x, y, _m=_m: getattr(b, _m)(x, y), reference=_np_fn,
                dtypes=NUMERIC_TYPES, out_dtype=dt.bool_, differentiable=False)

# ---- logic and bits ------------------------------------------------------------------------
_BOOL = (dt.bool_,)
elementwise("logical_and", 2, scalar=lambda b, x, y: b.and_(x, y), reference=np.logical_and, dtypes=_BOOL)
elementwise("logical_or", 2, scalar=lambda b, x, y: b.or_(x, y), reference=np.logical_or, dtypes=_BOOL)
elementwise("logical_xor", 2, scalar=lambda b, x, y: b.xor(x, y), reference=np.logical_xor, dtypes=_BOOL)
elementwise("logical_not", 1, scalar=lambda b, x: b.not_(x), reference=np.logical_not, dtypes=_BOOL)
elementwise("bitwise_and", 2, scalar=lambda b, x, y: b.bit_and(x, y), reference=np.bitwise_and,
            dtypes=BITWISE_TYPES)
elementwise("bitwise_or", 2, scalar=lambda b, x, y: b.bit_or(x, y), reference=np.bitwise_or,
            dtypes=BITWISE_TYPES)
elementwise("bitwise_xor", 2, scalar=lambda b, x, y: b.bit_xor(x, y), reference=np.bitwise_xor,
            dtypes=BITWISE_TYPES)
elementwise("bitwise_not", 1, scalar=lambda b, x: b.bit_not(x), reference=np.invert, dtypes=BITWISE_TYPES)


def _shift_ref(x, y, left):
    bits = x.dtype.itemsize * 8
    ok = (y >= 0) & (y < bits)
    s = np.where(ok, y, 0).astype(x.dtype)
    if left:
        return np.where(ok, np.left_shift(x, s), np.zeros((), x.dtype))
    fill = np.where(x < 0, -1, 0).astype(x.dtype) if x.dtype.kind == "i" else np.zeros((), x.dtype)
    return np.where(ok, np.right_shift(x, s), fill)


def _shift_formula(b, x, y, left):
    zero = _c(b, 0, x)
    bits = b.dtype_of(x).bits
    ok = b.lt(y, _c(b, bits, y))
    if b.dtype_of(y).is_signed:
        ok = b.and_(ok, b.ge(y, _c(b, 0, y)))
    s = b.select(ok, y, _c(b, 0, y))  # keep the shift amount in range: wider shifts are undefined in C
    if left:
        return b.select(ok, b.shl(x, s), zero)
    fill = b.select(b.lt(x, zero), _c(b, -1, x), zero) if b.dtype_of(x).is_signed else zero
    return b.select(ok, b.shr(x, s), fill)


elementwise("shift_left", 2, scalar=lambda b, x, y: _shift_formula(b, x, y, True),
            reference=lambda x, y: _shift_ref(x, y, True), dtypes=BITWISE_TYPES,
            doc="x << y; 0 when y < 0 or y >= bit width")
elementwise("shift_right", 2, scalar=lambda b, x, y: _shift_formula(b, x, y, False),
            reference=lambda x, y: _shift_ref(x, y, False), dtypes=BITWISE_TYPES,
            doc="x >> y (arithmetic for signed x); the sign fill when y < 0 or y >= bit width")


# ---- select and fill -----------------------------------------------------------------------
def _where_infer(ctx):
    c, x, y = ctx.types
    if c.dtype is not dt.bool_:
        ctx.fail("condition must be bool", input=0, expected="bool", actual=c.dtype.name)
    if x.dtype is not y.dtype:
        ctx.fail("branches must share one dtype", input=2, expected=x.dtype.name, actual=y.dtype.name)
    return [out(broadcast_shapes(c.shape, x.shape, y.shape, ctx=ctx), x.dtype)]


register(OpDef(
    "where", infer=_where_infer, inputs=(3, 3), kind="elementwise", differentiable=True,
    grad=where_grad,
    reference=lambda ins, a: np.where(ins[0], ins[1], ins[2]),
    scalar=lambda b, c, x, y: b.select(c, x, y),
    doc="select(cond, x, y) with broadcasting",
))

elementwise("full_like", 1, attrs={"value": Attr("float", 0.0), "dtype": Attr("dtype", None)},
            dtypes=ALL_TYPES + (dt.string,), differentiable=False,
            out_dtype=lambda dts, a: a["dtype"] or dts[0],
            scalar=lambda b, x, value, dtype: b.cast(b.const(value, x), dtype or b.dtype_of(x)),
            reference=lambda x, value, dtype: np.full(x.shape, value, (dtype.np if dtype else x.dtype)),
            doc="a tensor of x's shape filled with value (in dtype, default x's)")


# ---- dropout (training) --------------------------------------------------------------------
def _dropout_infer(ctx):
    x, r = ctx.type(0), ctx.type(1)
    if x.dtype not in FLOAT_TYPES:
        ctx.fail("unsupported dtype", input=0, expected="a float type", actual=x.dtype.name)
    if r.dtype not in FLOAT_TYPES:
        ctx.fail("ratio must be a float", input=1, expected="a float type", actual=r.dtype.name)
    if r.shape is not None and len(r.shape) != 0:
        ctx.fail("ratio must be a scalar", input=1, expected="rank 0", actual=f"shape {r.shape}")
    t = ctx.type(2)
    if t is not None and (t.dtype is not dt.bool_ or (t.shape is not None and len(t.shape) != 0)):
        ctx.fail("training_mode must be a bool scalar", input=2, expected="bool[]", actual=repr(t))
    return [out(x.shape, x.dtype), out(x.shape, dt.bool_)]


def _dropout_ref(ins, a):
    x, ratio = ins[0], float(ins[1])
    training = True if len(ins) < 3 or ins[2] is None else bool(ins[2])
    if not training or ratio <= 0:
        return x.copy(), np.ones(x.shape, np.bool_)
    if ratio >= 1:
        return np.zeros_like(x), np.zeros(x.shape, np.bool_)
    keep = np.random.default_rng(a["seed"]).random(x.shape) >= ratio
    y = np.where(keep, x * np.asarray(1 / (1 - ratio), x.dtype), np.zeros((), x.dtype))
    return y.astype(x.dtype), keep


register(OpDef(
    "dropout", infer=_dropout_infer, reference=_dropout_ref, inputs=(2, 3), kind="random",
    random=True, differentiable=True, grad=dropout_grad, attrs={"seed": Attr("int", None)},
    doc="(x * keep / (1 - ratio), keep) with keep ~ Bernoulli(1 - ratio) when training_mode "
        "(input 2, default true) holds; (x, all true) otherwise",
))
