"""Constant folding: nodes whose inputs are all known at compile time become graph constants.

A foldable node is evaluated with its registry reference (the interpreter's own code, so the
result is bit-for-bit what running the graph would give) and its outputs turn into constants
in place: the Values keep their names and readers, the node goes away.

Size cap (``ctx.option("fold_constants.max_bytes", 64 KiB)``): a fold may always replace its
inputs (a weight-only chain such as ``transpose(W)`` whose only reader is the transpose: the
folded weight takes the original's place, no byte is duplicated); beyond that it may add at
most ``max_bytes`` of new constant data per node. 64 KiB keeps every shape computation, bias,
scale and per-channel vector foldable (BERT-large's hidden size is 4 KiB of float32, ResNet's
widest BatchNorm 8 KiB) while a transpose or cast of a weight matrix that other nodes still
read (128x128 float32 is already 64 KiB), or a large ``constant_of_shape``/``expand`` fill
that is cheaper to compute than to store, is left to run.

Never folded: random ops; nodes with subgraphs, except an ``if`` whose condition is known,
which is replaced by the branch it takes (when that branch has no nested subgraphs).
"""
from __future__ import annotations

import numpy as np

from irgraph.graph import Graph, Node
from irgraph.ops.evaluate import known_value
from irgraph.ops.registry import get_op
from irgraph.types import TensorType

from .registry import register_pass

DEFAULT_MAX_BYTES = 64 * 1024


def replace_by_constants(graph: Graph, node: Node, arrays) -> None:
    """Turn ``node``'s outputs into constants of ``graph`` holding ``arrays`` and drop the node.

    The output Values themselves become the constants, so every reader (in subgraphs too) and
    every graph output keeps pointing at the same object and name.
    """
    for v, a in zip(node.outputs, arrays):
        a = np.asarray(a)
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d array 1-d)
            a = a.copy(order="C")
        if a.dtype == object or v.dtype.kind == "s":
            a = np.asarray(a, dtype=object)
        v.const = a
        v.type = TensorType(a.shape, v.dtype)
        v.producer = None
        v.meta.pop("value", None)
        v.graph = graph
        graph.constants[v.name] = v
    graph.nodes.remove(node)


def _nbytes(values) -> int | None:
    total = 0
    for v in values:
        n = v.type.nbytes
        if n is None:
            return None
        total += n
    return total


@register_pass("fold_constants", ensures={"constants_folded"},
               description="evaluate nodes whose inputs are all constants (size-capped)")
def fold_constants(graph: Graph, ctx) -> bool:
    max_bytes = int(ctx.option("fold_constants.max_bytes", DEFAULT_MAX_BYTES))
    return _fold_graph(graph, max_bytes)


def _fold_graph(graph: Graph, max_bytes: int) -> bool:
    changed = False
    while True:  # an inlined branch may expose more folds: start over after each one
        round_changed, inlined = _fold_round(graph, max_bytes)
        changed |= round_changed
        if not inlined:
            break
    for n in graph.nodes:
        for sg in n.subgraphs():
            changed |= _fold_graph(sg, max_bytes)
    return changed


def _fold_round(graph: Graph, max_bytes: int) -> tuple[bool, bool]:
    users = graph.users()
    outputs = {id(v) for v in graph.outputs}
    changed = False
    for n in list(graph.nodes):
        opdef = get_op(n.op)
        if opdef.random:
            continue
        if n.subgraphs():
            if n.op == "if" and _inline_known_if(graph, n):
                return True, True  # the users map is stale now
            continue
        if any(v is not None and known_value(v) is None for v in n.inputs) and \
                not all("value" in o.meta for o in n.outputs):
            continue  # (``shape`` of a static tensor is known without its input's value)
        # this graph's constant inputs (an enclosing graph's may have readers we do not see)
        consts = {id(v): v for v in n.inputs
                  if v is not None and v.const is not None and graph.constants.get(v.name) is v}
        # bytes the fold frees: constant inputs nobody else reads (a weight-only chain)
        freed = sum(v.const.nbytes for v in consts.values()
                    if id(v) not in outputs and all(u is n for u in users.get(v, ())))
        want = _nbytes(n.outputs)
        if want is not None and want > max_bytes and want > freed:
            continue
        arrays = _evaluate(n, opdef)
        if arrays is None:
            continue
        got = sum(a.nbytes for a in arrays)
        if got > max_bytes and got > freed:
            continue
        replace_by_constants(graph, n, arrays)
        for v in n.inputs:
            if v is None:
                continue
            us = users.get(v)
            if us is not None and n in us:
                us.remove(n)
            if id(v) in consts and not users.get(v) and id(v) not in outputs:
                del graph.constants[v.name]  # its only reader is gone: the fold took its place
        changed = True
    return changed, False


def _evaluate(n: Node, opdef) -> list[np.ndarray] | None:
    """The outputs' values, or None when the node cannot be evaluated here."""
    known = [v.meta.get("value") for v in n.outputs]
    if all(a is not None for a in known):
        arrays = known
    else:
        args = [None if v is None else known_value(v) for v in n.inputs]
        try:
            with np.errstate(all="ignore"):
                arrays = opdef.run_reference(args, n.attrs)
        except Exception:
            return None  # leave it to run (and to report its error, with context, at run time)
    if len(arrays) < len(n.outputs):
        return None
    out = []
    for v, a in zip(n.outputs, arrays):
        a = np.asarray(a)
        if not v.type.matches(a):
            return None
        out.append(a)
    return out


def _inline_known_if(graph: Graph, n: Node) -> bool:
    cond = known_value(n.inputs[0]) if n.inputs else None
    if cond is None or np.asarray(cond).size != 1:
        return False
    branch = n.attrs["then_branch"] if bool(np.asarray(cond).reshape(-1)[0]) else n.attrs["else_branch"]
    if any(b.subgraphs() for b in branch.nodes):
        return False  # nested bodies would still point into the branch; leave it to run
    from irgraph.ops.fused import inline_body
    start = len(graph.nodes)
    outs = inline_body(graph, [], branch)
    for new in graph.nodes[start:]:
        new.meta.setdefault("source", list(n.meta.get("source", [n.name])))
    for old, new in zip(n.outputs, outs):
        if new.dtype is not old.dtype:
            del graph.nodes[start:]
            return False
        graph.replace_uses(old, new)
    graph.nodes.remove(n)
    graph.toposort()
    return True
