"""What a gradient rule sees: ``GradCtx``, and the helpers rules are written with.

A registry entry's ``grad`` is a function ``grad(ctx: GradCtx) -> [Value | None, ...]`` returning
one gradient per forward input (``None`` where an input gets no gradient: integer operands,
shapes, indices, or an input the loss does not depend on). The rule builds the backward
computation with ordinary ops through ``ctx.op(...)``, so the backward graph is an ordinary
graph that every pass and backend handles. ``passes/autodiff.py`` walks the forward graph in
reverse, calls the rules and sums the gradients of values used several times.

    def _mul_grad(ctx):
        a, b = ctx.inputs
        dy = ctx.dy()
        return [ctx.sum_to(ctx.op("mul", [dy, b]), a), ctx.sum_to(ctx.op("mul", [dy, a]), b)]

Conventions:
- ``ctx.dy(i)`` is the gradient flowing into output ``i``; it is never ``None`` inside a rule
  for output 0 (the engine materializes zeros for outputs the loss does not reach when
  another output does; ``ctx.has_dy(i)`` tells which outputs really carry a gradient).
- Gradients have the dtype and the shape of the input they belong to. Use ``ctx.sum_to`` after
  any broadcasting op and ``ctx.cast_like`` where the forward op cast.
- Forward values (inputs and outputs) may be reused freely: the backward graph reads them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..dtype import DType
from ..errors import IrgraphError
from ..graph import Graph, Node, Value

FLOAT_DTYPES = frozenset(("float16", "bfloat16", "float32", "float64"))


def is_float(v: Value | None) -> bool:
    """Whether gradients flow through ``v`` (floating-point values only)."""
    return v is not None and v.type is not None and v.dtype.name in FLOAT_DTYPES


def add_grads(ctx, a: Value | None, b: Value | None) -> Value | None:
    """``a + b`` where either gradient may be None (zero)."""
    if a is None:
        return b
    if b is None:
        return a
    return ctx.op("add", [a, b])


class GradCtx:
    """One forward node, the gradients flowing into its outputs, and ops to build its backward."""

    def __init__(self, graph: Graph, node: Node, out_grads: Sequence[Value | None]):
        self.graph = graph
        self.node = node
        self.inputs: list[Value | None] = list(node.inputs)
        self.outputs: list[Value] = list(node.outputs)
        self.attrs: dict = dict(node.attrs)
        self._dys = list(out_grads)
        self._prefix = f"grad/{node.name}"
        # values of the enclosing graph that the node's subgraphs read (if/loop/scan bodies):
        # rules of such ops return one gradient per capture after the per-input ones
        self.captures: list[Value] = []
        # the reverse walk, for rules that differentiate a subgraph (set by passes/autodiff.py,
        # which sits a layer above the registry): gradients(graph, losses, wrt, seeds)
        self.gradients = None

    # ---- gradients in ----------------------------------------------------------------------
    def has_dy(self, i: int = 0) -> bool:
        return i < len(self._dys) and self._dys[i] is not None

    def dy(self, i: int = 0) -> Value:
        """The gradient of the loss with respect to output ``i`` (zeros when none flows there)."""
        g = self._dys[i] if i < len(self._dys) else None
        if g is None:
            g = self.zeros_like(self.outputs[i])
            while len(self._dys) <= i:
                self._dys.append(None)
            self._dys[i] = g
        return g

    # ---- building ops -------------------------------------------------------------------------
    def op(self, op: str, inputs: Sequence[Value | None], attrs: dict | None = None, **kw):
        """Append a backward node (named after the forward node) and return its output(s)."""
        kw.setdefault("name", self._prefix)
        return self.graph.op(op, inputs, attrs, **kw)

    def const(self, value, like: Value | None = None, dtype: DType | str | None = None) -> Value:
        """A constant of ``like``'s dtype (or ``dtype``; default: the first float input's)."""
        if dtype is None:
            ref = like if like is not None else next((v for v in self.inputs if is_float(v)), None)
            dtype = ref.dtype if ref is not None else DType.from_name("float32")
        dtype = DType.from_name(dtype) if isinstance(dtype, str) else dtype
        return self.graph.add_const(np.asarray(value, dtype=dtype.np), name=f"{self._prefix}/c", dtype=dtype)

    def i64(self, values) -> Value:
        """A 1-D (or scalar, for a Python int) int64 constant: axes, shapes, pads."""
        arr = np.asarray(values, dtype=np.int64)
        return self.graph.add_const(arr, name=f"{self._prefix}/i")

    def shape(self, v: Value) -> Value:
        """``v``'s shape as an int64 vector: a constant when static, a ``shape`` node otherwise."""
        if v.shape is not None and all(isinstance(d, int) for d in v.shape):
            return self.i64(list(v.shape))
        return self.op("shape", [v])

    def zeros_like(self, v: Value) -> Value:
        return self.fill_like(v, 0)

    def ones_like(self, v: Value) -> Value:
        return self.fill_like(v, 1)

    def fill_like(self, v: Value, value) -> Value:
        scalar = np.asarray([value], dtype=v.dtype.np)
        return self.op("constant_of_shape", [self.shape(v)], {"value": scalar})

    def cast_like(self, x: Value, like: Value) -> Value:
        if x.dtype == like.dtype:
            return x
        return self.op("cast", [x], {"to": like.dtype})

    # ---- shape helpers --------------------------------------------------------------------------
    def sum_to(self, g: Value, like: Value | None) -> Value | None:
        """Reduce a gradient computed at the broadcast shape back to ``like``'s shape.

        Leading dims that broadcasting added are summed away, then dims where ``like`` has size
        1 and ``g`` does not are summed with keepdims. Needs static ranks (dims may be symbols,
        compared by name)."""
        if like is None:
            return None
        if g.shape is None or like.shape is None:
            raise IrgraphError("gradient of a broadcast needs known ranks", node=self.node.name,
                               op=self.node.op, expected=str(like.shape), actual=str(g.shape))
        gs, ls = list(g.shape), list(like.shape)
        lead = len(gs) - len(ls)
        if lead < 0:
            raise IrgraphError("gradient has fewer dims than its input", node=self.node.name,
                               op=self.node.op, expected=str(like.shape), actual=str(g.shape))
        out = g
        if lead:
            out = self.op("reduce_sum", [out, self.i64(list(range(lead)))], {"keepdims": 0})
        axes = [i for i, (a, b) in enumerate(zip(list(out.shape), ls)) if b == 1 and a != 1]
        if axes:
            out = self.op("reduce_sum", [out, self.i64(axes)], {"keepdims": 1})
        if list(out.shape) != ls:
            # dims equal as sizes but spelled differently (a symbol bound to 1, say): reshape.
            out = self.op("reshape", [out, self.shape(like)])
        return self.cast_like(out, like)

    def reshape_like(self, g: Value, like: Value) -> Value:
        if g.shape is not None and like.shape is not None and list(g.shape) == list(like.shape):
            return g
        return self.op("reshape", [g, self.shape(like)])

    def fail(self, msg: str, **kw) -> IrgraphError:
        kw.setdefault("node", self.node.name)
        kw.setdefault("op", self.node.op)
        return IrgraphError(msg, **kw)
