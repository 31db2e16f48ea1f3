"""Ops about shapes: shape, size, constant_of_shape, range, eye_like."""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..dtype import DType
from ..errors import ExecutionError, ShapeError
from ..types import is_static_dim
from .evaluate import MAX_KNOWN_ELEMENTS
from .registry import Attr, OpDef, register
from .shapes import out


def _shape_bounds(rank, a):
    start, end = a["start"], a["end"]
    if end is None:
        end = rank
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return start, max(end, start)


def _shape_infer(ctx):
    x = ctx.type(0)
    if x.shape is None:
        return [out((ctx.fresh("rank"),), dt.int64)]
    s, e = _shape_bounds(len(x.shape), ctx.attrs)
    return [out((e - s,), dt.int64)]


register(OpDef(
    "shape", infer=_shape_infer, kind="index", differentiable=False,
    attrs={"start": Attr("int", 0), "end": Attr("int", None)},
    reference=lambda ins, a: np.array(ins[0].shape[slice(*_shape_bounds(ins[0].ndim, a))], dtype=np.int64),
    value=lambda ctx: [np.array(ctx.type(0).shape[slice(*_shape_bounds(ctx.type(0).rank, ctx.attrs))], dtype=np.int64)]
    if ctx.type(0).is_static else None,
    doc="the input's shape as int64[rank] (optionally a slice of it)",
))


# ---- helpers for compile-time values ---------------------------------------------------------
def _unknowable(shape, dtype) -> list:
    """A stand-in for an output too large to keep as a compile-time value.

    ``propagate_values`` discards values above MAX_KNOWN_ELEMENTS, but when ``value`` returns None
    it falls back to running the reference, which would materialize the whole tensor at import.
    A zero-stride view costs nothing and is dropped for its size.
    """
    return [np.broadcast_to(np.zeros((), dtype), shape)]


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ---- size ------------------------------------------------------------------------------------
register(OpDef(
    "size", infer=lambda ctx: [out((), dt.int64)], kind="index", differentiable=False,
    reference=lambda ins, a: np.array(np.asarray(ins[0]).size, dtype=np.int64),
    value=lambda ctx: [np.array(ctx.type(0).numel, dtype=np.int64)] if ctx.type(0).is_static else None,
    doc="the input's element count as an int64 scalar",
))


# ---- constant_of_shape -----------------------------------------------------------------------
def _fill_value(a) -> np.ndarray:
    """The 'value' attribute as a 0-d array (ONNX's default is float32 zero)."""
    v = a["value"]
    if v is None:
        return np.zeros((), np.float32)
    v = np.asarray(v)
    if v.size != 1:
        raise ShapeError("value must hold exactly one element", expected="1 element", actual=v.shape)
    return v.reshape(())


def _check_shape_vector(spec, fail) -> tuple:
    spec = np.asarray(spec)
    if spec.ndim != 1 or spec.dtype.kind not in "iu":
        fail("shape must be a 1-D integer tensor", "int64[n]", spec.shape)
    dims = tuple(int(d) for d in spec)
    if any(d < 0 for d in dims):
        fail("shape has a negative dimension", "dims >= 0", dims)
    return dims


def _constant_of_shape_infer(ctx):
    s = ctx.type(0)
    if s.dtype is not dt.int64:
        ctx.fail("shape must be int64", input=0, expected="int64", actual=s.dtype.name)
    if s.shape is not None and len(s.shape) != 1:
        ctx.fail("shape must be 1-D", input=0, expected="rank 1", actual=len(s.shape))
    try:
        fill = _fill_value(ctx.attrs)
    except ShapeError as e:
        ctx.fail(e.message, expected=e.expected, actual=e.actual)
    odt = DType.from_numpy(fill.dtype)
    spec = ctx.const(0)
    if spec is not None:
        def fail(m, want, got):
            ctx.fail(m, input=0, expected=want, actual=got)
        return [out(_check_shape_vector(spec, fail), odt)]
    if s.shape is not None and is_static_dim(s.shape[0]):
        return [out(tuple(ctx.fresh("cshape") for _ in range(s.shape[0])), odt)]
    return [out(None, odt)]


def _constant_of_shape_ref(ins, a):
    def fail(m, want, got):
        raise ExecutionError(m, expected=want, actual=got)
    dims = _check_shape_vector(ins[0], fail)
    return np.full(dims, _fill_value(a))


def _constant_of_shape_value(ctx):
    spec = ctx.const(0)
    if spec is None:
        return None
    dims = tuple(int(d) for d in np.asarray(spec).reshape(-1))
    fill = _fill_value(ctx.attrs)
    if _numel(dims) > MAX_KNOWN_ELEMENTS:
        return _unknowable(dims, fill.dtype)
    return [np.full(dims, fill)]


register(OpDef(
    "constant_of_shape", infer=_constant_of_shape_infer, reference=_constant_of_shape_ref,
    value=_constant_of_shape_value, kind="other", differentiable=False,
    attrs={"value": Attr("tensor", None, "one-element tensor: the fill value and dtype (default float32 0)")},
    doc="ONNX ConstantOfShape: a tensor of the given (int64[n]) shape filled with one value",
))


# ---- range -----------------------------------------------------------------------------------
RANGE_TYPES = (dt.float16, dt.bfloat16, dt.float32, dt.float64, dt.int8, dt.int16, dt.int32, dt.int64)


def _range_compute_dtype(dtype: np.dtype, stash_type: int) -> np.dtype:
    if dtype.kind in "iu":
        return np.dtype(np.int64)  # i * delta may leave int16's range even when the result does not
    if dtype.itemsize < 4 and stash_type == 1:
        return np.dtype(np.float32)
    return dtype


def _range_count(start, limit, delta, cdt: np.dtype) -> int:
    start, limit, delta = (np.asarray(v).reshape(()).astype(cdt) for v in (start, limit, delta))
    if delta == 0:
        raise ExecutionError("delta must not be zero", expected="delta != 0", actual=0)
    if cdt.kind in "iu":
        a, d = int(limit) - int(start), int(delta)
        return max(-(-a // d), 0)  # exact integer ceil(a / d)
    q = np.float64(limit - start) / np.float64(delta)
    if not np.isfinite(q):
        raise ExecutionError("range bounds must be finite", expected="finite values",
                             actual=(float(start), float(limit), float(delta)))
    return max(int(np.ceil(q)), 0)


def _range_ref(ins, a):
    start, limit, delta = (np.asarray(v) for v in ins)
    for v in (start, limit, delta):
        if v.size != 1:
            raise ExecutionError("start, limit and delta must be scalars", actual=v.shape)
    cdt = _range_compute_dtype(start.dtype, a["stash_type"])
    n = _range_count(start, limit, delta, cdt)
    s, d = start.reshape(()).astype(cdt), delta.reshape(()).astype(cdt)
    return (s + np.arange(n).astype(cdt) * d).astype(start.dtype)


def _range_infer(ctx):
    types = ctx.types
    for i, t in enumerate(types):
        if t.dtype not in RANGE_TYPES:
            ctx.fail("unsupported dtype", input=i, expected="one of " + ", ".join(d.name for d in RANGE_TYPES),
                     actual=t.dtype.name)
        if t.dtype is not types[0].dtype:
            ctx.fail("start, limit and delta must share one dtype", input=i, expected=types[0].dtype.name,
                     actual=t.dtype.name)
        if t.numel is not None and t.numel != 1 or t.shape is not None and len(t.shape) > 1:
            ctx.fail("must be a scalar", input=i, expected="shape ()", actual=t.shape)
    if ctx.attrs["stash_type"] not in (0, 1):
        ctx.fail("stash_type must be 0 (compute in the input type) or 1 (in float32)",
                 actual=ctx.attrs["stash_type"])
    vals = [ctx.const(i) for i in range(3)]
    if all(v is not None for v in vals):
        cdt = _range_compute_dtype(types[0].dtype.np, ctx.attrs["stash_type"])
        try:
            n = _range_count(*vals, cdt)
        except ExecutionError as e:
            ctx.fail(e.message, expected=e.expected, actual=e.actual)
    else:
        n = ctx.fresh("range")
    return [out((n,), types[0].dtype)]


def _range_value(ctx):
    vals = [ctx.const(i) for i in range(3)]
    if any(v is None for v in vals):
        return None
    n = _range_count(*vals, _range_compute_dtype(ctx.type(0).dtype.np, ctx.attrs["stash_type"]))
    if n > MAX_KNOWN_ELEMENTS:
        return _unknowable((n,), ctx.type(0).dtype.np)
    return [_range_ref(vals, ctx.attrs)]


register(OpDef(
    "range", infer=_range_infer, reference=_range_ref, value=_range_value, inputs=(3, 3),
    kind="other", differentiable=False,
    attrs={"stash_type": Attr("int", 1, "1: float16/bfloat16 ranges are computed in float32")},
    doc="ONNX Range: start + i * delta for i < max(ceil((limit - start) / delta), 0)",
))


# ---- eye_like --------------------------------------------------------------------------------
EYE_TYPES = dt.INTS + dt.FLOATS + (dt.bool_,)


def _eye_like_infer(ctx):
    x = ctx.type(0)
    odt = ctx.attrs["dtype"] or x.dtype
    if x.dtype not in EYE_TYPES:
        ctx.fail("unsupported input dtype", input=0, actual=x.dtype.name)
    if odt not in EYE_TYPES:
        ctx.fail("unsupported output dtype", expected="an int, float or bool type", actual=odt.name)
    if x.shape is not None and len(x.shape) != 2:
        ctx.fail("input must be 2-D", input=0, expected="rank 2", actual=len(x.shape))
    return [out(x.shape if x.shape is not None else (ctx.fresh("eye"), ctx.fresh("eye")), odt)]


def _eye(shape, k: int, dtype) -> np.ndarray:
    return np.eye(shape[0], shape[1], k, dtype=dtype)


def _eye_like_value(ctx):
    x = ctx.type(0)
    if not x.is_static or len(x.shape) != 2:
        return None
    odt = (ctx.attrs["dtype"] or x.dtype).np
    if _numel(x.shape) > MAX_KNOWN_ELEMENTS:
        return _unknowable(x.shape, odt)
    return [_eye(x.shape, ctx.attrs["k"], odt)]


register(OpDef(
    "eye_like", infer=_eye_like_infer, value=_eye_like_value, kind="other", differentiable=False,
    reference=lambda ins, a: _eye(ins[0].shape, a["k"], (a["dtype"] or DType.from_numpy(ins[0].dtype)).np),
    attrs={"dtype": Attr("dtype", None, "output dtype; default the input's"),
           "k": Attr("int", 0, "diagonal: 0 main, > 0 above, < 0 below")},
    doc="ONNX EyeLike: ones on the k-th diagonal of a matrix shaped like the input",
))
