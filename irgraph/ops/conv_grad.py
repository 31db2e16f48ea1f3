"""Gradient rules of the convolutions (``conv.py``), and the conv-built backward pieces the
pools' rules (``pooling.py``) reuse.

The backward of every convolution here is built from convolutions (registry ops, so each
backend runs its own conv kernels): the input gradient is a conv of dy with the flipped weight
(stride 1) or a transposed conv of dy (a conv of dy for conv_transpose), and the weight
gradient a conv whose batch and channel axes are swapped (the input's channels become the
batch, the batch becomes the reduced channel axis, dy is the kernel), so no per-element
gathers and no im2col op are needed. deform_conv's rule follows its reference instead: gathers
of the sampled columns, batched matmuls and one scatter-add.
"""
from __future__ import annotations

import numpy as np

from ..types import is_static_dim
from .windows import window_plan


# ---- helpers -------------------------------------------------------------------------------
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


# ---- conv and conv_transpose --------------------------------------------------------------
def _conv_operands(ctx, plan_of):
    """(x, w, bias or None, dy, x's spatial sizes, kernel, plan) of a conv or conv_transpose
    node, whose window geometry ``plan_of(sizes, kernel, attrs, fail)`` works out."""
    x, w = ctx.inputs[0], ctx.inputs[1]
    b = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    dy = typed_dy(ctx)
    sizes, kernel = spatial_sizes(ctx, x), spatial_sizes(ctx, w, "weight")
    return x, w, b, dy, sizes, kernel, plan_of(sizes, kernel, ctx.attrs, grad_raiser(ctx))


def conv_grad(ctx):
    x, w, b, dy, sizes, kernel, plan = _conv_operands(ctx, window_plan)
    group = ctx.attrs["group"]
    geo = (sizes, kernel, plan.strides, plan.dilations, plan.pads_begin)
    dx = conv_input_grad(ctx, dy, w, *geo, group)
    dw = conv_weight_grad(ctx, x, dy, *geo, group)
    return [dx, dw, None if b is None else bias_grad(ctx, dy, b)][:len(ctx.inputs)]


def conv_transpose_grad(ctx):
    """conv_transpose is conv's input gradient, so its own gradients are convs: dx is the
    conv of dy (same geometry; the weight (C, M/group, *k) is already a conv weight from M to
    C channels) and dw the weight gradient of that conv, with x in dy's place."""
    from .conv import _convt_plan   # conv.py imports this module
    x, w, b, dy, sizes, kernel, plan = _conv_operands(ctx, _convt_plan)
    group = ctx.attrs["group"]
    out = tuple(plan.out)
    dx = conv_exact(ctx, dy, w, out, kernel, plan.strides, plan.dilations, plan.pads_begin, sizes, group)
    dw = conv_weight_grad(ctx, dy, x, out, kernel, plan.strides, plan.dilations, plan.pads_begin, group)
    return [dx, dw, None if b is None else bias_grad(ctx, dy, b)][:len(ctx.inputs)]


# ---- deform_conv --------------------------------------------------------------------------
def deform_conv_grad(ctx):
    """Gradients of deform_conv, built the way the reference computes it: the sampled columns
    (N, og, C/og, K*P) are rebuilt from 2^ndim gathers (one per corner of the sampling cell),
    the weight and column gradients are batched matmuls, the input gradient is one
    scatter-add of every corner's share, and the offset gradient is the derivative of the
    multi-linear weights (floor is piecewise constant: offsets on integer positions take the
    derivative of the cell they round down into)."""
    from .conv import deform_base   # conv.py imports this module
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
    base = deform_base(plan, kernel)
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


# ---- causal_conv_with_state ---------------------------------------------------------------
def causal_conv_grad(ctx):
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
