"""``Tensor``: a graph Value seen from Python, with numpy-like operators, methods and indexing.

Every operation appends a node to the graph being traced (``Graph.op``), and the node's type
inference runs at once, so a shape error is raised at the user's line. Python numbers and
lists mixed into an expression become constants of the other operand's dtype
(``x * 2`` on a float32 ``x`` multiplies by a float32 2).
"""
from __future__ import annotations

import builtins
from typing import Sequence

import numpy as np

from irgraph.dtype import DType
from irgraph.errors import IrgraphError
from irgraph.graph import Value

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def _F():
    from . import functional
    return functional


class TensorOps:
    """Operators shared by ``Tensor`` and ``Parameter``; ``_as_tensor()`` gives the traced Tensor."""

    __array_ufunc__ = None   # numpy operands defer to our reflected operators (np_array + tensor)

    def _as_tensor(self) -> "Tensor":
        raise NotImplementedError

    # arithmetic
    def __add__(self, o): return _F().add(self, o)
    def __radd__(self, o): return _F().add(o, self)
    def __sub__(self, o): return _F().sub(self, o)
    def __rsub__(self, o): return _F().sub(o, self)
    def __mul__(self, o): return _F().mul(self, o)
    def __rmul__(self, o): return _F().mul(o, self)
    def __truediv__(self, o): return _F().div(self, o)
    def __rtruediv__(self, o): return _F().div(o, self)
    def __floordiv__(self, o): return _F().floor_divide(self, o)
    def __rfloordiv__(self, o): return _F().floor_divide(o, self)
    def __mod__(self, o): return _F().mod(self, o)
    def __rmod__(self, o): return _F().mod(o, self)
    def __pow__(self, o): return _F().pow(self, o)
    def __rpow__(self, o): return _F().pow(o, self)
    def __matmul__(self, o): return _F().matmul(self, o)
    def __rmatmul__(self, o): return _F().matmul(o, self)
    def __neg__(self): return _F().neg(self)
    def __pos__(self): return self._as_tensor()
    def __abs__(self): return _F().abs(self)

    # comparisons give bool tensors (as numpy's do); hashing stays by identity
    def __lt__(self, o): return _F().less(self, o)
    def __le__(self, o): return _F().less_equal(self, o)
    def __gt__(self, o): return _F().greater(self, o)
    def __ge__(self, o): return _F().greater_equal(self, o)
    def __eq__(self, o): return _F().equal(self, o)  # type: ignore[override]
    def __ne__(self, o): return _F().not_equal(self, o)  # type: ignore[override]
    __hash__ = object.__hash__

    # logical for bool tensors, bitwise for integer ones
    def __and__(self, o): return _F().bitwise_or_logical("and", self, o)
    def __rand__(self, o): return _F().bitwise_or_logical("and", o, self)
    def __or__(self, o): return _F().bitwise_or_logical("or", self, o)
    def __ror__(self, o): return _F().bitwise_or_logical("or", o, self)
    def __xor__(self, o): return _F().bitwise_or_logical("xor", self, o)
    def __rxor__(self, o): return _F().bitwise_or_logical("xor", o, self)
    def __invert__(self): return _F().invert(self)

    def __bool__(self):
        raise IrgraphError("a traced tensor has no truth value while tracing",
                           hint="use F.where(cond, a, b) or F.if_(cond, then_fn, else_fn) to branch")

    def __getitem__(self, key): return _F().getitem(self, key)

    def __setitem__(self, key, value):
        raise IrgraphError("traced tensors are immutable",
                           hint="build a new tensor with F.where, F.scatter_nd or F.concat")

    # methods that read like numpy / PyTorch
    @property
    def T(self) -> "Tensor":  # noqa: N802
        """All axes reversed (numpy's ``.T``)."""
        return _F().transpose(self)

    def reshape(self, *shape) -> "Tensor":
        """``x.reshape(2, -1)`` or ``x.reshape((2, -1))``; ONNX rules: -1 infers, 0 copies the input dim."""
        return _F().reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)

    def transpose(self, *perm) -> "Tensor":
        """``x.transpose(1, 0)``; no arguments reverse the axes."""
        return _F().transpose(self, perm=(perm[0] if len(perm) == 1 and not isinstance(perm[0], int)
                                          else perm) or None)

    permute = transpose

    def flatten(self, start_axis: int = 0, end_axis: int = -1) -> "Tensor":
        return _F().flatten(self, start_axis, end_axis)

    def squeeze(self, axes=None) -> "Tensor":
        return _F().squeeze(self, None if axes is None else _axes_list(axes))

    def unsqueeze(self, axes) -> "Tensor":
        return _F().unsqueeze(self, _axes_list(axes))

    def expand(self, *shape) -> "Tensor":
        return _F().expand(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)

    def astype(self, dtype) -> "Tensor":
        return _F().astype(self, dtype)

    def sum(self, axis=None, keepdims: bool = False) -> "Tensor":
        return _F().sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> "Tensor":
        return _F().mean(self, axis, keepdims)

    def max(self, axis=None, keepdims: bool = False) -> "Tensor":
        return _F().amax(self, axis, keepdims)

    def min(self, axis=None, keepdims: bool = False) -> "Tensor":
        return _F().amin(self, axis, keepdims)

    def prod(self, axis=None, keepdims: bool = False) -> "Tensor":
        return _F().prod(self, axis, keepdims)

    def argmax(self, axis: int = -1, keepdims: bool = False) -> "Tensor":
        return _F().argmax(self, axis=axis, keepdims=int(keepdims))

    def argmin(self, axis: int = -1, keepdims: bool = False) -> "Tensor":
        return _F().argmin(self, axis=axis, keepdims=int(keepdims))

    def matmul(self, o) -> "Tensor":
        return _F().matmul(self, o)

    def clip(self, lo=None, hi=None) -> "Tensor":
        return _F().clamp(self, lo, hi)

    def relu(self) -> "Tensor":
        return _F().relu(self)

    def sigmoid(self) -> "Tensor":
        return _F().sigmoid(self)

    def tanh(self) -> "Tensor":
        return _F().tanh(self)

    def exp(self) -> "Tensor":
        return _F().exp(self)

    def log(self) -> "Tensor":
        return _F().log(self)

    def sqrt(self) -> "Tensor":
        return _F().sqrt(self)

    def abs(self) -> "Tensor":
        return _F().abs(self)

    def softmax(self, axis: int = -1) -> "Tensor":
        return _F().softmax(self, axis=axis)

    def log_softmax(self, axis: int = -1) -> "Tensor":
        return _F().log_softmax(self, axis=axis)


def _axes_list(axes) -> list:
    return [int(axes)] if isinstance(axes, (int, np.integer)) else [int(a) for a in axes]


class Tensor(TensorOps):
    """A value of the graph being traced. ``.value`` is the irgraph ``Value`` it wraps."""

    __slots__ = ("value",)

    def __init__(self, value: Value):
        self.value = value

    def _as_tensor(self) -> "Tensor":
        return self

    @property
    def shape(self) -> tuple | None:
        """Static sizes are ints, symbolic ones strings; None when even the rank is unknown."""
        return self.value.shape

    @property
    def dtype(self) -> DType:
        return self.value.dtype

    @property
    def ndim(self) -> int:
        if self.value.shape is None:
            raise IrgraphError(f"the rank of {self.value.name!r} is unknown while tracing")
        return len(self.value.shape)

    @property
    def name(self) -> str:
        return self.value.name

    def __len__(self) -> int:
        s = self.shape
        if not s or not isinstance(s[0], int):
            raise IrgraphError(f"len() needs a static first dimension; {self.name!r} has shape {s}")
        return s[0]

    def __iter__(self):
        return (self[i] for i in builtins.range(len(self)))

    def __repr__(self) -> str:
        return f"Tensor({self.value.name}: {self.value.type!r})"


def static_shape(t: Tensor, what: str = "this operation") -> tuple[int, ...]:
    """The tensor's shape when every size is known while tracing, else a clear error."""
    s = t.shape
    if s is None or not all(isinstance(d, int) for d in s):
        raise IrgraphError(f"{what} needs static sizes; {t.name!r} has shape {s}")
    return tuple(s)


def index_plan(shape: Sequence, key) -> dict:
    """How ``x[key]`` is built from ONNX ops: one slice, at most one gather (an integer-array
    index), a squeeze (integer indices) and an unsqueeze (``None``)."""
    if not isinstance(key, tuple):
        key = (key,)
    rank = len(shape)
    used = builtins.sum(1 for k in key if k is not None and k is not Ellipsis)
    if builtins.sum(1 for k in key if k is Ellipsis) > 1:
        raise IrgraphError("an index may hold one Ellipsis (...)")
    if used > rank:
        raise IrgraphError(f"too many indices for a tensor of rank {rank}", expected=rank, actual=used)
    items = []
    for k in key:
        if k is Ellipsis:
            items.extend([builtins.slice(None)] * (rank - used))
        else:
            items.append(k)
    items.extend([builtins.slice(None)] * (rank - builtins.sum(1 for k in items if k is not None)))
    starts, ends, axes, steps = [], [], [], []
    drop, gather, out_pos, new_axes = [], None, 0, []
    axis = 0
    for k in items:
        if k is None:
            new_axes.append(out_pos)
            out_pos += 1
            continue
        if isinstance(k, (bool, np.bool_)):
            raise IrgraphError("a bool scalar is not an index")
        if isinstance(k, (int, np.integer)):
            k = int(k)
            d = shape[axis]
            if isinstance(d, int) and not -d <= k < d:
                raise IrgraphError(f"index {k} is out of range for axis {axis} of size {d}")
            starts.append(k)
            ends.append(k + 1 if k != -1 else INT64_MAX)
            axes.append(axis)
            steps.append(1)
            drop.append(axis)
        elif isinstance(k, builtins.slice):
            step = 1 if k.step is None else int(k.step)
            if step == 0:
                raise IrgraphError("slice step cannot be zero")
            start = k.start if k.start is not None else (0 if step > 0 else INT64_MAX)
            stop = k.stop if k.stop is not None else (INT64_MAX if step > 0 else INT64_MIN)
            if not (k.start is None and k.stop is None and step == 1):
                starts.append(int(start))
                ends.append(int(stop))
                axes.append(axis)
                steps.append(step)
            out_pos += 1
        else:
            if gather is not None:
                raise IrgraphError("only one array index is supported per indexing expression",
                                   hint="index twice: x[idx][:, idx2]")
            gather = (axis, k, out_pos)
            out_pos += 1   # its real rank is added when the index is known
        axis += 1
    if gather is not None and drop:
        raise IrgraphError("mixing integer and array indices is not supported (numpy would move "
                           "the array's axes to the front)", hint="index in two steps")
    return {"starts": starts, "ends": ends, "axes": axes, "steps": steps, "drop": drop,
            "gather": gather, "new_axes": new_axes}
