"""Gradient rules of the control-flow ops (``control.py``): if, loop, scan.

- loop and scan with a trip count / sequence length known at compile time are differentiated
  through their bodies unrolled into the enclosing graph: the body is inlined once per step
  (the forward replayed from the node's inputs) and the reverse walk runs over that copy. The
  unrolled graph is ordinary ops, which every backend compiles natively.
- if builds an ``if`` over the branches' backward subgraphs (each branch's forward copied and
  differentiated inside its own branch).

A body may read values of the enclosing graph directly (captures). Their gradients need the
reverse walk to treat captures as extra inputs: the GradCtx carries ``captures`` (a list of
Values) and these rules return one gradient per capture after the per-input ones.

The reverse walk itself lives in ``irgraph.passes.autodiff``, a layer above the op registry; it
hands itself to the rules as ``ctx.gradients`` (the core imports no pass; see DESIGN.md).
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Value
from ..types import is_static_dim
from .evaluate import known_value
from .grad import is_float


class _Engine:
    def __init__(self, fn):
        self.gradients = fn


def _engine(ctx):
    # the reverse walk (irgraph.passes.autodiff, a layer above the registry) hands itself over
    if getattr(ctx, "gradients", None) is None:
        raise ctx.fail("control-flow gradients are built by irgraph.passes.autodiff")
    return _Engine(ctx.gradients)


def _known(v):
    """``v``'s compile-time value as an array, else None."""
    k = known_value(v)
    return None if k is None else np.asarray(k)


def _captures(ctx) -> list[Value]:
    return [v for v in (getattr(ctx, "captures", None) or [])]


def _copy_attr(a, graph: Graph, vmap: dict):
    if isinstance(a, Graph):
        return a.copy(parent=graph, _map=vmap)
    if isinstance(a, (list, tuple)) and a and all(isinstance(x, Graph) for x in a):
        return type(a)(x.copy(parent=graph, _map=vmap) for x in a)
    return a


def inline(graph: Graph, body: Graph, feeds, vmap: dict, prefix: str) -> list[Value]:
    """Copy ``body``'s nodes into ``graph`` with its inputs reading ``feeds`` and the values in
    ``vmap`` (id -> Value: captures redirected) replaced; returns the copies of its outputs."""
    vm = dict(vmap)
    for bv, v in zip(body.inputs, feeds):
        vm[id(bv)] = v
    for cv in body.constants.values():
        vm[id(cv)] = graph.add_const(cv.const, f"{prefix}/{cv.name}")
    for n in body.nodes:
        ins = [None if v is None else vm.get(id(v), v) for v in n.inputs]
        attrs = {k: _copy_attr(a, graph, vm) for k, a in n.attrs.items()}
        res = graph.op(n.op, ins, attrs, name=f"{prefix}/{n.name}", num_outputs=len(n.outputs))
        res = res if isinstance(res, tuple) else (res,)
        for o, r in zip(n.outputs, res):
            vm[id(o)] = r
    return [vm.get(id(v), v) for v in body.outputs]


def _points(ctx, values):
    """Fresh identity copies of the float ``values`` (None elsewhere): differentiation points that
    no other node reads, so the walk over the unrolled copy cannot reach the rest of the graph."""
    return [ctx.op("identity", [v]) if v is not None and is_float(v) else None for v in values]


def _differentiate(ctx, outs, points, graph=None):
    """Gradients of the node's outputs' cotangents through ``outs`` (their unrolled copies) with
    respect to ``points`` (None entries skipped)."""
    graph = graph if graph is not None else ctx.graph
    losses, seeds = [], []
    for i, (v, orig) in enumerate(zip(outs, ctx.outputs)):
        if ctx.has_dy(i) and is_float(orig) and is_float(v):
            losses.append(v)
            seeds.append(ctx.dy(i))
    wrt = [p for p in points if p is not None]
    if not losses or not wrt:
        return [None] * len(points)
    grads = iter(_engine(ctx).gradients(graph, losses, wrt, seeds))
    return [next(grads) if p is not None else None for p in points]


def _stack(ctx, items, axis: int):
    parts = [ctx.op("unsqueeze", [v, ctx.i64([axis])]) for v in items]
    return parts[0] if len(parts) == 1 else ctx.op("concat", parts, {"axis": axis})


# ---- loop ------------------------------------------------------------------------------------
def loop_grad(ctx):
    from .control import _loop_counts
    body = ctx.attrs["body"]
    n, k = _loop_counts(None, body, len(ctx.inputs))
    ins = list(ctx.inputs) + [None] * (2 + n - len(ctx.inputs))
    trips = _known(ins[0])
    if trips is None:
        raise ctx.fail("loop gradients need a trip count M known at compile time (a while loop's "
                       "length depends on the data)", hint="give the loop a constant trip count")
    if ins[1] is not None and not _always_true(body, _known(ins[1])):
        raise ctx.fail("loop gradients need a loop without an early exit: the condition must be "
                       "constantly true (or absent)")
    trips = max(int(trips.reshape(-1)[0]), 0)
    carried = ins[2:2 + n]
    caps = _captures(ctx)
    pts, cpts = _points(ctx, carried), _points(ctx, caps)
    vmap = {id(c): p for c, p in zip(caps, cpts)}
    cur = [p if p is not None else v for p, v in zip(pts, carried)]
    it_t, cond_t = body.inputs[0].type, body.inputs[1].type
    scans: list[list] = [[] for _ in range(k)]
    for i in range(trips):
        feeds = [ctx.graph.add_const(_as(i, it_t), f"{ctx._prefix}/iter"),
                 ctx.graph.add_const(_as(True, cond_t), f"{ctx._prefix}/cond")] + cur
        res = inline(ctx.graph, body, feeds, vmap, f"{ctx._prefix}/step{i}")
        cur = res[1:1 + n]
        for j in range(k):
            scans[j].append(res[1 + n + j])
    outs = cur + [_stack(ctx, s, 0) if s else None for s in scans]
    grads = _differentiate(ctx, outs, pts + cpts)
    return [None, None] + grads[:n] + (grads[n:] if caps else [])


def _as(value, t):
    arr = np.asarray(value, dtype=t.dtype.np)
    return arr.reshape(1) if t.shape is not None and len(t.shape) == 1 else arr


def _always_true(body: Graph, init) -> bool:
    """The loop's condition starts true and the body keeps it true (a constant, or its own
    condition input passed through)."""
    if init is None or not bool(init.reshape(-1)[0]):
        return False
    out = body.outputs[0]
    while out.producer is not None and out.producer.op == "identity":
        out = out.producer.inputs[0]
    if out is body.inputs[1]:
        return True
    val = _known(out)
    return val is not None and bool(val.reshape(-1)[0])


# ---- scan ------------------------------------------------------------------------------------
def scan_grad(ctx):
    from .control import _scan_counts, _scan_layout
    a = ctx.attrs
    body, m = a["body"], a["num_scan_inputs"]

    def fail(msg, **kw):
        raise ctx.fail(msg, **kw)
    n, k = _scan_counts(body, len(ctx.inputs), m, fail)
    dirs, in_axes, out_dirs, out_axes = _scan_layout(a, m, k, fail)
    lead = 1 if a["batched"] else 0
    xs = list(ctx.inputs[n:])
    length = None
    for x, ax in zip(xs, in_axes):
        if x.shape is None:
            continue
        d = x.shape[(ax % (len(x.shape) - lead)) + lead]
        length = d if is_static_dim(d) else length
    batch = xs[0].shape[0] if lead and xs[0].shape is not None else 1
    if length is None or not is_static_dim(batch):
        raise ctx.fail("scan gradients need a sequence length (and batch size) known at compile time")
    caps = _captures(ctx)
    pts, cpts = _points(ctx, ctx.inputs), _points(ctx, caps)
    vmap = {id(c): p for c, p in zip(caps, cpts)}
    cur = [p if p is not None else v for p, v in zip(pts, ctx.inputs)]
    rows = []
    for r in range(batch):
        row = [ctx.op("gather", [v, ctx.i64(r)], {"axis": 0}) for v in cur] if lead else cur
        rows.append(_scan_unrolled(ctx, body, row, n, k, length, vmap, (dirs, in_axes, out_dirs, out_axes),
                                   f"{ctx._prefix}/row{r}" if lead else ctx._prefix))
    outs = [_stack(ctx, [rw[j] for rw in rows], 0) for j in range(n + k)] if lead else rows[0]
    grads = _differentiate(ctx, outs, pts + cpts)
    return grads[:len(ctx.inputs)] + (grads[len(ctx.inputs):] if caps else [])


def _scan_unrolled(ctx, body, ins, n, k, length, vmap, layout, prefix):
    dirs, in_axes, out_dirs, out_axes = layout
    states, xs = list(ins[:n]), ins[n:]
    steps: list[list] = [[] for _ in range(k)]
    for t in range(length):
        sl = [ctx.op("gather", [x, ctx.i64(length - 1 - t if d else t)], {"axis": ax})
              for x, d, ax in zip(xs, dirs, in_axes)]
        res = inline(ctx.graph, body, states + sl, vmap, f"{prefix}/step{t}")
        states = res[:n]
        for j in range(k):
            steps[j].append(res[n + j])
    outs = list(states)
    for j in range(k):
        seq = steps[j][::-1] if out_dirs[j] else steps[j]
        rank = len(seq[0].shape) + 1
        outs.append(_stack(ctx, seq, out_axes[j] % rank))
    return outs


# ---- if --------------------------------------------------------------------------------------
def if_grad(ctx):
    """cond is boolean: all gradients go to captured values (when the walk passes them)."""
    caps = _captures(ctx)
    if not caps:
        return [None]
    then, other = ctx.attrs["then_branch"], ctx.attrs["else_branch"]
    cond = _known(ctx.inputs[0])
    if cond is not None:     # known at compile time: only the taken branch, inline
        taken = then if bool(cond.reshape(-1)[0]) else other
        cpts = _points(ctx, caps)
        outs = inline(ctx.graph, taken, [], {id(c): p for c, p in zip(caps, cpts)}, f"{ctx._prefix}/taken")
        return [None] + _differentiate(ctx, outs, cpts)
    branches = [_branch_backward(ctx, br, caps) for br in (then, other)]
    res = ctx.op("if", [ctx.inputs[0]], {"then_branch": branches[0], "else_branch": branches[1]},
                 num_outputs=len(caps))
    res = list(res) if isinstance(res, tuple) else [res]
    return [None] + [r if is_float(c) else None for r, c in zip(res, caps)]


def _branch_backward(ctx, branch: Graph, caps) -> Graph:
    """A branch graph computing the gradients of every capture (zeros where it reads none)."""
    g = Graph(f"{branch.name}_grad", parent=ctx.graph)
    pts = [g.op("identity", [c], name="grad/capture") for c in caps]
    outs = inline(g, branch, [], {id(c): p for c, p in zip(caps, pts)}, "grad/fwd")
    losses, seeds = [], []
    for i, (v, orig) in enumerate(zip(outs, ctx.outputs)):
        if ctx.has_dy(i) and is_float(orig) and is_float(v):
            losses.append(v)
            seeds.append(ctx.dy(i))
    grads = _engine(ctx).gradients(g, losses, pts, seeds) if losses else [None] * len(pts)
    res = []
    for c, gv in zip(caps, grads):
        if gv is None:
            shape = g.add_const(np.asarray(c.shape, np.int64), "grad/shape") if c.type.is_static \
                else g.op("shape", [c])
            gv = g.op("constant_of_shape", [shape], {"value": np.zeros(1, c.dtype.np)})
        res.append(g.op("identity", [gv], name="grad/out"))
    g.set_outputs(res)
    return g
