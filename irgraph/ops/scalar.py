"""The scalar-builder interface that elementwise formulas are written against.

An op's ``scalar`` formula is a function ``f(b, *xs, **attrs)`` that only calls methods of ``b``.
Each backend implements this interface over its own values (LLVM values, C expression
strings); ``NumpyScalar`` implements it over numpy arrays so formulas can be checked against
the op's reference implementation.
"""
from __future__ import annotations

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
    """Evaluates scalar formulas on numpy arrays (elementwise, with broadcasting).

    The methods that are one numpy function as it stands come from ``_NUMPY_FUNCS`` below."""

    def const(self, value, like):
        return np.asarray(value, dtype=np.asarray(like).dtype)

    def cast(self, x, dtype: DType):
        return np.asarray(x).astype(dtype.np)

    def dtype_of(self, x) -> DType:
        return DType.from_numpy(np.asarray(x).dtype)

    def div(self, a, b):
        a = np.asarray(a)
        if a.dtype.kind in "iu":
            # integer division truncates toward zero (C semantics), as ONNX Div does
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.trunc(np.true_divide(a, b))
            return q.astype(a.dtype)
        return np.divide(a, b)

    def rsqrt(self, a):
        a = np.asarray(a)
        return (np.ones((), a.dtype) / np.sqrt(a)).astype(a.dtype)

    def erf(self, a):
        from .elementwise import erf_np
        return erf_np(np.asarray(a))


_NUMPY_FUNCS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "neg": np.negative,
    "mod": np.mod, "fmod": np.fmod, "pow": np.power,
    "min": np.minimum, "max": np.maximum, "abs": np.abs, "sign": np.sign,
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "asinh": np.arcsinh,
    "acosh": np.arccosh, "atanh": np.arctanh,
    "floor": np.floor, "ceil": np.ceil, "round": np.round,  # half to even, as ONNX Round
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
    "eq": np.equal, "ne": np.not_equal,
    "and_": np.logical_and, "or_": np.logical_or, "xor": np.logical_xor, "not_": np.logical_not,
    "bit_and": np.bitwise_and, "bit_or": np.bitwise_or, "bit_xor": np.bitwise_xor,
    "bit_not": np.invert, "shl": np.left_shift, "shr": np.right_shift,
    "select": np.where, "isnan": np.isnan, "isinf": np.isinf,
}
for _name, _fn in _NUMPY_FUNCS.items():
    setattr(NumpyScalar, _name, staticmethod(_fn))
