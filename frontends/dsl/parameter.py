"""Parameters (trained arrays) and buffers (carried state such as BatchNorm's running statistics).

A ``Parameter`` knows its shape, dtype and initializer; its array is drawn the first time a
model is traced (or ``Module.initialize(seed)`` is called), from
``numpy.random.default_rng([seed, crc32(name)])`` where ``name`` is its dotted path in the
model (``"0.weight"``). Drawing from the name rather than from one shared stream makes a
parameter's initial value independent of the order layers are built or touched in.
"""
from __future__ import annotations

import zlib

import numpy as np

from irgraph.dtype import DType
from irgraph.errors import IrgraphError

from . import init as _init
from .specs import as_dtype
from .tensor import TensorOps


def rng_for(seed: int, name: str) -> np.random.Generator:
    """The generator a parameter called ``name`` is drawn from under model seed ``seed``."""
    return np.random.default_rng([int(seed) % 2 ** 32, zlib.crc32(name.encode())])


class Parameter(TensorOps):
    """A named array of a model: trainable unless ``trainable=False``; ``buffer=True`` marks state
    that training updates by rule rather than by gradient (BatchNorm's running statistics)."""

    def __init__(self, shape, dtype="float32", init="zeros", *, fans: tuple[int, int] | None = None,
                 trainable: bool = True, buffer: bool = False, value: np.ndarray | None = None):
        self.shape = tuple(int(d) for d in shape)
        self.dtype: DType = as_dtype(dtype)
        self.init = _init.get(init)
        n = int(np.prod(self.shape)) if self.shape else 1
        self.fans = fans or (n, n)
        self.trainable = bool(trainable) and not buffer
        self.buffer = bool(buffer)
        self.name: str | None = None     # last dotted path a trace or initialize() gave it
        self._value: np.ndarray | None = None
        if value is not None:
            self.value = value

    # ---- the array ----------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return self._value is not None

    @property
    def value(self) -> np.ndarray:
        if self._value is None:
            raise IrgraphError(f"parameter {self.name or '(unnamed)'} has no value yet",
                               hint="trace the model (to_graph) or call model.initialize(seed) first")
        return self._value

    @value.setter
    def value(self, array) -> None:
        a = np.asarray(array)
        if tuple(a.shape) != self.shape:
            raise IrgraphError(f"parameter {self.name or '(unnamed)'} has shape {self.shape}",
                               expected=self.shape, actual=tuple(a.shape))
        self._value = np.ascontiguousarray(a, dtype=self.dtype.np)

    def initialize(self, seed: int, name: str) -> np.ndarray:
        """Draw the initial array for ``name`` under ``seed`` (replacing any value held)."""
        self.name = name
        drawn = self.init(rng_for(seed, name), self.shape, *self.fans)
        self.value = np.asarray(drawn).reshape(self.shape)
        return self._value

    def astype(self, dtype) -> "Parameter":
        """Change this parameter's dtype in place (its value is converted); returns it."""
        self.dtype = as_dtype(dtype)
        if self._value is not None:
            self._value = self._value.astype(self.dtype.np)
        return self

    # ---- as a tensor while tracing ---------------------------------------------------------------
    def _as_tensor(self):
        from .trace import current_tracer
        t = current_tracer()
        if t is None:
            raise IrgraphError(f"parameter {self.name or '(unnamed)'} used outside a trace",
                               hint="use it inside Module.forward or a dsl.Tracer block")
        return t.param(self)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numpy(self) -> np.ndarray:
        return self.value

    def __repr__(self) -> str:
        kind = "Buffer" if self.buffer else "Parameter"
        return f"{kind}({self.name or ''} {self.shape}, {self.dtype.name})"


def Buffer(shape, dtype="float32", init="zeros") -> Parameter:  # noqa: N802 - reads as a class
    """State a layer carries that is not trained by gradient (e.g. running statistics)."""
    return Parameter(shape, dtype, init, buffer=True)
