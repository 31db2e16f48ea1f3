"""Lowering rule for rotary_embedding (RoPE): one elementwise-like index function.

Output feature ``f`` of a head reads at most two input features and one cos/sin entry, so the
op is a ``Generic`` lazy tensor (it fuses with its neighbours, no loop nest of its own). Both
branches of a ``select`` are evaluated, so every partner index is clamped into range.
"""
from __future__ import annotations

from . import lower_ops
from .kernel_ir import INDEX, LoweringError
from .lower_ops import _b, _out
from .lower_tensor import Generic, iadd, iclamp, iconst, idiv, imod, isub


def rule_rotary_embedding(ctx, n, ins):
    x, cos, sin = ins[0], ins[1], ins[2]
    pos = ins[3] if len(ins) > 3 else None
    shape, odt = _out(n)
    b = _b
    if x.rank == 3:
        nh = int(n.attrs["num_heads"])
        if not nh:
            raise LoweringError("3-D input without num_heads", op=n.op, node=n.name)
        D = x.shape[2] // nh
    elif x.rank == 4:
        D = x.shape[3]
    else:
        raise LoweringError("rotary_embedding input must be 3-D or 4-D", op=n.op, node=n.name)
    rd = int(n.attrs["rotary_embedding_dim"]) or D
    half = rd // 2
    inter = bool(n.attrs["interleaved"])

    def fn(idx):
        if x.rank == 3:
            bi, si, hd = idx
            f = imod(hd, D)
            base = isub(hd, f)                 # first feature of this head

            def xat(ff):
                return x.at([bi, si, iadd(base, ff)])
        else:
            bi, _, si, f = idx

            def xat(ff):
                return x.at([idx[0], idx[1], idx[2], ff])
        rotated = b.lt(f, iconst(rd))
        if inter:
            p = iclamp(idiv(f, 2), 0, half - 1)
            first = b.eq(imod(f, 2), iconst(0))
            partner = iclamp(b.select(first, iadd(f, 1), isub(f, 1)), 0, D - 1)
        else:
            first = b.lt(f, iconst(half))
            p = iclamp(b.select(first, f, isub(f, half)), 0, half - 1)
            partner = iclamp(b.select(first, iadd(f, half), isub(f, half)), 0, D - 1)
        if pos is not None:
            row = iclamp(b.cast(pos.at([bi, si]), INDEX), 0, cos.shape[0] - 1)
            c, s = cos.at([row, p]), sin.at([row, p])
        else:
            c, s = cos.at([bi, si, p]), sin.at([bi, si, p])
        xf, xp = xat(f), xat(partner)
        # first of a pair: cos*x1 - sin*x2; second: sin*x1 + cos*x2 (x1 = the partner there)
        lo = b.sub(b.mul(c, xf), b.mul(s, xp))
        hi = b.add(b.mul(s, xp), b.mul(c, xf))
        return b.cast(b.select(rotated, b.select(first, lo, hi), xf), odt)
    return [Generic(shape, odt, ctx, fn, 12)]


RULES: dict = {"rotary_embedding": rule_rotary_embedding}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
