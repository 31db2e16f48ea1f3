"""Scatter ops: scatter_elements, scatter_nd (each with an optional reduction of colliding
updates) and tensor_scatter (KV-cache writes). Index checks are shared with the gathers in
``index.py``: a negative index counts from the end of its axis, one outside ``[-size, size - 1]``
is an error.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..errors import ExecutionError
from ..types import is_static_dim
from .elementwise_grad import GradOps
from .index import (check_known_indices, dims_equal, elements_index, elements_shapes, index_input,
                    nd_check, nd_flat_index)
from .registry import Attr, OpDef, register
from .shapes import normalize_axis, out

REDUCTIONS = ("none", "add", "mul", "max", "min")
_REDUCE_UFUNC = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


# ---- gradients ---------------------------------------------------------------------------------
def _scatter_grad(gather: str, scatter: str, attr_names: tuple):
    """The rule of scatter_elements / scatter_nd: ``gather`` reads dy back at the indices.

    none: written positions pass nothing to data; every update gets dy where it landed (for
    repeated indices, all of them, as PyTorch's scatter does). add: data gets dy. mul: y = x *
    prod(updates at p), with zeros among the updates handled without dividing by them. max/min:
    the gradient is shared evenly by x and the updates equal to the result (PyTorch's amax)."""
    def rule(ctx):
        o, (x, ind, upd), y, dy = GradOps(ctx), ctx.inputs, ctx.outputs[0], ctx.dy()
        attrs = {k: ctx.attrs[k] for k in attr_names}
        red = ctx.attrs["reduction"]

        def gat(v):
            return getattr(o, gather)(v, ind, **attrs)

        def sca(data, u, reduction="none"):
            return getattr(o, scatter)(data, ind, u, reduction=reduction, **attrs)
        if red == "none":
            return [sca(dy, ctx.zeros_like(upd)), None, gat(dy)]
        if red == "add":
            return [dy, None, gat(dy)]
        zero, one = o.k(0, x), o.k(1, x)
        if red == "mul":
            prod = sca(ctx.ones_like(x), upd, "mul")
            is0 = o.equal(upd, zero)
            zeros = sca(ctx.zeros_like(x), o.cast(is0, to=x.dtype), "add")
            prod_nz = sca(ctx.ones_like(x), o.where(is0, one, upd), "mul")
            dyx = o.mul(dy, x)
            g_nz = o.div(gat(o.mul(dyx, prod)), o.where(is0, one, upd))
            # a zero update's derivative is the product of the others: 0 unless it is the only zero
            g_z = gat(o.mul(dyx, o.where(o.equal(zeros, one), prod_nz, zero)))
            return [o.mul(dy, prod), None, o.where(is0, g_z, g_nz)]
        hit_x = o.cast(o.equal(x, y), to=x.dtype)
        hit_u = o.cast(o.equal(upd, gat(y)), to=x.dtype)
        share = o.div(dy, o.add(hit_x, sca(ctx.zeros_like(x), hit_u, "add")))
        return [o.mul(share, hit_x), None, o.mul(gat(share), hit_u)]
    rule.__name__ = f"{scatter}_grad"
    return rule


def _tensor_scatter_grad(ctx):
    o, past, upd, dy = GradOps(ctx), ctx.inputs[0], ctx.inputs[1], ctx.dy()
    w = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    r = len(past.shape)
    axis = normalize_axis(ctx.attrs["axis"], r)
    # past: the written positions are overwritten, so they pass nothing back
    g_past = o.tensor_scatter(dy, ctx.zeros_like(upd), w, axis=axis, mode=ctx.attrs["mode"])
    # update: read dy back at the positions it was written to, w[b] + t (mod the cache length)

    def dim(v, a):
        d = v.shape[a]
        return ctx.i64(d) if isinstance(d, int) else o.reshape(o.shape(v, start=a, end=a + 1), ctx.i64([]))
    t = o.range(ctx.i64(0), dim(upd, axis), ctx.i64(1))
    pos = o.reshape(t, ctx.i64([1] * axis + [-1] + [1] * (r - axis - 1)))
    if w is not None:
        pos = o.add(pos, o.reshape(w, ctx.i64([-1] + [1] * (r - 1))))
    if ctx.attrs["mode"] == "circular":
        pos = o.mod(pos, dim(past, axis))
    # (inference keeps the update no longer than the cache, so no write is overwritten)
    return [g_past, o.gather_elements(dy, o.expand(pos, ctx.shape(upd)), axis=axis)]


# ---- scatter_elements ------------------------------------------------------------------------
def _scatter_apply(out_arr, index, upd, reduction: str):
    if reduction == "none":
        out_arr[index] = upd
    else:
        _REDUCE_UFUNC[reduction].at(out_arr, index, upd)
    return out_arr


def _scatter_operands(ctx):
    """(data, indices, updates) types of scatter_elements/scatter_nd, with the shared checks."""
    x, ind, upd = ctx.type(0), index_input(ctx, 1), ctx.type(2)
    r = ctx.attrs["reduction"]
    if r not in REDUCTIONS:
        ctx.fail(f"unknown reduction {r!r}", expected=" | ".join(REDUCTIONS), actual=r)
    if upd.dtype is not x.dtype:
        ctx.fail("updates must have data's dtype", input=2, expected=x.dtype.name, actual=upd.dtype.name)
    return x, ind, upd


def _scatter_elements_infer(ctx):
    x, ind, upd = _scatter_operands(ctx)
    if ind.shape is not None and upd.shape is not None:
        if len(ind.shape) != len(upd.shape) or not all(map(dims_equal, ind.shape, upd.shape)):
            ctx.fail("indices and updates must have the same shape", input=2,
                     expected=ind.shape, actual=upd.shape)
    axis = elements_shapes(ctx, x, ind, ctx.attrs["axis"])
    if axis is not None:
        check_known_indices(ctx, 1, x.shape[axis], axis)
    return [out(x.shape, x.dtype)]


def _scatter_elements_ref(ins, a):
    x, ind, upd = ins
    ind = np.asarray(ind)
    if ind.shape != upd.shape:
        raise ExecutionError("indices and updates must have the same shape", expected=ind.shape,
                             actual=upd.shape)
    axis = normalize_axis(a["axis"], x.ndim)
    return _scatter_apply(x.copy(), elements_index(x.shape, ind, axis), upd, a["reduction"])


register(OpDef(
    "scatter_elements", infer=_scatter_elements_infer, reference=_scatter_elements_ref,
    inputs=(3, 3), kind="index", differentiable=True,
    grad=_scatter_grad("gather_elements", "scatter_elements", ("axis",)),
    attrs={"axis": Attr("int", 0), "reduction": Attr("str", "none", "none | add | mul | max | min")},
    doc="ONNX ScatterElements: a copy of data with updates written (or reduced) at indices along axis",
))


# ---- scatter_nd ------------------------------------------------------------------------------
def _scatter_nd_infer(ctx):
    x, ind, upd = _scatter_operands(ctx)
    if x.shape is None or ind.shape is None:
        return [out(x.shape, x.dtype)]
    k = nd_check(ctx, x, ind, 0)
    if k is not None and upd.shape is not None:
        want = ind.shape[:-1] + x.shape[k:]
        if len(want) != len(upd.shape) or not all(map(dims_equal, want, upd.shape)):
            ctx.fail("updates must have shape indices.shape[:-1] + data.shape[k:]", input=2,
                     expected=want, actual=upd.shape)
    return [out(x.shape, x.dtype)]


def _scatter_nd_ref(ins, a):
    x, ind, upd = ins
    ind = np.asarray(ind)
    k = ind.shape[-1]
    want = ind.shape[:-1] + x.shape[k:]
    if upd.shape != want:
        raise ExecutionError("updates must have shape indices.shape[:-1] + data.shape[k:]",
                             expected=want, actual=upd.shape)
    index = nd_flat_index(x.shape, ind, 0)[1:]
    res = x.copy()
    flat_upd = upd.reshape((index[0].shape[1] if k else int(np.prod(ind.shape[:-1], dtype=np.int64)),)
                           + x.shape[k:])
    if k == 0:
        # every update covers all of data: apply them in order
        for u in flat_upd:
            res = u.copy() if a["reduction"] == "none" else _REDUCE_UFUNC[a["reduction"]](res, u).astype(x.dtype)
        return res
    return _scatter_apply(res, tuple(c[0] for c in index), flat_upd, a["reduction"])


register(OpDef(
    "scatter_nd", infer=_scatter_nd_infer, reference=_scatter_nd_ref, inputs=(3, 3), kind="index",
    differentiable=True, grad=_scatter_grad("gather_nd", "scatter_nd", ()),
    attrs={"reduction": Attr("str", "none", "none | add | mul | max | min")},
    doc="ONNX ScatterND: a copy of data with slices addressed by index tuples replaced (or reduced)",
))


# ---- tensor_scatter --------------------------------------------------------------------------
def _tensor_scatter_infer(ctx):
    past, upd = ctx.type(0), ctx.type(1)
    mode = ctx.attrs["mode"]
    if mode not in ("linear", "circular"):
        ctx.fail(f"unknown mode {mode!r}", expected="linear | circular", actual=mode)
    if upd.dtype is not past.dtype:
        ctx.fail("update must have past_cache's dtype", input=1, expected=past.dtype.name,
                 actual=upd.dtype.name)
    if ctx.has(2):
        w = index_input(ctx, 2, (dt.int64,))
        if w.shape is not None and len(w.shape) != 1:
            ctx.fail("write_indices must be 1-D (one per batch entry)", input=2, expected="rank 1",
                     actual=len(w.shape))
        if w.shape is not None and past.shape is not None and past.shape and \
                not dims_equal(w.shape[0], past.shape[0]):
            ctx.fail("write_indices must hold one index per batch entry", input=2,
                     expected=past.shape[0], actual=w.shape[0])
    if past.shape is None or upd.shape is None:
        return [out(past.shape, past.dtype)]
    r = len(past.shape)
    if len(upd.shape) != r:
        ctx.fail("update must have past_cache's rank", input=1, expected=r, actual=len(upd.shape))
    if r < 2:
        ctx.fail("past_cache must have rank >= 2 (batch and sequence)", input=0, expected="rank >= 2", actual=r)
    axis = normalize_axis(ctx.attrs["axis"], r, ctx)
    if axis == 0:
        ctx.fail("axis 0 is the batch axis; the sequence axis must come after it", actual=ctx.attrs["axis"])
    for d in range(r):
        p, u = past.shape[d], upd.shape[d]
        if d == axis:
            if is_static_dim(p) and is_static_dim(u) and u > p:
                ctx.fail("update's sequence length exceeds the cache's", input=1, expected=f"<= {p}", actual=u)
        elif not dims_equal(p, u):
            ctx.fail(f"update dim {d} differs from past_cache's", input=1, expected=p, actual=u)
    return [out(past.shape, past.dtype)]


def _tensor_scatter_ref(ins, a):
    past, upd = ins[0], ins[1]
    w = ins[2] if len(ins) > 2 and ins[2] is not None else None
    axis = normalize_axis(a["axis"], past.ndim)
    nb, size, n = past.shape[0], past.shape[axis], upd.shape[axis]
    w = np.zeros(nb, np.int64) if w is None else np.asarray(w, dtype=np.int64).reshape(-1)
    if w.shape[0] != nb:
        raise ExecutionError("write_indices must hold one index per batch entry", expected=nb, actual=w.shape[0])
    pos = w[:, None] + np.arange(n)[None, :]
    src = np.arange(n)
    if a["mode"] == "circular":
        if (w < 0).any():
            raise ExecutionError("write index must be >= 0", expected=">= 0", actual=int(w.min()))
        if n > size:  # later writes overwrite earlier ones: keep only the last `size`
            pos, src = pos[:, n - size:], src[n - size:]
        pos = pos % size if size else pos
    elif pos.size and (w.min() < 0 or pos.max() >= size):
        bad = int(w[np.argmax((w < 0) | (w + n > size))])
        raise ExecutionError(f"write index {bad} with {n} updates runs past the cache's sequence "
                             f"length {size}", expected=f"[0, {size - n}]", actual=bad)
    res = past.copy()
    view = np.moveaxis(res, axis, 1)  # a view: writes land in res
    view[np.arange(nb)[:, None], pos] = np.moveaxis(upd, axis, 1)[:, src]
    return res


register(OpDef(
    "tensor_scatter", infer=_tensor_scatter_infer, reference=_tensor_scatter_ref, inputs=(2, 3),
    kind="index", differentiable=True, grad=_tensor_scatter_grad,
    attrs={"axis": Attr("int", -2, "the sequence axis"), "mode": Attr("str", "linear", "linear | circular")},
    doc="ONNX TensorScatter: write update into a KV cache at per-batch write indices",
))
