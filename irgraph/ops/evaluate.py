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
    if v is None:
        return None
    if v.const is not None:
        return v.const
    return v.meta.get("value")


def propagate_values(node: Node) -> None:
    opdef = get_op(node.op)
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
