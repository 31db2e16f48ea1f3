"""Recognition rule for scaled-dot-product attention written op by op (run by
``recognize_patterns``)::

    MatMul(Softmax(MatMul(Q, K^T) [/ c | * c] [+ mask], axis=-1), V)  ->  attention(Q, K, V, mask)

on 4-D (batch, heads, seq, head_dim) tensors. ``K^T`` is usually a Transpose of K (or of its
pre-head-split form); K is rebuilt by composing that transpose with the swap of the last two
axes, so no transpose is added when one already exists.

The core op is only chosen where it provably computes what the ops did:

- the batch and head dims of Q, K and V, the head size of Q and K and the key length of K and
  V are provably equal (static, or one symbol) — matmul would broadcast where attention does not;
- the scale is one finite nonzero value;
- the mask (if any) is added after the scale, has the queries' dtype, spans all keys (its last
  dim is the key length: attention pads shorter masks with -inf where ``+`` broadcasts) and
  does not grow the scores; and it is provably finite — ``attention`` turns a row masked
  entirely with -inf into zeros where softmax gives NaN, so a mask that could hold -inf is
  left alone (``fuse_reductions`` still groups the ops as one attention kernel);
- no intermediate (scores, probabilities) is read elsewhere.
"""
from __future__ import annotations

import math

import numpy as np
import ml_dtypes

from irgraph.graph import Graph, Value
from irgraph.ops.evaluate import known_value

from .recognize_patterns import internal_only, same_dim, same_shape, scalar
from .rewrite import Const, Match, Op, Rule, Var

_SWAP_LAST = (0, 1, 3, 2)

# ops whose output elements are some of the input's elements (the value range cannot grow)
_SELECTING = {"reshape", "unsqueeze", "squeeze", "transpose", "expand", "slice", "tile", "gather"}


def _float_max(dtype) -> float | None:
    if dtype.name == "bfloat16":
        return float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    if dtype.name in ("float16", "float32", "float64"):
        return float(np.finfo(dtype.np).max)
    return None


def value_range(v: Value | None, depth: int = 12) -> tuple[float, float] | None:
    """Bounds [lo, hi] on every element of ``v`` (finite), or None when none can be shown."""
    if v is None:
        return None
    a = known_value(v)
    if a is not None:
        if a.size == 0 or a.dtype.kind not in "biuf":
            return None
        f = np.asarray(a, dtype=np.float64)
        return (float(f.min()), float(f.max())) if np.all(np.isfinite(f)) else None
    d = v.dtype
    if d.is_bool:
        return 0.0, 1.0
    if d.is_int:
        try:
            info = np.iinfo(d.np)
        except ValueError:
            info = ml_dtypes.iinfo(d.np)
        return float(info.min), float(info.max)
    n = v.producer
    if n is None or depth == 0 or not d.is_float:
        return None
    limit = _float_max(d)
    if limit is None:
        return None
    rng = [value_range(x, depth - 1) if x is not None else None for x in n.inputs]
    op = n.op
    if op in _SELECTING or op == "cast":
        out = rng[0] if rng else None
    elif op == "concat":
        out = None if any(r is None for r in rng) else (min(r[0] for r in rng), max(r[1] for r in rng))
    elif op == "where" and len(rng) == 3 and rng[1] and rng[2]:
        out = min(rng[1][0], rng[2][0]), max(rng[1][1], rng[2][1])
    elif op == "neg" and rng[0]:
        out = -rng[0][1], -rng[0][0]
    elif op in ("add", "sub", "mul", "maximum", "minimum") and len(rng) == 2 and rng[0] and rng[1]:
        (a0, a1), (b0, b1) = rng
        if op == "add":
            out = a0 + b0, a1 + b1
        elif op == "sub":
            out = a0 - b1, a1 - b0
        elif op == "mul":
            p = (a0 * b0, a0 * b1, a1 * b0, a1 * b1)
            out = min(p), max(p)
        elif op == "maximum":
            out = max(a0, b0), max(a1, b1)
        else:
            out = min(a0, b0), min(a1, b1)
    else:
        out = None
    # half the dtype's range: rounding of each step cannot then reach inf
    if out is None or not all(math.isfinite(x) and abs(x) <= limit / 2 for x in out):
        return None
    return out


def _untranspose(g: Graph, kt: Value) -> Value:
    """K from K^T: compose with an existing transpose, or add one."""
    p = kt.producer
    if p is not None and p.op == "transpose" and p.attrs.get("perm") is not None:
        perm = tuple(p.attrs["perm"])
        composed = tuple(perm[i] for i in _SWAP_LAST)
        src = p.inputs[0]
        if composed == tuple(range(4)):
            return src
        # provenance: the transpose it replaces, not the attention (which the rewrite would give)
        return g.op("transpose", [src], {"perm": composed},
                    meta={"source": list(p.meta.get("source", [p.name]))})
    return g.op("transpose", [kt], {"perm": _SWAP_LAST})


def _attention(scale_kind: str, with_mask: bool):
    def replace(m: Match, g: Graph):
        q, kt, v = m["q"], m["kt"], m["v"]
        if any(t.shape is None or len(t.shape) != 4 or not t.dtype.is_float for t in (q, kt, v)):
            return None
        if kt.dtype is not q.dtype or v.dtype is not q.dtype:
            return None
        if m.node("probs").attrs.get("axis", -1) not in (-1, 3):
            return None
        (b, h, _, d), (bk, hk, dk, t), (bv, hv, tv, _) = q.shape, kt.shape, v.shape
        if not (all(same_dim(b, x) for x in (bk, bv)) and all(same_dim(h, x) for x in (hk, hv))
                and same_dim(d, dk) and same_dim(t, tv)):
            return None
        scale = 1.0
        if scale_kind != "none":
            c = scalar(m["c"])
            if c is None or c == 0:
                return None
            scale = 1.0 / c if scale_kind == "div" else c
            if not same_shape(m.node("scaled").outputs[0], m.node("qk").outputs[0]):
                return None
        mask = m["mask"] if with_mask else None
        if mask is not None:
            s, scores = mask.shape, m.node("masked").outputs[0]
            if (s is None or not 1 <= len(s) <= 4 or not same_dim(s[-1], t) or mask.dtype is not q.dtype
                    or not same_shape(scores, m.node("qk").outputs[0]) or value_range(mask) is None):
                return None
        if not internal_only(m, g):
            return None
        k = _untranspose(g, kt)
        y = g.op("attention", [q, k, v] + ([mask] if mask is not None else []), {"scale": scale},
                 num_outputs=1)
        return y[0] if isinstance(y, tuple) else y
    return replace


def _rules() -> list[Rule]:
    rules = []
    for with_mask in (True, False):
        for scale_kind in ("div", "mul", "none"):
            s = Op("matmul", Var("q"), Var("kt"), name="qk")
            if scale_kind == "div":
                s = Op("div", s, Const("c"), name="scaled")
            elif scale_kind == "mul":
                s = Op("mul", s, Const("c"), commutative=True, name="scaled")
            if with_mask:
                s = Op("add", s, Var("mask"), commutative=True, name="masked")
            probs = Op("softmax", s, name="probs")
            rules.append(Rule("attention", Op("matmul", probs, Var("v")), _attention(scale_kind, with_mask)))
    return rules


RULES = _rules()
