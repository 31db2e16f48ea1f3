"""Lowering rule for max_unpool: zeros, then each input value written at its flat index.

The indices are flat positions in the default unpooled shape (what max_pool's indices mean);
an explicit output_shape only grows or shrinks that canvas at the end of each axis, so an index
is unravelled over the default shape and ravelled again over the output's. The writes run in
the input's order, so of two values sent to one position the later one stays, as with the
reference's ``y[flat] = x``. The reference rejects indices outside the canvas; a kernel cannot
raise, so such a value is not written (it never writes outside its buffer).
"""
from __future__ import annotations

from irgraph.ops.pooling import _unpool_default
from irgraph.ops.windows import raiser

from . import lower_ops
from .kernel_ir import INDEX, Const, If, LoweringError, Store
from .lower_ops import _b, _out
from .lower_tensor import Fill, Pending, delinearize, iconst, numel


def rule_max_unpool(ctx, n, ins):
    x, ind = ins[0], ins[1]
    shape, odt = _out(n)
    default = tuple(x.shape[:2]) + tuple(_unpool_default(x.shape[2:], n.attrs, raiser("max_unpool")))
    if len(shape) != len(default):
        raise LoweringError(f"output rank {len(shape)} differs from the input's {len(default)}",
                            op=n.op, node=n.name)
    total = numel(default)
    b = _b

    def emit(c, dest):
        c.store(Fill(Const(0, odt), shape, c), dest)
        if x.size == 0:
            return
        with c.stage():
            outer, vars_, body = c.loops(x.shape)
            flat = b.cast(ind.at(vars_), INDEX)
            ok = b.and_(b.ge(flat, iconst(0)), b.lt(flat, iconst(total)))
            flat = b.min(b.max(flat, iconst(0)), iconst(total - 1))
            if tuple(shape) == default:
                tgt = delinearize(flat, list(shape))
            else:
                tgt = delinearize(flat, list(default))
                for t, d in zip(tgt, shape):
                    ok = b.and_(ok, b.lt(t, iconst(d)))
                tgt = [b.min(t, iconst(max(d - 1, 0))) for t, d in zip(tgt, shape)]
            body.append(If(ok, [Store(dest.buf, dest.flat(tgt), b.cast(x.at(vars_), odt))]))
            c.body.append(outer)
    if numel(shape) == 0:
        return [Fill(Const(0, odt), shape, ctx)]
    return [Pending(shape, odt, ctx, emit, "max_unpool")]


RULES: dict = {"max_unpool": rule_max_unpool}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
