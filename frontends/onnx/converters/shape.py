"""ONNX converters for Shape, Size, ConstantOfShape, Range, EyeLike, Constant, Identity."""
from __future__ import annotations

import numpy as np
import onnx

from irgraph.dtype import DType
from irgraph.types import MAX_ELEMENTS

from ..load import tensor_to_numpy
from .registry import converter


@converter("Shape")
def shape(ctx):
    attrs = {}
    if ctx.opset >= 15:
        attrs = {"start": ctx.attr("start", 0), "end": ctx.attr("end", None)}
    return ctx.op("shape", [ctx.input(0)], attrs)


@converter("Size")
def size(ctx):
    return ctx.op("size", [ctx.input(0)])


@converter("ConstantOfShape", since=9)
def constant_of_shape(ctx):
    return ctx.op("constant_of_shape", [ctx.input(0)], {"value": ctx.attr("value", None)})


@converter("Range", since=11)
def range_(ctx):
    # before opset 27 there is no stash_type: the range is computed in the input type
    stash = ctx.attr("stash_type", 1) if ctx.opset >= 27 else 0
    return ctx.op("range", [ctx.input(0), ctx.input(1), ctx.input(2)], {"stash_type": stash})


@converter("EyeLike", since=9)
def eye_like(ctx):
    code = ctx.attr("dtype", None)
    attrs = {"k": ctx.attr("k", 0)}
    if code is not None:
        attrs["dtype"] = DType.from_onnx(code)
    return ctx.op("eye_like", [ctx.input(0)], attrs)


@converter("Identity")
def identity(ctx):
    return ctx.input(0)


@converter("Constant")
def constant(ctx):
    if ctx.has_attr("value"):
        return ctx.constant(ctx.attr("value"))
    if ctx.has_attr("sparse_value"):
        sp = next(a.sparse_tensor for a in ctx.node.attribute if a.name == "sparse_value")
        return ctx.constant(_dense_from_sparse(ctx, sp))
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64), ("value_string", object),
                       ("value_floats", np.float32), ("value_ints", np.int64), ("value_strings", object)):
        if ctx.has_attr(key):
            return ctx.constant(np.array(ctx.attr(key), dtype=dtype))
    ctx.fail("Constant has no value attribute",
             hint="give one of value, sparse_value, value_float(s), value_int(s), value_string(s)")


def _dense_from_sparse(ctx, sp: onnx.SparseTensorProto) -> np.ndarray:
    """A SparseTensorProto as a dense array, checking its indices (a bad model must not write
    outside the tensor or wrap around with negative positions)."""
    shape = tuple(int(d) for d in sp.dims)
    if any(d < 0 for d in shape):
        ctx.fail(f"sparse_value has a negative dimension in {shape}")
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if n > MAX_ELEMENTS:
        ctx.fail(f"sparse_value declares {n} elements; limit is {MAX_ELEMENTS}")
    vals = tensor_to_numpy(sp.values, ctx.imp.base_dir, "sparse_value")
    if vals.ndim != 1:
        ctx.fail("sparse_value's values must be 1-D", expected="rank 1", actual=vals.ndim)
    idx = tensor_to_numpy(sp.indices, ctx.imp.base_dir, "sparse_value indices").astype(np.int64)
    nnz = vals.shape[0]
    if idx.ndim == 1 and idx.shape[0] == nnz:
        flat = idx
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            ctx.fail("sparse_value has a linear index out of range", expected=f"[0, {n - 1}]",
                     actual=int(idx[(idx < 0) | (idx >= n)][0]))
    elif idx.ndim == 2 and idx.shape == (nnz, len(shape)):
        for j, d in enumerate(shape):
            col = idx[:, j]
            if col.size and (col.min() < 0 or col.max() >= d):
                ctx.fail(f"sparse_value has an index out of range in dimension {j}",
                         expected=f"[0, {d - 1}]", actual=int(col[(col < 0) | (col >= d)][0]))
        flat = np.ravel_multi_index(idx.T, shape) if nnz else np.zeros(0, np.int64)
    else:
        ctx.fail("sparse_value's indices must be [NNZ] linear or [NNZ, rank] coordinates",
                 expected=f"({nnz},) or ({nnz}, {len(shape)})", actual=idx.shape)
    dense = np.zeros(n, dtype=vals.dtype)
    dense[flat] = vals
    return dense.reshape(shape)
