"""Compile-time evaluation of small nodes whose inputs are known (shape arithmetic and the like).

Frontends call ``propagate_values(node)`` right after building a node so that later inference
(a reshape whose target shape came from Shape→Gather→Concat) sees concrete values. The node
stays in the graph; only ``Value.meta["value"]`` is filled in. Constant folding proper is a pass.
"""
from __future__ import annotations

import numpy as np

from ..graph import Node, Value
from .registry import get_op

MAX_KNOWN_ELEMENTS = 4096


def known_value(v: Value | None):
    """The value of ``v`` when it is known at compile time (a constant, or one inference worked
    out into ``meta["value"]``), else None."""
    if v is None:
        return None
    if v.const is not None:
        return v.const
    return v.meta.get("value")


def propagate_values(node: Node) -> None:
    opdef = get_op(node.op)
    if node.op == "fused":
        return _propagate_fused(node)
    if opdef.random or opdef.runs_subgraphs:
        return
    for o in node.outputs:
        n = o.type.numel
        if n is None or n > MAX_KNOWN_ELEMENTS:
            return  # never materialize big (or unknown-size) tensors at compile time
    vals = None
    if opdef.value is not None:
        from .registry import InferCtx
        try:
            vals = opdef.value(InferCtx(opdef, node.inputs, node.attrs, node.name, len(node.outputs)))
        except Exception:
            vals = None
    if vals is None:
        args = []
        for v in node.inputs:
            if v is None:
                args.append(None)
                continue
            a = known_value(v)
            if a is None or a.size > MAX_KNOWN_ELEMENTS:
                return
            args.append(a)
        if not any(a is not None for a in args) and node.inputs:
            return
        try:
            with np.errstate(all="ignore"):
                vals = opdef.run_reference(args, node.attrs)
        except Exception:
            return  # the interpreter will report it, with context, if the graph is ever run
    for v, a in zip(node.outputs, vals):
        a = np.asarray(a)
        if a.size <= MAX_KNOWN_ELEMENTS and v.type.matches(a):
            v.meta["value"] = a


def _propagate_fused(node: Node) -> None:
    """Known values through a fused group (shape arithmetic the O2 pipeline fused): its body is
    closed, so it runs with the interpreter like any small node with known inputs."""
    from ..interpreter import run_graph
    args = [known_value(v) for v in node.inputs]
    if any(a is None or a.size > MAX_KNOWN_ELEMENTS for a in args):
        return
    if any(o.type.numel is None or o.type.numel > MAX_KNOWN_ELEMENTS for o in node.outputs):
        return
    try:
        with np.errstate(all="ignore"):
            vals = run_graph(node.attrs["body"], args)
    except Exception:
        return
    for o, a in zip(node.outputs, vals):
        a = np.asarray(a)
        if o.type.matches(a):
            o.meta["value"] = a


def reinfer(graph, input_types=None) -> None:
    """Re-run inference over ``graph`` in place after its inputs were retyped (e.g. symbolic dims
    bound to sizes), fused bodies included, refreshing known values. ``input_types`` retypes the
    inputs first. Raises the op's ShapeError when the new types do not fit."""
    from ..types import TensorType
    if input_types is not None:
        for v, t in zip(graph.inputs, input_types):
            v.type = t
            v.meta.pop("value", None)
    for n in graph.nodes:
        if n.op == "fused":
            # the fused op infers from its body, whose types are the old ones: retype the body too
            body = n.attrs["body"]
            reinfer(body, [TensorType(v.type.shape, v.dtype) for v in n.inputs])
            types = [o.type for o in body.outputs]
        else:
            types = get_op(n.op).infer_types(n.inputs, n.attrs, node=n.name, num_outputs=len(n.outputs))
        for o, t in zip(n.outputs, types):
            o.type = t
            o.meta.pop("value", None)
        propagate_values(n)
