"""Losses: negative log-likelihood over class scores (softmax cross-entropy is log_softmax + this).

``nll_loss(input, target, weight?)``: input (N, C, d1, ...) holds log-probabilities, target
(N, d1, ...) the class of each element, weight (C,) an optional per-class weight. Elements
whose target equals ``ignore_index`` contribute nothing, to the loss or to the mean's divisor.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..types import is_static_dim
from .declare import FLOAT_TYPES
from .elementwise_grad import GradOps
from .grad import is_float
from .registry import Attr, OpDef, register
from .shapes import out

REDUCTIONS = ("none", "sum", "mean")


def _nll_infer(ctx):
    x, t = ctx.type(0), ctx.type(1)
    if x.dtype not in FLOAT_TYPES:
        ctx.fail("unsupported dtype for input", input=0,
                 expected="one of " + ", ".join(d.name for d in FLOAT_TYPES), actual=x.dtype.name)
    if t.dtype not in (dt.int32, dt.int64):
        ctx.fail("target must hold int32 or int64 class indices", input=1, expected="int32 or int64",
                 actual=t.dtype.name)
    red = ctx.attrs["reduction"]
    if red not in REDUCTIONS:
        ctx.fail(f"unknown reduction {red!r}", expected=" | ".join(REDUCTIONS), actual=red)
    w = ctx.type(2)
    if w is not None:
        if w.dtype is not x.dtype:
            ctx.fail("weight must have the input's dtype", input=2, expected=x.dtype.name, actual=w.dtype.name)
        if w.shape is not None and len(w.shape) != 1:
            ctx.fail("weight must be a (C,) vector", input=2, expected="(C,)", actual=w.shape)
    shape = None
    if x.shape is not None:
        if len(x.shape) < 2:
            ctx.fail("input must be (N, C, d1, ...)", input=0, expected="rank >= 2", actual=len(x.shape))
        shape = (x.shape[0],) + tuple(x.shape[2:])
        if t.shape is not None:
            if len(t.shape) != len(shape) or any(
                    is_static_dim(a) and is_static_dim(b) and a != b for a, b in zip(t.shape, shape)):
                ctx.fail("target must be the input's shape without the class axis", input=1,
                         expected=shape, actual=t.shape)
            # a static target dim is more precise than a symbolic input dim
            shape = tuple(b if not is_static_dim(a) and is_static_dim(b) else a for a, b in zip(shape, t.shape))
        c = x.shape[1]
        if w is not None and w.shape is not None and is_static_dim(c) and is_static_dim(w.shape[0]) and w.shape[0] != c:
            ctx.fail("weight must hold one value per class", input=2, expected=f"({c},)", actual=w.shape)
    elif t.shape is not None:
        shape = t.shape
    return [out(shape if red == "none" else (), x.dtype)]


def _nll_ref(ins, a):
    x, target = ins[0], ins[1]
    weight = ins[2] if len(ins) > 2 and ins[2] is not None else None
    cd = np.float32 if x.dtype in (np.dtype(np.float16), dt.bfloat16.np) else x.dtype
    c = x.shape[1]
    ii = a["ignore_index"]
    keep = np.ones(target.shape, bool) if ii is None else target != ii
    if np.any(keep & ((target < 0) | (target >= c))):
        from ..errors import ExecutionError
        bad = target[keep & ((target < 0) | (target >= c))].reshape(-1)[0]
        raise ExecutionError(f"target class {int(bad)} out of range for {c} classes")
    safe = np.where(keep, target, 0).astype(np.int64)
    picked = np.take_along_axis(x.astype(cd), np.expand_dims(safe, 1), axis=1)[:, 0]
    w = keep.astype(cd) if weight is None else np.where(keep, weight.astype(cd)[safe], 0).astype(cd)
    loss = -picked * w
    red = a["reduction"]
    if red == "none":
        return loss.astype(x.dtype)
    if red == "sum":
        return np.asarray(loss.sum(), dtype=x.dtype)
    return np.asarray(loss.sum() / w.sum(), dtype=x.dtype)


def _nll_grad(ctx):
    """dx[n, c, d] = -coef[n, d] * [c == target[n, d]] with coef = dy * weight[target] (over the
    sum of the kept weights for the mean); the weight gets the picked inputs summed per class."""
    o, x, t, dy = GradOps(ctx), ctx.inputs[0], ctx.inputs[1], ctx.dy()
    w = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    red, ii = ctx.attrs["reduction"], ctx.attrs["ignore_index"]
    if x.shape is None:
        raise ctx.fail("the gradient of nll_loss needs an input of known rank")
    r = len(x.shape)
    keep = None if ii is None else o.logical_not(o.equal(t, ctx.const(ii, dtype=t.dtype)))
    safe = t if keep is None else o.where(keep, t, ctx.const(0, dtype=t.dtype))
    c = x.shape[1]
    if isinstance(c, int):
        classes = ctx.const(np.arange(c).reshape((1, c) + (1,) * (r - 2)), dtype=t.dtype)
    else:
        n = o.reshape(o.shape(x, start=1, end=2), ctx.i64([]))
        classes = o.reshape(o.cast(o.range(ctx.i64(0), n, ctx.i64(1)), to=t.dtype),
                            ctx.i64([1, -1] + [1] * (r - 2)))
    hot = o.cast(o.equal(o.unsqueeze(safe, ctx.i64([1])), classes), to=x.dtype)
    zero = o.k(0, x)
    # the weight of each element's class (0 where ignored); None: all weights are 1
    wt = None if w is None else o.gather(w, safe, axis=0)
    if keep is not None:
        wt = o.cast(keep, to=x.dtype) if wt is None else o.where(keep, wt, zero)
    scale = dy  # per element (none) or one value (sum, mean)
    if red == "mean":
        total = o.cast(o.size(t), to=x.dtype) if wt is None else o.reduce_sum(wt, keepdims=0)
        scale = o.div(dy, total)
    coef = o.neg(scale if wt is None else o.mul(scale, wt))
    gx = o.mul(hot, o.unsqueeze(coef, ctx.i64([1])) if coef.shape else coef)
    gw = None
    if w is not None and is_float(w):
        # d loss / d w_c: -x[n, c, d] (minus the mean, for "mean") summed over elements of class c
        picked = o.reduce_sum(o.mul(hot, x), ctx.i64([1]), keepdims=0)
        v = o.neg(picked) if red != "mean" else o.neg(o.add(picked, ctx.outputs[0]))
        if keep is not None:
            v = o.where(keep, v, zero)
        v = o.mul(v, scale)
        gw = o.reduce_sum(o.mul(hot, o.unsqueeze(v, ctx.i64([1]))),
                          ctx.i64([0] + list(range(2, r))), keepdims=0)
    return [gx, None, gw][:len(ctx.inputs)]


register(OpDef(
    "nll_loss", infer=_nll_infer, reference=_nll_ref, inputs=(2, 3), kind="other",
    attrs={"reduction": Attr("str", "mean", "none | sum | mean (weighted mean over kept elements)"),
           "ignore_index": Attr("int", None, "target value whose elements are left out")},
    differentiable=True, grad=_nll_grad,
    doc="loss[n, d...] = -input[n, target[n, d...], d...] * weight[target[n, d...]], reduced",
))
