"""Liveness over a kernel order: which intermediate tensors share a buffer, and when each buffer lives.

The memory planner works on the top-level nodes of a graph (after fusion each ``fused`` node is
one kernel). This module holds the pieces every planning step shares:

- ``bind_types``: the static type of every top-level value for given symbol bindings (plans need
  sizes; shapes computed inside the graph, e.g. a reshape target from Shape→Gather→Concat, are
  re-inferred once the input dims are known);
- ``KernelGraph``: the dependency structure (reads include values captured by subgraphs);
- ``BufferSim``: walks kernels in order and decides, kernel by kernel, whether each output gets a
  new buffer, shares its input's buffer as a view (reshape/squeeze/unsqueeze), or overwrites an
  input in place (elementwise kernels whose input dies there and has the same size). The greedy
  scheduler uses the same simulation to price candidate kernels, so the order it picks and the
  plan built for it agree.

Graph inputs and constants live outside the arena. Graph outputs are in it and live until the
end of the schedule (the caller copies them out after the last kernel).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from irgraph.errors import CompileError, IrgraphError
from irgraph.graph import Graph, Node, Value
from irgraph.ops.evaluate import reinfer
from irgraph.ops.registry import get_op
from irgraph.types import TensorType

# Ops whose output is the input's bytes under another shape: the output is a view of the
# input's buffer (no copy, no new memory).
VIEW_OPS = frozenset({"reshape", "squeeze", "unsqueeze"})


# ---- static types ---------------------------------------------------------------------------
def bind_dims(graph: Graph, dims: dict | None = None) -> dict[str, int]:
    """The symbol bindings a plan is made for: ``dims`` plus 1 for every other input symbol."""
    if dims is not None and not isinstance(dims, dict):
        raise CompileError(f"plan_memory.dims must be a dict of symbol -> int, got {type(dims).__name__}")
    out = dict(dims or {})
    for k, d in out.items():
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 0:
            raise CompileError(f"plan_memory.dims: dimension {k!r} must be a non-negative int, got {d!r}")
    for v in graph.inputs:
        for d in v.type.shape or ():
            if isinstance(d, str):
                out.setdefault(d, 1)
    return {k: int(v) for k, v in out.items()}


def bind_types(graph: Graph, dims: dict | None = None) -> dict[Value, TensorType]:
    """The type of every input and top-level node output with symbols bound from ``dims``
    (unbound input symbols are 1). Values whose size still depends on data (NonZero …) keep a
    symbolic type."""
    dims = bind_dims(graph, dims)
    g = graph.copy()
    in_types = []
    for v in graph.inputs:
        t = v.type
        if t.shape is not None:
            t = TensorType([d if isinstance(d, int) else dims[d] for d in t.shape], t.dtype)
        in_types.append(t)
    try:
        reinfer(g, in_types)
    except IrgraphError as e:
        raise CompileError(f"the graph's shapes do not hold for dims {dims}: {e}") from e
    out: dict[Value, TensorType] = {}
    for v, cv in zip(graph.inputs, g.inputs):
        out[v] = cv.type
    for n, cn in zip(graph.nodes, g.nodes):
        for o, co in zip(n.outputs, cn.outputs):
            out[o] = co.type
    return out


def storage_bytes(t: TensorType) -> int | None:
    """Bytes a tensor takes in the arena (numel × the runtime's element size: sub-byte types
    take a byte per element, as numpy stores them); None when not static or not plannable."""
    if t is None or not t.is_static or t.dtype.kind == "s":
        return None
    return int(t.numel) * int(t.dtype.itemsize)


# ---- structure ------------------------------------------------------------------------------
class KernelGraph:
    """The top-level nodes of a graph as kernels: what each reads, who reads each value."""

    def __init__(self, graph: Graph, types: dict[Value, TensorType]):
        self.graph = graph
        self.nodes: list[Node] = list(graph.nodes)
        self.types = types
        n = len(self.nodes)
        self.index = {id(nd): i for i, nd in enumerate(self.nodes)}
        self.producer: dict[Value, int] = {}
        for i, nd in enumerate(self.nodes):
            for o in nd.outputs:
                self.producer[o] = i
        self.reads: list[list[Value]] = []
        self.readers: dict[Value, set] = {}
        self.deps: list[set] = [set() for _ in range(n)]
        self.succs: list[set] = [set() for _ in range(n)]
        for i, nd in enumerate(self.nodes):
            vals = [v for v in nd.inputs if v is not None]
            for sg in nd.subgraphs():
                vals.extend(sg.captured_values())
            seen: dict[int, Value] = {}
            for v in vals:
                seen.setdefault(id(v), v)
            reads = list(seen.values())
            self.reads.append(reads)
            for v in reads:
                self.readers.setdefault(v, set()).add(i)
                p = self.producer.get(v)
                if p is not None and p != i:
                    self.deps[i].add(p)
                    self.succs[p].add(i)
        self.graph_outputs = set(graph.outputs)
        # planned values: top-level node outputs with a static size
        self.nbytes: dict[Value, int] = {}
        self.dynamic: list[Value] = []
        for nd in self.nodes:
            for o in nd.outputs:
                b = storage_bytes(types.get(o))
                if b is None:
                    self.dynamic.append(o)
                else:
                    self.nbytes[o] = b
        self.alias_src: list[Value | None] = [self._view_source(nd) for nd in self.nodes]
        self.inplace: list[list[tuple[int, Value]]] = [self._inplace_pairs(nd) for nd in self.nodes]

    def numel(self, v: Value) -> int:
        return int(self.types[v].numel)

    def _view_source(self, nd: Node) -> Value | None:
        if nd.op not in VIEW_OPS or len(nd.outputs) != 1:
            return None
        src, out = nd.inputs[0], nd.outputs[0]
        if src is None or src not in self.nbytes or out not in self.nbytes:
            return None
        return src if self.nbytes[src] == self.nbytes[out] else None

    def _inplace_pairs(self, nd: Node) -> list[tuple[int, Value]]:
        """(output index, input) pairs where the kernel may write the output over the input:
        each output element depends only on the same element of that input."""
        if not is_elementwise_kernel(nd):
            return []
        pairs = []
        for k, o in enumerate(nd.outputs):
            if o not in self.nbytes:
                continue
            for v in nd.inputs:
                if (v is not None and v in self.nbytes and self.nbytes[v] == self.nbytes[o]
                        and self.numel(v) == self.numel(o)):
                    pairs.append((k, v))
        return pairs


def is_elementwise_kernel(nd: Node) -> bool:
    """An elementwise op, or a fused ``elementwise`` group of elementwise ops whose outputs all
    have the shape of its iteration space and no value inside larger than that (an output
    smaller than the space would be rewritten at every broadcast step, so writing it over one
    of its inputs in place would not be safe)."""
    if nd.op != "fused":
        return get_op(nd.op).kind == "elementwise" and len(nd.outputs) == 1
    if nd.attrs.get("group") != "elementwise":
        return False
    body = nd.attrs["body"]
    if not body.outputs or any(n.op == "fused" or get_op(n.op).kind != "elementwise" for n in body.nodes):
        return False
    space = body.outputs[0].type.shape
    if space is None or any(o.type.shape != space for o in body.outputs):
        return False
    return all(_broadcasts_into(o.type.shape, space) for n in body.nodes for o in n.outputs)


def _broadcasts_into(shape, space) -> bool:
    """Does ``shape`` broadcast to ``space`` without growing it (so it is no larger)?"""
    if shape is None or len(shape) > len(space):
        return False
    return all(d == 1 or d == s for d, s in zip(reversed(shape), reversed(space)))


# ---- buffers over an order ------------------------------------------------------------------
@dataclass
class Buffer:
    index: int
    nbytes: int
    first: int                     # step of the kernel that creates it
    last: int = -1                 # step of the last kernel reading any of its values
    values: list = field(default_factory=list)   # Values in creation order
    offset: int | None = None


@dataclass
class Decision:
    """What running kernel ``i`` next would do to memory."""
    node: int
    kinds: list                     # per output: ("new",) | ("view", src) | ("inplace", src) | ("none",)
    pending: dict                   # buffer -> members still awaited after this kernel (touched buffers)
    new_bytes: int                  # bytes of new buffers
    freed_bytes: int                # bytes freed after this kernel (new buffers nobody reads included)

    @property
    def net(self) -> int:
        return self.new_bytes - self.freed_bytes


class BufferSim:
    """Assigns kernel outputs to buffers as kernels are scheduled one by one.

    A buffer is awaited while any of its values still has an unscheduled reader or is a graph
    output; it is freed after the kernel that reads its last awaited value."""

    def __init__(self, kg: KernelGraph, inplace: bool = True, views: bool = True):
        self.kg = kg
        self.use_inplace = inplace
        self.use_views = views
        self.remaining: dict[Value, int] = {v: len(kg.readers.get(v, ())) for v in kg.nbytes}
        self.buf_of: dict[Value, int] = {}
        self.buffers: list[Buffer] = []
        self.pending: list[int] = []       # per buffer: members still awaited
        self.step = 0
        self.live_bytes = 0
        self.peak_live = 0
        self.order: list[int] = []
        self.inplace: dict[Value, Value] = {}
        self.views: dict[Value, Value] = {}

    def _awaited(self, o: Value) -> bool:
        return bool(self.kg.readers.get(o)) or o in self.kg.graph_outputs

    def decide(self, i: int) -> Decision:
        kg = self.kg
        pend: dict[int, int] = {}
        for v in kg.reads[i]:
            if v in self.buf_of and self.remaining[v] == 1 and v not in kg.graph_outputs:
                b = self.buf_of[v]
                pend[b] = pend.get(b, self.pending[b]) - 1
        free_now = {b for b, c in pend.items() if c == 0}   # may be overwritten in place
        kinds = []
        new_bytes = freed = 0
        for k, o in enumerate(kg.nodes[i].outputs):
            if o not in kg.nbytes:
                kinds.append(("none",))
                continue
            kind = None
            src = kg.alias_src[i] if self.use_views else None
            if src is not None and src in self.buf_of:
                kind = ("view", src)
            elif self.use_inplace:
                for kk, v in kg.inplace[i]:
                    if kk == k and self.buf_of.get(v) in free_now:
                        kind = ("inplace", v)
                        free_now.discard(self.buf_of[v])
                        break
            if kind is None:
                kind = ("new",)
                new_bytes += kg.nbytes[o]
                if not self._awaited(o):
                    freed += kg.nbytes[o]        # written and never read: freed right away
            else:
                b = self.buf_of[kind[1]]
                pend[b] = pend.get(b, self.pending[b]) + (1 if self._awaited(o) else 0)
            kinds.append(kind)
        freed += sum(self.buffers[b].nbytes for b, c in pend.items() if c == 0)
        return Decision(i, kinds, pend, new_bytes, freed)

    def commit(self, d: Decision) -> None:
        kg, t = self.kg, self.step
        i = d.node
        for v in kg.reads[i]:
            if v in self.remaining:
                self.remaining[v] -= 1
        self.live_bytes += d.new_bytes
        self.peak_live = max(self.peak_live, self.live_bytes)
        for o, kind in zip(kg.nodes[i].outputs, d.kinds):
            if kind[0] == "none":
                continue
            if kind[0] == "new":
                b = len(self.buffers)
                self.buffers.append(Buffer(b, kg.nbytes[o], t))
                self.pending.append(1 if self._awaited(o) else 0)
                if not self._awaited(o):
                    self.buffers[b].last = t
            else:
                b = self.buf_of[kind[1]]
                (self.views if kind[0] == "view" else self.inplace)[o] = kind[1]
            self.buf_of[o] = b
            self.buffers[b].values.append(o)
        for b, c in d.pending.items():
            self.pending[b] = c
            if c == 0:
                self.buffers[b].last = t
        self.live_bytes -= d.freed_bytes
        self.order.append(i)
        self.step += 1

    def finish(self) -> list[Buffer]:
        """Close the schedule: buffers holding graph outputs live until the last kernel."""
        end = max(self.step - 1, 0)
        for b in self.buffers:
            if b.last < 0:
                if not any(v in self.kg.graph_outputs for v in b.values):
                    raise CompileError("memory planning: a buffer is still awaited after the last kernel "
                                       "(the order does not cover the graph)")
                b.last = end
        return self.buffers


def assign_buffers(kg: KernelGraph, order: list[int], inplace: bool = True,
                   views: bool = True) -> BufferSim:
    """Run the buffer simulation over a whole kernel order."""
    sim = BufferSim(kg, inplace=inplace, views=views)
    for i in order:
        sim.commit(sim.decide(i))
    sim.finish()
    return sim


def lower_bound(buffers: list[Buffer], steps: int) -> int:
    """The largest sum of bytes of buffers live at the same kernel step: no offset assignment
    for this order and this sharing can use less."""
    delta = [0] * (steps + 2)
    for b in buffers:
        delta[b.first] += b.nbytes
        delta[b.last + 1] -= b.nbytes
    best = cur = 0
    for d in delta:
        cur += d
        best = max(best, cur)
    return best
