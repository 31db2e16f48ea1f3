"""Tensor types: a dtype and a shape whose dimensions are ints (static) or strings (symbols)."""
from __future__ import annotations

import itertools
from typing import Iterable, Union

import numpy as np

from .dtype import DType

Dim = Union[int, str]

# Largest element count a declared shape may have; larger ones are refused at import
# rather than letting a hostile model ask for petabytes.
MAX_ELEMENTS = 2 ** 36

_fresh = itertools.count()


def fresh_dim(prefix: str = "d") -> str:
    """A new symbolic dimension, for sizes only known when the graph runs (NonZero, Unique …)."""
    return f"?{prefix}{next(_fresh)}"


def is_static_dim(d) -> bool:
    return isinstance(d, (int, np.integer))


class TensorType:
    """``TensorType(shape, dtype)``; ``shape is None`` means the rank itself is unknown."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: Iterable[Dim] | None, dtype: DType):
        if not isinstance(dtype, DType):
            dtype = DType.from_numpy(dtype) if not isinstance(dtype, str) else DType.from_name(dtype)
        self.dtype = dtype
        if shape is None:
            self.shape = None
        else:
            dims = []
            for d in shape:
                if is_static_dim(d):
                    d = int(d)
                    if d < 0:
                        from .errors import ShapeError
                        raise ShapeError(f"negative dimension {d} in shape {tuple(shape)}")
                elif not isinstance(d, str):
                    from .errors import ShapeError
                    raise ShapeError(f"dimension must be an int or a symbol name, got {d!r}")
                dims.append(d)
            self.shape = tuple(dims)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(is_static_dim(d) for d in self.shape)

    @property
    def numel(self) -> int | None:
        if not self.is_static:
            return None
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        if n is None:
            return None
        return (n * self.dtype.bits + 7) // 8

    def with_shape(self, shape) -> "TensorType":
        return TensorType(shape, self.dtype)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def matches(self, arr: np.ndarray, bindings: dict | None = None) -> bool:
        """Does ``arr`` fit this type? Symbols are bound in ``bindings`` when given."""
        if DType.from_numpy(arr.dtype) is not self.dtype:
            return False
        if self.shape is None:
            return True
        if arr.ndim != len(self.shape):
            return False
        for want, got in zip(self.shape, arr.shape):
            if isinstance(want, int):
                if want != got:
                    return False
            elif bindings is not None:
                if bindings.setdefault(want, got) != got:
                    return False
        return True

    def __eq__(self, other) -> bool:
        return isinstance(other, TensorType) and self.shape == other.shape and self.dtype is other.dtype

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype.name))

    def __repr__(self) -> str:
        return f"{self.dtype.name}{format_shape(self.shape)}"

    @staticmethod
    def of(arr: np.ndarray) -> "TensorType":
        return TensorType(arr.shape, DType.from_numpy(arr.dtype))


def format_shape(shape) -> str:
    if shape is None:
        return "[*]"
    return "[" + ",".join(str(d) for d in shape) + "]"
