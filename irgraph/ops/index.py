"""Indexing ops: gather in its three flavours, one_hot, nonzero, compress, unique, top_k, and
the index checks the scatters (``scatter.py``) share.

Indices follow ONNX: a negative index counts from the end of its axis, and an index outside
``[-size, size - 1]`` is an error (raised at compile time when the indices are known, else when
the graph runs) rather than a silent wrap or an out-of-bounds read. Ops whose output size depends
on the data (nonzero, compress, unique) give that dimension a fresh symbol unless the data is known.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..errors import ExecutionError
from ..types import is_static_dim
from .elementwise_grad import GradOps
from .registry import Attr, OpDef, register
from .shapes import normalize_axis, out, shape_numel

INDEX_TYPES = (dt.int32, dt.int64)


# ---- shared helpers --------------------------------------------------------------------------
def _first_out_of_range(idx: np.ndarray, size: int):
    """The first index value outside ``[-size, size - 1]``, or None when all are in range."""
    idx = np.asarray(idx)
    if idx.size == 0:
        return None
    bad = (idx < -size) | (idx >= size)
    if not bad.any():
        return None
    return int(idx.reshape(-1)[np.argmax(bad.reshape(-1))])


def _range_text(size: int) -> str:
    return f"[{-size}, {size - 1}]" if size else "no valid index (the axis is empty)"


def checked_indices(idx, size: int, axis: int | str = 0) -> np.ndarray:
    """int64 indices with negative ones wrapped; raises ExecutionError when one is out of range."""
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise ExecutionError(f"indices must be integers, got {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    bad = _first_out_of_range(idx, size)
    if bad is not None:
        raise ExecutionError(f"index {bad} out of range for axis {axis} of size {size}",
                             expected=_range_text(size), actual=bad)
    return np.where(idx < 0, idx + size, idx) if idx.size else idx


def check_known_indices(ctx, i: int, size, axis) -> None:
    """Fail at compile time when input ``i`` holds known indices outside a static axis."""
    vals = ctx.const(i)
    if vals is None or not is_static_dim(size):
        return
    bad = _first_out_of_range(vals, size)
    if bad is not None:
        ctx.fail(f"index {bad} out of range for axis {axis} of size {size}", input=i,
                 expected=_range_text(size), actual=bad)


def index_input(ctx, i: int, allowed=INDEX_TYPES):
    """The type of input ``i``, which must be an integer index tensor."""
    t = ctx.type(i)
    if t is None:
        ctx.fail("missing indices input", input=i)
    if t.dtype not in allowed:
        ctx.fail("indices must be integers", input=i,
                 expected=" or ".join(d.name for d in allowed), actual=t.dtype.name)
    return t


def dims_equal(a, b) -> bool:
    """False only when both dims are static and differ (symbols may be equal at run time)."""
    return not (is_static_dim(a) and is_static_dim(b) and a != b)


def _scalar_int(a, what: str) -> int:
    a = np.asarray(a)
    if a.size != 1:
        raise ExecutionError(f"{what} must hold one value", expected="1 element", actual=a.shape)
    return int(a.reshape(-1)[0])


def _sort_key(a: np.ndarray) -> np.ndarray:
    """An array numpy sorts exactly like ``a``: half floats widen (exactly) to float32."""
    if a.dtype.kind == "V" or (a.dtype.kind == "f" and a.dtype.itemsize < 4):
        return a.astype(np.float32)  # float16 and the ml_dtypes types (bfloat16, float8, int4 …)
    return a


# ---- gather ----------------------------------------------------------------------------------
def _gather_infer(ctx):
    x, ind = ctx.type(0), index_input(ctx, 1)
    if x.shape is None:
        return [out(None, x.dtype)]
    if not x.shape:
        ctx.fail("data must have rank >= 1", input=0, expected="rank >= 1", actual=0)
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    check_known_indices(ctx, 1, x.shape[axis], axis)
    if ind.shape is None:
        return [out(None, x.dtype)]
    return [out(x.shape[:axis] + ind.shape + x.shape[axis + 1:], x.dtype)]


def _gather_ref(ins, a):
    x, ind = ins
    axis = normalize_axis(a["axis"], x.ndim)
    return np.take(x, checked_indices(ind, x.shape[axis], axis), axis=axis)


# ---- gradients: gathers scatter-add dy back to where its elements were read ---------------
def scatter_back(ctx, x, idx, g, axis: int, reduction: str = "add"):
    """Zeros shaped like ``x`` with slices of ``g`` (x's shape, ``n`` along ``axis``) added at
    positions ``idx`` (int, ``n`` long) along ``axis``: the adjoint of gather(x, idx, axis)."""
    o = GradOps(ctx)
    r = len(x.shape)
    # the same index for every element of a slice: broadcast idx over the other axes
    idx = o.expand(o.reshape(idx, ctx.i64([1] * axis + [-1] + [1] * (r - axis - 1))), ctx.shape(g))
    return o.scatter_elements(ctx.zeros_like(x), idx, g, axis=axis, reduction=reduction)


def _gather_grad(ctx):
    o, (x, ind), dy = GradOps(ctx), ctx.inputs, ctx.dy()
    if x.shape is None or ind.shape is None:
        raise ctx.fail("the gradient of gather needs operands of known rank")
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape))
    post = list(x.shape[axis + 1:])
    # dy is (x's dims before axis, *indices' shape, x's dims after): flatten the index dims
    if all(isinstance(d, int) for d in post):
        spec = ctx.i64([0] * axis + [-1] + post)  # 0: copy dy's leading dim
    else:
        spec = o.concat(ctx.i64([0] * axis + [-1]), o.shape(x, start=axis + 1), axis=0)
    g = o.reshape(dy, spec)
    return [scatter_back(ctx, x, o.reshape(ind, ctx.i64([-1])), g, axis), None]


register(OpDef(
    "gather", infer=_gather_infer, reference=_gather_ref, inputs=(2, 2), kind="index",
    attrs={"axis": Attr("int", 0)}, differentiable=True, grad=_gather_grad,
    doc="ONNX Gather: slices of data along axis picked by indices; out = q + r - 1 dims",
))


# ---- gather_elements -------------------------------------------------------------------------
def elements_shapes(ctx, x, ind, axis_attr, what="indices"):
    """Common checks of gather_elements/scatter_elements; returns the normalized axis or None."""
    if x.shape is None or ind.shape is None:
        return None if x.shape is None else normalize_axis(axis_attr, len(x.shape), ctx)
    if len(x.shape) != len(ind.shape):
        ctx.fail(f"data and {what} must have the same rank", input=1,
                 expected=len(x.shape), actual=len(ind.shape))
    if not x.shape:
        ctx.fail("data must have rank >= 1", input=0, expected="rank >= 1", actual=0)
    axis = normalize_axis(axis_attr, len(x.shape), ctx)
    for d, (xd, id_) in enumerate(zip(x.shape, ind.shape)):
        if d != axis and is_static_dim(xd) and is_static_dim(id_) and id_ > xd:
            ctx.fail(f"{what} dim {d} is larger than data's (only the axis dim may differ)", input=1,
                     expected=f"<= {xd}", actual=id_)
    return axis


def _gather_elements_infer(ctx):
    x, ind = ctx.type(0), index_input(ctx, 1)
    axis = elements_shapes(ctx, x, ind, ctx.attrs["axis"])
    if axis is not None:
        check_known_indices(ctx, 1, x.shape[axis], axis)
    return [out(ind.shape, x.dtype)]


def elements_index(x_shape, ind, axis):
    """The full fancy index of an elements op: ``ind`` on ``axis``, each position's own elsewhere."""
    if ind.ndim != len(x_shape):
        raise ExecutionError("data and indices must have the same rank",
                             expected=len(x_shape), actual=ind.ndim)
    for d, (xd, id_) in enumerate(zip(x_shape, ind.shape)):
        if d != axis and id_ > xd:
            raise ExecutionError(f"indices dim {d} is larger than data's", expected=f"<= {xd}", actual=id_)
    grid = list(np.indices(ind.shape, sparse=True)) if ind.ndim else []
    grid[axis] = checked_indices(ind, x_shape[axis], axis)
    return tuple(grid)


def _gather_elements_ref(ins, a):
    x, ind = ins
    axis = normalize_axis(a["axis"], x.ndim)
    return x[elements_index(x.shape, np.asarray(ind), axis)]


def _gather_elements_grad(ctx):
    o, (x, ind), dy = GradOps(ctx), ctx.inputs, ctx.dy()
    return [o.scatter_elements(ctx.zeros_like(x), ind, dy, axis=ctx.attrs["axis"], reduction="add"), None]


register(OpDef(
    "gather_elements", infer=_gather_elements_infer, reference=_gather_elements_ref, inputs=(2, 2),
    kind="index", attrs={"axis": Attr("int", 0)}, differentiable=True, grad=_gather_elements_grad,
    doc="ONNX GatherElements (torch.gather): out[i][j] = data[ind[i][j]][j] for axis 0",
))


# ---- gather_nd -------------------------------------------------------------------------------
def nd_check(ctx, x, ind, b: int):
    """Checks shared by gather_nd and scatter_nd; returns k (the index tuple length) or None."""
    r, q = len(x.shape), len(ind.shape)
    if r < 1 or q < 1:
        ctx.fail("data and indices must have rank >= 1", expected="rank >= 1", actual=(r, q))
    if b < 0 or b >= min(r, q):
        ctx.fail(f"batch_dims {b} must be in [0, min(rank(data), rank(indices)))",
                 expected=f"[0, {min(r, q) - 1}]", actual=b)
    for d in range(b):
        if not dims_equal(x.shape[d], ind.shape[d]):
            ctx.fail(f"batch dim {d} of indices differs from data's", input=1,
                     expected=x.shape[d], actual=ind.shape[d])
    k = ind.shape[-1]
    if not is_static_dim(k):
        return None
    if k > r - b:
        ctx.fail("indices' last dim is longer than the data rank allows", input=1,
                 expected=f"<= {r - b}", actual=k)
    vals = ctx.const(1)
    if vals is not None and vals.size:
        flat = np.asarray(vals).reshape(-1, k)
        for j in range(k):
            size = x.shape[b + j]
            if is_static_dim(size):
                bad = _first_out_of_range(flat[:, j], size)
                if bad is not None:
                    ctx.fail(f"index {bad} out of range for axis {b + j} of size {size}", input=1,
                             expected=_range_text(size), actual=bad)
    return k


def _gather_nd_infer(ctx):
    x, ind = ctx.type(0), index_input(ctx, 1)
    if x.shape is None or ind.shape is None:
        return [out(None, x.dtype)]
    b = ctx.attrs["batch_dims"]
    k = nd_check(ctx, x, ind, b)
    if k is None:
        return [out(None, x.dtype)]
    return [out(ind.shape[:-1] + x.shape[b + k:], x.dtype)]


def nd_flat_index(x_shape, ind, b: int):
    """(batch index, per-dim indices) over data reshaped to (B, *x_shape[b:]); checks bounds."""
    ind = np.asarray(ind)
    k = ind.shape[-1]
    if k > len(x_shape) - b:
        raise ExecutionError("indices' last dim is longer than the data rank allows",
                             expected=f"<= {len(x_shape) - b}", actual=k)
    if tuple(ind.shape[:b]) != tuple(x_shape[:b]):
        raise ExecutionError("batch dims of indices and data differ", expected=tuple(x_shape[:b]),
                             actual=tuple(ind.shape[:b]))
    nb = int(np.prod(x_shape[:b], dtype=np.int64))
    m = int(np.prod(ind.shape[b:-1], dtype=np.int64))
    flat = ind.reshape(nb, m, k)
    cols = tuple(checked_indices(flat[..., j], x_shape[b + j], b + j) for j in range(k))
    return (np.broadcast_to(np.arange(nb)[:, None], (nb, m)),) + cols


def _gather_nd_ref(ins, a):
    x, ind = ins
    b = a["batch_dims"]
    ind = np.asarray(ind)
    k = ind.shape[-1]
    nb = int(np.prod(x.shape[:b], dtype=np.int64))
    xr = x.reshape((nb,) + x.shape[b:])
    res = xr[nd_flat_index(x.shape, ind, b)]
    return res.reshape(ind.shape[:-1] + x.shape[b + k:])


def batched_nd_indices(ctx, ind, b: int):
    """gather_nd/scatter_nd indices with ``batch_dims=b`` rewritten for ``batch_dims=0``: each
    index tuple gets its batch position prepended (needs indices of static shape)."""
    if b == 0:
        return ind
    if ind.shape is None or not all(isinstance(d, int) for d in ind.shape):
        raise ctx.fail("the gradient of a batched gather_nd needs indices of static shape")
    o = GradOps(ctx)
    grid = np.stack(np.indices(tuple(ind.shape[:-1]))[:b], axis=-1)  # (*ind.shape[:-1], b)
    ind = ind if ind.dtype is dt.int64 else o.cast(ind, to=dt.int64)
    return o.concat(ctx.i64(grid), ind, axis=-1)


def _gather_nd_grad(ctx):
    o, (x, ind), dy = GradOps(ctx), ctx.inputs, ctx.dy()
    full = batched_nd_indices(ctx, ind, ctx.attrs["batch_dims"])
    return [o.scatter_nd(ctx.zeros_like(x), full, dy, reduction="add"), None]


register(OpDef(
    "gather_nd", infer=_gather_nd_infer, reference=_gather_nd_ref, inputs=(2, 2), kind="index",
    attrs={"batch_dims": Attr("int", 0)}, differentiable=True, grad=_gather_nd_grad,
    doc="ONNX GatherND: slices of data addressed by index tuples (last dim of indices)",
))


# ---- one_hot ---------------------------------------------------------------------------------
_ONE_HOT_INDEX_TYPES = dt.INTS + (dt.float16, dt.float32, dt.float64)


def _one_hot_infer(ctx):
    ind, depth, vals = ctx.type(0), ctx.type(1), ctx.type(2)
    if ind.dtype not in _ONE_HOT_INDEX_TYPES:
        ctx.fail("indices must be numeric", input=0, actual=ind.dtype.name)
    if depth.dtype not in _ONE_HOT_INDEX_TYPES:
        ctx.fail("depth must be numeric", input=1, actual=depth.dtype.name)
    if depth.numel is not None and depth.numel != 1:
        ctx.fail("depth must hold one value", input=1, expected="1 element", actual=depth.shape)
    if vals.shape is not None and (len(vals.shape) != 1 or not dims_equal(vals.shape[0], 2)):
        ctx.fail("values must be [off_value, on_value]", input=2, expected="shape (2,)", actual=vals.shape)
    d = ctx.const(1)
    if d is not None:
        d = int(np.asarray(d).reshape(-1)[0])
        if d < 1:
            ctx.fail("depth must be positive", input=1, expected=">= 1", actual=d)
    else:
        d = ctx.fresh("depth")
    if ind.shape is None:
        return [out(None, vals.dtype)]
    r = len(ind.shape)
    axis = normalize_axis(ctx.attrs["axis"], r + 1, ctx)
    return [out(ind.shape[:axis] + (d,) + ind.shape[axis:], vals.dtype)]


def _one_hot_ref(ins, a):
    ind, depth, vals = ins
    d = int(np.asarray(depth).reshape(-1)[0]) if np.asarray(depth).size == 1 else None
    if d is None or d < 1:
        raise ExecutionError("depth must be one positive value", expected=">= 1",
                             actual=np.asarray(depth).tolist())
    idx = np.asarray(ind)
    if idx.dtype.kind == "f":
        idx = np.trunc(idx)  # a float index means its integer part
    if idx.dtype.kind == "u":  # keep huge unsigned values huge (out of range), not wrapped negative
        idx = np.minimum(idx, np.iinfo(np.int64).max)
    idx = idx.astype(np.int64)
    idx = np.where(idx < 0, idx + d, idx)  # still negative / too large: matches nothing (all off)
    axis = normalize_axis(a["axis"], idx.ndim + 1)
    hot = np.expand_dims(idx, axis) == np.arange(d).reshape((d,) + (1,) * (idx.ndim - axis))
    vals = np.asarray(vals)
    return np.where(hot, vals[1], vals[0]).astype(vals.dtype, copy=False)


register(OpDef(
    "one_hot", infer=_one_hot_infer, reference=_one_hot_ref, inputs=(3, 3), kind="index",
    attrs={"axis": Attr("int", -1)}, differentiable=False,
    doc="ONNX OneHot: a new axis of size depth holding on_value at each index, off_value elsewhere",
))


# ---- nonzero ---------------------------------------------------------------------------------
def _nonzero_infer(ctx):
    x = ctx.type(0)
    if x.shape is None:
        return [out(None, dt.int64)]
    n = x.numel
    return [out((len(x.shape), 0 if n == 0 else ctx.fresh("nonzero")), dt.int64)]


def _truth(x: np.ndarray) -> np.ndarray:
    return x.astype(bool) if x.dtype == object else x != 0


def _nonzero_ref(ins, a):
    x = np.asarray(ins[0])
    mask = _truth(x)
    if x.ndim == 0:  # ONNX: a scalar gives shape (0, N), not numpy's (1, N)
        return np.zeros((0, int(bool(mask))), np.int64)
    return np.array(np.nonzero(mask), dtype=np.int64).reshape(x.ndim, -1)


register(OpDef(
    "nonzero", infer=_nonzero_infer, reference=_nonzero_ref, kind="index", differentiable=False,
    doc="ONNX NonZero: int64[rank, n] coordinates of the non-zero elements, row-major",
))


# ---- compress --------------------------------------------------------------------------------
def _compress_mask(cond: np.ndarray, size: int, fail) -> np.ndarray:
    cond = np.asarray(cond, dtype=bool).reshape(-1)
    if cond.shape[0] > size:
        if cond[size:].any():
            fail(f"condition selects index {size + int(np.argmax(cond[size:]))} of an axis of size {size}")
        cond = cond[:size]
    elif cond.shape[0] < size:  # numpy.compress: missing entries are False
        cond = np.concatenate([cond, np.zeros(size - cond.shape[0], bool)])
    return cond


def _compress_infer(ctx):
    x, c = ctx.type(0), ctx.type(1)
    if c.dtype is not dt.bool_:
        ctx.fail("condition must be bool", input=1, expected="bool", actual=c.dtype.name)
    if c.shape is not None and len(c.shape) != 1:
        ctx.fail("condition must be 1-D", input=1, expected="rank 1", actual=len(c.shape))
    axis = ctx.attrs["axis"]
    if axis is None:
        size = shape_numel(x.shape) if x.shape is not None else None
    else:
        if x.shape is None:
            return [out(None, x.dtype)]
        if not x.shape:
            ctx.fail("axis given but data is a scalar", input=0, expected="rank >= 1", actual=0)
        axis = normalize_axis(axis, len(x.shape), ctx)
        size = x.shape[axis]
    cv = ctx.const(1)
    if cv is not None and is_static_dim(size):
        n = int(_compress_mask(cv, size, lambda m: ctx.fail(m, input=1)).sum())
    else:
        n = ctx.fresh("compress")
    if axis is None:
        return [out((n,), x.dtype)]
    return [out(x.shape[:axis] + (n,) + x.shape[axis + 1:], x.dtype)]


def _compress_ref(ins, a):
    x, c = ins
    axis = a["axis"]

    def fail(m):
        raise ExecutionError(m)
    if axis is None:
        x = x.reshape(-1)
        axis = 0
    else:
        axis = normalize_axis(axis, x.ndim)
    return np.compress(_compress_mask(c, x.shape[axis], fail), x, axis=axis)


def _compress_grad(ctx):
    o, (x, cond), dy = GradOps(ctx), ctx.inputs, ctx.dy()
    picked = o.reshape(o.nonzero(cond), ctx.i64([-1]))  # the kept positions along the axis
    axis = ctx.attrs["axis"]
    if axis is None:  # compress of the flattened input
        flat = o.reshape(x, ctx.i64([-1]))
        return [o.reshape(scatter_back(ctx, flat, picked, dy, 0), ctx.shape(x)), None]
    return [scatter_back(ctx, x, picked, dy, normalize_axis(axis, len(x.shape))), None]


register(OpDef(
    "compress", infer=_compress_infer, reference=_compress_ref, inputs=(2, 2), kind="index",
    attrs={"axis": Attr("int", None, "none: flatten first")}, differentiable=True, grad=_compress_grad,
    doc="ONNX Compress (numpy.compress): the slices along axis where condition is true",
))


# ---- unique ----------------------------------------------------------------------------------
def _unique_infer(ctx):
    x = ctx.type(0)
    axis = ctx.attrs["axis"]
    u = ctx.fresh("unique")
    if axis is None:
        n = x.numel if x.shape is not None else None
        if n == 0:
            u = 0
        y = out((u,), x.dtype)
        inv = (n if n is not None else ctx.fresh("numel"),)
    else:
        if x.shape is None:
            return [out(None, x.dtype), out((u,), dt.int64), out((ctx.fresh(),), dt.int64), out((u,), dt.int64)]
        if not x.shape:
            ctx.fail("axis given but X is a scalar", input=0, expected="rank >= 1", actual=0)
        axis = normalize_axis(axis, len(x.shape), ctx)
        if x.shape[axis] == 0:
            u = 0
        y = out(x.shape[:axis] + (u,) + x.shape[axis + 1:], x.dtype)
        inv = (x.shape[axis],)
    return [y, out((u,), dt.int64), out(inv, dt.int64), out((u,), dt.int64)]


def _rows_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 'not equal' where NaN equals NaN (numpy.unique's convention)."""
    ne = a != b
    if a.dtype.kind in "fc":
        ne &= ~(np.isnan(a) & np.isnan(b))
    return ne.any(axis=1)


def _unique_ref(ins, a):
    x = np.asarray(ins[0])
    axis = a["axis"]
    if axis is None:
        rows, axis = x.reshape(-1, 1), None
    else:
        axis = normalize_axis(axis, x.ndim)
        rows = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    n = rows.shape[0]
    keys = _sort_key(rows)
    # lexicographic, stable order of the rows: stable sorts from the last column to the first
    order = np.arange(n)
    for j in range(keys.shape[1] - 1, -1, -1):
        order = order[np.argsort(keys[order, j], kind="stable")]
    srt = keys[order]
    starts = np.ones(n, bool)
    if n > 1:
        starts[1:] = _rows_differ(srt[1:], srt[:-1])
    group = np.cumsum(starts) - 1                      # group of each sorted row
    first = order[starts]                              # stable sort: first row of a group is its first occurrence
    counts = np.diff(np.append(np.flatnonzero(starts), n))
    if not a["sorted"]:
        perm = np.argsort(first, kind="stable")        # groups in order of first occurrence
        rank = np.empty_like(perm)
        rank[perm] = np.arange(perm.size)
        first, counts, group = first[perm], counts[perm], rank[group]
    inverse = np.empty(n, np.int64)
    inverse[order] = group
    y = x.reshape(-1)[first] if axis is None else np.take(x, first, axis=axis)
    return y, first.astype(np.int64), inverse, counts.astype(np.int64)


register(OpDef(
    "unique", infer=_unique_infer, reference=_unique_ref, kind="index", differentiable=False,
    attrs={"axis": Attr("int", None, "none: unique elements of the flattened input"),
           "sorted": Attr("bool", True)},
    doc="ONNX Unique: (unique values or slices, first indices, inverse indices, counts)",
))


# ---- top_k -----------------------------------------------------------------------------------
def _top_k_infer(ctx):
    x, k = ctx.type(0), ctx.type(1)
    if x.dtype not in dt.INTS + dt.FLOATS:
        ctx.fail("unsupported dtype", input=0, expected="an int or float type", actual=x.dtype.name)
    if k.dtype is not dt.int64:
        ctx.fail("k must be int64", input=1, expected="int64", actual=k.dtype.name)
    if k.numel is not None and k.numel != 1:
        ctx.fail("k must hold one value", input=1, expected="1 element", actual=k.shape)
    if x.shape is None:
        return [out(None, x.dtype), out(None, dt.int64)]
    if not x.shape:
        ctx.fail("X must have rank >= 1", input=0, expected="rank >= 1", actual=0)
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    kv = ctx.const(1)
    if kv is not None:
        kv = int(np.asarray(kv).reshape(-1)[0])
        size = x.shape[axis]
        if kv < 0 or (is_static_dim(size) and kv > size):
            ctx.fail(f"k = {kv} out of range for axis {axis} of size {size}", input=1,
                     expected=f"[0, {size}]", actual=kv)
    else:
        kv = ctx.fresh("k")
    shape = x.shape[:axis] + (kv,) + x.shape[axis + 1:]
    return [out(shape, x.dtype), out(shape, dt.int64)]


def _top_k_ref(ins, a):
    x, k = ins
    k = _scalar_int(k, "k")
    axis = normalize_axis(a["axis"], x.ndim)
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise ExecutionError(f"k = {k} out of range for axis {axis} of size {n}", expected=f"[0, {n}]", actual=k)
    key = _sort_key(x)
    if a["largest"]:
        # descending with ties broken by the lower index: stable-sort the reversed axis
        # ascending, then read that order backwards
        rev = np.flip(np.argsort(np.flip(key, axis), axis=axis, kind="stable"), axis)
        idx = (n - 1) - rev
    else:
        idx = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(idx, np.arange(k), axis=axis).astype(np.int64)
    return np.take_along_axis(x, idx, axis=axis), idx


def _top_k_grad(ctx):
    # the values were read at the returned indices, distinct within each slice
    o, x, idx = GradOps(ctx), ctx.inputs[0], ctx.outputs[1]
    return [o.scatter_elements(ctx.zeros_like(x), idx, ctx.dy(0), axis=ctx.attrs["axis"]), None]


register(OpDef(
    "top_k", infer=_top_k_infer, reference=_top_k_ref, inputs=(2, 2), kind="index",
    attrs={"axis": Attr("int", -1), "largest": Attr("bool", True), "sorted": Attr("bool", True)},
    differentiable=True, grad=_top_k_grad,
    doc="ONNX TopK: the k largest (or smallest) values along axis and their int64 indices; "
        "ties go to the lower index",
))
