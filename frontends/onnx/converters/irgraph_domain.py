"""The ``ai.irgraph`` domain: core ops written verbatim by the exporter import back 1:1.

No per-op code: ``convert_core_op`` builds the registry op named by the node's op type, with
attributes decoded by the op's attribute schema (dtype attributes travel as ONNX type codes,
graph attributes as subgraphs).
"""
from __future__ import annotations


from irgraph.dtype import DType
from irgraph.ops.registry import get_op

DOMAIN = "ai.irgraph"


def convert_core_op(ctx):
    opdef = get_op(ctx.op_type)
    attrs = {}
    for a in ctx.node.attribute:
        spec = opdef.attrs.get(a.name)
        if spec is None:
            ctx.fail(f"attribute {a.name!r} is not in the schema of core op {ctx.op_type}")
        if spec.kind == "graph":
            attrs[a.name] = ctx.subgraph(a.name)
        elif spec.kind == "dtype":
            attrs[a.name] = DType.from_onnx(a.i)
        else:
            from ..importer import attribute_value
            attrs[a.name] = attribute_value(a, ctx)
    n_out = len(ctx.node.output)
    return ctx.op(ctx.op_type, ctx.inputs, attrs, num_outputs=n_out)
