"""``F``: one function per registry op, plus a few numpy-style helpers built from them.

    from irgraph.frontends.dsl import functional as F
    y = F.conv(x, w, b, strides=(2, 2), pads=(1, 1, 1, 1))   # registry op 'conv'
    y = F.relu(F.linear(x, w, b))                            # helper: x @ w + b
    m = F.sum(x, axis=1)                                      # helper over reduce_sum

Every name of ``irgraph.ops.registry.all_ops()`` is a function here (``if`` is ``if_``); see
``opcall`` for how arguments are read. Ops registered after this module was imported are
found too (module ``__getattr__``). Names that shadow Python builtins (``abs``, ``pow``,
``range``, ``round``, ``slice``) are the registry ops, so code in this module spells the
builtins ``builtins.x``.
"""
from __future__ import annotations

import builtins

import numpy as np

from irgraph.errors import IrgraphError
from irgraph.ops.registry import all_ops, has_op

from .opcall import apply_op, op_function, python_name
from .tensor import Tensor, TensorOps, index_plan


def _op(name: str, *args, **attrs):
    return apply_op(name, args, attrs)


def _t(x) -> Tensor:
    if isinstance(x, TensorOps) and not isinstance(x, Tensor):
        return x._as_tensor()
    if not isinstance(x, Tensor):
        raise IrgraphError(f"expected a traced Tensor, got {type(x).__name__}")
    return x


def _axes(axis, x: Tensor):
    if axis is None:
        return None
    return [int(axis)] if isinstance(axis, (int, np.integer)) else [int(a) for a in axis]


# ---- numpy-style reductions (the registry's take axes as an int64 input) ---------------------------
def _reduce(op: str, x, axis, keepdims):
    axes = _axes(axis, x)
    if axes is None:
        return _op(op, x, keepdims=int(keepdims))
    return _op(op, x, axes, keepdims=int(keepdims))


def sum(x, axis=None, keepdims: bool = False):  # noqa: A001 - numpy's name
    """Sum over ``axis`` (an int, a list, or None for every axis)."""
    return _reduce("reduce_sum", x, axis, keepdims)


def mean(x, axis=None, keepdims: bool = False):
    return _reduce("reduce_mean", x, axis, keepdims)


def amax(x, axis=None, keepdims: bool = False):
    return _reduce("reduce_max", x, axis, keepdims)


def amin(x, axis=None, keepdims: bool = False):
    return _reduce("reduce_min", x, axis, keepdims)


def prod(x, axis=None, keepdims: bool = False):
    return _reduce("reduce_prod", x, axis, keepdims)


# ---- arithmetic helpers ---------------------------------------------------------------------------
def not_equal(a, b):
    return _op("logical_not", _op("equal", a, b))


def floor_divide(a, b):
    """Python's ``//``: floor of the quotient (ints use the divisor-signed remainder)."""
    da = a.dtype if isinstance(a, TensorOps) else b.dtype
    if da.is_float:
        return _op("floor", _op("div", a, b))
    return _op("div", _op("sub", a, _op("mod", a, b)), b)


def bitwise_or_logical(kind: str, a, b):
    """``&``, ``|``, ``^``: logical on bool tensors, bitwise on integer ones."""
    d = a.dtype if isinstance(a, TensorOps) else b.dtype
    return _op(("logical_" if d.is_bool else "bitwise_") + kind, a, b)


def invert(x):
    """``~x``: logical not for bools, bitwise not for integers."""
    return _op("logical_not" if _t(x).dtype.is_bool else "bitwise_not", x)


def clamp(x, lo=None, hi=None):
    """Clip to [lo, hi]; an open bound is the dtype's extreme."""
    x = _t(x)
    d = x.dtype.np
    big = np.inf if x.dtype.is_float else np.iinfo(d).max
    small = -np.inf if x.dtype.is_float else np.iinfo(d).min
    lo = np.array(small if lo is None else lo, d) if not isinstance(lo, TensorOps) else lo
    hi = np.array(big if hi is None else hi, d) if not isinstance(hi, TensorOps) else hi
    return _op("clip", x, lo, hi)


def square(x):
    return _op("mul", x, x)


def astype(x, dtype):
    """Cast to ``dtype`` (a DType, a name or a numpy dtype)."""
    return apply_op("cast", [x], {"to": dtype})


def linear(x, weight, bias=None):
    """``x @ weight + bias`` with ``weight`` of shape (in_features, out_features)."""
    y = _op("matmul", x, weight)
    return y if bias is None else _op("add", y, bias)


# ---- shapes --------------------------------------------------------------------------------------
def flatten(x, start_axis: int = 0, end_axis: int = -1):
    """Merge axes ``start_axis..end_axis`` into one (``flatten(x, 1)`` makes (N, C*H*W))."""
    x = _t(x)
    s = x.shape
    if s is None:
        raise IrgraphError("flatten needs the rank of its input while tracing")
    r = len(s)
    a, b = start_axis % r if r else 0, end_axis % r if r else 0
    if r == 0:
        return _op("reshape", x, [1])
    if a > b:
        raise IrgraphError(f"flatten: start_axis {start_axis} is after end_axis {end_axis}")
    tail = s[b + 1:]
    if builtins.all(isinstance(d, int) for d in tail):
        # leading dims copy through (0), the merged span is inferred (-1)
        return _op("reshape", x, [0] * a + [-1] + list(tail))
    span = s[a:b + 1]
    if builtins.all(isinstance(d, int) for d in span) and \
            builtins.sum(1 for d in tail if not isinstance(d, int)) == 1:
        # the one symbolic dim after the span is the inferred one
        n = int(np.prod(span)) if span else 1
        return _op("reshape", x, [0] * a + [n] + [d if isinstance(d, int) else -1 for d in tail])
    # general case: build the target shape from the runtime shape
    shp = _op("shape", x)
    parts = []
    if a:
        parts.append(_op("slice", shp, [0], [a]))
    parts.append(_op("reduce_prod", _op("slice", shp, [a], [b + 1]), [0], keepdims=1))
    if b + 1 < r:
        parts.append(_op("slice", shp, [b + 1], [r]))
    return _op("reshape", x, _op("concat", *parts, axis=0) if len(parts) > 1 else parts[0])


def stack(tensors, axis: int = 0):
    """Join along a new axis."""
    if not tensors:
        raise IrgraphError("stack needs at least one tensor")
    return _op("concat", *[_op("unsqueeze", t, [axis]) for t in tensors], axis=axis)


def getitem(x, key):
    """``x[key]``: ints, slices (with steps), ``None``, ``...`` and one integer-array or 1-D bool
    index, built from slice / gather / compress / squeeze / unsqueeze."""
    x = _t(x)
    if x.shape is None:
        raise IrgraphError("indexing needs the rank of the tensor while tracing")
    plan = index_plan(x.shape, key)
    y = x
    if plan["axes"]:
        y = _op("slice", y, plan["starts"], plan["ends"], plan["axes"], plan["steps"])
    shift = 0
    if plan["gather"] is not None:
        axis, idx, _ = plan["gather"]
        if isinstance(idx, (list, tuple, np.ndarray)) and np.asarray(idx).dtype == np.bool_:
            y = _op("compress", y, np.asarray(idx), axis=axis)
        elif isinstance(idx, TensorOps) and _t(idx).dtype.is_bool:
            y = _op("compress", y, idx, axis=axis)
        else:
            idx_t = idx if isinstance(idx, TensorOps) else np.asarray(idx, np.int64)
            rank = _t(idx).ndim if isinstance(idx, TensorOps) else np.ndim(idx_t)
            y = _op("gather", y, idx_t, axis=axis)
            shift = rank - 1
    if plan["drop"]:
        y = _op("squeeze", y, plan["drop"])
    if plan["new_axes"]:
        gpos = plan["gather"][2] if plan["gather"] is not None else None
        new = [p + shift if gpos is not None and p > gpos else p for p in plan["new_axes"]]
        y = _op("unsqueeze", y, new)
    return y


# ---- constants ------------------------------------------------------------------------------------
def constant(value, dtype=None, name: str = "const") -> Tensor:
    """``value`` as a constant of the graph being traced."""
    from .trace import current_tracer
    t = current_tracer()
    if t is None:
        raise IrgraphError("F.constant needs an active trace")
    return t.constant(value, name, dtype)


def zeros(shape, dtype="float32") -> Tensor:
    from .specs import as_dtype
    return constant(np.zeros(tuple(shape), as_dtype(dtype).np))


def ones(shape, dtype="float32") -> Tensor:
    from .specs import as_dtype
    return constant(np.ones(tuple(shape), as_dtype(dtype).np))


def full(shape, value, dtype="float32") -> Tensor:
    from .specs import as_dtype
    return constant(np.full(tuple(shape), value, as_dtype(dtype).np))


def zeros_like(x, dtype=None):
    return apply_op("full_like", [x], {"value": 0.0, "dtype": dtype})


def ones_like(x, dtype=None):
    return apply_op("full_like", [x], {"value": 1.0, "dtype": dtype})


def cond(pred, then_fn, else_fn):
    """``then_fn()`` if ``pred`` else ``else_fn()``, as an ``if`` node with traced branches."""
    return apply_op("if", [pred], {"then_branch": then_fn, "else_branch": else_fn})


# ---- one function per registry op -------------------------------------------------------------------
_CURATED = set(globals())
for _name in all_ops():
    _py = python_name(_name)
    if _py not in _CURATED:
        globals()[_py] = op_function(_name)
del _name, _py


def __getattr__(name: str):
    op = name[:-1] if name.endswith("_") and has_op(name[:-1]) else name
    if has_op(op):
        f = op_function(op)
        globals()[name] = f
        return f
    raise AttributeError(f"irgraph.frontends.dsl.functional has no function {name!r} "
                         f"(and the op registry no op of that name)")
