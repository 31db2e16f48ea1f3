"""Lowering rule for attention: its registry decomposition, with the softmax of bfloat16 scores
computed in bfloat16.

ONNX's Attention computes its softmax in the inputs' precision unless ``softmax_precision`` says
otherwise, and the reference does exactly that (``ops.attention._masked_softmax``: numpy in the
scores' dtype). For bfloat16 that means every addition of the denominator rounds to bfloat16
(ml_dtypes has no wider accumulator), while the generic softmax lowering accumulates half types
in float32 (as the registry's own softmax reference does). So this rule lowers the decomposition
node by node and takes the bfloat16 softmax nodes itself: per row, the maximum, then the sum of
``exp(x - max)`` in order with a bfloat16 accumulator, then ``exp(x - max) / sum`` — every step
rounded to bfloat16 like the reference. Float16 needs nothing: numpy's float16 sum accumulates
in float32, as the generic lowering does. Everything else is the plain decomposition.
"""
from __future__ import annotations

from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.ops.registry import get_op
from irgraph.ops.shapes import normalize_axis

from . import lower_ops
from .kernel_ir import Assign, Const, Local, Loop, LoweringError, Store, Var
from .lower_ops import _b, _known
from .lower_tensor import Pending, View, delinearize, iconst, numel


def softmax_same_precision(ctx, x, axis: int) -> Pending:
    """softmax(x) along ``axis`` with every intermediate in x's dtype, the sum taken in order."""
    shape, d = x.shape, x.dtype
    kept = [s for k, s in enumerate(shape) if k != axis]
    L = shape[axis]
    b = _b

    def emit(c, dest: View):
        from .lower import PARALLEL_MIN_WORK
        src = c.force(x)
        with c.stage():
            o = c.var()
            kv = delinearize(o, kept) if kept else []

            def at(j):
                return kv[:axis] + [j] + kv[axis:]
            j0, j1, j2 = c.var(), c.var(), c.var()
            mx, s = Var(f"max{next(c._n)}", d), Var(f"sum{next(c._n)}", d)
            row = [Local(mx, src.at(at(iconst(0)))),
                   Loop(j0, L, "serial", [Assign(mx, b.max(mx, src.at(at(j0))))]),
                   Local(s, Const(0.0, d)),
                   Loop(j1, L, "serial", [Assign(s, b.add(s, b.exp(b.sub(src.at(at(j1)), mx))))]),
                   Loop(j2, L, "serial", [Store(dest.buf, dest.flat(at(j2)),
                                                b.div(b.exp(b.sub(src.at(at(j2)), mx)), s))])]
            par = numel(kept) > 1 and numel(shape) * 30 >= PARALLEL_MIN_WORK
            if kept:
                c.body.append(Loop(o, numel(kept), "parallel" if par else "serial", row))
            else:
                c.body.extend(row)
    return Pending(shape, d, ctx, emit, "softmax")


def rule_attention(ctx, n, ins):
    from .lower import _lower_decomposed, _use_counts, lower_nodes
    if ins[0] is None or ins[0].dtype is not dt.bfloat16:
        return _lower_decomposed(ctx, n, ins, 0)
    g = Graph(f"{n.name}_decomposed")
    g_ins, env = [], {}
    for v, t in zip(n.inputs, ins):
        if v is None:
            g_ins.append(None)
            continue
        gv = g.add_const(v.const, v.name) if v.const is not None else g.add_input(v.name, v.type)
        if t is not None:
            env[id(gv)] = t
        g_ins.append(gv)
    try:
        outs = list(get_op("attention").decompose(g, g_ins, dict(n.attrs)))[:len(n.outputs)]
    except LoweringError:
        raise
    except Exception as e:
        raise LoweringError(f"decomposing 'attention' failed: {type(e).__name__}: {e}", op=n.op,
                            node=n.name) from e
    for c in g.constants.values():
        if id(c) not in env:
            env[id(c)] = ctx.const(c.const, c.name)
    uses = _use_counts(g.nodes, outs)
    for node in g.nodes:
        if node.op == "softmax" and node.inputs[0].dtype is dt.bfloat16:
            x = env[id(node.inputs[0])]
            t = softmax_same_precision(ctx, x, normalize_axis(node.attrs["axis"], x.rank))
            o = node.outputs[0]
            env[id(o)] = ctx.force(t) if uses.get(id(o), 0) >= 2 else t
        else:
            lower_nodes(ctx, [node], env, {}, uses, 1)
    res = []
    for o in outs:
        if id(o) in env:
            res.append(env[id(o)])
        elif _known(o) is not None:
            res.append(ctx.const(_known(o), o.name))
        else:
            raise LoweringError(f"internal: the decomposition of attention left {o.name} undefined",
                                op=n.op, node=n.name)
    return res


RULES: dict = {"attention": rule_attention}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
