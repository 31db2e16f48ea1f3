"""Data-movement ops: reshape, transpose, slice, concat, split, squeeze, unsqueeze, expand, tile
(ops that fill or rearrange elements within the tensor, such as pad, are in ``rearrange.py``).

Shape-like operands (a reshape's target shape, slice bounds, expand's shape) are int64 tensor
inputs as in ONNX, so shapes computed in the graph work; inference reads them when they are known
at compile time (constants, or values the importer could compute) and makes symbols otherwise.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..errors import ShapeError
from ..types import is_static_dim
from .elementwise_grad import GradOps
from .evaluate import known_value
from .registry import Attr, OpDef, register
from .shapes import dims_product, broadcast_shapes, normalize_axes, normalize_axis, out


def raise_shape_error(msg):
    """For references, which have no inference context to report through."""
    raise ShapeError(msg)


def fail(ctx, msg, **kw):
    """Report through the inference context when there is one (names node and op), else raise."""
    if ctx is not None:
        ctx.fail(msg, **kw)
    raise ShapeError(msg)


def as_ints(a) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


def check_int_vector(ctx, i: int, what: str, scalar_ok: bool = False):
    """Input ``i`` must be an int64 vector (or scalar where allowed); returns its static length."""
    t = ctx.type(i)
    if t is None:
        return None
    if t.dtype is not dt.int64:
        ctx.fail(f"{what} must be int64", input=i, expected="int64", actual=t.dtype.name)
    if t.shape is None:
        return None
    if len(t.shape) == 0 and scalar_ok:
        return 1
    if len(t.shape) != 1:
        ctx.fail(f"{what} must be a 1-D tensor", input=i, expected="rank 1", actual=f"rank {len(t.shape)}")
    n = t.shape[0]
    return n if is_static_dim(n) else None


def data_type(ctx):
    x = ctx.type(0)
    if x is None:
        ctx.fail("missing data input", input=0)
    return x


_dims_product = dims_product


def _reshape_back_grad(ctx):
    """reshape, squeeze, unsqueeze: the gradient is dy in the input's shape."""
    return [ctx.reshape_like(ctx.dy(), ctx.inputs[0])]



# ---- reshape -------------------------------------------------------------------------------
def _reshape_target(in_shape, spec, allowzero, ctx=None):
    spec = [int(s) for s in spec]
    res = []
    for i, s in enumerate(spec):
        if s < -1:
            fail(ctx, f"target shape {tuple(spec)} has the negative entry {s}")
        if s == 0 and not allowzero:
            if in_shape is None and ctx is not None:
                res.append(ctx.fresh("reshape"))
                continue
            if in_shape is None or i >= len(in_shape):
                fail(ctx, f"shape entry {i} is 0 (copy) but the input has rank "
                           f"{None if in_shape is None else len(in_shape)}")
            res.append(in_shape[i])
        else:
            res.append(s)
    if res.count(-1) > 1:
        fail(ctx, f"target shape {tuple(spec)} has more than one -1")
    if in_shape is None:
        if -1 in res:
            res[res.index(-1)] = ctx.fresh("reshape")
        return tuple(res)
    total_n, total_s = _dims_product(in_shape)
    if -1 in res:
        known_n, known_s = _dims_product([d for d in res if d != -1])
        left = total_s - known_s
        if known_s - total_s:
            # symbols of the target not found in the input: nothing can be cancelled
            res[res.index(-1)] = ctx.fresh("reshape") if ctx else -1
        elif known_n == 0 or total_n % known_n:
            if not left:
                fail(ctx, f"cannot reshape {tuple(in_shape)} into {tuple(spec)}")
            res[res.index(-1)] = ctx.fresh("reshape") if ctx else -1
        elif not left:
            res[res.index(-1)] = total_n // known_n
        elif total_n // known_n == 1 and sum(left.values()) == 1:
            # [batch, 3, 4] -> [-1, 12] keeps the batch symbol
            res[res.index(-1)] = next(iter(left))
        else:
            res[res.index(-1)] = ctx.fresh("reshape") if ctx else -1
    else:
        out_n, out_s = _dims_product(res)
        if total_s == out_s and total_n != out_n:
            fail(ctx, f"cannot reshape {tuple(in_shape)} ({total_n} elements) into {tuple(spec)} "
                       f"({out_n} elements)")
    return tuple(res)


def _reshape_infer(ctx):
    x, s = ctx.type(0), ctx.type(1)
    if s.dtype is not dt.int64 or s.rank != 1:
        ctx.fail("shape must be a 1-D int64 tensor", input=1, expected="int64[n]", actual=s)
    spec = ctx.const(1)
    if spec is None:
        n = s.shape[0]
        if not is_static_dim(n):
            return [out(None, x.dtype)]
        return [out(tuple(ctx.fresh("reshape") for _ in range(n)), x.dtype)]
    return [out(_reshape_target(x.shape, spec, ctx.attrs["allowzero"], ctx), x.dtype)]


def _reshape_ref(ins, a):
    x, spec = ins
    return x.reshape(_reshape_target(x.shape, spec, a["allowzero"]))


register(OpDef(
    "reshape", infer=_reshape_infer, reference=_reshape_ref, inputs=(2, 2), kind="movement",
    attrs={"allowzero": Attr("int", 0, "a 0 in shape means size 0, not 'copy the input dim'")},
    differentiable=True, grad=_reshape_back_grad,
    doc="reshape(x, shape): -1 infers one dim; 0 copies the input dim unless allowzero",
))


# ---- transpose -----------------------------------------------------------------------------
def _perm(perm, rank, ctx=None):
    if perm is None:
        return tuple(range(rank - 1, -1, -1))
    perm = tuple(int(p) for p in perm)
    if sorted(perm) != list(range(rank)):
        fail(ctx, f"perm {perm} is not a permutation of the {rank} axes",
              expected=f"a permutation of {tuple(range(rank))}", actual=perm)
    return perm


def _transpose_infer(ctx):
    x = data_type(ctx)
    perm = ctx.attrs["perm"]
    if x.shape is None:
        return [out(None if perm is None else tuple(ctx.fresh("transpose") for _ in perm), x.dtype)]
    p = _perm(perm, len(x.shape), ctx)
    return [out(tuple(x.shape[i] for i in p), x.dtype)]


def _transpose_grad(ctx):
    perm = ctx.attrs["perm"]
    if perm is None:  # reversing the axes is its own inverse
        return [GradOps(ctx).transpose(ctx.dy())]
    return [GradOps(ctx).transpose(ctx.dy(), perm=[perm.index(a) for a in range(len(perm))])]


register(OpDef(
    "transpose", infer=_transpose_infer, kind="movement", differentiable=True, grad=_transpose_grad,
    attrs={"perm": Attr("ints", None, "output axis i is input axis perm[i]; default reverses")},
    reference=lambda ins, a: np.transpose(ins[0], _perm(a["perm"], ins[0].ndim)),
    doc="permute axes (numpy transpose)",
))


# ---- slice ---------------------------------------------------------------------------------
# An end at or beyond this is "to the end" for a dim of unknown size (ONNX suggests INT_MAX).
_TO_END = 2 ** 31 - 1


def _slice_dim(dim: int, start: int, end: int, step: int):
    """ONNX Slice bounds on one axis: (start, python stop or None, length)."""
    if step > 0:
        start = min(max(start + dim if start < 0 else start, 0), dim)
        end = min(max(end + dim if end < 0 else end, 0), dim)
        n = max(0, -(-(end - start) // step))
    else:
        start = min(max(start + dim if start < 0 else start, 0), dim - 1)
        end = min(max(end + dim if end < 0 else end, -1), dim - 1)
        n = max(0, -(-(start - end) // -step)) if dim > 0 else 0
    # a stop of -1 for a negative step means "through index 0", which Python spells None
    return start, (end if end >= 0 else None), n


def _slice_args(rank, starts, ends, axes, steps, ctx=None):
    starts, ends = as_ints(starts), as_ints(ends)
    if len(starts) != len(ends):
        fail(ctx, "starts and ends differ in length", expected=len(starts), actual=len(ends))
    axes = list(range(len(starts))) if axes is None else as_ints(axes)
    steps = [1] * len(starts) if steps is None else as_ints(steps)
    if len(axes) != len(starts) or len(steps) != len(starts):
        fail(ctx, "starts, ends, axes and steps must have one entry per sliced axis",
              expected=len(starts), actual=(len(axes), len(steps)))
    axes = normalize_axes(axes, rank, ctx) if ctx is not None else normalize_axes(axes, rank)
    if any(s == 0 for s in steps):
        fail(ctx, "slice steps must not be 0", actual=tuple(steps))
    return list(zip(axes, starts, ends, steps))


def _slice_infer(ctx):
    x = data_type(ctx)
    for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
        if ctx.has(i):
            check_int_vector(ctx, i, what)
    if x.shape is None:
        return [out(None, x.dtype)]
    rank = len(x.shape)
    vals = [ctx.const(i) if ctx.has(i) else None for i in range(1, 5)]
    known = all(v is not None for v in vals[:2]) and (not ctx.has(3) or vals[2] is not None) \
        and (not ctx.has(4) or vals[3] is not None)
    shape = list(x.shape)
    if not known:
        if ctx.has(3) and vals[2] is not None:
            for a in normalize_axes(as_ints(vals[2]), rank, ctx):
                shape[a] = ctx.fresh("slice")
            return [out(tuple(shape), x.dtype)]
        return [out(tuple(ctx.fresh("slice") for _ in shape), x.dtype)]
    for a, s, e, st in _slice_args(rank, *vals, ctx=ctx):
        d = shape[a]
        if is_static_dim(d):
            shape[a] = _slice_dim(d, s, e, st)[2]
        elif not ((st == 1 and s == 0 and e >= _TO_END) or (st == -1 and s == -1 and e <= -_TO_END)):
            shape[a] = ctx.fresh("slice")
    return [out(tuple(shape), x.dtype)]


def _slice_ref(ins, a):
    x = ins[0]
    args = list(ins[1:]) + [None] * (5 - len(ins))
    index = [slice(None)] * x.ndim
    for ax, s, e, st in _slice_args(x.ndim, *args):
        start, stop, _ = _slice_dim(x.shape[ax], s, e, st)
        index[ax] = slice(start, stop, st)
    return x[tuple(index)]


def _slice_grad(ctx):
    o, x, dy = GradOps(ctx), ctx.inputs[0], ctx.dy()
    vals = [known_value(v) for v in ctx.inputs[1:]] + [None] * (5 - len(ctx.inputs))
    present = [v is not None for v in ctx.inputs[1:]] + [False] * (5 - len(ctx.inputs))
    static = x.shape is not None and all(isinstance(d, int) for d in x.shape) and all(
        v is not None for v, p in zip(vals, present) if p)
    if not static:
        return [_slice_grad_scatter(ctx, o, x, dy)]
    g = dy
    for a, s, e, st in _slice_args(len(x.shape), *vals):
        start, _, n = _slice_dim(x.shape[a], s, e, st)
        if n == 0:
            return [ctx.zeros_like(x)]
        step = abs(st)
        if st < 0:  # walk the slice forwards: reverse dy, starting from the lowest index
            g = o.slice(g, ctx.i64([-1]), ctx.i64([-2 ** 62]), ctx.i64([a]), ctx.i64([-1]))
            start -= (n - 1) * step
        if step > 1:  # put step - 1 zeros after each element
            g = o.unsqueeze(g, ctx.i64([a + 1]))
            g = o.pad(g, ctx.i64([0, step - 1]), None, ctx.i64([a + 1]))
            shape = list(g.shape)
            g = o.reshape(g, ctx.i64(shape[:a] + [n * step] + shape[a + 2:]))
        # zeros before and after; a negative pad crops the zeros the last step put past the end
        g = o.pad(g, ctx.i64([start, x.shape[a] - start - n * step]), None, ctx.i64([a]))
    return [g]


def _slice_grad_scatter(ctx, o, x, dy):
    """Bounds only known when the graph runs: slice the flat positions of x the same way and
    scatter dy to them."""
    n = o.size(x)
    pos = o.reshape(o.range(ctx.i64(0), n, ctx.i64(1)), ctx.shape(x))
    picked = o.reshape(o.slice(pos, *ctx.inputs[1:]), ctx.i64([-1]))
    zeros = o.constant_of_shape(o.reshape(n, ctx.i64([1])), value=np.zeros(1, x.dtype.np))
    flat = o.scatter_elements(zeros, picked, o.reshape(dy, ctx.i64([-1])), axis=0)
    return o.reshape(flat, ctx.shape(x))


register(OpDef(
    "slice", infer=_slice_infer, reference=_slice_ref, inputs=(3, 5), kind="movement",
    differentiable=True, grad=_slice_grad,
    doc="slice(x, starts, ends, axes?, steps?): ONNX Slice (clamped bounds, negative steps)",
))


# ---- concat --------------------------------------------------------------------------------
def _concat_infer(ctx):
    types = ctx.types
    if any(t is None for t in types):
        ctx.fail("concat inputs must all be present")
    dtype = types[0].dtype
    for i, t in enumerate(types):
        if t.dtype is not dtype:
            ctx.fail("inputs must share one dtype", input=i, expected=dtype.name, actual=t.dtype.name)
    known = [t.shape for t in types if t.shape is not None]
    if not known:
        return [out(None, dtype)]
    rank = len(known[0])
    if rank == 0:
        ctx.fail("cannot concatenate scalars", input=0, expected="rank >= 1", actual="rank 0")
    for i, t in enumerate(types):
        if t.shape is not None and len(t.shape) != rank:
            ctx.fail("inputs must have the same rank", input=i, expected=rank, actual=len(t.shape))
    axis = normalize_axis(ctx.attrs["axis"], rank, ctx)
    shape = []
    for k in range(rank):
        dims = [s[k] for s in known]
        if k == axis:
            if len(known) == len(types) and all(is_static_dim(d) for d in dims):
                shape.append(sum(dims))
            else:
                shape.append(ctx.fresh("concat"))
            continue
        static = {d for d in dims if is_static_dim(d)}
        if len(static) > 1:
            ctx.fail(f"inputs differ in dimension {k} (only axis {axis} may differ)",
                     expected=min(static), actual=max(static))
        shape.append(static.pop() if static else dims[0])
    return [out(tuple(shape), dtype)]


def _concat_grad(ctx):
    o, xs, axis = GradOps(ctx), ctx.inputs, ctx.attrs["axis"]
    axis = normalize_axis(axis, len(xs[0].shape))
    dims = [x.shape[axis] for x in xs]
    if all(isinstance(d, int) for d in dims):
        sizes = ctx.i64(dims)
    else:
        sizes = o.concat(*[o.shape(x, start=axis, end=axis + 1) for x in xs], axis=0)
    parts = o.split(ctx.dy(), sizes, axis=axis, num_outputs=len(xs))
    return list(parts)


register(OpDef(
    "concat", infer=_concat_infer, inputs=(1, None), kind="movement", differentiable=True,
    grad=_concat_grad,
    attrs={"axis": Attr("int")},
    reference=lambda ins, a: np.concatenate(ins, axis=a["axis"]),
    doc="join tensors along an existing axis",
))


# ---- split ---------------------------------------------------------------------------------
def _even_split(dim: int, n: int, ctx=None) -> list[int]:
    """ONNX's equal split: parts of ceil(dim / n), the last ones smaller (possibly empty).

    When n does not divide dim the later parts take what is left, as ONNX's reference does:
    5 into 4 parts is [2, 2, 1, 0].
    """
    if n <= 0:
        fail(ctx, f"cannot split into {n} parts", actual=n)
    chunk = -(-dim // n)
    return [min(chunk, max(0, dim - k * chunk)) for k in range(n)]


def _split_infer(ctx):
    x = data_type(ctx)
    nattr = ctx.attrs["num_outputs"]
    sizes = None
    if ctx.has(1):
        count = check_int_vector(ctx, 1, "split sizes")
        sizes = ctx.const(1)
        if sizes is not None:
            sizes = as_ints(sizes)
            count = len(sizes)
            if any(s < 0 for s in sizes):
                ctx.fail("split sizes must be >= 0", input=1, actual=tuple(sizes))
        if count is None:
            count = ctx.num_outputs
        if count is None:
            ctx.fail("the number of outputs is unknown: the split sizes have unknown length", input=1)
        if nattr is not None and nattr != count:
            ctx.fail("num_outputs and the split sizes disagree", expected=nattr, actual=count)
    else:
        if nattr is None:
            ctx.fail("split needs split sizes or the num_outputs attribute")
        count = nattr
    if ctx.num_outputs is not None and ctx.num_outputs != count:
        ctx.fail("wrong number of outputs", expected=count, actual=ctx.num_outputs)
    if x.shape is None:
        return [out(None, x.dtype) for _ in range(count)]
    if len(x.shape) == 0:
        ctx.fail("cannot split a scalar", input=0)
    axis = normalize_axis(ctx.attrs["axis"], len(x.shape), ctx)
    d = x.shape[axis]
    if sizes is None and is_static_dim(d) and not ctx.has(1):
        sizes = _even_split(d, count, ctx)
    if sizes is not None and is_static_dim(d) and sum(sizes) != d:
        ctx.fail(f"split sizes {tuple(sizes)} do not add up to dimension {axis}", input=1,
                 expected=d, actual=sum(sizes))
    res = []
    for k in range(count):
        shape = list(x.shape)
        shape[axis] = sizes[k] if sizes is not None else ctx.fresh("split")
        res.append(out(tuple(shape), x.dtype))
    return res


def _split_ref(ins, a):
    x = ins[0]
    axis = normalize_axis(a["axis"], x.ndim)
    if len(ins) > 1 and ins[1] is not None:
        sizes = as_ints(ins[1])
        if sum(sizes) != x.shape[axis]:
            raise_shape_error(f"split sizes {tuple(sizes)} do not add up to {x.shape[axis]}")
    else:
        sizes = _even_split(x.shape[axis], a["num_outputs"])
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _split_grad(ctx):
    # outputs the loss does not reach contribute zeros (ctx.dy makes them)
    dys = [ctx.dy(i) for i in range(len(ctx.outputs))]
    return [GradOps(ctx).concat(*dys, axis=ctx.attrs["axis"])]


register(OpDef(
    "split", infer=_split_infer, reference=_split_ref, inputs=(1, 2), kind="movement",
    differentiable=True, variadic_outputs=True, grad=_split_grad,
    attrs={"axis": Attr("int", 0),
           "num_outputs": Attr("int", None, "equal parts (the last smaller) when no sizes are given")},
    doc="split(x, sizes?): cut along axis into parts of the given sizes or num_outputs equal parts",
))


# ---- squeeze / unsqueeze --------------------------------------------------------------------
def _squeeze_infer(ctx):
    x = data_type(ctx)
    if ctx.has(1):
        n = check_int_vector(ctx, 1, "axes", scalar_ok=True)
        axes = ctx.const(1)
        if axes is None:
            if x.shape is None or n is None:
                return [out(None, x.dtype)]
            return [out(tuple(ctx.fresh("squeeze") for _ in range(len(x.shape) - n)), x.dtype)]
        if x.shape is None:
            return [out(None, x.dtype)]
        axes = normalize_axes(as_ints(axes), len(x.shape), ctx)
        for a in axes:
            d = x.shape[a]
            if is_static_dim(d) and d != 1:
                ctx.fail(f"cannot squeeze axis {a} of size {d}", input=0, expected=1, actual=d)
        return [out(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype)]
    if x.shape is None or not all(is_static_dim(d) for d in x.shape):
        # a symbolic dim may or may not be 1, so even the rank is unknown
        return [out(None, x.dtype)]
    return [out(tuple(d for d in x.shape if d != 1), x.dtype)]


def _squeeze_ref(ins, a):
    x = ins[0]
    if len(ins) > 1 and ins[1] is not None:
        axes = normalize_axes(as_ints(ins[1]), x.ndim)
        bad = [ax for ax in axes if x.shape[ax] != 1]
        if bad:
            raise_shape_error(f"cannot squeeze axes {bad} of shape {x.shape}")
        return x.reshape(tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return x.reshape(tuple(d for d in x.shape if d != 1))


register(OpDef(
    "squeeze", infer=_squeeze_infer, reference=_squeeze_ref, inputs=(1, 2), kind="movement",
    differentiable=True, grad=_reshape_back_grad,
    doc="squeeze(x, axes?): drop size-1 axes (all of them when axes is absent)",
))


def _unsqueeze_shape(shape, axes, ctx=None):
    rank = len(shape) + len(axes)
    axes = normalize_axes(axes, rank, ctx) if ctx is not None else normalize_axes(axes, rank)
    it = iter(shape)
    return tuple(1 if i in axes else next(it) for i in range(rank))


def _unsqueeze_infer(ctx):
    x = data_type(ctx)
    n = check_int_vector(ctx, 1, "axes", scalar_ok=True)
    axes = ctx.const(1)
    if x.shape is None:
        return [out(None, x.dtype)]
    if axes is None:
        if n is None:
            return [out(None, x.dtype)]
        return [out(tuple(ctx.fresh("unsqueeze") for _ in range(len(x.shape) + n)), x.dtype)]
    return [out(_unsqueeze_shape(x.shape, as_ints(axes), ctx), x.dtype)]


register(OpDef(
    "unsqueeze", infer=_unsqueeze_infer, inputs=(2, 2), kind="movement", differentiable=True,
    grad=_reshape_back_grad,
    reference=lambda ins, a: ins[0].reshape(_unsqueeze_shape(ins[0].shape, as_ints(ins[1]))),
    doc="unsqueeze(x, axes): insert size-1 axes at the given positions of the output",
))


# ---- expand / tile -------------------------------------------------------------------------
def _expand_infer(ctx):
    x = data_type(ctx)
    n = check_int_vector(ctx, 1, "shape")
    shape = ctx.const(1)
    if shape is not None:
        shape = as_ints(shape)
        if any(s < 0 for s in shape):
            ctx.fail("expand shape entries must be >= 0", input=1, actual=tuple(shape))
        if x.shape is None:
            return [out(None, x.dtype)]
        return [out(broadcast_shapes(x.shape, tuple(shape), ctx=ctx), x.dtype)]
    if x.shape is None or n is None:
        return [out(None, x.dtype)]
    rank = max(n, len(x.shape))
    pad = (1,) * (rank - len(x.shape)) + tuple(x.shape)
    # a static input dim other than 1 survives any valid target entry (which is then 1 or equal)
    return [out(tuple(d if is_static_dim(d) and d != 1 else ctx.fresh("expand") for d in pad), x.dtype)]


def _expand_ref(ins, a):
    x = ins[0]
    return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(as_ints(ins[1])))).copy()


register(OpDef(
    "expand", infer=_expand_infer, reference=_expand_ref, inputs=(2, 2), kind="movement",
    differentiable=True, grad=lambda ctx: [ctx.sum_to(ctx.dy(), ctx.inputs[0])],
    doc="expand(x, shape): broadcast x against shape (either side may be 1)",
))


def _tile_infer(ctx):
    x = data_type(ctx)
    check_int_vector(ctx, 1, "repeats")
    reps = ctx.const(1)
    if x.shape is None:
        return [out(None, x.dtype)]
    if reps is None:
        return [out(tuple(ctx.fresh("tile") for _ in x.shape), x.dtype)]
    reps = as_ints(reps)
    if len(reps) != len(x.shape):
        ctx.fail("repeats must have one entry per input axis", input=1, expected=len(x.shape), actual=len(reps))
    if any(r < 0 for r in reps):
        ctx.fail("repeats must be >= 0", input=1, actual=tuple(reps))
    shape = [d * r if is_static_dim(d) else (d if r == 1 else 0 if r == 0 else ctx.fresh("tile"))
             for d, r in zip(x.shape, reps)]
    return [out(tuple(shape), x.dtype)]


def _tile_ref(ins, a):
    x, reps = ins[0], as_ints(ins[1])
    if len(reps) != x.ndim:
        raise_shape_error(f"repeats {tuple(reps)} do not match rank {x.ndim}")
    return np.tile(x, reps) if x.ndim else x.copy()


def _tile_grad(ctx):
    o, x, dy = GradOps(ctx), ctx.inputs[0], ctx.dy()
    reps = known_value(ctx.inputs[1])
    if reps is None or x.shape is None:
        raise ctx.fail("the gradient of tile needs repeats known at compile time")
    reps = as_ints(reps)
    if all(r == 1 for r in reps):
        return [dy]
    # view dy as (r0, d0, r1, d1, ...) -- only axes repeated more than once are split -- and
    # sum the copies
    spec, summed = [], []
    for i, (d, r) in enumerate(zip(x.shape, reps)):
        if r != 1:
            summed.append(len(spec))
            spec.append(ctx.i64([r]))
        spec.append(ctx.i64([d]) if isinstance(d, int) else o.shape(x, start=i, end=i + 1))
    if all(v.const is not None for v in spec):
        target = ctx.i64([int(v.const[0]) for v in spec])
    else:
        target = o.concat(*spec, axis=0)
    g = o.reduce_sum(o.reshape(dy, target), ctx.i64(summed), keepdims=0)
    return [ctx.reshape_like(g, x)]


register(OpDef(
    "tile", infer=_tile_infer, reference=_tile_ref, inputs=(2, 2), kind="movement",
    differentiable=True, grad=_tile_grad,
    doc="tile(x, repeats): repeat the whole tensor repeats[i] times along axis i",
))
