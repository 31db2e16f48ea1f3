"""``fused``: a group of nodes that a backend compiles as one kernel.

Fusion passes replace a connected set of nodes by one ``fused`` node whose ``body`` attribute is
a closed subgraph (its inputs are the group's inputs; the weights it reads are body constants).
``group`` names the kind of kernel (``conv_epilogue``, ``elementwise``, ``reduction``,
``layer_norm``, ``attention`` …), so a backend picks a template; any backend can also run the
body op by op (the decomposition), which is what the interpreter does.
"""
from __future__ import annotations

from ..types import TensorType
from .registry import Attr, OpDef, register


def _infer(ctx):
    body = ctx.attrs["body"]
    if len(body.inputs) != len(ctx.inputs):
        ctx.fail("input count differs from the body's", expected=len(body.inputs), actual=len(ctx.inputs))
    for i, (v, b) in enumerate(zip(ctx.inputs, body.inputs)):
        t = v.type
        if t.dtype is not b.dtype or (t.rank is not None and b.type.rank is not None and t.rank != b.type.rank):
            ctx.fail("input type differs from the body's", input=i, expected=b.type, actual=t)
    return [TensorType(o.type.shape, o.dtype) for o in body.outputs]


def _reference(inputs, attrs, run):
    return run(attrs["body"], inputs)


def inline_body(g, inputs, body):
    """Copy ``body``'s nodes into ``g`` reading ``inputs``; returns the values of its outputs."""
    vmap = {id(bv): v for bv, v in zip(body.inputs, inputs)}
    for c in body.constants.values():
        vmap[id(c)] = g.add_const(c.const, c.name)
    for n in body.nodes:
        ins = [None if v is None else vmap.get(id(v), v) for v in n.inputs]
        res = g.op(n.op, ins, n.attrs, name=n.name, num_outputs=len(n.outputs), meta=n.meta)
        res = res if isinstance(res, tuple) else (res,)
        for o, r in zip(n.outputs, res):
            vmap[id(o)] = r
    return [vmap.get(id(v), v) for v in body.outputs]


def _decompose(g, inputs, attrs):
    return inline_body(g, inputs, attrs["body"])


register(OpDef(
    "fused", infer=_infer, reference=_reference, decompose=_decompose, inputs=(0, None),
    kind="composite", runs_subgraphs=True, variadic_outputs=True, differentiable=True,
    attrs={"body": Attr("graph"), "group": Attr("str", "generic"), "label": Attr("str", "")},
    doc="a fused group: run as one kernel by backends, op by op by the interpreter",
))
