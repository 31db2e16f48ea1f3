"""Linear algebra: matmul (numpy semantics, batched), and friends."""
from __future__ import annotations

import numpy as np

from .declare import FLOAT_TYPES, INT_TYPES
from .registry import OpDef, register
from .shapes import broadcast_shapes, out, same_dtype
from ..types import is_static_dim


def _matmul_infer(ctx):
    a, b = ctx.types
    dtype = same_dtype(ctx)
    if dtype not in FLOAT_TYPES + INT_TYPES:
        ctx.fail("unsupported dtype", input=0, actual=dtype.name)
    if a.shape is None or b.shape is None:
        return [out(None, dtype)]
    sa, sb = list(a.shape), list(b.shape)
    if not sa or not sb:
        ctx.fail("matmul needs inputs of rank >= 1", expected="rank >= 1", actual=(len(sa), len(sb)))
    va, vb = len(sa) == 1, len(sb) == 1
    if va:
        sa = [1] + sa
    if vb:
        sb = sb + [1]
    k1, k2 = sa[-1], sb[-2]
    if is_static_dim(k1) and is_static_dim(k2) and k1 != k2:
        ctx.fail("inner dimensions differ", input=1, expected=f"K={k1}", actual=f"K={k2}")
    batch = broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]), ctx=ctx)
    shape = list(batch) + ([] if va else [sa[-2]]) + ([] if vb else [sb[-1]])
    return [out(tuple(shape), dtype)]


register(OpDef(
    "matmul", infer=_matmul_infer, inputs=(2, 2), kind="contraction", differentiable=True,
    reference=lambda ins, a: np.matmul(ins[0], ins[1]),
    doc="numpy matmul: batched, broadcasting, 1-D operands promoted",
))
