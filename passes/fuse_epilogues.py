"""Conv / conv_transpose / matmul + their elementwise epilogue as one fused group (one kernel).

The epilogue is what a contraction kernel applies to each output element before the store:
bias add, activation (relu, clip, sigmoid, gelu, hard_swish, leaky_relu, tanh, x*sigmoid(x) …),
residual add and the activation after it (ResNet basic blocks), scales. Starting from each
contraction, the group grows one elementwise consumer at a time (in graph order) and the
largest grown state whose only result leaving the group is the last value is kept:

- every absorbed node has exactly the contraction's output shape and dtype;
- an operand from outside the group is a per-output-channel vector (bias, scale, clip
  bounds …; the channel is axis 1 for convs, the last axis for matmul) or a tensor of the
  full output shape (residual), and must not depend on the contraction itself (that would
  make the group both feed and read a node outside it: a cycle);
- an intermediate read outside the group stops the epilogue before it: exporting it would
  cost the store the fusion saves.

The fused node's ``meta["anchor"]`` names the contraction and ``meta["epilogue"]`` lists
the epilogue steps in order (``"add[bias]"``, ``"relu"``, ``"add[residual]"`` …); the body is
the exact computation.
"""
from __future__ import annotations

from irgraph.graph import Graph, Node, Value
from irgraph.ops.registry import get_op, has_op

from .group import make_group
from .registry import register_pass

ANCHORS = {"conv": "conv_epilogue", "conv_transpose": "conv_epilogue", "matmul": "matmul_epilogue"}

_YES, _LATER, _NEVER = "yes", "later", "never"


def _channel_axis(anchor: Node) -> int | None:
    out = anchor.outputs[0]
    rank = len(out.shape)
    if anchor.op in ("conv", "conv_transpose"):
        return 1
    # matmul: the columns of a 2-D (or batched) right operand are the output channels
    b = anchor.inputs[1]
    if b.shape is None or len(b.shape) < 2 or rank < 1:
        return None
    return rank - 1


def operand_role(v: Value, out_shape: tuple, channel_axis: int | None) -> str | None:
    """``"channel"`` for a value that varies at most along the channel axis, ``"full"`` for the
    output's own shape, None for anything else (partial broadcasts, growing the output)."""
    shp = v.shape
    if shp is None or len(shp) > len(out_shape):
        return None
    if tuple(shp) == tuple(out_shape):
        return "full"
    offset = len(out_shape) - len(shp)
    for i, d in enumerate(shp):
        axis = i + offset
        if d == 1:
            continue
        if d != out_shape[axis] or axis != channel_axis:
            return None
    return "channel"


class _Region:
    """The growing group of one anchor, with the dependence queries its checks need."""

    def __init__(self, graph: Graph, anchor: Node, users: dict, pos: dict):
        self.graph = graph
        self.anchor = anchor
        self.users = users
        self.pos = pos
        self.graph_outputs = {id(v) for v in graph.outputs}
        self.out = anchor.outputs[0]
        self.channel_axis = _channel_axis(anchor)
        self.members: list[Node] = [anchor]
        self.member_set = {anchor}
        self.produced = {id(self.out)}
        self.roles: list[str] = []
        self._depends: dict[int, bool] = {}

    def depends_on_anchor(self, v: Value) -> bool:
        """Whether ``v`` is computed from the anchor's output (through nodes outside the group)."""
        start = v.producer
        if start is None or start not in self.pos:
            return False
        stack, seen, found = [start], set(), False
        lo = self.pos[self.anchor]
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if n is self.anchor:
                found = True
                break
            cached = self._depends.get(id(n))
            if cached is not None:
                if cached:
                    found = True
                    break
                continue
            if self.pos.get(n, -1) <= lo:
                continue  # before the anchor in topological order: cannot read it
            reads = [x for x in n.inputs if x is not None]
            for sg in n.subgraphs():
                reads.extend(sg.captured_values())
            for x in reads:
                p = x.producer
                if p is not None and p in self.pos:
                    stack.append(p)
        self._depends[id(start)] = found
        return found

    def status(self, u: Node) -> str:
        """Whether ``u`` can join the epilogue now, perhaps after other nodes join, or never."""
        if u in self.member_set or u not in self.pos or not has_op(u.op):
            return _NEVER
        if get_op(u.op).kind != "elementwise" or len(u.outputs) != 1 or u.subgraphs():
            return _NEVER
        o = u.outputs[0]
        if o.shape is None or tuple(o.shape) != tuple(self.out.shape) or o.dtype is not self.out.dtype:
            return _NEVER
        state = _YES
        for v in u.inputs:
            if v is None or id(v) in self.produced:
                continue
            if self.depends_on_anchor(v):
                # produced after the anchor: fine only once an absorbable node of the group makes it
                p = v.producer
                if p is not None and get_op(p.op).kind == "elementwise" and p is not u:
                    state = _LATER
                    continue
                return _NEVER
            if operand_role(v, self.out.shape, self.channel_axis) is None:
                return _NEVER
        return state

    def front(self) -> list[Value]:
        """Values of the group read outside it (or returned by the graph)."""
        out = []
        for n in self.members:
            for o in n.outputs:
                if id(o) in self.graph_outputs or any(u not in self.member_set for u in self.users.get(o, ())):
                    out.append(o)
        return out

    def add(self, u: Node) -> None:
        self.members.append(u)
        self.member_set.add(u)
        for o in u.outputs:
            self.produced.add(id(o))
        self.roles.append(self._role(u))

    def _role(self, u: Node) -> str:
        ext = [v for v in u.inputs if v is not None and id(v) not in self.produced]
        if not ext:
            return u.op
        roles = {operand_role(v, self.out.shape, self.channel_axis) for v in ext}
        if "full" in roles:
            return f"{u.op}[residual]" if u.op in ("add", "sub") else f"{u.op}[tensor]"
        if u.op in ("add", "sub"):
            return f"{u.op}[bias]"
        if u.op in ("mul", "div"):
            return f"{u.op}[scale]"
        return u.op


def grow_epilogue(graph: Graph, anchor: Node, users: dict, pos: dict, max_nodes: int = 16) -> _Region | None:
    """The largest epilogue of ``anchor`` whose only result is its last value (None if empty)."""
    r = _Region(graph, anchor, users, pos)
    best: tuple[list, list] | None = None
    while len(r.members) < max_nodes:
        front = r.front()
        cands: list[Node] = []
        stuck = not front  # nothing reads the group: dead code, not ours to fuse
        for v in front:
            # a returned value, or one read by a node that can never join, stays a stored
            # result: the group can never again end in a single value, so the epilogue ends
            stuck = stuck or id(v) in r.graph_outputs
            for u in users.get(v, ()):
                if u in r.member_set or u in cands:
                    continue
                st = r.status(u)
                stuck = stuck or st == _NEVER
                if st == _YES:
                    cands.append(u)
        if stuck or not cands:
            break
        r.add(min(cands, key=lambda n: pos[n]))
        if len(r.front()) == 1:
            best = (list(r.members), list(r.roles))
    if best is None:
        return None
    r.members, r.roles = best
    return r


@register_pass("fuse_epilogues",
               description="conv/conv_transpose/matmul + bias + activation + residual add as one "
                           "fused group (conv_epilogue / matmul_epilogue)")
def fuse_epilogues(graph: Graph, ctx) -> bool:
    max_nodes = int(ctx.option("fuse_epilogues.max_nodes", 16)) if ctx is not None else 16
    changed = False
    users, pos = None, None
    for anchor in [n for n in graph.nodes if n.op in ANCHORS]:
        if anchor.outputs[0].shape is None:
            continue
        if users is None:  # recomputed only after a group changed the graph
            users = graph.users()
            pos = {n: i for i, n in enumerate(graph.nodes)}
        r = grow_epilogue(graph, anchor, users, pos, max_nodes)
        if r is None:
            continue
        steps = r.roles
        label = "+".join([anchor.name] + [s.split("[")[0] for s in steps])
        fused = make_group(graph, r.members, ANCHORS[anchor.op], label=label)
        fused.meta["anchor"] = anchor.op
        fused.meta["epilogue"] = steps
        changed = True
        users = None
    return changed
