"""Lowering rules for selection ops: top_k.

top_k is lowered by rank counting rather than by a sort: for every element ``i`` of a row, its
position in the sorted order is the number of elements that come before it (a strict total
order: value first, the lower index breaking ties, NaN ordered as numpy's sort does). The
element is stored at that position when it is below ``k``. That is O(n^2) per row but each row
is independent (a parallel loop), needs no scratch memory and no data-dependent control flow
beyond one ``If`` — the node cases and typical models have short rows.
"""
from __future__ import annotations

from irgraph.ops.shapes import normalize_axis

from . import (lower_affine_grid, lower_causal_conv, lower_dft, lower_grid_sample, lower_linear_attention, lower_ops,  # noqa: F401
               lower_rnn, lower_rotary)  # importing them registers their rules
from .kernel_ir import INDEX, Assign, Const, If, IRBuilder, Local, Loop, LoweringError, Store, Var
from .lower_ops import _out
from .lower_tensor import Pending, View, delinearize, iconst, numel


def _comes_before(b: IRBuilder, xj, xi, j, i, largest: bool, is_float: bool):
    """True when element (xj, index j) precedes (xi, index i) in top_k's output order."""
    if largest:
        strict = b.gt(xj, xi)
        if is_float:  # NaN sorts above every number (numpy puts it last ascending)
            strict = b.or_(strict, b.and_(b.isnan(xj), b.not_(b.isnan(xi))))
    else:
        strict = b.lt(xj, xi)
        if is_float:
            strict = b.or_(strict, b.and_(b.not_(b.isnan(xj)), b.isnan(xi)))
    same = b.eq(xj, xi)
    if is_float:
        same = b.or_(same, b.and_(b.isnan(xj), b.isnan(xi)))
    return b.or_(strict, b.and_(same, b.lt(j, i)))


def rule_top_k(ctx, n, ins):
    from .lower import PARALLEL_MIN_WORK
    x = ins[0]
    axis = normalize_axis(n.attrs["axis"], x.rank)
    largest = bool(n.attrs["largest"])
    shape, vdt = _out(n, 0)
    _, idt = _out(n, 1)
    k = shape[axis]
    L = x.shape[axis]
    kept = [d for a, d in enumerate(x.shape) if a != axis]
    is_float = x.dtype.is_float

    def emit(c, dest: View, want_values: bool) -> None:
        src = c.force(x)   # read many times per row: keep it in memory
        b = IRBuilder()
        with c.stage():
            o = c.var()
            kv = delinearize(o, kept) if kept else []
            i, j = c.var(), c.var()
            cnt = Var(f"rank{next(c._n)}", INDEX)
            xi = src.at(kv[:axis] + [i] + kv[axis:])
            xj = src.at(kv[:axis] + [j] + kv[axis:])
            before = _comes_before(b, xj, xi, j, i, largest, is_float)
            count = Loop(j, L, "serial", [Assign(cnt, b.add(cnt, b.select(before, iconst(1), iconst(0))))])
            pos = kv[:axis] + [cnt] + kv[axis:]
            val = b.cast(xi, dest.dtype) if want_values else b.cast(i, dest.dtype)
            put = If(b.lt(cnt, iconst(k)), [Store(dest.buf, dest.flat(pos), val)])
            row = [Loop(i, L, "serial", [Local(cnt, iconst(0)), count, put])]
            if kept:
                par = numel(kept) > 1 and x.size * L >= PARALLEL_MIN_WORK
                c.body.append(Loop(o, numel(kept), "parallel" if par else "serial", row))
            else:
                c.body.extend(row)

    if k == 0 or x.size == 0:
        from .lower_tensor import Fill
        return [Fill(Const(0, vdt), shape, ctx), Fill(Const(0, idt), shape, ctx)]
    if k > L:
        raise LoweringError(f"k = {k} exceeds axis size {L}", op=n.op, node=n.name)
    return [Pending(shape, vdt, ctx, lambda c, d: emit(c, d, True), "top_k_values"),
            Pending(shape, idt, ctx, lambda c, d: emit(c, d, False), "top_k_indices")]


RULES: dict = {"top_k": rule_top_k}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
