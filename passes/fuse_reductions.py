"""Elementwise + reduction kernels: each normalization, softmax and attention becomes one fused
group with its elementwise prologue and epilogue, and mean/variance computations left written
out op by op become one ``reduction`` group each.

In order (a node joins at most one group):

1. attention written op by op — ``MatMul(Q, K^T) [scale] [+ mask] -> Softmax(last axis) ->
   MatMul(., V)`` (with the transpose producing K^T) — as group ``attention``. This is the
   form ``recognize_patterns`` leaves when the core ``attention`` op would not compute exactly
   the same (a mask that may hold -inf, unprovable shapes, 3-D heads). A ``fuse_epilogues``
   group holding just the first matmul and its scale/mask add is taken apart and regrouped.
2. composite ops (``GROUPS`` names their kernel kind) with
   - their prologue: elementwise producers of the data input of the same shape (a residual or
     bias add before a layer norm, the scale and mask add before a softmax, the mask arithmetic
     of an attention). Only the direct producer may also be read elsewhere (the group then
     stores it too, as add+layer-norm kernels do); deeper ones must be read only by the group;
   - their epilogue: a chain of elementwise consumers of the same shape, each the only reader
     of the value before it.
3. op by op reductions (reduce_mean/sum/max/min/prod with known axes, keepdims): the
   reduction, the elementwise ops around it on the full or the reduced shape that read its
   results or the same input, and the further reductions over the same axes they feed, as
   group ``reduction`` (mean, variance, normalization written out over any axes).

Groups only ever take nodes whose set stays convex (no path leaves the group and comes back),
and every value read outside a group stays one of its outputs, so results are unchanged: the
body is the exact computation.
"""
from __future__ import annotations

import re

from irgraph.graph import Graph, Node, Value
from irgraph.ops.registry import get_op, has_op

from .group import make_group, ungroup
from .recognize_patterns import reduce_axes, same_shape, scalar
from .registry import register_pass

GROUPS = {
    "softmax": "softmax", "log_softmax": "softmax",
    "layer_norm": "layer_norm", "rms_norm": "rms_norm",
    "group_norm": "group_norm", "instance_norm": "instance_norm",
    "attention": "attention",
}
REDUCTIONS = {"reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod"}

MAX_PROLOGUE = 8
MAX_EPILOGUE = 4
MAX_CLUSTER = 32


class _Index:
    """Users, positions and outputs of the graph; refreshed after every group."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.refresh()

    def refresh(self) -> None:
        self.users = self.graph.users()
        self.pos = {n: i for i, n in enumerate(self.graph.nodes)}
        self.outputs = {id(v) for v in self.graph.outputs}

    def readers(self, v: Value) -> list[Node]:
        return self.users.get(v, [])

    def only_read_by(self, v: Value, nodes) -> bool:
        return id(v) not in self.outputs and all(u in nodes for u in self.readers(v))

    def convex(self, members: set) -> bool:
        """No path from the set through nodes outside it back into the set."""
        hi = max(self.pos[n] for n in members)
        stack = [u for n in members for o in n.outputs for u in self.readers(o) if u not in members]
        seen: set = set()
        while stack:
            n = stack.pop()
            if n in seen or self.pos.get(n, hi + 1) > hi:
                continue  # after every member in topological order: cannot lead back
            seen.add(n)
            for o in n.outputs:
                for u in self.readers(o):
                    if u in members:
                        return False
                    stack.append(u)
        return True

    def group(self, members: set, group: str, anchor: Node) -> Node:
        fused = make_group(self.graph, list(members), group, f"{group}_{anchor.name}")
        self.refresh()
        return fused


def _elementwise(n: Node) -> bool:
    return (n.op != "fused" and has_op(n.op) and get_op(n.op).kind == "elementwise"
            and len(n.outputs) == 1 and not n.subgraphs())


def _axis_is_last(n: Node) -> bool:
    shape = n.outputs[0].shape
    if shape is None or not shape:
        return False
    return n.attrs.get("axis", -1) in (-1, len(shape) - 1)


# ---- 1. attention written op by op ----------------------------------------------------------


def _scale_operand(n: Node) -> Value | None:
    """For ``s * c``, ``c * s`` or ``s / c`` with a known scalar ``c``: ``s``."""
    if n.op == "div" and scalar(n.inputs[1]) is not None:
        return n.inputs[0]
    if n.op == "mul":
        for i in (0, 1):
            if scalar(n.inputs[1 - i]) is not None:
                return n.inputs[i]
    return None


def _scores_chain(ix: _Index, v: Value, inside: set) -> list[Node] | None:
    """The nodes computing attention scores ``v`` = QK^T [scaled] [+ mask], read only inside."""
    p = v.producer
    if p is not None and p.op == "add" and p in ix.pos and ix.only_read_by(v, inside):
        for s in p.inputs:  # the scores side is the one computed by QK^T; the other is the mask
            sub = _scores_chain_unmasked(ix, s, inside | {p})
            if sub is not None:
                return [p] + sub
        return None
    return _scores_chain_unmasked(ix, v, inside)


def _scores_chain_unmasked(ix: _Index, v: Value, inside: set) -> list[Node] | None:
    p = v.producer
    if p is None or p not in ix.pos or not ix.only_read_by(v, inside):
        return None
    chain = []
    if p.op in ("div", "mul"):
        s = _scale_operand(p)
        if s is None:
            return None
        chain.append(p)
        inside = inside | {p}
        v, p = s, s.producer
        if p is None or p not in ix.pos or not ix.only_read_by(v, inside):
            return None
    if p.op != "matmul":
        return None
    chain.append(p)
    kt = p.inputs[1].producer
    if kt is not None and kt.op == "transpose" and kt in ix.pos and ix.only_read_by(p.inputs[1], {p}):
        chain.append(kt)
    return chain


_QK_BODY = re.compile(r"^matmul( (div|mul))?( add)?$")


def _qk_group(ix: _Index, v: Value) -> Node | None:
    """A fused group (e.g. a matmul epilogue) computing just QK^T [scaled] [+ mask] into ``v``."""
    p = v.producer
    if p is None or p.op != "fused" or len(p.outputs) != 1 or p not in ix.pos:
        return None
    body = p.attrs["body"]
    if not _QK_BODY.match(" ".join(n.op for n in body.nodes)):
        return None
    return p


def _open_group(ix: _Index, fused: Node):
    """Inline ``fused`` (ungroup); returns a function that puts the same group back."""
    before, meta = set(ix.graph.nodes), dict(fused.meta)
    group, label = fused.attrs["group"], fused.attrs["label"]
    ungroup(ix.graph, fused)
    ix.refresh()

    def restore() -> None:
        again = make_group(ix.graph, [n for n in ix.graph.nodes if n not in before], group, label)
        again.meta.update(meta)
        ix.refresh()
    return restore


def _fuse_attention_chains(ix: _Index) -> bool:
    changed = False
    for sm in list(ix.graph.nodes):
        if sm.op != "softmax" or sm not in ix.pos or not _axis_is_last(sm):
            continue
        out = sm.outputs[0]
        readers = ix.readers(out)
        if id(out) in ix.outputs or len(readers) != 1:
            continue
        pv = readers[0]
        if pv.op != "matmul" or pv.inputs[0] is not out or pv not in ix.pos:
            continue
        chain = _scores_chain(ix, sm.inputs[0], {sm})
        restore = None
        if chain is None and _qk_group(ix, sm.inputs[0]) is not None and ix.only_read_by(sm.inputs[0], {sm}):
            # a matmul epilogue took QK^T with its scale/mask: open it, put it back unless it joins
            restore = _open_group(ix, sm.inputs[0].producer)
            chain = _scores_chain(ix, sm.inputs[0], {sm})
        members = None if chain is None else set(chain) | {sm, pv}
        if members is None or not ix.convex(members):
            if restore is not None:
                restore()
            continue
        ix.group(members, "attention", sm)
        changed = True
    return changed


# ---- 2. composite ops with prologue and epilogue ------------------------------------------


def _prologue(ix: _Index, members: set, v: Value | None, ref: Value, first: bool, limit: int) -> None:
    """Add elementwise producers of ``v`` (of ``ref``'s shape) to ``members``, recursively."""
    if v is None or len(members) >= limit:
        return
    p = v.producer
    if p is None or p not in ix.pos or p in members or not _elementwise(p):
        return
    if not same_shape(v, ref) or (not first and not ix.only_read_by(v, members)):
        return
    if not ix.convex(members | {p}):
        return
    members.add(p)
    for w in p.inputs:
        _prologue(ix, members, w, ref, False, limit)


def _epilogue(ix: _Index, members: set, v: Value, limit: int) -> None:
    for _ in range(limit):
        readers = ix.readers(v)
        if id(v) in ix.outputs or len(readers) != 1:
            return
        u = readers[0]
        if u in members or u not in ix.pos or not _elementwise(u) or not same_shape(u.outputs[0], v):
            return
        if not ix.convex(members | {u}):
            return
        members.add(u)
        v = u.outputs[0]


def _fuse_composites(ix: _Index) -> bool:
    changed = False
    for a in list(ix.graph.nodes):
        if a.op not in GROUPS or a not in ix.pos:
            continue
        members = {a}
        if a.op == "attention":
            mask = a.inputs[3] if len(a.inputs) > 3 else None
            if mask is not None:
                _prologue(ix, members, mask, mask, False, 1 + MAX_PROLOGUE)
        else:
            _prologue(ix, members, a.inputs[0], a.inputs[0], True, 1 + MAX_PROLOGUE)
        _epilogue(ix, members, a.outputs[0], MAX_EPILOGUE)
        ix.group(members, GROUPS[a.op], a)
        changed = True
    return changed


# ---- 3. reductions written op by op --------------------------------------------------------


def _cluster(ix: _Index, r: Node) -> set | None:
    x, red = r.inputs[0], r.outputs[0]
    if x.shape is None or red.shape is None:
        return None
    rank = len(x.shape)
    axes = reduce_axes(r, rank)
    if axes is None:
        return None

    def same_reduction(u: Node) -> bool:
        return u.op in REDUCTIONS and same_shape(u.inputs[0], x) and reduce_axes(u, rank) == axes

    def fits(u: Node) -> bool:
        if u in members or u not in ix.pos:
            return False
        if _elementwise(u):
            o = u.outputs[0]
            return same_shape(o, x) or same_shape(o, red)
        return same_reduction(u)

    members = {r}
    while len(members) < MAX_CLUSTER:
        cands = {u for n in members for o in n.outputs for u in ix.readers(o) if fits(u)}
        # elementwise readers of the same input whose result a reduction of these axes reads
        for u in ix.readers(x):
            if fits(u) and same_shape(u.outputs[0], x) and any(
                    w in members or same_reduction(w) for w in ix.readers(u.outputs[0])):
                cands.add(u)
        grown = False
        for u in sorted(cands, key=lambda n: ix.pos[n]):
            if ix.convex(members | {u}):
                members.add(u)
                grown = True
                break
        if not grown:
            break
    if not any(_elementwise(n) for n in members):
        return None
    _prologue(ix, members, x, x, False, len(members) + MAX_PROLOGUE)
    return members


def _fuse_reduction_clusters(ix: _Index) -> bool:
    changed = False
    for r in list(ix.graph.nodes):
        if r.op not in REDUCTIONS or r not in ix.pos:
            continue
        members = _cluster(ix, r)
        if members is not None:
            ix.group(members, "reduction", r)
            changed = True
    return changed


@register_pass("fuse_reductions",
               description="softmax / normalization / attention (composite or op by op) with their "
                           "elementwise prologue and epilogue, and op-by-op mean/variance, as one "
                           "fused group each")
def fuse_reductions(graph, ctx) -> bool:
    ix = _Index(graph)
    changed = _fuse_attention_chains(ix)
    changed |= _fuse_composites(ix)
    changed |= _fuse_reduction_clusters(ix)
    return changed
