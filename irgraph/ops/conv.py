"""Convolution and pooling: conv, conv_transpose, deform_conv, causal_conv_with_state, max_pool,
avg_pool, lp_pool, global_pool, max_unpool, max_roi_pool.

Layouts are channels-first as in ONNX: ``x`` is (N, C, *spatial), a conv weight (M, C/group, *k).
Geometry attributes are per spatial axis: ``strides``, ``dilations`` (None means all ones) and
``pads`` = (begin..., end...) (None means zeros). ``auto_pad`` (NOTSET | SAME_UPPER | SAME_LOWER |
VALID) is normally resolved into explicit pads by the frontend; it stays an attribute only when
the input's spatial dims are unknown at compile time, and is then resolved on the actual shapes.

References are vectorized numpy, looping only over kernel taps: convolutions build an im2col
matrix (one strided slice copy per tap) and multiply it with the weight in one matmul covering
all groups; pools combine the taps' strided slices with whole-tensor maximum/add.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .. import dtype as dt
from ..errors import ShapeError
from ..types import is_static_dim
from .declare import FLOAT_TYPES, INT_TYPES
from .registry import Attr, OpDef, register
from .shapes import out

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
CONV_TYPES = FLOAT_TYPES + INT_TYPES
MAX_POOL_TYPES = FLOAT_TYPES + INT_TYPES


# ---- shared geometry ---------------------------------------------------------------------
def _raiser(op: str) -> Callable:
    """A ``fail(msg, **kw)`` for references, mirroring ``InferCtx.fail``."""
    def fail(message, *, input=None, expected=None, actual=None, hint=None):
        raise ShapeError(message, op=op, expected=expected, actual=actual, hint=hint)
    return fail


def _acc_dtype(d: np.dtype) -> np.dtype:
    """The dtype references accumulate in: float64 for float32/float64 (the oracle rounds once, so
    identical channels stay bit-identical whatever BLAS tile computed them), float32 for 16-bit
    floats, int64 for integers."""
    if d.kind == "f" and d.itemsize >= 4:
        return np.dtype(np.float64)
    if d.kind in "iu" or d.kind == "b":
        return np.dtype(np.int64)
    return np.dtype(np.float32)


def _per_axis(attrs, name: str, n: int, default: int, fail, minimum: int = 1) -> tuple:
    v = attrs.get(name)
    if v is None:
        return (default,) * n
    if len(v) != n:
        fail(f"{name} has {len(v)} entries but the input has {n} spatial dims",
             expected=n, actual=len(v))
    if any(x < minimum for x in v):
        fail(f"{name} must be >= {minimum}", actual=tuple(v))
    return tuple(int(x) for x in v)


def _pads(attrs, n: int, fail, allow_negative: bool = False) -> tuple[tuple, tuple]:
    v = attrs.get("pads")
    if v is None:
        return (0,) * n, (0,) * n
    if len(v) != 2 * n:
        fail(f"pads has {len(v)} entries; {n} spatial dims need {2 * n} (begins then ends)",
             expected=2 * n, actual=len(v))
    if not allow_negative and any(p < 0 for p in v):
        fail("pads must be >= 0", actual=tuple(v))
    return tuple(int(p) for p in v[:n]), tuple(int(p) for p in v[n:])


def _auto_pad(attrs, fail) -> str:
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


class _Plan(NamedTuple):
    strides: tuple
    dilations: tuple
    pads_begin: tuple
    pads_end: tuple
    out: tuple


def _window_plan(sizes, kernel, attrs, fail, fresh=None, ceil_mode=False) -> _Plan:
    n = len(sizes)
    strides = _per_axis(attrs, "strides", n, 1, fail)
    dil = _per_axis(attrs, "dilations", n, 1, fail)
    pb, pe = _pads(attrs, n, fail)
    ap = _auto_pad(attrs, fail)
    res = [window_axis(sizes[i], kernel[i], strides[i], dil[i], pb[i], pe[i], ap, ceil_mode,
                       fail, fresh) for i in range(n)]
    return _Plan(strides, dil, tuple(r[0] for r in res), tuple(r[1] for r in res),
                 tuple(r[2] for r in res))


def _padded(x: np.ndarray, kernel, plan: _Plan, fill) -> np.ndarray:
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


def _taps(xp: np.ndarray, kernel, plan: _Plan):
    """For each kernel tap, the strided view (N, C, *out) of padded ``xp`` it reads.

    Looping over the (few) taps with whole-tensor slices is much faster in numpy than reducing
    over the window axes of a sliding-window view, and is how every window op here works.
    """
    for tap in np.ndindex(*kernel):
        yield tap, xp[(slice(None), slice(None)) + tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, plan.dilations, plan.out, plan.strides))]


def _check_rank(ctx, t, i: int, what: str, min_rank: int = 3):
    if t.shape is not None and len(t.shape) < min_rank:
        ctx.fail(f"{what} must have rank >= {min_rank} (N, C, spatial...)", input=i,
                 expected=f"rank >= {min_rank}", actual=t)


def _check_dtype(ctx, i: int, allowed, like: int | None = None):
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


def _static_eq(a, b) -> bool:
    """False only when both dims are known and differ."""
    return not (is_static_dim(a) and is_static_dim(b)) or a == b


# ---- conv ------------------------------------------------------------------------------------
_CONV_ATTRS = {
    "strides": Attr("ints", None, "per spatial axis; default 1"),
    "pads": Attr("ints", None, "begin pads then end pads; default 0"),
    "dilations": Attr("ints", None, "per spatial axis; default 1"),
    "group": Attr("int", 1, "input and output channels are split into this many groups"),
    "auto_pad": Attr("str", "NOTSET", "NOTSET | SAME_UPPER | SAME_LOWER | VALID"),
}


def _check_conv_operands(ctx, x, w, weight_in: int = 1, transpose: bool = False):
    """Common checks of (x, w, bias) for conv/conv_transpose/deform_conv; returns out channels."""
    group = ctx.attrs["group"]
    if group < 1:
        ctx.fail("group must be >= 1", actual=group)
    if w.shape is not None and x.shape is not None and len(w.shape) != len(x.shape):
        ctx.fail("weight rank must equal input rank", input=weight_in, expected=len(x.shape), actual=w)
    _check_rank(ctx, w, weight_in, "weight")
    if w.shape is None:
        return ctx.fresh("channels")
    if transpose:
        m = w.shape[1] * group if is_static_dim(w.shape[1]) else ctx.fresh("channels")
    else:
        m = w.shape[0]
    if x.shape is None:
        return m
    c = x.shape[1]
    if transpose:
        if not _static_eq(c, w.shape[0]):
            ctx.fail("input channels must equal weight dim 0 (C, M/group, k...)", input=weight_in,
                     expected=c, actual=w.shape[0])
        if is_static_dim(w.shape[0]) and w.shape[0] % group:
            ctx.fail(f"weight dim 0 ({w.shape[0]}) is not divisible by group {group}", input=weight_in)
    else:
        cg = w.shape[1]
        if is_static_dim(c) and is_static_dim(cg) and c != cg * group:
            ctx.fail(f"input has {c} channels but weight expects {cg} x group {group} = {cg * group}",
                     input=weight_in, expected=c, actual=cg * group)
        if is_static_dim(m) and m % group:
            ctx.fail(f"output channels {m} are not divisible by group {group}", input=weight_in)
    return m


def _check_bias(ctx, i: int, m):
    b = ctx.type(i)
    if b is None or b.shape is None:
        return
    if len(b.shape) != 1 or not _static_eq(b.shape[0], m):
        ctx.fail("bias must be 1-D with one entry per output channel", input=i,
                 expected=f"[{m}]", actual=b)


def _conv_infer(ctx):
    x = _check_dtype(ctx, 0, CONV_TYPES)
    w = _check_dtype(ctx, 1, CONV_TYPES, like=0)
    _check_dtype(ctx, 2, CONV_TYPES, like=0)
    _check_rank(ctx, x, 0, "input")
    m = _check_conv_operands(ctx, x, w)
    _check_bias(ctx, 2, m)
    if x.shape is None or w.shape is None:
        return [out(None, x.dtype)]
    plan = _window_plan(x.shape[2:], w.shape[2:], ctx.attrs, ctx.fail, ctx.fresh)
    return [out((x.shape[0], m) + plan.out, x.dtype)]


# im2col matrices larger than this are built and multiplied one batch element at a time
_COLS_BYTES = 1 << 28


def im2col(xp: np.ndarray, kernel, plan: _Plan) -> np.ndarray:
    """(N, C, *k, *out) receptive fields of padded ``xp``: row (c, tap) of output pixel o."""
    cols = np.empty(xp.shape[:2] + tuple(kernel) + tuple(plan.out), xp.dtype)
    for tap, view in _taps(xp, kernel, plan):
        cols[(slice(None), slice(None)) + tap] = view
    return cols


def conv_nd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, plan: _Plan, group: int) -> np.ndarray:
    """Grouped N-D convolution in the accumulation dtype: im2col + matmul, all groups at once."""
    acc = _acc_dtype(x.dtype)
    x = x.astype(acc, copy=False)
    w = w.astype(acc, copy=False)
    n, c = x.shape[:2]
    m = w.shape[0]
    kernel = w.shape[2:]
    nsp = len(kernel)
    cg, mg = c // group, m // group
    p = int(np.prod(plan.out, dtype=np.int64))
    k = int(np.prod(kernel, dtype=np.int64))
    xp = _padded(x, kernel, plan, 0)
    # (G, Mg, Cg*K) @ (N, G, Cg*K, P) -> (N, G, Mg, P): the weight broadcasts over the batch
    w2 = w.reshape(group, mg, cg * k)
    y = np.empty((n, group, mg, p), acc)
    step = max(1, _COLS_BYTES // max(1, c * k * p * acc.itemsize))
    for i in range(0, n, step):
        cols = im2col(xp[i:i + step], kernel, plan).reshape(-1, group, cg * k, p)
        np.matmul(w2, cols, out=y[i:i + step])
    y = y.reshape((n, m) + tuple(plan.out))
    if b is not None:
        y += b.astype(acc, copy=False).reshape((m,) + (1,) * nsp)
    return y


def _conv_ref(ins, a):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    fail = _raiser("conv")
    plan = _window_plan(x.shape[2:], w.shape[2:], a, fail)
    return conv_nd(x, w, b, plan, a["group"]).astype(x.dtype, copy=False)


register(OpDef(
    "conv", infer=_conv_infer, reference=_conv_ref, inputs=(2, 3), kind="contraction",
    attrs=dict(_CONV_ATTRS), differentiable=True,
    doc="conv(x[N,C,*s], w[M,C/group,*k], bias[M]?) -> [N,M,*o]; ONNX Conv semantics",
))


# ---- conv_transpose --------------------------------------------------------------------------
def transpose_axis(size, k, s, d, pb, pe, op, auto_pad, out_size, fresh=None):
    """(pad_begin, pad_end, out_size) of one axis of a transposed conv (ONNX ConvTranspose)."""
    if not (is_static_dim(size) and is_static_dim(k)):
        return None, None, (out_size if out_size is not None else (fresh("convt") if fresh else None))
    full = s * (size - 1) + op + (k - 1) * d + 1
    if out_size is None:
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out_size = size * s
        elif auto_pad == "VALID":
            return 0, 0, full
        else:
            return pb, pe, full - pb - pe
    total = full - out_size
    # floor halves: an output larger than the full result gets its extra zeros at the end
    half = total // 2
    if auto_pad == "SAME_UPPER":
        return half, total - half, out_size
    return total - half, half, out_size


_CONVT_ATTRS = dict(_CONV_ATTRS)
_CONVT_ATTRS.update({
    "output_padding": Attr("ints", None, "extra size added at the end of each spatial axis"),
    "output_shape": Attr("ints", None, "spatial output shape; when given, pads are derived from it"),
})


def _convt_plan(sizes, kernel, attrs, fail, fresh=None):
    n = len(sizes)
    strides = _per_axis(attrs, "strides", n, 1, fail)
    dil = _per_axis(attrs, "dilations", n, 1, fail)
    opad = _per_axis(attrs, "output_padding", n, 0, fail, minimum=0)
    pb, pe = _pads(attrs, n, fail, allow_negative=True)
    ap = _auto_pad(attrs, fail)
    oshape = attrs.get("output_shape")
    if oshape is not None:
        oshape = tuple(oshape)[-n:] if len(oshape) >= n else oshape
        if len(oshape) != n:
            fail(f"output_shape has {len(oshape)} entries but the input has {n} spatial dims",
                 expected=n, actual=len(attrs["output_shape"]))
    res = [transpose_axis(sizes[i], kernel[i], strides[i], dil[i], pb[i], pe[i], opad[i], ap,
                          None if oshape is None else int(oshape[i]), fresh) for i in range(n)]
    for i, r in enumerate(res):
        if r[2] is not None and is_static_dim(r[2]) and r[2] < 1:
            fail(f"output size {r[2]} along spatial axis {i} is not positive", actual=r[2])
    return _Plan(strides, dil, tuple(r[0] for r in res), tuple(r[1] for r in res),
                 tuple(r[2] for r in res))


def _convt_infer(ctx):
    x = _check_dtype(ctx, 0, FLOAT_TYPES)
    w = _check_dtype(ctx, 1, FLOAT_TYPES, like=0)
    _check_dtype(ctx, 2, FLOAT_TYPES, like=0)
    _check_rank(ctx, x, 0, "input")
    m = _check_conv_operands(ctx, x, w, transpose=True)
    _check_bias(ctx, 2, m)
    if x.shape is None or w.shape is None:
        return [out(None, x.dtype)]
    plan = _convt_plan(x.shape[2:], w.shape[2:], ctx.attrs, ctx.fail, ctx.fresh)
    return [out((x.shape[0], m) + plan.out, x.dtype)]


def _convt_ref(ins, a):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    plan = _convt_plan(x.shape[2:], w.shape[2:], a, _raiser("conv_transpose"))
    acc = _acc_dtype(x.dtype)
    xa, wa = x.astype(acc, copy=False), w.astype(acc, copy=False)
    group = a["group"]
    n, c = x.shape[:2]
    sizes, kernel = x.shape[2:], w.shape[2:]
    nsp = len(sizes)
    cg, mg = c // group, w.shape[1]
    m = mg * group
    p = int(np.prod(sizes, dtype=np.int64))
    k = int(np.prod(kernel, dtype=np.int64))
    # every input pixel's contribution to every kernel tap:
    # (G, Mg*K, Cg) @ (N, G, Cg, P) -> (N, G, Mg*K, P), i.e. (N, M, *k, *sizes)
    w2 = wa.reshape(group, cg, mg * k).transpose(0, 2, 1)
    contrib = np.matmul(w2, xa.reshape(n, group, cg, p)).reshape((n, m) + tuple(kernel) + tuple(sizes))
    # scatter-add the taps into a buffer holding the full (unpadded) output plus room for
    # negative pads, then cut the requested output window out of it
    full = [s * (sz - 1) + (kk - 1) * d + 1 for s, sz, kk, d in zip(plan.strides, sizes, kernel, plan.dilations)]
    lead = [max(0, -pb) for pb in plan.pads_begin]
    buf_len = [max(f, pb + o) + ld for f, pb, o, ld in zip(full, plan.pads_begin, plan.out, lead)]
    buf = np.zeros((n, m) + tuple(buf_len), acc)
    for tap in np.ndindex(*kernel):
        dst = tuple(slice(ld + t * d, ld + t * d + s * (sz - 1) + 1, s)
                    for ld, t, d, s, sz in zip(lead, tap, plan.dilations, plan.strides, sizes))
        buf[(slice(None), slice(None)) + dst] += contrib[(slice(None), slice(None)) + tap]
    keep = tuple(slice(ld + pb, ld + pb + o) for ld, pb, o in zip(lead, plan.pads_begin, plan.out))
    y = buf[(slice(None), slice(None)) + keep]
    if b is not None:
        y = y + b.astype(acc, copy=False).reshape((m,) + (1,) * nsp)
    return y.astype(x.dtype, copy=False)


register(OpDef(
    "conv_transpose", infer=_convt_infer, reference=_convt_ref, inputs=(2, 3), kind="contraction",
    attrs=_CONVT_ATTRS, differentiable=True,
    doc="transposed conv(x[N,C,*s], w[C,M/group,*k], bias[M]?) -> [N,M,*o]; ONNX ConvTranspose "
        "semantics (output_padding, output_shape)",
))


# ---- deform_conv -----------------------------------------------------------------------------
def _deform_infer(ctx):
    x = _check_dtype(ctx, 0, FLOAT_TYPES)
    w = _check_dtype(ctx, 1, FLOAT_TYPES, like=0)
    off = _check_dtype(ctx, 2, FLOAT_TYPES, like=0)
    _check_dtype(ctx, 3, FLOAT_TYPES, like=0)
    mask = _check_dtype(ctx, 4, FLOAT_TYPES, like=0)
    _check_rank(ctx, x, 0, "input")
    m = _check_conv_operands(ctx, x, w)
    _check_bias(ctx, 3, m)
    og = ctx.attrs["offset_group"]
    if og < 1:
        ctx.fail("offset_group must be >= 1", actual=og)
    if x.shape is None or w.shape is None:
        return [out(None, x.dtype)]
    c = x.shape[1]
    if is_static_dim(c) and c % og:
        ctx.fail(f"input channels {c} are not divisible by offset_group {og}", input=0)
    plan = _window_plan(x.shape[2:], w.shape[2:], ctx.attrs, ctx.fail, ctx.fresh)
    nsp = len(x.shape) - 2
    kernel = w.shape[2:]
    k = int(np.prod(kernel)) if all(is_static_dim(d) for d in kernel) else None
    for i, t, per in ((2, off, nsp), (4, mask, 1)):
        if t is None or t.shape is None:
            continue
        want = (x.shape[0], None if k is None else og * k * per) + plan.out
        if len(t.shape) != len(want) or not all(e is None or _static_eq(e, g) for e, g in zip(want, t.shape)):
            ctx.fail(f"{'offset' if i == 2 else 'mask'} must have shape (N, offset_group*prod(kernel)"
                     f"{'*ndim' if i == 2 else ''}, *output)", input=i,
                     expected=tuple('?' if e is None else e for e in want), actual=t)
    return [out((x.shape[0], m) + plan.out, x.dtype)]


def _deform_ref(ins, a):
    x, w, offset = ins[0], ins[1], ins[2]
    b = ins[3] if len(ins) > 3 else None
    mask = ins[4] if len(ins) > 4 else None
    plan = _window_plan(x.shape[2:], w.shape[2:], a, _raiser("deform_conv"))
    acc = _acc_dtype(x.dtype)
    x = x.astype(acc, copy=False)
    group, og = a["group"], a["offset_group"]
    n, c = x.shape[:2]
    sizes, kernel = x.shape[2:], w.shape[2:]
    nsp = len(sizes)
    k = int(np.prod(kernel))
    outs = plan.out
    p = int(np.prod(outs))
    off = offset.astype(acc, copy=False).reshape(n, og, k, nsp, p)
    # sampling position of tap t for output pixel o along axis j: o*s - pad + t*d + offset
    grid = np.stack(np.meshgrid(*[np.arange(o) for o in outs], indexing="ij"), 0).reshape(nsp, p)
    taps = np.stack(np.meshgrid(*[np.arange(kk) for kk in kernel], indexing="ij"), 0).reshape(nsp, k)
    base = (grid[:, None, :] * np.array(plan.strides)[:, None, None]
            - np.array(plan.pads_begin)[:, None, None]
            + taps[:, :, None] * np.array(plan.dilations)[:, None, None])       # (nsp, K, P)
    pos = base.transpose(1, 0, 2)[None, None] + off                           # (N, OG, K, nsp, P)
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.int64)
    xr = x.reshape(n, og, c // og, -1)
    cols = np.zeros((n, og, c // og, k * p), acc)
    for corner in np.ndindex(*(2,) * nsp):
        idx = lo + np.array(corner).reshape(nsp, 1)
        wgt = np.ones(idx.shape[:3] + (p,), acc)
        valid = np.ones(idx.shape[:3] + (p,), bool)
        flat = np.zeros(idx.shape[:3] + (p,), np.int64)
        for j in range(nsp):
            ij = idx[:, :, :, j]
            valid &= (ij >= 0) & (ij < sizes[j])
            wgt *= frac[:, :, :, j] if corner[j] else 1 - frac[:, :, :, j]
            flat = flat * sizes[j] + np.clip(ij, 0, sizes[j] - 1)
        wgt = np.where(valid, wgt, 0).reshape(n, og, 1, k * p)
        cols += np.take_along_axis(xr, flat.reshape(n, og, 1, k * p), axis=3) * wgt
    if mask is not None:
        cols *= mask.astype(acc, copy=False).reshape(n, og, 1, k * p)
    m = w.shape[0]
    cg, mg = c // group, m // group
    # (N, C, K, P) is already im2col layout: (G, Mg, Cg*K) @ (N, G, Cg*K, P) -> (N, G, Mg, P)
    w2 = w.astype(acc, copy=False).reshape(group, mg, cg * k)
    y = np.matmul(w2, cols.reshape(n, group, cg * k, p)).reshape((n, m) + tuple(outs))
    if b is not None:
        y = y + b.astype(acc, copy=False).reshape((m,) + (1,) * nsp)
    return y.astype(ins[0].dtype, copy=False)


_DEFORM_ATTRS = {k: v for k, v in _CONV_ATTRS.items() if k != "auto_pad"}
_DEFORM_ATTRS["offset_group"] = Attr("int", 1, "channels are split into this many offset groups")

register(OpDef(
    "deform_conv", infer=_deform_infer, reference=_deform_ref, inputs=(3, 5), kind="contraction",
    attrs=_DEFORM_ATTRS, differentiable=True,
    doc="deformable conv(x, w, offset, bias?, mask?): taps sampled (multi-linearly) at "
        "offset positions, ONNX DeformConv semantics",
))


# ---- causal_conv_with_state ------------------------------------------------------------------
def _causal_infer(ctx):
    x = _check_dtype(ctx, 0, FLOAT_TYPES)
    w = _check_dtype(ctx, 1, FLOAT_TYPES, like=0)
    b = _check_dtype(ctx, 2, FLOAT_TYPES, like=0)
    st = _check_dtype(ctx, 3, FLOAT_TYPES, like=0)
    if ctx.attrs["activation"] not in ("none", "silu", "swish"):
        ctx.fail(f"unknown activation {ctx.attrs['activation']!r}", expected="none | silu | swish",
                 actual=ctx.attrs["activation"])
    for i, t, r in ((0, x, 3), (1, w, 3), (2, b, 1), (3, st, 3)):
        if t is not None and t.shape is not None and len(t.shape) != r:
            ctx.fail(f"must have rank {r}", input=i, expected=f"rank {r}", actual=t)
    if x.shape is None or w.shape is None:
        return [out(None, x.dtype), out(None, x.dtype)]
    bsz, c, _ = x.shape
    if not _static_eq(w.shape[0], c) or not _static_eq(w.shape[1], 1):
        ctx.fail("weight must be (channels, 1, k)", input=1, expected=f"[{c},1,k]", actual=w)
    k = w.shape[2]
    if is_static_dim(k) and k < 1:
        ctx.fail("kernel size must be >= 1", input=1, actual=w)
    state = k - 1 if is_static_dim(k) else ctx.fresh("state")
    if b is not None and b.shape is not None and not _static_eq(b.shape[0], c):
        ctx.fail("bias must have one entry per channel", input=2, expected=f"[{c}]", actual=b)
    if st is not None and st.shape is not None:
        want = (bsz, c, state)
        if not all(_static_eq(e, g) for e, g in zip(want, st.shape)):
            ctx.fail("past_state must be (batch, channels, k - 1)", input=3, expected=want, actual=st)
    return [out(x.shape, x.dtype), out((bsz, c, state), x.dtype)]


def _causal_ref(ins, a):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    past = ins[3] if len(ins) > 3 else None
    acc = _acc_dtype(x.dtype)
    bsz, c, length = x.shape
    k = w.shape[2]
    if past is None:
        past = np.zeros((bsz, c, k - 1), acc)
    seq = np.concatenate([past.astype(acc, copy=False), x.astype(acc, copy=False)], axis=2)
    wa = w.astype(acc, copy=False)[:, 0, :]
    y = np.zeros((bsz, c, length), acc)
    for j in range(k):  # depthwise: one multiply-add per tap over the whole sequence
        y += seq[:, :, j:j + length] * wa[None, :, j:j + 1]
    if b is not None:
        y += b.astype(acc, copy=False)[None, :, None]
    if a["activation"] in ("silu", "swish"):
        y = y / (1 + np.exp(-y))
    state = seq[:, :, seq.shape[2] - (k - 1):]
    return y.astype(x.dtype, copy=False), np.ascontiguousarray(state).astype(x.dtype, copy=False)


register(OpDef(
    "causal_conv_with_state", infer=_causal_infer, reference=_causal_ref, inputs=(2, 4),
    kind="contraction", differentiable=True,
    attrs={"activation": Attr("str", "none", "none | silu | swish (fused after the bias)")},
    doc="causal depthwise 1-D conv(x[B,C,L], w[C,1,k], bias[C]?, past_state[B,C,k-1]?) -> "
        "(y[B,C,L], present_state[B,C,k-1]); ONNX CausalConvWithState",
))


# ---- pools -----------------------------------------------------------------------------------
_POOL_ATTRS = {
    "kernel_shape": Attr("ints", doc="window size per spatial axis"),
    "strides": Attr("ints", None, "per spatial axis; default 1"),
    "pads": Attr("ints", None, "begin pads then end pads; default 0"),
    "dilations": Attr("ints", None, "per spatial axis; default 1"),
    "ceil_mode": Attr("bool", False, "round the output size up (a window starting in the end "
                                     "padding is still dropped)"),
    "auto_pad": Attr("str", "NOTSET", "NOTSET | SAME_UPPER | SAME_LOWER | VALID"),
}


def _pool_infer_common(ctx, allowed):
    x = _check_dtype(ctx, 0, allowed)
    _check_rank(ctx, x, 0, "input")
    kernel = ctx.attrs["kernel_shape"]
    if any(k < 1 for k in kernel):
        ctx.fail("kernel_shape entries must be >= 1", actual=kernel)
    if x.shape is None:
        return x, None
    if len(kernel) != len(x.shape) - 2:
        ctx.fail(f"kernel_shape has {len(kernel)} entries but the input has {len(x.shape) - 2} "
                 "spatial dims", input=0, expected=len(x.shape) - 2, actual=len(kernel))
    plan = _window_plan(x.shape[2:], kernel, ctx.attrs, ctx.fail, ctx.fresh, ctx.attrs["ceil_mode"])
    return x, x.shape[:2] + plan.out


def _pool_plan(x, a, op):
    return _window_plan(x.shape[2:], a["kernel_shape"], a, _raiser(op), ceil_mode=a["ceil_mode"])


def _max_pool_infer(ctx):
    x, shape = _pool_infer_common(ctx, MAX_POOL_TYPES)
    if ctx.attrs["storage_order"] not in (0, 1):
        ctx.fail("storage_order must be 0 (row major) or 1 (column major)",
                 actual=ctx.attrs["storage_order"])
    res = [out(shape, x.dtype)]
    if ctx.attrs["indices"]:
        res.append(out(shape, dt.int64))
    return res


def _lowest(d: np.dtype):
    return np.iinfo(d).min if d.kind in "iu" else -np.inf  # bfloat16 has kind 'V'


def _max_pool_ref(ins, a):
    x = ins[0]
    plan = _pool_plan(x, a, "max_pool")
    kernel = tuple(a["kernel_shape"])
    want_idx = a["indices"]
    y = arg = None
    for i, (_, v) in enumerate(_taps(_padded(x, kernel, plan, _lowest(x.dtype)), kernel, plan)):
        if y is None:
            y = v.copy()
            arg = np.zeros(y.shape, np.int64) if want_idx else None
            continue
        if want_idx:
            np.putmask(arg, v > y, i)  # strict: ties keep the first tap, as a scan in order would
        np.maximum(y, v, out=y)
    if not want_idx:
        return y
    nsp = len(kernel)
    n, c = x.shape[:2]
    sizes = x.shape[2:]
    taps = np.unravel_index(arg, kernel)
    coords = []
    for j in range(nsp):
        o = np.arange(plan.out[j]).reshape((-1,) + (1,) * (nsp - 1 - j))
        coords.append(o * plan.strides[j] - plan.pads_begin[j] + taps[j] * plan.dilations[j])
    sp = np.zeros_like(arg)
    # storage_order 1 numbers the spatial axes column major (the first one fastest)
    for j in (reversed(range(nsp)) if a["storage_order"] == 1 else range(nsp)):
        sp = sp * sizes[j] + coords[j]
    plane = int(np.prod(sizes))
    nc = np.arange(n * c, dtype=np.int64).reshape((n, c) + (1,) * nsp)
    return y, nc * plane + sp


register(OpDef(
    "max_pool", infer=_max_pool_infer, reference=_max_pool_ref, kind="reduction", differentiable=True,
    attrs={**_POOL_ATTRS,
           "indices": Attr("bool", False, "also return the flat index of each maximum (int64)"),
           "storage_order": Attr("int", 0, "indices count spatial axes row (0) or column (1) major")},
    doc="max over windows; optional second output: argmax as a flat index into x (N*C*spatial)",
))


def _avg_pool_infer(ctx):
    x, shape = _pool_infer_common(ctx, FLOAT_TYPES)
    return [out(shape, x.dtype)]


def _window_sum(x: np.ndarray, kernel, plan: _Plan, fn=None) -> np.ndarray:
    """Sum over each window of zero-padded ``x`` (of ``fn(tap view)`` when given)."""
    total = None
    for _, v in _taps(_padded(x, kernel, plan, 0), kernel, plan):
        v = v if fn is None else fn(v)
        total = v.copy() if total is None else np.add(total, v, out=total)
    return total


def _window_counts(sizes, kernel, plan: _Plan, include_pad: bool, dtype) -> np.ndarray:
    """How many elements each window holds: input elements only, or also the explicit pads (never
    the extra room ceil_mode adds past the end pads)."""
    counted = np.ones((1, 1) + tuple(sizes), dtype)
    if include_pad:
        counted = np.pad(counted, [(0, 0), (0, 0)] + list(zip(plan.pads_begin, plan.pads_end)),
                         constant_values=1)
        plan = plan._replace(pads_begin=(0,) * len(sizes))
    return _window_sum(counted, kernel, plan)[0, 0]


def _avg_pool_ref(ins, a):
    x = ins[0]
    plan = _pool_plan(x, a, "avg_pool")
    kernel = tuple(a["kernel_shape"])
    acc = _acc_dtype(x.dtype)
    total = _window_sum(x.astype(acc, copy=False), kernel, plan)
    cnt = _window_counts(x.shape[2:], kernel, plan, a["count_include_pad"], acc)
    return (total / cnt).astype(x.dtype, copy=False)


register(OpDef(
    "avg_pool", infer=_avg_pool_infer, reference=_avg_pool_ref, kind="reduction", differentiable=True,
    attrs={**_POOL_ATTRS,
           "count_include_pad": Attr("bool", False, "divide by the window size including pads")},
    doc="mean over windows (pads excluded from the divisor unless count_include_pad)",
))


def _lp_pool_infer(ctx):
    x, shape = _pool_infer_common(ctx, FLOAT_TYPES)
    return [out(shape, x.dtype)]


def _abs_pow(p: float):
    if p == 1:
        return np.abs
    if p == 2:
        return np.square
    return lambda v: np.abs(v) ** p


def _root(total: np.ndarray, p: float) -> np.ndarray:
    return total if p == 1 else np.sqrt(total) if p == 2 else total ** (1.0 / p)


def _lp_pool_ref(ins, a):
    x = ins[0]
    plan = _pool_plan(x, a, "lp_pool")
    kernel = tuple(a["kernel_shape"])
    p = a["p"]
    total = _window_sum(x.astype(_acc_dtype(x.dtype), copy=False), kernel, plan, _abs_pow(p))
    return _root(total, p).astype(x.dtype, copy=False)


register(OpDef(
    "lp_pool", infer=_lp_pool_infer, reference=_lp_pool_ref, kind="reduction", differentiable=True,
    attrs={**_POOL_ATTRS, "p": Attr("float", 2.0, "the norm's order")},
    doc="p-norm over windows: (sum |x|^p)^(1/p)",
))


# ---- global_pool ---------------------------------------------------------------------------
_GLOBAL_MODES = ("avg", "max", "lp")


def _global_infer(ctx):
    mode = ctx.attrs["mode"]
    if mode not in _GLOBAL_MODES:
        ctx.fail(f"unknown mode {mode!r}", expected=" | ".join(_GLOBAL_MODES), actual=mode)
    x = _check_dtype(ctx, 0, MAX_POOL_TYPES if mode == "max" else FLOAT_TYPES)
    _check_rank(ctx, x, 0, "input")
    if x.shape is None:
        return [out(None, x.dtype)]
    return [out(x.shape[:2] + (1,) * (len(x.shape) - 2), x.dtype)]


def _global_ref(ins, a):
    x = ins[0]
    axes = tuple(range(2, x.ndim))
    mode = a["mode"]
    if mode == "max":
        return x.max(axis=axes, keepdims=True)
    acc = _acc_dtype(x.dtype)
    xa = x.astype(acc, copy=False)
    if mode == "avg":
        y = xa.mean(axis=axes, keepdims=True, dtype=acc)
    else:
        y = _root(_abs_pow(a["p"])(xa).sum(axis=axes, keepdims=True), a["p"])
    return y.astype(x.dtype, copy=False)


register(OpDef(
    "global_pool", infer=_global_infer, reference=_global_ref, kind="reduction", differentiable=True,
    attrs={"mode": Attr("str", doc="avg | max | lp"), "p": Attr("float", 2.0, "order of lp")},
    doc="reduce all spatial axes of x[N,C,*s] to size 1 (avg, max or p-norm)",
))


# ---- max_unpool ----------------------------------------------------------------------------
def _unpool_default(sizes, a, fail):
    n = len(sizes)
    kernel = a["kernel_shape"]
    if len(kernel) != n:
        fail(f"kernel_shape has {len(kernel)} entries but the input has {n} spatial dims",
             expected=n, actual=len(kernel))
    strides = _per_axis(a, "strides", n, 1, fail)
    pb, pe = _pads(a, n, fail)
    return tuple((sz - 1) * s + k - b - e if is_static_dim(sz) else None
                 for sz, s, k, b, e in zip(sizes, strides, kernel, pb, pe))


def _max_unpool_infer(ctx):
    x = _check_dtype(ctx, 0, FLOAT_TYPES)
    ix = ctx.type(1)
    if ix.dtype is not dt.int64:
        ctx.fail("indices must be int64", input=1, expected="int64", actual=ix.dtype.name)
    _check_rank(ctx, x, 0, "input")
    if x.shape is not None and ix.shape is not None and (
            len(x.shape) != len(ix.shape) or not all(_static_eq(a, b) for a, b in zip(x.shape, ix.shape))):
        ctx.fail("indices must have the input's shape", input=1, expected=x.shape, actual=ix)
    if ctx.has(2):
        st = ctx.type(2)
        if st.dtype is not dt.int64 or st.rank != 1:
            ctx.fail("output_shape must be a 1-D int64 tensor", input=2, expected="int64[rank]", actual=st)
        shape = ctx.const(2)
        if shape is not None:
            shape = tuple(int(d) for d in shape)
            if x.shape is not None and len(shape) != len(x.shape):
                ctx.fail("output_shape must have one entry per input dim", input=2,
                         expected=len(x.shape), actual=len(shape))
            if x.shape is not None and not all(_static_eq(a, b) for a, b in zip(shape[:2], x.shape[:2])):
                ctx.fail("output_shape must keep the batch and channel dims", input=2,
                         expected=x.shape[:2], actual=shape)
            if any(d < 0 for d in shape):
                ctx.fail("output_shape must not be negative", input=2, actual=shape)
            return [out(shape, x.dtype)]
        if x.shape is not None:
            return [out(x.shape[:2] + tuple(ctx.fresh("unpool") for _ in x.shape[2:]), x.dtype)]
        n = st.shape[0]
        return [out(tuple(ctx.fresh("unpool") for _ in range(n)) if is_static_dim(n) else None, x.dtype)]
    if x.shape is None:
        return [out(None, x.dtype)]
    sp = _unpool_default(x.shape[2:], ctx.attrs, ctx.fail)
    for i, d in enumerate(sp):
        if d is not None and d < 1:
            ctx.fail(f"output size {d} along spatial axis {i} is not positive", actual=d)
    return [out(x.shape[:2] + tuple(ctx.fresh("unpool") if d is None else d for d in sp), x.dtype)]


def _max_unpool_ref(ins, a):
    x, ix = ins[0], ins[1]
    # indices are flat positions in the default unpooled shape (the pooled input's shape);
    # an explicit output_shape only grows (or shrinks) that canvas at the end of each axis
    default = x.shape[:2] + _unpool_default(x.shape[2:], a, _raiser("max_unpool"))
    shape = tuple(int(d) for d in ins[2]) if len(ins) > 2 and ins[2] is not None else default
    total = int(np.prod(default))
    flat = ix.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= total):
        raise ShapeError(f"an index is outside the unpooled tensor of {total} elements", op="max_unpool",
                         expected=f"[0, {total})", actual=(int(flat.min()), int(flat.max())))
    if shape != default:
        coords = np.unravel_index(flat, default)
        if any((cd >= d).any() for cd, d in zip(coords, shape)):
            raise ShapeError(f"an index falls outside output_shape {shape}", op="max_unpool")
        flat = np.ravel_multi_index(coords, shape)
    y = np.zeros(int(np.prod(shape)), x.dtype)
    y[flat] = x.reshape(-1)
    return y.reshape(shape)


register(OpDef(
    "max_unpool", infer=_max_unpool_infer, reference=_max_unpool_ref, inputs=(2, 3), kind="index",
    differentiable=True,
    attrs={"kernel_shape": Attr("ints", doc="the max_pool's window size"),
           "strides": Attr("ints", None, "the max_pool's strides"),
           "pads": Attr("ints", None, "the max_pool's pads")},
    doc="max_unpool(x, indices, output_shape?): zeros with x scattered at max_pool's flat indices",
))


# ---- max_roi_pool --------------------------------------------------------------------------
def _roi_infer(ctx):
    x = _check_dtype(ctx, 0, FLOAT_TYPES)
    r = _check_dtype(ctx, 1, FLOAT_TYPES, like=0)
    ps = ctx.attrs["pooled_shape"]
    if len(ps) != 2 or any(d < 1 for d in ps):
        ctx.fail("pooled_shape must be two positive sizes (height, width)", actual=ps)
    if x.shape is not None and len(x.shape) != 4:
        ctx.fail("input must be 4-D (N, C, H, W)", input=0, expected="rank 4", actual=x)
    if r.shape is not None and (len(r.shape) != 2 or not _static_eq(r.shape[1], 5)):
        ctx.fail("rois must be (num_rois, 5): batch index, x1, y1, x2, y2", input=1,
                 expected="[num_rois,5]", actual=r)
    nr = r.shape[0] if r.shape is not None else ctx.fresh("rois")
    c = x.shape[1] if x.shape is not None else ctx.fresh("channels")
    return [out((nr, c) + tuple(ps), x.dtype)]


def _roi_ref(ins, a):
    x, rois = ins
    ph, pw = a["pooled_shape"]
    scale = a["spatial_scale"]
    n, c, h, w = x.shape
    y = np.zeros((rois.shape[0], c, ph, pw), x.dtype)
    for r, roi in enumerate(rois.astype(np.float64)):
        bi = int(roi[0])
        if not 0 <= bi < n:
            raise ShapeError(f"roi {r} names batch {bi} of {n}", op="max_roi_pool")
        x1, y1, x2, y2 = (int(np.round(v * scale)) for v in roi[1:])
        bin_h = max(y2 - y1 + 1, 1) / ph
        bin_w = max(x2 - x1 + 1, 1) / pw
        hs = [min(max(int(np.floor(i * bin_h)) + y1, 0), h) for i in range(ph)]
        he = [min(max(int(np.ceil((i + 1) * bin_h)) + y1, 0), h) for i in range(ph)]
        ws = [min(max(int(np.floor(j * bin_w)) + x1, 0), w) for j in range(pw)]
        we = [min(max(int(np.ceil((j + 1) * bin_w)) + x1, 0), w) for j in range(pw)]
        img = x[bi]
        for i in range(ph):
            if he[i] <= hs[i]:
                continue
            rows = img[:, hs[i]:he[i], :].max(axis=1)        # (C, W): reduce the bin's rows once
            for j in range(pw):
                if we[j] > ws[j]:
                    y[r, :, i, j] = rows[:, ws[j]:we[j]].max(axis=1)
    return y


register(OpDef(
    "max_roi_pool", infer=_roi_infer, reference=_roi_ref, inputs=(2, 2), kind="reduction",
    differentiable=True,
    attrs={"pooled_shape": Attr("ints", doc="(height, width) of each pooled region"),
           "spatial_scale": Attr("float", 1.0, "scales roi coordinates into the input")},
    doc="max pool of each region of interest into pooled_shape bins (ONNX MaxRoiPool)",
))
