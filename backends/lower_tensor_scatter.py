"""Lowering rule for tensor_scatter (ONNX TensorScatter, a KV-cache update).

The result is past_cache with, for each batch entry b, the update's sequence positions
s = 0 .. n-1 written at w[b] + s along the sequence axis (w: write_indices, zeros when absent);
in circular mode at (w[b] + s) mod size, later positions overwriting earlier ones. The kernel
copies the cache, then writes the update in that order. Positions the reference rejects (a
negative index, or a linear write running past the cache) are not written: a kernel cannot
raise, and it never writes outside its buffer.
"""
from __future__ import annotations

from irgraph.ops.shapes import normalize_axis

from . import lower_ops
from .kernel_ir import INDEX, If, Store
from .lower_ops import _b, _out
from .lower_tensor import Pending, iadd, iconst, imod


def rule_tensor_scatter(ctx, n, ins):
    past, upd = ins[0], ins[1]
    w = ins[2] if len(ins) > 2 else None
    shape, odt = _out(n)
    axis = normalize_axis(n.attrs["axis"], past.rank)
    circular = n.attrs["mode"] == "circular"
    size = past.shape[axis]
    b = _b

    def emit(c, dest):
        c.store(past, dest)
        if upd.size == 0 or size == 0:
            return
        with c.stage():
            outer, vars_, body = c.loops(upd.shape)
            start = iconst(0) if w is None else b.cast(w.at([vars_[0]]), INDEX)
            pos = iadd(start, vars_[axis])
            if circular:
                ok = b.ge(start, iconst(0))
                pos = imod(b.max(pos, iconst(0)), size)
            else:
                ok = b.and_(b.ge(start, iconst(0)), b.lt(pos, iconst(size)))
                pos = b.min(b.max(pos, iconst(0)), iconst(size - 1))
            tgt = list(vars_)
            tgt[axis] = pos
            body.append(If(ok, [Store(dest.buf, dest.flat(tgt), b.cast(upd.at(vars_), odt))]))
            c.body.append(outer)
    return [Pending(shape, odt, ctx, emit, "tensor_scatter")]


RULES: dict = {"tensor_scatter": rule_tensor_scatter}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
