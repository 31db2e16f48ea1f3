"""Chains and DAGs of elementwise ops left after the other fusions, as fused groups of one loop.

Clusters grow along producer -> consumer edges between elementwise nodes (registry kind
``elementwise`` whose output is the broadcast of its inputs), in graph order, and two clusters
merge only when

- their output shapes broadcast to one of them (one iteration space for the whole group), and
- no path leaves the producer cluster and comes back into the consumer cluster through
  anything outside both (other clusters counted as the single nodes they become): the fused
  node would then both feed and read something outside it, a cycle.

Nodes already inside a fused group (``fused`` nodes) are never absorbed, nor are nodes whose
inputs are all known at compile time (constant folding's job). A cluster of one node stays
as it is. Values of a group read outside it remain outputs of the fused node.
"""
from __future__ import annotations

from irgraph.errors import ShapeError
from irgraph.graph import Graph, Node
from irgraph.ops.evaluate import known_value
from irgraph.ops.registry import get_op, has_op
from irgraph.ops.shapes import broadcast_shapes

from .group import make_group
from .registry import register_pass


def is_pointwise(n: Node) -> bool:
    """An elementwise node whose single output has the broadcast shape of its inputs."""
    if not has_op(n.op) or get_op(n.op).kind != "elementwise" or len(n.outputs) != 1 or n.subgraphs():
        return False
    ins = [v for v in n.inputs if v is not None]
    if not ins or all(known_value(v) is not None for v in ins):
        return False
    shapes = [v.shape for v in ins] + [n.outputs[0].shape]
    if any(s is None for s in shapes):
        return False
    try:
        b = broadcast_shapes(*shapes[:-1])
    except ShapeError:
        return False
    return tuple(b) == tuple(shapes[-1])


def _covering(a: tuple, b: tuple) -> tuple | None:
    """The one of ``a``, ``b`` the other broadcasts onto, or None."""
    try:
        s = tuple(broadcast_shapes(a, b))
    except ShapeError:
        return None
    if s == tuple(a):
        return tuple(a)
    if s == tuple(b):
        return tuple(b)
    return None


class _Clusters:
    def __init__(self, graph: Graph, members: list[Node]):
        self.pos = {n: i for i, n in enumerate(graph.nodes)}
        self.of = {n: i for i, n in enumerate(members)}          # node -> cluster id
        self.nodes = {i: [n] for i, n in enumerate(members)}     # cluster id -> nodes
        self.shape = {i: tuple(n.outputs[0].shape) for i, n in enumerate(members)}
        users = graph.users()
        self.succ = {n: {u for o in n.outputs for u in users.get(o, ()) if u in self.pos}
                     for n in graph.nodes}

    def leaves_and_returns(self, p: int, c: int) -> bool:
        """Whether a path goes from cluster p through anything outside p and c into cluster c.

        Clusters are walked as the single nodes they will become (a path may enter a cluster
        at one member and leave it at another), so the check is exact for the fused graph."""
        source, targets = set(self.nodes[p]), set(self.nodes[c])
        stack = [u for n in source for u in self.succ[n] if u not in source and u not in targets]
        seen: set = set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            k = self.of.get(n)
            for m in (self.nodes[k] if k is not None else [n]):
                seen.add(m)
                for u in self.succ[m]:
                    if u in targets:
                        return True
                    if u not in seen and u not in source:
                        stack.append(u)
        return False

    def try_merge(self, p: int, c: int) -> bool:
        if p == c:
            return False
        shape = _covering(self.shape[p], self.shape[c])
        if shape is None or self.leaves_and_returns(p, c):
            return False
        for n in self.nodes[c]:
            self.of[n] = p
        self.nodes[p].extend(self.nodes.pop(c))
        self.shape[p] = shape
        del self.shape[c]
        return True


def elementwise_clusters(graph: Graph) -> list[list[Node]]:
    """The groups this pass would make: lists of two or more nodes, in graph order."""
    members = [n for n in graph.nodes if is_pointwise(n)]
    cl = _Clusters(graph, members)
    for n in members:
        for v in n.inputs:
            p = None if v is None else v.producer
            if p is not None and p in cl.of and p is not n:
                cl.try_merge(cl.of[p], cl.of[n])
    groups = [sorted(ns, key=lambda n: cl.pos[n]) for ns in cl.nodes.values() if len(ns) > 1]
    return sorted(groups, key=lambda ns: cl.pos[ns[0]])


@register_pass("fuse_elementwise",
               description="maximal cycle-free groups of connected elementwise ops (group=elementwise)")
def fuse_elementwise(graph: Graph, ctx) -> bool:
    groups = elementwise_clusters(graph)
    for ns in groups:
        make_group(graph, ns, "elementwise", label="+".join([ns[0].name] + [n.op for n in ns[1:]])
                   if len(ns) <= 6 else "")
    return bool(groups)
