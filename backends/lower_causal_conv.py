"""Lowering rule for causal_conv_with_state (depthwise causal 1-D conv with a carried state).

The kernel is short (a few taps in the models that use it), so each output is an index
function with the taps unrolled: ``y[b, c, t] = sum_j seq[b, c, t + j] * w[c, 0, j] (+ bias,
silu)`` where ``seq`` is ``past_state`` followed by ``x`` along time, read through a select
(the discarded side's index is clamped into range). The new state is the last ``k - 1``
steps of ``seq``.
"""
from __future__ import annotations

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import Const, LoweringError
from .lower_ops import _b, _out
from .lower_tensor import Generic, iadd, iclamp, iconst, isub

MAX_UNROLLED_TAPS = 64


def rule_causal_conv_with_state(ctx, n, ins):
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    past = ins[3] if len(ins) > 3 else None
    yshape, odt = _out(n, 0)
    sshape, _ = _out(n, 1)
    _, _, L = x.shape
    k = w.shape[2]
    if k > MAX_UNROLLED_TAPS:
        raise LoweringError(f"causal conv with {k} taps (unrolled up to {MAX_UNROLLED_TAPS})",
                            op=n.op, node=n.name)
    acc = dt.float32 if x.dtype in (dt.float16, dt.bfloat16) else x.dtype
    b = _b
    silu = n.attrs["activation"] in ("silu", "swish")

    def seq(bi, ci, p: int | object):
        """seq[b, c, p]: past for p < k - 1, else x[p - (k - 1)]; p an index expression."""
        xv = x.at([bi, ci, iclamp(isub(p, k - 1), 0, L - 1)])
        if past is None:
            v = b.select(b.lt(p, iconst(k - 1)), Const(0, x.dtype), xv)
        else:
            pv = past.at([bi, ci, iclamp(p, 0, max(k - 2, 0))])
            v = b.select(b.lt(p, iconst(k - 1)), pv, xv)
        return b.cast(v, acc)

    def y_at(idx):
        bi, ci, t = idx
        s = None
        for j in range(k):
            term = b.mul(seq(bi, ci, iadd(t, j)), b.cast(w.at([ci, iconst(0), iconst(j)]), acc))
            s = term if s is None else b.add(s, term)
        if bias is not None:
            s = b.add(s, b.cast(bias.at([ci]), acc))
        if silu:
            s = b.div(s, b.add(Const(1, acc), b.exp(b.neg(s))))
        return b.cast(s, odt)

    def state_at(idx):
        bi, ci, si = idx
        return b.cast(seq(bi, ci, iadd(si, L)), odt)
    return [Generic(yshape, odt, ctx, y_at, 3 * k + 4), Generic(sshape, odt, ctx, state_at, 3)]


RULES: dict = {"causal_conv_with_state": rule_causal_conv_with_state}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
