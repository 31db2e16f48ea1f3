"""Lowering rule for scan: the body lowered once, inside a serial loop over the sequence.

A scan with a sequence length known when compiling is a loop with a compile-time extent, so its
body needs no nested-graph call: the body's nodes are lowered (like any group's) into the
statements of one loop iteration, with the step index ``i`` a loop variable:

- each state lives in a scratch buffer, initialized from the scan's initial value; an iteration
  reads it there, writes the body's new state to a second buffer, then copies it back (so a body
  that reads a state after computing its successor sees the old value, as the reference);
- scan input j is its slice at position i (``length - 1 - i`` when reversed) along its axis,
  read lazily from the input;
- scan output j is stored at position i (or reversed) along its axis of a scratch buffer.

The results are views of those buffers. The body may read values of the enclosing graph only
when they are known when compiling (constants, shape arithmetic): a kernel binds just the
scan's own inputs. The opset-8 ``batched`` form is one such loop per batch row, unrolled.
"""
from __future__ import annotations

from irgraph.ops.control import _scan_counts, _scan_layout
from irgraph.ops.shapes import normalize_axis

from . import lower_ops
from .kernel_ir import Loop, LoweringError, Store
from .lower_ops import _known
from .lower_tensor import Generic, View, iconst, isub

MAX_BATCH_ROWS = 64


def _fail(n):
    def fail(msg, **kw):
        raise LoweringError(msg, op=n.op, node=n.name)
    return fail


def _slice_at(x, axis: int, pos):
    """x without ``axis``, read at position ``pos`` (an index expression) along it."""
    shape = x.shape[:axis] + x.shape[axis + 1:]

    def fn(idx):
        return x.at(list(idx[:axis]) + [pos] + list(idx[axis:]))
    return Generic(shape, x.dtype, x.ctx, fn, x.cost() + 1)


def _store_at(ctx, t, out: View, axis: int, pos) -> None:
    """Statements storing ``t`` into ``out`` at position ``pos`` of ``axis`` (t lacks that axis)."""
    from .lower import cast_to
    if t.size == 0:
        return
    with ctx.stage():
        outer, vars_, body = ctx.loops(t.shape)
        idx = list(vars_[:axis]) + [pos] + list(vars_[axis:])
        st = Store(out.buf, out.flat(idx), cast_to(t.at(vars_), out.dtype))
        if outer is None:
            ctx.body.append(st)
        else:
            body.append(st)
            ctx.body.append(outer)


def rule_scan(ctx, n, ins):
    a = n.attrs
    if a["batched"]:
        return _batched(ctx, n, ins)
    outs = [(o.type.shape, o.dtype) for o in n.outputs]
    return _scan(ctx, n, ins, outs)


def _batched(ctx, n, ins):
    """The opset-8 form: one scan per row of a leading batch axis the body does not see, the
    rows unrolled (the batch is small where this form is still used) and stacked."""
    from .lower_tensor import Concat
    if any(t is None for t in ins):
        raise LoweringError("an absent scan input", op=n.op, node=n.name)
    batch = ins[0].shape[0]
    if batch > MAX_BATCH_ROWS or batch == 0:
        raise LoweringError(f"a batched scan over {batch} rows (unrolled up to {MAX_BATCH_ROWS})",
                            op=n.op, node=n.name)
    outs = [(o.type.shape[1:], o.dtype) for o in n.outputs]
    rows = []
    for r in range(batch):
        row_ins = [t.slice(0, r, 1, 1).reshape(t.shape[1:]) for t in ins]
        rows.append([v.reshape((1,) + v.shape) for v in _scan(ctx, n, row_ins, outs)])
    return [Concat([row[j] for row in rows], 0, ctx) if batch > 1 else rows[0][j] for j in range(len(outs))]


def _scan(ctx, n, ins, out_types):
    """The unbatched scan over lazy inputs ``ins``; ``out_types``: (shape, dtype) per output."""
    from .lower import _use_counts, lower_nodes
    a = n.attrs
    body = a["body"]
    fail = _fail(n)
    m = a["num_scan_inputs"]
    ns, k = _scan_counts(body, len(ins), m, fail)
    in_dirs, in_axes, out_dirs, out_axes = _scan_layout(a, m, k, fail)
    for v in body.captured_values():
        if _known(v) is None:
            raise LoweringError(f"the scan body reads {v.name!r} of the enclosing graph, known only at "
                                "run time",
                                op=n.op, node=n.name)
    if any(t is None for t in ins):
        raise LoweringError("an absent scan input", op=n.op, node=n.name)
    xs = ins[ns:]
    axes = [normalize_axis(ax, x.rank) for ax, x in zip(in_axes, xs)]
    length = xs[0].shape[axes[0]]
    states = []
    for j, t in enumerate(ins[:ns]):
        cur = View.of(ctx.buffer("scan_state", t.dtype, t.shape, "temp"), ctx)
        ctx.store(t, cur)
        states.append(cur)
    outs = []
    for shape, d in out_types[ns:]:
        outs.append(View.of(ctx.buffer("scan_out", d, shape, "temp"), ctx))
    if length == 0:   # no steps: the initial states, and empty scan outputs
        return states + outs
    step = ctx.var("step")
    with ctx.capture() as stmts:
        env: dict = {}
        for bv, cur in zip(body.inputs[:ns], states):
            env[id(bv)] = cur
        for bv, x, ax, d in zip(body.inputs[ns:], xs, axes, in_dirs):
            env[id(bv)] = _slice_at(x, ax, isub(iconst(length - 1), step) if d else step)
        for c in body.constants.values():
            env[id(c)] = ctx.const(c.const, c.name)
        lower_nodes(ctx, body.nodes, env, {}, _use_counts(body.nodes, body.outputs), depth=1)

        def result(v):
            if id(v) in env:
                return env[id(v)]
            if _known(v) is not None:
                return ctx.const(_known(v), v.name)
            raise LoweringError(f"internal: the scan body leaves {v.name!r} undefined", op=n.op, node=n.name)
        new = []
        for bo, cur in zip(body.outputs[:ns], states):
            nxt = View.of(ctx.buffer("scan_next", cur.dtype, cur.shape, "temp"), ctx)
            ctx.store(result(bo), nxt)
            new.append(nxt)
        for j, bo in enumerate(body.outputs[ns:]):
            pos = isub(iconst(length - 1), step) if out_dirs[j] else step
            ax = normalize_axis(out_axes[j], outs[j].rank)
            _store_at(ctx, result(bo), outs[j], ax, pos)
        for nxt, cur in zip(new, states):
            ctx.store(nxt, cur)
    ctx.body.append(Loop(step, length, "serial", stmts))
    return states + outs


RULES: dict = {"scan": rule_scan}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
