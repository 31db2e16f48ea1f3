"""Convolutions: conv, conv_transpose, deform_conv, causal_conv_with_state (pools are in
``pooling.py``, the window geometry both share in ``windows.py``).

A conv weight is (M, C/group, *k). References are vectorized numpy, looping only over kernel
taps: convolutions build an im2col matrix (one strided slice copy per tap) and multiply it with
the weight in one matmul covering all groups.
"""
from __future__ import annotations

import numpy as np

from ..types import is_static_dim
from .declare import FLOAT_TYPES, INT_TYPES
from .registry import Attr, OpDef, register
from .shapes import out
from .windows import (WindowPlan, acc_dtype, check_auto_pad, check_input, check_rank, padded,
                      per_axis, raiser, split_pads, static_eq, window_plan, window_taps)

CONV_TYPES = FLOAT_TYPES + INT_TYPES


def _operands(ctx, n: int, allowed=FLOAT_TYPES) -> list:
    """The types of inputs 0..n-1, checked to share one allowed dtype (None where absent)."""
    return [check_input(ctx, i, allowed, like=None if i == 0 else 0) for i in range(n)]


# ---- gradient helpers ----------------------------------------------------------------------------
# The backward of every convolution here is built from convolutions (registry ops, so each
# backend runs its own conv kernels): the input gradient is a conv of dy with the flipped weight
# (stride 1) or a transposed conv of dy (a conv of dy for conv_transpose), and the weight
# gradient a conv whose batch and channel axes are swapped (the input's channels become the
# batch, the batch becomes the reduced channel axis, dy is the kernel), so no per-element
# gathers and no im2col op are needed. The pools' gradients (pooling.py) reuse them.
def grad_raiser(ctx):
    """A ``fail(msg, **kw)`` for the geometry helpers that raises at the gradient's node."""
    def fail(message, **kw):
        raise ctx.fail(message, **{k: v for k, v in kw.items() if k != "input"})
    return fail


def typed_dy(ctx, i: int = 0):
    """``ctx.dy(i)`` with output i's static dims: a gradient seeded through a ``shape`` node (a
    symbolic batch) arrives with fresh symbols for every dim, which the geometry here cannot use;
    a reshape with 0 ("keep") for the symbolic dims restores the static ones."""
    dy, o = ctx.dy(i), ctx.outputs[i]
    if dy.shape is None or o.shape is None or len(dy.shape) != len(o.shape) or all(
            a == b for a, b in zip(dy.shape, o.shape) if is_static_dim(b)):
        return dy
    return ctx.op("reshape", [dy, ctx.i64([d if is_static_dim(d) else 0 for d in o.shape])])


def spatial_sizes(ctx, v, what: str = "input") -> tuple:
    """``v``'s spatial dims (2:), which a window op's gradient needs at compile time."""
    if v.shape is None or not all(is_static_dim(d) for d in v.shape[2:]):
        raise ctx.fail(f"the gradient of {ctx.node.op} needs static spatial dims of its {what}",
                       expected="static spatial dims", actual=str(v.type))
    return tuple(v.shape[2:])


def crop_spatial(ctx, v, begins, ends, sizes):
    """``v`` with ``begins[i]`` leading and ``ends[i]`` trailing elements of spatial axis i cut."""
    axes = [i + 2 for i, (b, e) in enumerate(zip(begins, ends)) if b or e]
    if not axes:
        return v
    return ctx.op("slice", [v, ctx.i64([begins[a - 2] for a in axes]),
                            ctx.i64([sizes[a - 2] - ends[a - 2] for a in axes]), ctx.i64(axes)])


def conv_exact(ctx, x, w, sizes, kernel, strides, dil, pads_begin, out_sizes, group: int):
    """conv(x, w) whose output has exactly ``out_sizes`` spatial dims, reading x from offset
    ``-pads_begin`` (a negative begin pad crops); the end pad is whatever the last window needs
    (negative: x's unread tail is cropped). Conv pads must be >= 0, hence the crops."""
    crop_b, crop_e, pb, pe = [], [], [], []
    for sz, k, s, d, b, o in zip(sizes, kernel, strides, dil, pads_begin, out_sizes):
        end = (o - 1) * s + (k - 1) * d + 1 - sz - b
        crop_b.append(max(-b, 0))
        crop_e.append(max(-end, 0))
        pb.append(max(b, 0))
        pe.append(max(end, 0))
    x = crop_spatial(ctx, x, crop_b, crop_e, sizes)
    return ctx.op("conv", [x, w], {"strides": list(strides), "dilations": list(dil),
                                   "pads": pb + pe, "group": group})


def conv_input_grad(ctx, dy, w, sizes, kernel, strides, dil, pads_begin, group: int):
    """d(conv(x, w))/dx applied to dy, cut to x's ``sizes``.

    Stride 1: a conv of dy with the weight flipped and its channel axes swapped (the CPU
    backend runs conv through its GEMM: ~3.5x faster than its direct conv_transpose loop on
    the digits CNN's layers). Other strides: the transposed conv of dy."""
    if all(s == 1 for s in strides):
        nsp = len(kernel)
        sp = list(range(2, 2 + nsp))
        if group == 1:
            wt = ctx.op("transpose", [w], {"perm": [1, 0] + sp})
        else:
            m, cg = w.shape[0], w.shape[1]
            wg = ctx.op("reshape", [w, ctx.i64([group, m // group, cg] + list(kernel))])
            wg = ctx.op("transpose", [wg], {"perm": [0, 2, 1] + [a + 1 for a in sp]})
            wt = ctx.op("reshape", [wg, ctx.i64([cg * group, m // group] + list(kernel))])
        wf = ctx.op("slice", [wt, ctx.i64([-1] * nsp), ctx.i64([-k - 1 for k in kernel]), ctx.i64(sp),
                              ctx.i64([-1] * nsp)])
        begin = [(k - 1) * d - b for k, d, b in zip(kernel, dil, pads_begin)]
        return conv_exact(ctx, dy, wf, dy.shape[2:], kernel, strides, dil, begin, sizes, group)
    out = dy.shape[2:]
    pe, opad = [], []
    for sz, o, k, s, d, b in zip(sizes, out, kernel, strides, dil, pads_begin):
        end = s * (o - 1) + (k - 1) * d + 1 - b - sz
        # windows that stopped short of x's end (the stride did not divide the span) leave
        # x's tail without gradient: output_padding grows the result to x's size with zeros
        pe.append(max(end, 0))
        opad.append(max(-end, 0))
    attrs = {"strides": list(strides), "dilations": list(dil), "pads": list(pads_begin) + pe,
             "group": group}
    if any(opad):
        attrs["output_padding"] = opad
    return ctx.op("conv_transpose", [dy, w], attrs)


def conv_weight_grad(ctx, x, g, sizes, kernel, strides, dil, pads_begin, group: int):
    """sum_n g[n, m, o] * x[n, gi*Cg + c, o*s + k*d - pb] as a (M, C/group, *kernel) tensor.

    One conv: x's channels become the batch (Cg, group*N, *sizes), g is the kernel
    (M, N, *out), strides and dilations trade places, and the (Cg, M, *kernel) result is
    transposed to the weight's layout."""
    nsp = len(sizes)
    out = g.shape[2:]
    sp = list(range(2, 2 + nsp))
    if group == 1:
        xt = ctx.op("transpose", [x], {"perm": [1, 0] + sp})
    else:
        c = x.shape[1]
        xg = ctx.op("reshape", [x, ctx.i64([0, group, c // group] + list(sizes))])
        xg = ctx.op("transpose", [xg], {"perm": [2, 1, 0] + [a + 1 for a in sp]})
        xt = ctx.op("reshape", [xg, ctx.i64([c // group, -1] + list(sizes))])
    gt = ctx.op("transpose", [g], {"perm": [1, 0] + sp})
    dw = conv_exact(ctx, xt, gt, sizes, out, dil, strides, pads_begin, kernel, group)
    return ctx.op("transpose", [dw], {"perm": [1, 0] + sp})


def bias_grad(ctx, dy, b):
    """The gradient of a per-channel (axis 1) bias: dy summed over every other axis."""
    axes = [0] + list(range(2, len(dy.shape)))
    return ctx.cast_like(ctx.op("reduce_sum", [dy, ctx.i64(axes)], {"keepdims": 0}), b)


def _conv_grad(ctx):
    x, w = ctx.inputs[0], ctx.inputs[1]
    b = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    dy = typed_dy(ctx)
    sizes, kernel = spatial_sizes(ctx, x), spatial_sizes(ctx, w, "weight")
    plan = window_plan(sizes, kernel, ctx.attrs, grad_raiser(ctx))
    group = ctx.attrs["group"]
    geo = (sizes, kernel, plan.strides, plan.dilations, plan.pads_begin)
    dx = conv_input_grad(ctx, dy, w, *geo, group)
    dw = conv_weight_grad(ctx, x, dy, *geo, group)
    return [dx, dw, None if b is None else bias_grad(ctx, dy, b)][:len(ctx.inputs)]


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
    attrs=dict(_CONV_ATTRS), differentiable=True, grad=_conv_grad,
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


def _convt_grad(ctx):
    """conv_transpose is conv's input gradient, so its own gradients are convs: dx is the
    conv of dy (same geometry; the weight (C, M/group, *k) is already a conv weight from M to
    C channels) and dw the weight gradient of that conv, with x in dy's place."""
    x, w = ctx.inputs[0], ctx.inputs[1]
    b = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    dy = typed_dy(ctx)
    sizes, kernel = spatial_sizes(ctx, x), spatial_sizes(ctx, w, "weight")
    plan = _convt_plan(sizes, kernel, ctx.attrs, grad_raiser(ctx))
    group = ctx.attrs["group"]
    out = tuple(plan.out)
    dx = conv_exact(ctx, dy, w, out, kernel, plan.strides, plan.dilations, plan.pads_begin, sizes, group)
    dw = conv_weight_grad(ctx, dy, x, out, kernel, plan.strides, plan.dilations, plan.pads_begin, group)
    return [dx, dw, None if b is None else bias_grad(ctx, dy, b)][:len(ctx.inputs)]


register(OpDef(
    "conv_transpose", infer=_convt_infer, reference=_convt_ref, inputs=(2, 3), kind="contraction",
    attrs=_CONVT_ATTRS, differentiable=True, grad=_convt_grad,
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


def _deform_grad(ctx):
    """Gradients of deform_conv, built the way the reference computes it: the sampled columns
    (N, og, C/og, K*P) are rebuilt from 2^ndim gathers (one per corner of the sampling cell),
    the weight and column gradients are batched matmuls, the input gradient is one
    scatter-add of every corner's share, and the offset gradient is the derivative of the
    multi-linear weights (floor is piecewise constant: offsets on integer positions take the
    derivative of the cell they round down into)."""
    x, w, off, b, mask = (list(ctx.inputs) + [None] * 5)[:5]
    dy = typed_dy(ctx)
    sizes, kernel = spatial_sizes(ctx, x), spatial_sizes(ctx, w, "weight")
    if not (is_static_dim(x.shape[1]) and is_static_dim(w.shape[0])):
        raise ctx.fail("the gradient of deform_conv needs static channel counts", actual=str(x.type))
    plan = window_plan(sizes, kernel, ctx.attrs, grad_raiser(ctx))
    group, og = ctx.attrs["group"], ctx.attrs["offset_group"]
    c, m = x.shape[1], w.shape[0]
    nsp = len(sizes)
    k, p, sflat = int(np.prod(kernel)), int(np.prod(plan.out)), int(np.prod(sizes))
    cpg, cg, mg = c // og, c // group, m // group
    # sampling position of tap t for output pixel o along axis j: o*s - pad + t*d + offset
    grid = np.stack(np.meshgrid(*[np.arange(o) for o in plan.out], indexing="ij"), 0).reshape(nsp, p)
    taps = np.stack(np.meshgrid(*[np.arange(kk) for kk in kernel], indexing="ij"), 0).reshape(nsp, k)
    base = (grid[:, None, :] * np.array(plan.strides)[:, None, None]
            - np.array(plan.pads_begin)[:, None, None]
            + taps[:, :, None] * np.array(plan.dilations)[:, None, None]).transpose(1, 0, 2)
    pos = ctx.op("add", [ctx.op("reshape", [off, ctx.i64([0, og, k, nsp, p])]), ctx.const(base, like=x)])
    lo = ctx.op("floor", [pos])
    frac = ctx.op("sub", [pos, lo])
    loi = ctx.op("cast", [lo], {"to": "int64"})
    fr = [ctx.op("gather", [frac, ctx.i64(j)], {"axis": 3}) for j in range(nsp)]   # (N, og, K, P)
    li = [ctx.op("gather", [loi, ctx.i64(j)], {"axis": 3}) for j in range(nsp)]
    one = ctx.const(1, like=x)
    xr = ctx.op("reshape", [x, ctx.i64([0, og, cpg, sflat])])
    flat_shape = ctx.i64([0, og, 1, k * p])
    corners = []
    cols = None
    for corner in np.ndindex(*(2,) * nsp):
        valid, flat, factors = None, None, []
        for j in range(nsp):
            idx = ctx.op("add", [li[j], ctx.i64(1)]) if corner[j] else li[j]
            ok = ctx.op("logical_and", [ctx.op("greater_equal", [idx, ctx.i64(0)]),
                                        ctx.op("less", [idx, ctx.i64(sizes[j])])])
            valid = ok if valid is None else ctx.op("logical_and", [valid, ok])
            idx = ctx.op("clip", [idx, ctx.i64(0), ctx.i64(sizes[j] - 1)])
            stride = int(np.prod(sizes[j + 1:]))
            term = ctx.op("mul", [idx, ctx.i64(stride)]) if stride != 1 else idx
            flat = term if flat is None else ctx.op("add", [flat, term])
            factors.append(fr[j] if corner[j] else ctx.op("sub", [one, fr[j]]))
        vf = ctx.op("cast", [valid], {"to": x.dtype})
        wgt = vf
        for f in factors:
            wgt = ctx.op("mul", [wgt, f])
        flat = ctx.op("expand", [ctx.op("reshape", [flat, flat_shape]),
                                 ctx.op("concat", [_dim0(ctx, x),
                                                   ctx.i64([og, cpg, k * p])], {"axis": 0})])
        wgt_r = ctx.op("reshape", [wgt, flat_shape])
        v = ctx.op("gather_elements", [xr, flat], {"axis": 3})
        term = ctx.op("mul", [v, wgt_r])
        cols = term if cols is None else ctx.op("add", [cols, term])
        corners.append((corner, flat, wgt_r, v, vf, factors))
    mask_r = None if mask is None else ctx.op("reshape", [mask, flat_shape])
    colsm = cols if mask_r is None else ctx.op("mul", [cols, mask_r])
    dy3 = ctx.op("reshape", [dy, ctx.i64([0, group, mg, p])])
    w2 = ctx.op("reshape", [w, ctx.i64([group, mg, cg * k])])
    cm = ctx.op("reshape", [colsm, ctx.i64([0, group, cg * k, p])])
    dw = ctx.op("matmul", [dy3, ctx.op("transpose", [cm], {"perm": [0, 1, 3, 2]})])
    dw = ctx.op("reshape", [ctx.op("reduce_sum", [dw, ctx.i64([0])], {"keepdims": 0}), ctx.shape(w)])
    dcm = ctx.op("matmul", [ctx.op("transpose", [w2], {"perm": [0, 2, 1]}), dy3])
    dcolsm = ctx.op("reshape", [dcm, ctx.i64([0, og, cpg, k * p])])
    dmask = None
    if mask is not None:
        dmask = ctx.op("reduce_sum", [ctx.op("mul", [dcolsm, cols]), ctx.i64([2])], {"keepdims": 0})
        dmask = ctx.reshape_like(dmask, mask)
    dcols = dcolsm if mask_r is None else ctx.op("mul", [dcolsm, mask_r])
    # input: every corner's share of dcols, scattered (added) where it was gathered from
    idx_all = ctx.op("concat", [cr[1] for cr in corners], {"axis": 3})
    upd_all = ctx.op("concat", [ctx.op("mul", [dcols, cr[2]]) for cr in corners], {"axis": 3})
    dx = ctx.op("scatter_elements", [ctx.zeros_like(xr), idx_all, upd_all], {"axis": 3, "reduction": "add"})
    dx = ctx.reshape_like(dx, x)
    # offsets: d weight / d frac_j is the product of the other axes' factors, signed by the corner
    dpos = [None] * nsp
    kp_shape = ctx.i64([0, og, k, p])
    for corner, _, _, v, vf, factors in corners:
        sv = ctx.op("reduce_sum", [ctx.op("mul", [dcols, v]), ctx.i64([2])], {"keepdims": 0})
        sv = ctx.op("mul", [ctx.op("reshape", [sv, kp_shape]), vf])
        for j in range(nsp):
            t = sv
            for i, f in enumerate(factors):
                if i != j:
                    t = ctx.op("mul", [t, f])
            if not corner[j]:
                t = ctx.op("neg", [t])
            dpos[j] = t if dpos[j] is None else ctx.op("add", [dpos[j], t])
    doff = ctx.op("concat", [ctx.op("unsqueeze", [d, ctx.i64([3])]) for d in dpos], {"axis": 3})
    doff = ctx.reshape_like(doff, off)
    grads = [dx, dw, doff, None if b is None else bias_grad(ctx, dy, b), dmask]
    return grads[:len(ctx.inputs)]


def _dim0(ctx, v):
    """``v``'s first dim as a 1-element int64 vector (a constant when static)."""
    if is_static_dim(v.shape[0]):
        return ctx.i64([v.shape[0]])
    return ctx.op("slice", [ctx.op("shape", [v]), ctx.i64([0]), ctx.i64([1])])


_DEFORM_ATTRS = {k: v for k, v in _CONV_ATTRS.items() if k != "auto_pad"}
_DEFORM_ATTRS["offset_group"] = Attr("int", 1, "channels are split into this many offset groups")

register(OpDef(
    "deform_conv", infer=_deform_infer, reference=_deform_ref, inputs=(3, 5), kind="contraction",
    attrs=_DEFORM_ATTRS, differentiable=True, grad=_deform_grad,
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


def _causal_grad(ctx):
    """The op is a depthwise conv (group = channels) over seq = past ++ x, then the activation;
    present_state is seq's last k - 1 steps, so its gradient joins seq's at the end."""
    x, w, b, past = (list(ctx.inputs) + [None] * 4)[:4]
    if x.shape is None or w.shape is None or not all(
            is_static_dim(d) for d in (x.shape[1], x.shape[2], w.shape[2])):
        raise ctx.fail("the gradient of causal_conv_with_state needs static channels, length and "
                       "kernel size", actual=str(x.type))
    c, length, k = x.shape[1], x.shape[2], w.shape[2]
    if k == 1:
        seq = x
    elif past is None:
        seq = ctx.op("pad", [x, ctx.i64([0, 0, k - 1, 0, 0, 0])])
    else:
        seq = ctx.op("concat", [past, x], {"axis": 2})
    geo = ((length + k - 1,), (k,), (1,), (1,), (0,))
    dz = typed_dy(ctx, 0)
    if ctx.attrs["activation"] in ("silu", "swish"):
        # y = z * sigmoid(z): dy/dz = s + z * s * (1 - s) = s * (1 + z * (1 - s))
        z = ctx.op("conv", [seq, w] + ([b] if b is not None else []), {"group": c})
        sg = ctx.op("sigmoid", [z])
        one = ctx.const(1, like=z)
        dz = ctx.op("mul", [dz, ctx.op("mul", [sg, ctx.op("add", [one, ctx.op("mul", [
            z, ctx.op("sub", [one, sg])])])])])
    dseq = conv_input_grad(ctx, dz, w, *geo, c)
    if k > 1 and ctx.has_dy(1):
        dseq = ctx.op("add", [dseq, ctx.op("pad", [typed_dy(ctx, 1), ctx.i64([0, 0, length, 0, 0, 0])])])
    dw = conv_weight_grad(ctx, seq, dz, *geo, c)
    if k == 1:
        dx, dpast = dseq, (None if past is None else ctx.zeros_like(past))
    else:
        dx = ctx.op("slice", [dseq, ctx.i64([k - 1]), ctx.i64([length + k - 1]), ctx.i64([2])])
        dpast = None if past is None else ctx.op("slice", [dseq, ctx.i64([0]), ctx.i64([k - 1]),
                                                           ctx.i64([2])])
    db = None if b is None else bias_grad(ctx, dz, b)
    return [dx, dw, db, dpast][:len(ctx.inputs)]


register(OpDef(
    "causal_conv_with_state", infer=_causal_infer, reference=_causal_ref, inputs=(2, 4),
    kind="contraction", differentiable=True, grad=_causal_grad,
    attrs={"activation": Attr("str", "none", "none | silu | swish (fused after the bias)")},
    doc="causal depthwise 1-D conv(x[B,C,L], w[C,1,k], bias[C]?, past_state[B,C,k-1]?) -> "
        "(y[B,C,L], present_state[B,C,k-1]); ONNX CausalConvWithState",
))
