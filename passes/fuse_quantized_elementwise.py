"""Elementwise work between int8 kernels as one loop over integers: ``DQ -> elementwise -> Q``.

After ``fold_qdq`` the int8 kernels read and write uint8/int8 tensors; what is left between them
is float arithmetic on dequantized values that is quantized again (``fold_qdq`` already turns
the common ``Q(relu?(DQ(a) + DQ(b)))`` residual into one ``quant_add``; this pass takes the
other shapes of it, e.g. a mul or a chain). Each ``quantize_linear`` grows a region backwards through the
elementwise ops and per-tensor ``dequantize_linear``s that only it reads (all of its output's
shape), and the region becomes one fused group (``group="quantized"``): one loop reading the
8-bit inputs and writing the 8-bit output, with no float tensor in memory. (``fuse_elementwise``
does not take quantize/dequantize nodes: they are not of kind elementwise.)
"""
from __future__ import annotations

from irgraph.graph import Graph, Node, Value
from irgraph.ops.registry import get_op, has_op

from .group import make_group
from .registry import register_pass


def _per_tensor(n: Node) -> bool:
    if n.attrs.get("block_size"):
        return False
    for v in n.inputs[1:]:
        if v is not None and (v.shape is None or any(d != 1 for d in v.shape)):
            return False
    return True


def _region(graph: Graph, q: Node, users: dict, taken: set) -> list[Node]:
    shape = q.inputs[0].shape
    outs = set(graph.outputs)
    nodes = [q]
    stack = [q.inputs[0]]
    while stack:
        v: Value = stack.pop()
        p = v.producer
        if p is None or p in taken or p in nodes or v in outs or len(users.get(v, ())) != 1:
            continue
        if len(p.outputs) != 1 or p.outputs[0].shape != shape or not has_op(p.op) or p.subgraphs():
            continue
        if p.op == "dequantize_linear":
            if _per_tensor(p):
                nodes.append(p)
            continue
        if get_op(p.op).kind != "elementwise":
            continue
        nodes.append(p)
        stack.extend(x for x in p.inputs if x is not None and x.const is None)
    return nodes


@register_pass("fuse_quantized_elementwise",
               description="DQ -> elementwise -> Q regions between int8 kernels as one integer loop "
                           "(group=quantized)")
def fuse_quantized_elementwise(graph: Graph, ctx) -> bool:
    changed = False
    taken: set = set()
    for q in [n for n in graph.nodes if n.op == "quantize_linear"]:
        if q in taken or not _per_tensor(q) or q.inputs[0].shape is None:
            continue
        users = graph.users()
        nodes = _region(graph, q, users, taken)
        if len(nodes) < 2 or not any(n.op == "dequantize_linear" for n in nodes):
            continue
        taken.update(nodes)
        ordered = [n for n in graph.nodes if n in set(nodes)]
        make_group(graph, ordered, "quantized", label="+".join([ordered[0].name] + [n.op for n in ordered[1:]]))
        changed = True
    return changed
