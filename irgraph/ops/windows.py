"""Geometry shared by the windowed ops (convolutions in ``conv.py``, pools in ``pooling.py``).

Layouts are channels-first as in ONNX: ``x`` is (N, C, *spatial). Geometry attributes are per
spatial axis: ``strides``, ``dilations`` (None means all ones) and ``pads`` = (begin..., end...)
(None means zeros). ``auto_pad`` (NOTSET | SAME_UPPER | SAME_LOWER | VALID) is normally resolved
into explicit pads by the frontend; it stays an attribute only when the input's spatial dims are
unknown at compile time, and is then resolved on the actual shapes.

A ``WindowPlan`` holds one op's resolved geometry; ``padded`` and ``window_taps`` give the
strided view each kernel tap reads, which every window reference combines with whole-tensor
numpy operations (looping only over the few taps).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ..errors import ShapeError
from ..types import is_static_dim

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def raiser(op: str) -> Callable:
    """A ``fail(msg, **kw)`` for references, mirroring ``InferCtx.fail``."""
    def fail(message, *, input=None, expected=None, actual=None, hint=None):
        raise ShapeError(message, op=op, expected=expected, actual=actual, hint=hint)
    return fail


def acc_dtype(d: np.dtype) -> np.dtype:
    """The dtype references accumulate in: float64 for float32/float64 (the oracle rounds once, so
    identical channels stay bit-identical whatever BLAS tile computed them), float32 for 16-bit
    floats, int64 for integers."""
    if d.kind == "f" and d.itemsize >= 4:
        return np.dtype(np.float64)
    if d.kind in "iu" or d.kind == "b":
        return np.dtype(np.int64)
    return np.dtype(np.float32)


def per_axis(attrs, name: str, n: int, default: int, fail, minimum: int = 1) -> tuple:
    v = attrs.get(name)
    if v is None:
        return (default,) * n
    if len(v) != n:
        fail(f"{name} has {len(v)} entries but the input has {n} spatial dims",
             expected=n, actual=len(v))
    if any(x < minimum for x in v):
        fail(f"{name} must be >= {minimum}", actual=tuple(v))
    return tuple(int(x) for x in v)


def split_pads(attrs, n: int, fail, allow_negative: bool = False) -> tuple[tuple, tuple]:
    v = attrs.get("pads")
    if v is None:
        return (0,) * n, (0,) * n
    if len(v) != 2 * n:
        fail(f"pads has {len(v)} entries; {n} spatial dims need {2 * n} (begins then ends)",
             expected=2 * n, actual=len(v))
    if not allow_negative and any(p < 0 for p in v):
        fail("pads must be >= 0", actual=tuple(v))
    return tuple(int(p) for p in v[:n]), tuple(int(p) for p in v[n:])


def check_auto_pad(attrs, fail) -> str:
    ap = attrs.get("auto_pad") or "NOTSET"
    if ap not in AUTO_PADS:
        fail(f"unknown auto_pad {ap!r}", expected=" | ".join(AUTO_PADS), actual=ap)
    return ap


def same_pads(size: int, k: int, s: int, d: int, upper: bool) -> tuple[int, int, int]:
    """SAME padding of one axis: output ceil(size / s), the odd pad at the end (upper) or start."""
    o = -(-size // s)
    total = max(0, (o - 1) * s + (k - 1) * d + 1 - size)
    small = total // 2
    return (small, total - small, o) if upper else (total - small, small, o)


def window_axis(size, k, s, d, pb, pe, auto_pad, ceil_mode, fail, fresh=None):
    """(pad_begin, pad_end, out_size) of one spatial axis of a windowed op (conv or pool).

    ``size``/``k`` may be symbols during inference: the output is then a fresh symbol.
    """
    if not (is_static_dim(size) and is_static_dim(k)):
        return None, None, fresh("conv") if fresh else None
    keff = (k - 1) * d + 1
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return same_pads(size, k, s, d, auto_pad == "SAME_UPPER")
    if auto_pad == "VALID":
        pb = pe = 0
    span = size + pb + pe - keff
    if span < 0:
        fail(f"window of effective size {keff} (kernel {k}, dilation {d}) is larger than the "
             f"padded input ({size} + {pb + pe} pads)", expected=f">= {keff}", actual=size + pb + pe)
    if ceil_mode and auto_pad != "VALID":
        o = -(-span // s) + 1
        if (o - 1) * s >= size + pb:  # a last window starting in the end padding is dropped
            o -= 1
    else:
        o = span // s + 1
    return pb, pe, o


class WindowPlan(NamedTuple):
    strides: tuple
    dilations: tuple
    pads_begin: tuple
    pads_end: tuple
    out: tuple


def window_plan(sizes, kernel, attrs, fail, fresh=None, ceil_mode=False) -> WindowPlan:
    n = len(sizes)
    strides = per_axis(attrs, "strides", n, 1, fail)
    dil = per_axis(attrs, "dilations", n, 1, fail)
    pb, pe = split_pads(attrs, n, fail)
    ap = check_auto_pad(attrs, fail)
    res = [window_axis(sizes[i], kernel[i], strides[i], dil[i], pb[i], pe[i], ap, ceil_mode,
                       fail, fresh) for i in range(n)]
    return WindowPlan(strides, dil, tuple(r[0] for r in res), tuple(r[1] for r in res),
                 tuple(r[2] for r in res))


def padded(x: np.ndarray, kernel, plan: WindowPlan, fill) -> np.ndarray:
    """``x`` padded with ``fill`` just enough that every window of the plan lies inside it."""
    sizes = x.shape[2:]
    need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(plan.out, plan.strides, kernel, plan.dilations)]
    tail = [max(nd - pb - n, 0) for nd, pb, n in zip(need, plan.pads_begin, sizes)]
    if any(plan.pads_begin) or any(tail):
        shape = x.shape[:2] + tuple(n + pb + t for n, pb, t in zip(sizes, plan.pads_begin, tail))
        xp = np.zeros(shape, x.dtype) if fill == 0 else np.full(shape, fill, x.dtype)
        xp[(Ellipsis,) + tuple(slice(pb, pb + n) for pb, n in zip(plan.pads_begin, sizes))] = x
        return xp
    return x


def window_taps(xp: np.ndarray, kernel, plan: WindowPlan):
    """For each kernel tap, the strided view (N, C, *out) of padded ``xp`` it reads.

    Looping over the (few) taps with whole-tensor slices is much faster in numpy than reducing
    over the window axes of a sliding-window view, and is how every window op here works.
    """
    for tap in np.ndindex(*kernel):
        yield tap, xp[(slice(None), slice(None)) + tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, plan.dilations, plan.out, plan.strides))]


def check_rank(ctx, t, i: int, what: str, min_rank: int = 3):
    if t.shape is not None and len(t.shape) < min_rank:
        ctx.fail(f"{what} must have rank >= {min_rank} (N, C, spatial...)", input=i,
                 expected=f"rank >= {min_rank}", actual=t)


def check_input(ctx, i: int, allowed, like: int | None = None):
    t = ctx.type(i)
    if t is None:
        return None
    if like is not None and ctx.type(like) is not None and t.dtype is not ctx.type(like).dtype:
        ctx.fail("inputs must share one dtype", input=i, expected=ctx.type(like).dtype.name,
                 actual=t.dtype.name)
    if t.dtype not in allowed:
        ctx.fail("unsupported dtype", input=i,
                 expected="one of " + ", ".join(d.name for d in allowed), actual=t.dtype.name)
    return t


def static_eq(a, b) -> bool:
    """False only when both dims are known and differ."""
    return not (is_static_dim(a) and is_static_dim(b)) or a == b
