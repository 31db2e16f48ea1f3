"""Shape arithmetic shared by op inferences: broadcasting, axis normalization, symbolic dims."""
from __future__ import annotations

from typing import Sequence

from ..errors import ShapeError
from ..types import TensorType, fresh_dim, is_static_dim


def broadcast_shapes(*shapes, ctx=None):
    """Numpy-style broadcast of shapes whose dims may be symbols; ``None`` (unknown rank) wins."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        static = {d for d in dims if is_static_dim(d) and d != 1}
        syms = [d for d in dims if not is_static_dim(d)]
        if len(static) > 1:
            msg = f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast (axis {i - rank})"
            if ctx is not None:
                ctx.fail(msg)
            raise ShapeError(msg)
        if static:
            out.append(static.pop())
        elif syms:
            uniq = list(dict.fromkeys(syms))
            out.append(uniq[0] if len(uniq) == 1 else fresh_dim("bcast"))
        else:
            out.append(1)
    return tuple(out)


def normalize_axis(axis: int, rank: int, ctx=None, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1) and not (rank == 0 and axis in (0, -1)):
        msg = f"{what} {axis} out of range for rank {rank}"
        if ctx is not None:
            ctx.fail(msg, expected=f"[{-rank}, {rank - 1}]", actual=axis)
        raise ShapeError(msg)
    return axis + rank if axis < 0 else axis


def normalize_axes(axes: Sequence[int], rank: int, ctx=None) -> tuple[int, ...]:
    out = tuple(normalize_axis(a, rank, ctx) for a in axes)
    if len(set(out)) != len(out):
        if ctx is not None:
            ctx.fail(f"repeated axes {tuple(axes)}")
        raise ShapeError(f"repeated axes {tuple(axes)}")
    return out


def dim_mul(a, b):
    if is_static_dim(a) and is_static_dim(b):
        return a * b
    if a == 1:
        return b
    if b == 1:
        return a
    return fresh_dim("mul")


def dims_product(dims):
    """A product of dims as (static factor, Counter of symbols), so [N,3,4] and [N,12] compare equal."""
    from collections import Counter
    n, syms = 1, Counter()
    for d in dims:
        if is_static_dim(d):
            n *= int(d)
        else:
            syms[d] += 1
    return n, syms


def shape_numel(shape):
    n = 1
    for d in shape:
        if not is_static_dim(d):
            return None
        n *= d
    return n


def unknown_shape_like(rank: int | None, prefix: str = "d"):
    if rank is None:
        return None
    return tuple(fresh_dim(prefix) for _ in range(rank))


def same_dtype(ctx, idxs=None):
    """All present inputs (or those in ``idxs``) share one dtype; returns it."""
    idxs = range(len(ctx.inputs)) if idxs is None else idxs
    dt = None
    for i in idxs:
        t = ctx.type(i)
        if t is None:
            continue
        if dt is None:
            dt = t.dtype
        elif t.dtype is not dt:
            ctx.fail("inputs must share one dtype", input=i, expected=dt.name, actual=t.dtype.name)
    return dt


def check_dtype(ctx, i: int, allowed, what: str | None = None):
    t = ctx.type(i)
    if t is not None and t.dtype not in allowed:
        ctx.fail(f"unsupported dtype for {what or 'input'}", input=i,
                 expected="one of " + ", ".join(d.name for d in allowed), actual=t.dtype.name)
    return t


def out(shape, dtype):
    return TensorType(shape, dtype)
