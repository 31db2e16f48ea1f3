"""Convolutions: conv, conv_transpose, deform_conv, causal_conv_with_state (pools are in
``pooling.py``, the window geometry both share in ``windows.py``).

A conv weight is (M, C/group, *k). References are vectorized numpy, looping only over kernel
taps: convolutions build an im2col matrix (one strided slice copy per tap) and multiply it with
the weight in one matmul covering all groups. The gradient rules are in ``conv_grad.py``.
"""
from __future__ import annotations

import numpy as np

from ..types import is_static_dim
from .conv_grad import causal_conv_grad, conv_grad, conv_transpose_grad, deform_conv_grad
from .declare import FLOAT_TYPES, INT_TYPES
from .registry import Attr, OpDef, register
from .shapes import out
from .windows import (WindowPlan, acc_dtype, check_auto_pad, check_input, check_rank, padded,
                      per_axis, raiser, split_pads, static_eq, window_plan, window_taps)

CONV_TYPES = FLOAT_TYPES + INT_TYPES


def _operands(ctx, n: int, allowed=FLOAT_TYPES) -> list:
    """The types of inputs 0..n-1, checked to share one allowed dtype (None where absent)."""
    return [check_input(ctx, i, allowed, like=None if i == 0 else 0) for i in range(n)]


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
    check_rank(ctx, w, weight_in, "weight")
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
        if not static_eq(c, w.shape[0]):
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
    if len(b.shape) != 1 or not static_eq(b.shape[0], m):
        ctx.fail("bias must be 1-D with one entry per output channel", input=i,
                 expected=f"[{m}]", actual=b)


def _conv_infer(ctx):
    x, w, _ = _operands(ctx, 3, CONV_TYPES)
    check_rank(ctx, x, 0, "input")
    m = _check_conv_operands(ctx, x, w)
    _check_bias(ctx, 2, m)
    if x.shape is None or w.shape is None:
        return [out(None, x.dtype)]
    plan = window_plan(x.shape[2:], w.shape[2:], ctx.attrs, ctx.fail, ctx.fresh)
    return [out((x.shape[0], m) + plan.out, x.dtype)]


# im2col matrices larger than this are built and multiplied one batch element at a time
_COLS_BYTES = 1 << 28


def im2col(xp: np.ndarray, kernel, plan: WindowPlan) -> np.ndarray:
    """(N, C, *k, *out) receptive fields of padded ``xp``: row (c, tap) of output pixel o."""
    cols = np.empty(xp.shape[:2] + tuple(kernel) + tuple(plan.out), xp.dtype)
    for tap, view in window_taps(xp, kernel, plan):
        cols[(slice(None), slice(None)) + tap] = view
    return cols


def conv_nd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, plan: WindowPlan, group: int) -> np.ndarray:
    """Grouped N-D convolution in the accumulation dtype: im2col + matmul, all groups at once."""
    acc = acc_dtype(x.dtype)
    x = x.astype(acc, copy=False)
    w = w.astype(acc, copy=False)
    n, c = x.shape[:2]
    m = w.shape[0]
    kernel = w.shape[2:]
    nsp = len(kernel)
    cg, mg = c // group, m // group
    p = int(np.prod(plan.out, dtype=np.int64))
    k = int(np.prod(kernel, dtype=np.int64))
    xp = padded(x, kernel, plan, 0)
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
    fail = raiser("conv")
    plan = window_plan(x.shape[2:], w.shape[2:], a, fail)
    return conv_nd(x, w, b, plan, a["group"]).astype(x.dtype, copy=False)


register(OpDef(
    "conv", infer=_conv_infer, reference=_conv_ref, inputs=(2, 3), kind="contraction",
    attrs=dict(_CONV_ATTRS), differentiable=True, grad=conv_grad,
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
    strides = per_axis(attrs, "strides", n, 1, fail)
    dil = per_axis(attrs, "dilations", n, 1, fail)
    opad = per_axis(attrs, "output_padding", n, 0, fail, minimum=0)
    pb, pe = split_pads(attrs, n, fail, allow_negative=True)
    ap = check_auto_pad(attrs, fail)
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
    return WindowPlan(strides, dil, tuple(r[0] for r in res), tuple(r[1] for r in res),
                 tuple(r[2] for r in res))


def _convt_infer(ctx):
    x, w, _ = _operands(ctx, 3)
    check_rank(ctx, x, 0, "input")
    m = _check_conv_operands(ctx, x, w, transpose=True)
    _check_bias(ctx, 2, m)
    if x.shape is None or w.shape is None:
        return [out(None, x.dtype)]
    plan = _convt_plan(x.shape[2:], w.shape[2:], ctx.attrs, ctx.fail, ctx.fresh)
    return [out((x.shape[0], m) + plan.out, x.dtype)]


def _convt_ref(ins, a):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    plan = _convt_plan(x.shape[2:], w.shape[2:], a, raiser("conv_transpose"))
    acc = acc_dtype(x.dtype)
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
    attrs=_CONVT_ATTRS, differentiable=True, grad=conv_transpose_grad,
    doc="transposed conv(x[N,C,*s], w[C,M/group,*k], bias[M]?) -> [N,M,*o]; ONNX ConvTranspose "
        "semantics (output_padding, output_shape)",
))


# ---- deform_conv -----------------------------------------------------------------------------
def _deform_infer(ctx):
    x, w, off, _, mask = _operands(ctx, 5)
    check_rank(ctx, x, 0, "input")
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
    plan = window_plan(x.shape[2:], w.shape[2:], ctx.attrs, ctx.fail, ctx.fresh)
    nsp = len(x.shape) - 2
    kernel = w.shape[2:]
    k = int(np.prod(kernel)) if all(is_static_dim(d) for d in kernel) else None
    for i, t, per in ((2, off, nsp), (4, mask, 1)):
        if t is None or t.shape is None:
            continue
        want = (x.shape[0], None if k is None else og * k * per) + plan.out
        if len(t.shape) != len(want) or not all(e is None or static_eq(e, g) for e, g in zip(want, t.shape)):
            ctx.fail(f"{'offset' if i == 2 else 'mask'} must have shape (N, offset_group*prod(kernel)"
                     f"{'*ndim' if i == 2 else ''}, *output)", input=i,
                     expected=tuple('?' if e is None else e for e in want), actual=t)
    return [out((x.shape[0], m) + plan.out, x.dtype)]


def deform_base(plan: WindowPlan, kernel) -> np.ndarray:
    """(K, ndim, P): the position along axis j that tap t of output pixel o samples before its
    offset is added, o*s - pad + t*d (taps and output pixels in row-major order)."""
    nsp, k, p = len(kernel), int(np.prod(kernel)), int(np.prod(plan.out))
    grid = np.stack(np.meshgrid(*[np.arange(o) for o in plan.out], indexing="ij"), 0).reshape(nsp, p)
    taps = np.stack(np.meshgrid(*[np.arange(kk) for kk in kernel], indexing="ij"), 0).reshape(nsp, k)
    base = (grid[:, None, :] * np.array(plan.strides)[:, None, None]
            - np.array(plan.pads_begin)[:, None, None]
            + taps[:, :, None] * np.array(plan.dilations)[:, None, None])       # (nsp, K, P)
    return base.transpose(1, 0, 2)


def _deform_ref(ins, a):
    x, w, offset = ins[0], ins[1], ins[2]
    b = ins[3] if len(ins) > 3 else None
    mask = ins[4] if len(ins) > 4 else None
    plan = window_plan(x.shape[2:], w.shape[2:], a, raiser("deform_conv"))
    acc = acc_dtype(x.dtype)
    x = x.astype(acc, copy=False)
    group, og = a["group"], a["offset_group"]
    n, c = x.shape[:2]
    sizes, kernel = x.shape[2:], w.shape[2:]
    nsp = len(sizes)
    k = int(np.prod(kernel))
    outs = plan.out
    p = int(np.prod(outs))
    off = offset.astype(acc, copy=False).reshape(n, og, k, nsp, p)
    pos = deform_base(plan, kernel)[None, None] + off                         # (N, OG, K, nsp, P)
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
    attrs=_DEFORM_ATTRS, differentiable=True, grad=deform_conv_grad,
    doc="deformable conv(x, w, offset, bias?, mask?): taps sampled (multi-linearly) at "
        "offset positions, ONNX DeformConv semantics",
))


# ---- causal_conv_with_state ------------------------------------------------------------------
def _causal_infer(ctx):
    x, w, b, st = _operands(ctx, 4)
    if ctx.attrs["activation"] not in ("none", "silu", "swish"):
        ctx.fail(f"unknown activation {ctx.attrs['activation']!r}", expected="none | silu | swish",
                 actual=ctx.attrs["activation"])
    for i, t, r in ((0, x, 3), (1, w, 3), (2, b, 1), (3, st, 3)):
        if t is not None and t.shape is not None and len(t.shape) != r:
            ctx.fail(f"must have rank {r}", input=i, expected=f"rank {r}", actual=t)
    if x.shape is None or w.shape is None:
        return [out(None, x.dtype), out(None, x.dtype)]
    bsz, c, _ = x.shape
    if not static_eq(w.shape[0], c) or not static_eq(w.shape[1], 1):
        ctx.fail("weight must be (channels, 1, k)", input=1, expected=f"[{c},1,k]", actual=w)
    k = w.shape[2]
    if is_static_dim(k) and k < 1:
        ctx.fail("kernel size must be >= 1", input=1, actual=w)
    state = k - 1 if is_static_dim(k) else ctx.fresh("state")
    if b is not None and b.shape is not None and not static_eq(b.shape[0], c):
        ctx.fail("bias must have one entry per channel", input=2, expected=f"[{c}]", actual=b)
    if st is not None and st.shape is not None:
        want = (bsz, c, state)
        if not all(static_eq(e, g) for e, g in zip(want, st.shape)):
            ctx.fail("past_state must be (batch, channels, k - 1)", input=3, expected=want, actual=st)
    return [out(x.shape, x.dtype), out((bsz, c, state), x.dtype)]


def _causal_ref(ins, a):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    past = ins[3] if len(ins) > 3 else None
    acc = acc_dtype(x.dtype)
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
    kind="contraction", differentiable=True, grad=causal_conv_grad,
    attrs={"activation": Attr("str", "none", "none | silu | swish (fused after the bias)")},
    doc="causal depthwise 1-D conv(x[B,C,L], w[C,1,k], bias[C]?, past_state[B,C,k-1]?) -> "
        "(y[B,C,L], present_state[B,C,k-1]); ONNX CausalConvWithState",
))
