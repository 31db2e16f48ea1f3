"""Reverse-mode automatic differentiation: the backward graph built from the registry's rules.

    grads = gradients(graph, loss, [w1, w2])      # appends backward nodes to ``graph``
    g2 = differentiate(graph, "loss", ["w1"])     # a copy whose outputs add ``grad_w1``

The walk visits the forward nodes that lie between the ``wrt`` values and the loss in reverse
topological order. Each node's registry ``grad`` rule (``irgraph/ops/grad.py``) turns the
gradients of its outputs into gradients of its inputs; a value read by several nodes gets the
sum. An op without a rule is differentiated through its ``decompose`` (its primitives are added
to the graph next to it and differentiated instead), and a ``fused`` node through its body. Ops
marked non-differentiable (comparisons, shapes, argmax, ...) pass no gradient: they are
piecewise constant in their float inputs. Only float values carry gradients.

Every gradient a rule returns is checked against its input's type, so a wrong rule fails at
the node that has it, not somewhere downstream.
"""
from __future__ import annotations

from typing import Sequence

from irgraph.errors import IrgraphError
from irgraph.graph import Graph, Node, Value
from irgraph.ops.grad import GradCtx, is_float
from irgraph.ops.registry import get_op

from .registry import register_pass


def gradients(graph: Graph, loss: Value | Sequence[Value], wrt: Sequence[Value],
              seeds: Sequence[Value | None] | None = None) -> list[Value | None]:
    """Append to ``graph`` the nodes computing d(loss)/d(w) for each ``w`` in ``wrt``.

    ``loss`` may be several values; ``seeds`` are the gradients flowing into them (default:
    ones, i.e. the gradient of the sum of all loss elements). Returns one Value per ``wrt``
    entry, or None where the loss does not depend on it.
    """
    losses = [loss] if isinstance(loss, Value) else list(loss)
    seeds = list(seeds) if seeds is not None else [None] * len(losses)
    if len(seeds) != len(losses):
        raise IrgraphError("one seed per loss value", expected=len(losses), actual=len(seeds))
    for v in losses:
        if not is_float(v):
            raise IrgraphError(f"cannot differentiate non-float value {v.name!r}",
                               expected="a float tensor", actual=str(v.type))
    nodes = list(graph.nodes)
    seed_grads: dict[Value, list[Value]] = {}
    for v, s in zip(losses, seeds):
        if s is None:
            s = GradCtx(graph, _pseudo_node(v), []).ones_like(v)
        seed_grads.setdefault(v, []).append(s)
    grads = _backprop(graph, nodes, seed_grads, list(wrt))
    return [grads.get(w) for w in wrt]


def differentiate(graph: Graph, loss: str, wrt: Sequence[str], *, prefix: str = "grad_") -> Graph:
    """A copy of ``graph`` whose outputs are its own plus ``prefix + name`` for each ``wrt``.

    ``loss`` names an output (or any value) of the graph; ``wrt`` names inputs or constants.
    A parameter the loss does not depend on gets a zero gradient.
    """
    g = graph.copy()
    _append_gradients(g, loss, wrt, prefix)
    return g


def _append_gradients(g: Graph, loss: str, wrt: Sequence[str], prefix: str) -> None:
    by_name = {v.name: v for v in g.all_values()}
    missing = [n for n in [loss, *wrt] if n not in by_name]
    if missing:
        raise IrgraphError(f"no value named {missing[0]!r} in graph {g.name!r}",
                           expected="an input, constant or node output", actual=missing[0])
    targets = [by_name[n] for n in wrt]
    for n, v in zip(wrt, targets):
        if not is_float(v):
            raise IrgraphError(f"cannot differentiate with respect to non-float {n!r}",
                               input=n, expected="a float tensor", actual=str(v.type))
    grads = gradients(g, by_name[loss], targets)
    outs = list(g.outputs)
    for n, v, gv in zip(wrt, targets, grads):
        if gv is None:
            gv = GradCtx(g, _pseudo_node(v), []).zeros_like(v)
        gv = g.op("identity", [gv], name=prefix + n, output_names=[prefix + n])
        outs.append(gv)
    g.set_outputs(outs)


@register_pass("autodiff", description="append gradient outputs (options autodiff.loss, autodiff.wrt)")
def autodiff_pass(graph: Graph, ctx) -> bool:
    loss, wrt = ctx.option("autodiff.loss"), ctx.option("autodiff.wrt")
    if loss is None or wrt is None:
        raise IrgraphError("the autodiff pass needs the options autodiff.loss and autodiff.wrt",
                           hint="PassContext(options={'autodiff.loss': 'loss', 'autodiff.wrt': ['w']})")
    _append_gradients(graph, loss, list(wrt), "grad_")
    return True


# ---- the walk ---------------------------------------------------------------------------------
def _backprop(graph: Graph, nodes: list[Node], seed: dict[Value, list[Value]],
              wrt: list[Value]) -> dict[Value, Value]:
    """Gradients of the seeded values with respect to ``wrt``, through ``nodes`` (in order)."""
    reach = {w for w in wrt if is_float(w)}
    reads = {id(n): _reads(n) for n in nodes}
    for n in nodes:                            # forward: values that depend on a wrt value
        if any(v in reach for v in reads[id(n)] if v is not None):
            reach.update(o for o in n.outputs if is_float(o))
    need = set(seed)
    active: list[Node] = []
    for n in reversed(nodes):                  # backward: nodes between wrt and the seeds
        if any(o in need for o in n.outputs) and any(v in reach for v in reads[id(n)] if v is not None):
            active.append(n)
            need.update(v for v in reads[id(n)] if v is not None and v in reach)
    acc: dict[Value, list[Value]] = {v: list(gs) for v, gs in seed.items()}
    for n in active:                           # already in reverse order
        dys = [_total(graph, acc.pop(o, None)) for o in n.outputs]
        if all(d is None for d in dys):
            continue
        for v, gv in zip(reads[id(n)], _node_grads(graph, n, dys)):
            if gv is not None and v is not None and v in reach:
                acc.setdefault(v, []).append(gv)
    return {w: _total(graph, acc.get(w)) for w in wrt}


def _reads(n: Node) -> list:
    """A node's inputs, then the float values of enclosing graphs its subgraphs read."""
    caps = []
    for sg in n.subgraphs():
        for v in sg.captured_values():
            if is_float(v) and v not in caps and v not in n.inputs:
                caps.append(v)
    return list(n.inputs) + caps


def _total(graph: Graph, gs: list[Value] | None) -> Value | None:
    if not gs:
        return None
    total = gs[0]
    for g in gs[1:]:
        total = graph.op("add", [total, g], name="grad/sum")
    return total


def _node_grads(graph: Graph, node: Node, dys: list[Value | None]) -> list[Value | None]:
    opdef = get_op(node.op)
    if not opdef.differentiable:
        return [None] * len(node.inputs)
    reads = _reads(node)
    if opdef.grad is not None:
        ctx = GradCtx(graph, node, dys)
        ctx.captures = reads[len(node.inputs):]
        ctx.gradients = gradients
        out = list(opdef.grad(ctx))
        return _checked(node, out[:len(node.inputs)]) + _checked_captures(node, ctx.captures, out[len(node.inputs):])
    if opdef.decompose is not None or node.op == "fused":
        return _through_expansion(graph, node, dys)
    raise IrgraphError(f"op {node.op!r} has no gradient rule and no decomposition", node=node.name,
                       op=node.op, hint="add a grad rule to its registry entry")


def _through_expansion(graph: Graph, node: Node, dys: list[Value | None]) -> list[Value | None]:
    """Differentiate ``node`` by re-expressing it with primitives placed beside it."""
    start = len(graph.nodes)
    inputs = [v for v in node.inputs]
    if node.op == "fused":
        from irgraph.ops.fused import inline_body
        outs = list(inline_body(graph, inputs, node.attrs["body"]))
    else:
        outs = get_op(node.op).decompose(graph, inputs, dict(node.attrs))
        outs = [outs] if isinstance(outs, Value) else list(outs)
    added = graph.nodes[start:]
    seed = {o: [d] for o, d in zip(outs, dys) if d is not None}
    wrt = [v for v in inputs if v is not None]
    res = _backprop(graph, added, seed, wrt)
    return [res.get(v) if v is not None else None for v in node.inputs]


def _checked_captures(node: Node, caps: list[Value], grads: list) -> list[Value | None]:
    if len(grads) > len(caps):
        raise IrgraphError("gradient rule returned more gradients than the op has inputs and captures",
                           node=node.name, op=node.op, expected=len(caps), actual=len(grads))
    grads = grads + [None] * (len(caps) - len(grads))
    for v, g in zip(caps, grads):
        if g is not None and (g.dtype != v.dtype):
            raise IrgraphError("gradient rule returned a capture gradient of the wrong type", node=node.name,
                               op=node.op, input=v.name, expected=str(v.type), actual=str(g.type))
    return grads


def _checked(node: Node, grads: list[Value | None]) -> list[Value | None]:
    if len(grads) > len(node.inputs):
        raise IrgraphError("gradient rule returned more gradients than the op has inputs",
                           node=node.name, op=node.op, expected=len(node.inputs), actual=len(grads))
    grads = grads + [None] * (len(node.inputs) - len(grads))
    for i, (v, g) in enumerate(zip(node.inputs, grads)):
        if g is None:
            continue
        if v is None or not is_float(v):
            grads[i] = None
            continue
        if g.dtype != v.dtype or (g.shape is not None and v.shape is not None
                                  and len(g.shape) != len(v.shape)) or (
                g.shape is not None and v.shape is not None and any(
                    isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(g.shape, v.shape))):
            raise IrgraphError("gradient rule returned a gradient of the wrong type", node=node.name,
                               op=node.op, input=v.name, expected=str(v.type), actual=str(g.type))
    return grads


def _pseudo_node(v: Value) -> Node:
    """A stand-in node so GradCtx's helpers can build seeds and zeros for ``v``."""
    return Node("identity", [v], [], {}, v.name)
