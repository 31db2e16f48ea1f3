"""The scalar-builder interface that elementwise formulas are written against.

An op's ``scalar`` formula is a function ``f(b, *xs, **attrs)`` that only calls methods of ``b``.
Each backend implements this interface over its own values (LLVM values, C expression
strings); ``NumpyScalar`` implements it over numpy arrays so formulas can be checked against
the op's reference implementation.
"""
from __future__ import annotations

import math

import numpy as np

from ..dtype import DType

# The complete method list of a scalar builder. A backend that implements all of them can
# generate loops for every op with a scalar formula.
SCALAR_METHODS = (
    "const", "cast", "dtype_of",
    "add", "sub", "mul", "div", "neg", "mod", "fmod", "pow",
    "min", "max", "abs", "sign",
    "exp", "log", "sqrt", "rsqrt", "tanh", "erf", "sin", "cos", "tan", "asin", "acos", "atan",
    "sinh", "cosh", "asinh", "acosh", "atanh", "floor", "ceil", "round",
    "lt", "le", "gt", "ge", "eq", "ne", "and_", "or_", "xor", "not_",
    "bit_and", "bit_or", "bit_xor", "bit_not", "shl", "shr",
    "select", "isnan", "isinf",
)


class ScalarBuilder:
    """Abstract interface; see SCALAR_METHODS. ``x`` arguments are backend values."""

    def __getattr__(self, name):  # pragma: no cover - documents the contract
        raise NotImplementedError(f"{type(self).__name__} does not implement scalar op {name!r}")


class NumpyScalar(ScalarBuilder):
    """Evaluates scalar formulas on numpy arrays (elementwise, with broadcasting)."""

    def const(self, value, like):
        return np.asarray(value, dtype=np.asarray(like).dtype)

    def cast(self, x, dtype: DType):
        return np.asarray(x).astype(dtype.np)

    def dtype_of(self, x) -> DType:
        return DType.from_numpy(np.asarray(x).dtype)

    def add(self, a, b): return np.add(a, b)
    def sub(self, a, b): return np.subtract(a, b)
    def mul(self, a, b): return np.multiply(a, b)

    def div(self, a, b):
        a = np.asarray(a)
        if a.dtype.kind in "iu":
            # integer division truncates toward zero (C semantics), as ONNX Div does
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.trunc(np.true_divide(a, b))
            return q.astype(a.dtype)
        return np.divide(a, b)

    def neg(self, a): return np.negative(a)

    def mod(self, a, b):
        return np.mod(a, b)

    def fmod(self, a, b):
        return np.fmod(a, b)

    def pow(self, a, b): return np.power(a, b)
    def min(self, a, b): return np.minimum(a, b)
    def max(self, a, b): return np.maximum(a, b)
    def abs(self, a): return np.abs(a)
    def sign(self, a): return np.sign(a)
    def exp(self, a): return np.exp(a)
    def log(self, a): return np.log(a)
    def sqrt(self, a): return np.sqrt(a)

    def rsqrt(self, a):
        a = np.asarray(a)
        return (np.ones((), a.dtype) / np.sqrt(a)).astype(a.dtype)

    def tanh(self, a): return np.tanh(a)

    def erf(self, a):
        from .elementwise import erf_np
        return erf_np(np.asarray(a))

    def sin(self, a): return np.sin(a)
    def cos(self, a): return np.cos(a)
    def tan(self, a): return np.tan(a)
    def asin(self, a): return np.arcsin(a)
    def acos(self, a): return np.arccos(a)
    def atan(self, a): return np.arctan(a)
    def sinh(self, a): return np.sinh(a)
    def cosh(self, a): return np.cosh(a)
    def asinh(self, a): return np.arcsinh(a)
    def acosh(self, a): return np.arccosh(a)
    def atanh(self, a): return np.arctanh(a)
    def floor(self, a): return np.floor(a)
    def ceil(self, a): return np.ceil(a)
    def round(self, a): return np.round(a)  # half to even, as ONNX Round
    def lt(self, a, b): return np.less(a, b)
    def le(self, a, b): return np.less_equal(a, b)
    def gt(self, a, b): return np.greater(a, b)
    def ge(self, a, b): return np.greater_equal(a, b)
    def eq(self, a, b): return np.equal(a, b)
    def ne(self, a, b): return np.not_equal(a, b)
    def and_(self, a, b): return np.logical_and(a, b)
    def or_(self, a, b): return np.logical_or(a, b)
    def xor(self, a, b): return np.logical_xor(a, b)
    def not_(self, a): return np.logical_not(a)
    def bit_and(self, a, b): return np.bitwise_and(a, b)
    def bit_or(self, a, b): return np.bitwise_or(a, b)
    def bit_xor(self, a, b): return np.bitwise_xor(a, b)
    def bit_not(self, a): return np.invert(a)
    def shl(self, a, b): return np.left_shift(a, b)
    def shr(self, a, b): return np.right_shift(a, b)
    def select(self, c, a, b): return np.where(c, a, b)
    def isnan(self, a): return np.isnan(a)
    def isinf(self, a): return np.isinf(a)
