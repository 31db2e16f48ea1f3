"""Turning a set of nodes into one ``fused`` node (a kernel), the primitive every fusion pass uses.

    fused_node = make_group(graph, [conv, add, relu], group="conv_epilogue", label="conv1+relu")

The group's inputs are the values its nodes read from outside (constants are moved into the
body, so a backend sees the weights at compile time); its outputs are the values read after
the group or returned by the graph. The body is a closed Graph, the fused node keeps the
union of the nodes' provenance (``meta["source"]``: the original ONNX node names), and the
graph is re-sorted so every value is still defined before use.
"""
from __future__ import annotations

from irgraph.errors import CompileError
from irgraph.graph import Graph, Node, Value
from irgraph.types import TensorType


def make_group(graph: Graph, nodes: list[Node], group: str, label: str = "") -> Node:
    members = [n for n in graph.nodes if n in set(nodes)]  # graph order
    if len(members) != len(nodes):
        raise CompileError("make_group: some nodes are not in the graph")
    member_set = set(members)
    produced = {id(o): o for n in members for o in n.outputs}
    users = graph.users()
    graph_outs = {id(v) for v in graph.outputs}

    inputs: list[Value] = []
    seen: set = set()
    for n in members:
        if n.subgraphs():
            raise CompileError(f"make_group: node {n.name!r} has subgraphs; control flow is not fused")
        for v in n.inputs:
            if v is None or id(v) in produced or id(v) in seen:
                continue
            seen.add(id(v))
            inputs.append(v)
    outputs = [o for n in members for o in n.outputs
               if id(o) in graph_outs or any(u not in member_set for u in users.get(o, ()))]
    if not outputs:
        raise CompileError("make_group: the group's results are never used")

    body = Graph(label or group)
    vmap: dict[int, Value] = {}
    ext_inputs = []
    for v in inputs:
        if v.const is not None:
            vmap[id(v)] = body.add_const(v.const, v.name)
        else:
            vmap[id(v)] = body.add_input(v.name, TensorType(v.type.shape, v.dtype))
            ext_inputs.append(v)
    for n in members:
        outs = []
        for o in n.outputs:
            no = Value(body.unique_name(o.name), o.type, graph=body)
            no.meta = dict(o.meta)
            vmap[id(o)] = no
            outs.append(no)
        body.nodes.append(Node(n.op, [None if v is None else vmap[id(v)] for v in n.inputs], outs,
                               dict(n.attrs), body.unique_node_name(n.name), dict(n.meta)))
    body.set_outputs([vmap[id(o)] for o in outputs])

    source: list[str] = []
    for n in members:
        for s in n.meta.get("source", [n.name]):
            if s not in source:
                source.append(s)
    name = graph.unique_node_name(label or f"{group}_{members[0].name}")
    fused = Node("fused", ext_inputs, outputs, {"body": body, "group": group, "label": label or name},
                 name, {"source": source, "group": group})
    # the fused node produces the same Value objects the members did: readers need no update
    first = graph.nodes.index(members[0])
    graph.nodes = [n for n in graph.nodes if n not in member_set]
    graph.nodes.insert(min(first, len(graph.nodes)), fused)
    graph.toposort()
    return fused


def ungroup(graph: Graph, node: Node) -> None:
    """Inline a fused node's body back into the graph (the inverse of make_group)."""
    from irgraph.ops.fused import inline_body
    before = len(graph.nodes)
    outs = inline_body(graph, node.inputs, node.attrs["body"])
    for old, new in zip(node.outputs, outs):
        graph.replace_uses(old, new)
    graph.nodes.remove(node)
    del before
    graph.toposort()
