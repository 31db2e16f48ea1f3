"""Inference batch norm folded away: into the weights of the conv / matmul before it, or else
into a per-channel ``x * scale + shift`` with constant scale and shift.

BatchNorm computes ``(y - mean) * s + beta`` per channel with ``s = gamma / sqrt(var + eps)``.
When ``y = conv(x, W, b)`` has no other reader and W, b are constants, the same result is
``conv(x, W * s[m], (b - mean) * s + beta)`` (scale per output channel m); likewise for
``matmul(x, W) [+ b]`` on rank-2 activations, where the channel is W's last axis. The folded
parameters are computed in float64 and rounded once to the weights' dtype (float32 or
float64; 16-bit models keep their batch norms). A batch norm that cannot be folded but has
constant parameters becomes ``mul`` + ``add``, which the epilogue and elementwise fusions
absorb.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.graph import Graph, Value
from irgraph.ops.evaluate import known_value

from .registry import register_pass
from .rewrite import Const, Match, Op, Rule, Var, rewrite


# batch norm of 16-bit floats is computed in float32 by the reference; folded weights or a
# mul + add in float16 would add roundings, so those batch norms are left alone
_EXACT_FLOATS = (dt.float32, dt.float64)


def _bn_params(m: Match, node_eps: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) in float64 such that batch_norm(y) == y * s + t, from the matched parameters."""
    gamma, beta, mean, var = (np.asarray(m.const(k), dtype=np.float64) for k in ("gamma", "beta", "mean", "var"))
    # the reference adds eps in the compute dtype: round it the same way
    cd = np.float32 if dtype is dt.float32 else np.float64
    s = gamma / np.sqrt(var + np.float64(cd(node_eps)))
    return s, beta - mean * s


def _channel_vectors(m: Match, channels) -> bool:
    """All four parameters are (C,) vectors with C == ``channels`` (static)."""
    for k in ("gamma", "beta", "mean", "var"):
        shp = m[k].shape
        if shp is None or len(shp) != 1 or shp[0] != channels:
            return False
    return isinstance(channels, int)


def _bias_vector(b: Value | None, channels: int) -> np.ndarray | None:
    """A known bias as a float64 (C,) vector (zeros when absent); None when it is not one."""
    if b is None:
        return np.zeros(channels, np.float64)
    arr = known_value(b)
    if arr is None:
        return None
    arr = np.asarray(arr, dtype=np.float64)
    # (C,), (1, C) or a scalar: anything else would not be one value per output channel
    if arr.size not in (1, channels) or any(d != 1 for d in arr.shape[:-1]):
        return None
    return np.broadcast_to(arr.reshape(-1), (channels,)).copy()


def _weight_like(g: Graph, arr: np.ndarray, like: Value, name: str) -> Value:
    return g.add_const(arr.astype(like.dtype.np), name)


# ---- conv / conv_transpose -------------------------------------------------------------------
def _fold_into_conv(m: Match, g: Graph):
    conv, bn = m.node("conv"), m.root
    w = m.const("w")
    y = conv.outputs[0]
    if y.shape is None or len(w.shape) < 3 or y.dtype not in _EXACT_FLOATS:
        return None
    channels = y.shape[1]
    if not _channel_vectors(m, channels):
        return None
    b = conv.inputs[2] if len(conv.inputs) > 2 else None
    bias = _bias_vector(b, channels)
    if bias is None:
        return None
    s, t = _bn_params(m, bn.attrs["epsilon"], y.dtype)
    w64 = np.asarray(w, dtype=np.float64)
    if conv.op == "conv":
        # weight (M, C/group, *k): output channel m is row m
        w_new = w64 * s.reshape((-1,) + (1,) * (w64.ndim - 1))
    else:
        # conv_transpose weight (C, M/group, *k): output channel = group index * M/group + column
        group = conv.attrs["group"]
        cin, mg = w64.shape[0], w64.shape[1]
        wg = w64.reshape((group, cin // group, mg) + w64.shape[2:])
        w_new = (wg * s.reshape((group, 1, mg) + (1,) * (w64.ndim - 2))).reshape(w64.shape)
    b_new = bias * s + t
    w_val = _weight_like(g, w_new, m["w"], m["w"].name + "_bn")
    b_val = _weight_like(g, b_new, y, (b.name if b is not None else conv.name + "_bias") + "_bn")
    return g.op(conv.op, [m["x"], w_val, b_val], conv.attrs, name=conv.name,
                meta={k: v for k, v in conv.meta.items() if k != "source"})


# ---- matmul [+ bias] -------------------------------------------------------------------------
def _fold_into_matmul(m: Match, g: Graph):
    mm, bn = m.node("mm"), m.root
    w = m.const("w")
    y = bn.inputs[0]
    x = m["x"]
    # only (N, K) @ (K, C): batch norm's channel axis 1 is then the weight's output axis
    if (w.ndim != 2 or x.shape is None or len(x.shape) != 2 or y.shape is None or len(y.shape) != 2
            or y.dtype not in _EXACT_FLOATS):
        return None
    channels = y.shape[1]
    if not _channel_vectors(m, channels):
        return None
    bias = _bias_vector(m["b"] if "b" in m else None, channels)
    if bias is None:
        return None
    s, t = _bn_params(m, bn.attrs["epsilon"], y.dtype)
    w_val = _weight_like(g, np.asarray(w, np.float64) * s[None, :], m["w"], m["w"].name + "_bn")
    b_val = _weight_like(g, bias * s + t, y, (m["b"].name if "b" in m else mm.name + "_bias") + "_bn")
    out = g.op("matmul", [x, w_val], name=mm.name, meta={k: v for k, v in mm.meta.items() if k != "source"})
    return g.op("add", [out, b_val], name=(m.node("bias").name if "b" in m else mm.name + "_bias"))


# ---- anything else: per-channel scale and shift -------------------------------------------------
def _to_scale_shift(m: Match, g: Graph):
    bn = m.root
    x = m["x"]
    if x.shape is None or x.dtype not in _EXACT_FLOATS:
        return None
    rank = len(x.shape)
    shapes = {m[k].shape for k in ("gamma", "beta", "mean", "var")}
    if len(shapes) != 1:
        return None
    (pshape,) = shapes
    if pshape is None or not all(isinstance(d, int) for d in pshape):
        return None
    s, t = _bn_params(m, bn.attrs["epsilon"], x.dtype)
    if len(pshape) == 1:
        # (C,) parameters broadcast over (N, C, D1, ...) as (C, 1, ...)
        s, t = (p.reshape((-1,) + (1,) * (rank - 2)) for p in (s, t))
    scale = g.add_const(s.astype(x.dtype.np), bn.name + "_scale")
    shift = g.add_const(t.astype(x.dtype.np), bn.name + "_shift")
    return g.op("add", [g.op("mul", [x, scale], name=bn.name + "_mul"), shift], name=bn.name + "_add")


def _params():
    return (Const("gamma"), Const("beta"), Const("mean"), Const("var"))


RULES = [
    Rule("batch_norm_into_conv",
         Op("batch_norm", Op(("conv", "conv_transpose"), Var("x"), Const("w"), name="conv", single_use=True),
            *_params()),
         _fold_into_conv),
    Rule("batch_norm_into_matmul_bias",
         Op("batch_norm",
            Op("add", Op("matmul", Var("x"), Const("w"), name="mm", single_use=True), Const("b"),
               name="bias", single_use=True, commutative=True),
            *_params()),
         _fold_into_matmul),
    Rule("batch_norm_into_matmul",
         Op("batch_norm", Op("matmul", Var("x"), Const("w"), name="mm", single_use=True), *_params()),
         _fold_into_matmul),
    Rule("batch_norm_to_scale_shift", Op("batch_norm", Var("x"), *_params()), _to_scale_shift),
]


@register_pass("fold_batch_norm",
               description="fold inference batch norm into the preceding conv/matmul weights, "
                           "else into a constant per-channel mul + add")
def fold_batch_norm(graph: Graph, ctx) -> bool:
    return rewrite(graph, RULES)
