"""Optimizer updates: adagrad, adam, momentum (ONNX's ai.onnx.preview.training ops, per tensor).

Each core op updates ONE tensor: ``(R, T, X, G, state...) -> (X_new, state_new...)`` with R the
learning rate (float scalar) and T the update count (int64 scalar). ONNX's nodes update several
tensors at once; the frontend splits them into one core node per tensor, so a compiled training
step sees plain elementwise updates.

The references compute in X's dtype (float32 for half types) with the scalar factors formed in
float64 first, as a compiled update would.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from .declare import FLOAT_TYPES
from .registry import Attr, OpDef, register
from .shapes import out, shape_numel


def _infer_update(num_state: int, outputs: int):
    def infer(ctx):
        r, t, x = ctx.type(0), ctx.type(1), ctx.type(2)
        if r.dtype not in FLOAT_TYPES:
            ctx.fail("the learning rate R must be a float", input=0, expected="a float type", actual=r.dtype.name)
        if t.dtype is not dt.int64:
            ctx.fail("the update count T must be int64", input=1, expected="int64", actual=t.dtype.name)
        for i, what in ((0, "R"), (1, "T")):
            s = ctx.type(i).shape
            if s is not None and shape_numel(s) not in (None, 1):
                ctx.fail(f"{what} must be a scalar", input=i, expected="one element", actual=s)
        if x.dtype not in FLOAT_TYPES:
            ctx.fail("X must be a float tensor", input=2, expected="a float type", actual=x.dtype.name)
        for i in range(3, 4 + num_state):
            ti = ctx.type(i)
            if ti.dtype is not x.dtype:
                ctx.fail("the gradient and optimizer state must share X's dtype", input=i,
                         expected=x.dtype.name, actual=ti.dtype.name)
            if x.shape is not None and ti.shape is not None:
                same = len(ti.shape) == len(x.shape) and all(
                    a == b or not isinstance(a, int) or not isinstance(b, int) for a, b in zip(ti.shape, x.shape))
                if not same:
                    ctx.fail("the gradient and optimizer state must have X's shape", input=i,
                             expected=x.shape, actual=ti.shape)
        return [out(x.shape, x.dtype) for _ in range(outputs)]
    return infer


def _prep(inputs):
    r, t, x = inputs[0], inputs[1], inputs[2]
    ct = np.float32 if x.dtype.itemsize < 4 else x.dtype.type
    rest = [np.asarray(a).astype(ct, copy=False) for a in inputs[3:]]
    return float(np.asarray(r).reshape(())), int(np.asarray(t).reshape(())), x.astype(ct, copy=False), rest, ct


def _adagrad_ref(inputs, a):
    r, t, x, (g, h), ct = _prep(inputs)
    rate = ct(r / (1 + t * a["decay_factor"]))
    g = ct(a["norm_coefficient"]) * x + g
    h_new = h + g * g
    x_new = x - rate * g / (np.sqrt(h_new) + ct(a["epsilon"]))
    return x_new.astype(inputs[2].dtype), h_new.astype(inputs[2].dtype)


def _adam_ref(inputs, a):
    r, t, x, (g, v, h), ct = _prep(inputs)
    alpha, beta = a["alpha"], a["beta"]
    g = ct(a["norm_coefficient"]) * x + g
    v_new = ct(alpha) * v + ct(1 - alpha) * g
    h_new = ct(beta) * h + ct(1 - beta) * (g * g)
    # bias correction of both moments folded into the rate; none before the first update
    rate = r * np.sqrt(1 - beta ** t) / (1 - alpha ** t) if t > 0 else r
    x_new = x - ct(rate) * (v_new / (np.sqrt(h_new) + ct(a["epsilon"])))
    x_new = ct(1 - a["norm_coefficient_post"]) * x_new
    dtype = inputs[2].dtype
    return x_new.astype(dtype), v_new.astype(dtype), h_new.astype(dtype)


def _momentum_ref(inputs, a):
    r, t, x, (g, v), ct = _prep(inputs)
    alpha = ct(a["alpha"])
    g = ct(a["norm_coefficient"]) * x + g
    # the first update (T == 0) takes the gradient unscaled
    v_new = alpha * v + ct(a["beta"] if t > 0 else 1.0) * g
    if a["mode"] == "nesterov":
        x_new = x - ct(r) * (g + alpha * v_new)
    else:
        x_new = x - ct(r) * v_new
    return x_new.astype(inputs[2].dtype), v_new.astype(inputs[2].dtype)


def _momentum_infer(ctx):
    if ctx.attrs["mode"] not in ("standard", "nesterov"):
        ctx.fail(f"unknown momentum mode {ctx.attrs['mode']!r}", expected="standard | nesterov",
                 actual=ctx.attrs["mode"])
    return _infer_update(1, 2)(ctx)


register(OpDef(
    "adagrad", infer=_infer_update(1, 2), reference=_adagrad_ref, inputs=(5, 5), kind="other",
    attrs={"decay_factor": Attr("float", 0.0), "epsilon": Attr("float", 1e-6),
           "norm_coefficient": Attr("float", 0.0)},
    differentiable=False,
    doc="adagrad(R, T, X, G, H) -> (X_new, H_new)",
))

register(OpDef(
    "adam", infer=_infer_update(2, 3), reference=_adam_ref, inputs=(6, 6), kind="other",
    attrs={"alpha": Attr("float", 0.9), "beta": Attr("float", 0.999), "epsilon": Attr("float", 1e-6),
           "norm_coefficient": Attr("float", 0.0), "norm_coefficient_post": Attr("float", 0.0)},
    differentiable=False,
    doc="adam(R, T, X, G, V, H) -> (X_new, V_new, H_new)",
))

register(OpDef(
    "momentum", infer=_momentum_infer, reference=_momentum_ref, inputs=(5, 5), kind="other",
    attrs={"alpha": Attr("float"), "beta": Attr("float"), "norm_coefficient": Attr("float"),
           "mode": Attr("str", "standard", "standard | nesterov")},
    differentiable=False,
    doc="momentum(R, T, X, G, V) -> (X_new, V_new)",
))
