"""Lowering rule for affine_grid: grid[n, p..., i] = sum_j theta[n, i, j] * homo[p..., j].

The homogeneous base coordinates ``homo`` depend only on the (compile-time) size and
align_corners, so they are a constant table built with the op's own coordinate helper; the
kernel is an index function with the r + 1 products unrolled, accumulated in float64.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.ops.image import _base_coords

from . import lower_ops
from .kernel_ir import Const
from .lower_ops import _b, _out
from .lower_tensor import Generic, iconst


def rule_affine_grid(ctx, n, ins):
    theta = ins[0]
    shape, odt = _out(n)
    dims = list(shape[1:-1])
    r = len(dims)
    axes = [_base_coords(d, bool(n.attrs["align_corners"])) for d in dims]
    mesh = np.meshgrid(*axes, indexing="ij")
    homo = ctx.const(np.stack(list(mesh[::-1]) + [np.ones(dims)], axis=-1).astype(np.float64), "homo")
    b = _b
    f64 = dt.float64

    def fn(idx):
        ni, pos, i = idx[0], list(idx[1:-1]), idx[-1]
        acc = Const(0.0, f64)
        for j in range(r + 1):
            acc = b.add(acc, b.mul(b.cast(theta.at([ni, i, iconst(j)]), f64), homo.at(pos + [iconst(j)])))
        return b.cast(acc, odt)
    return [Generic(shape, odt, ctx, fn, 3 * (r + 1))]


RULES: dict = {"affine_grid": rule_affine_grid}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
