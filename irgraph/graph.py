"""The dataflow IR: Values produced once (SSA), Nodes naming a registry op, and Graphs holding both.

Subgraphs (the bodies of ``if``/``loop``/``scan``) are Graphs stored in a node's attributes;
they may read Values of enclosing graphs directly, as ONNX allows.
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from .dtype import DType
from .types import TensorType


class Value:
    """A tensor produced exactly once: by a node, as a graph input, or as a constant."""

    __slots__ = ("name", "type", "producer", "const", "graph", "meta")

    def __init__(self, name: str, type: TensorType, producer: "Node | None" = None,
                 const: np.ndarray | None = None, graph: "Graph | None" = None):
        self.name = name
        self.type = type
        self.producer = producer
        self.const = const
        self.graph = graph
        self.meta: dict = {}

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type!r}"


class Node:
    """One operation: ``outputs = op(inputs, **attrs)``. Missing optional inputs are ``None``."""

    __slots__ = ("op", "inputs", "outputs", "attrs", "name", "meta")

    def __init__(self, op: str, inputs: Sequence[Value | None], outputs: Sequence[Value],
                 attrs: dict | None = None, name: str = "", meta: dict | None = None):
        self.op = op
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.name = name
        # meta holds provenance, e.g. {"source": ["onnx node names"], "onnx_op": "Gemm", "opset": 13}
        self.meta = dict(meta or {})
        for o in self.outputs:
            o.producer = self

    def subgraphs(self) -> list["Graph"]:
        out = []
        for v in self.attrs.values():
            if isinstance(v, Graph):
                out.append(v)
            elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Graph) for x in v):
                out.extend(v)
        return out

    def __repr__(self) -> str:
        return f"Node({self.op}, {self.name!r})"


class Graph:
    """A list of nodes in topological order, with named inputs, outputs and constants."""

    def __init__(self, name: str = "main", parent: "Graph | None" = None):
        self.name = name
        self.parent = parent
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, Value] = {}
        self.meta: dict = {}
        self._names: set[str] = set()        # value names (shared with enclosing graphs)
        self._node_names: set[str] = set()   # node names (their own namespace)
        self._counter = itertools.count()

    # ---- naming ------------------------------------------------------------------------
    def _taken(self, name: str) -> bool:
        g = self
        while g is not None:
            if name in g._names:
                return True
            g = g.parent
        return False

    def unique_name(self, base: str) -> str:
        base = base or "v"
        if not self._taken(base):
            self._names.add(base)
            return base
        while True:
            cand = f"{base}_{next(self._counter)}"
            if not self._taken(cand):
                self._names.add(cand)
                return cand

    def claim_name(self, name: str) -> None:
        self._names.add(name)

    def unique_node_name(self, base: str) -> str:
        base = base or "node"
        name = base
        while name in self._node_names:
            name = f"{base}_{next(self._counter)}"
        self._node_names.add(name)
        return name

    # ---- building ----------------------------------------------------------------------
    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self.unique_name(name), type, graph=self)
        self.inputs.append(v)
        return v

    def add_const(self, array, name: str = "const", dtype: DType | None = None) -> Value:
        arr = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype.np)
        if arr.dtype.kind in ("U", "S"):
            arr = arr.astype(object)
        v = Value(self.unique_name(name), TensorType.of(arr), const=arr, graph=self)
        self.constants[v.name] = v
        return v

    def op(self, op: str, inputs: Sequence[Value | None], attrs: dict | None = None, *,
           name: str | None = None, num_outputs: int | None = None,
           output_names: Sequence[str] | None = None, meta: dict | None = None,
           fold_known: bool = True):
        """Append a node of registry op ``op``; its output types come from the op's inference.

        Returns the output Value, or a tuple of Values when the op has several outputs. Small
        outputs computable from known inputs get ``Value.meta["value"]`` (see ops/evaluate.py).
        """
        from .ops.registry import get_op
        opdef = get_op(op)
        attrs = opdef.normalize_attrs(attrs or {}, node=name)
        inputs = list(inputs)
        while inputs and inputs[-1] is None:
            inputs.pop()
        types = opdef.infer_types(inputs, attrs, node=name, num_outputs=num_outputs)
        node_name = self.unique_node_name(name or op)
        outs = []
        for i, t in enumerate(types):
            base = (output_names[i] if output_names and i < len(output_names) and output_names[i]
                    else f"{node_name}_{i}" if len(types) > 1 else node_name)
            outs.append(Value(self.unique_name(base), t, graph=self))
        node = Node(op, inputs, outs, attrs, node_name, meta)
        self.nodes.append(node)
        if fold_known:
            from .ops.evaluate import propagate_values
            propagate_values(node)
        if len(outs) == 1 and (num_outputs is None or num_outputs == 1) and not opdef.variadic_outputs:
            return outs[0]
        return tuple(outs)

    def set_outputs(self, outputs: Iterable[Value]) -> None:
        self.outputs = list(outputs)

    # ---- queries -----------------------------------------------------------------------
    def all_values(self) -> list[Value]:
        vals = list(self.inputs) + list(self.constants.values())
        for n in self.nodes:
            vals.extend(n.outputs)
        return vals

    def users(self) -> dict[Value, list[Node]]:
        """Map each value to the nodes (of this graph) reading it, subgraph captures included."""
        out: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    out.setdefault(v, []).append(n)
            for sg in n.subgraphs():
                for v in sg.captured_values():
                    out.setdefault(v, []).append(n)
        return out

    def captured_values(self) -> list[Value]:
        """Values of enclosing graphs that this graph (or its subgraphs) reads."""
        own = set(self.all_values())
        seen: dict[int, Value] = {}

        def visit(g: Graph):
            for n in g.nodes:
                for v in n.inputs:
                    if v is not None and v not in own and v.graph is not None and v.graph is not g:
                        if not _is_inside(v.graph, self):
                            seen.setdefault(id(v), v)
                for sg in n.subgraphs():
                    visit(sg)
            for v in g.outputs:
                if v not in own and not _is_inside(v.graph, self):
                    seen.setdefault(id(v), v)
        visit(self)
        return list(seen.values())

    def op_histogram(self, recursive: bool = True) -> Counter:
        c = Counter()
        for n in self.nodes:
            c[n.op] += 1
            if recursive:
                for sg in n.subgraphs():
                    c.update(sg.op_histogram())
        return c

    def parameter_count(self) -> int:
        return sum(int(v.const.size) for v in self.constants.values() if v.dtype.is_float)

    # ---- editing (used by passes) ----------------------------------------------------
    def replace_uses(self, old: Value, new: Value) -> int:
        """Make every reader of ``old`` (nodes here and in subgraphs, and graph outputs) read
        ``new``; returns the number of uses changed."""
        count = 0

        def visit(g: "Graph"):
            nonlocal count
            for n in g.nodes:
                for i, v in enumerate(n.inputs):
                    if v is old:
                        n.inputs[i] = new
                        count += 1
                for sg in n.subgraphs():
                    visit(sg)
            for i, v in enumerate(g.outputs):
                if v is old:
                    g.outputs[i] = new
                    count += 1
        visit(self)
        return count

    def remove_unused(self) -> int:
        """Drop nodes whose outputs nobody reads (and unused constants); returns how many nodes."""
        live: set = {id(v) for v in self.outputs}
        keep = []
        for n in reversed(self.nodes):
            needed = any(id(o) in live for o in n.outputs)
            if needed:
                keep.append(n)
                for v in n.inputs:
                    if v is not None:
                        live.add(id(v))
                for sg in n.subgraphs():
                    for v in sg.captured_values():
                        live.add(id(v))
        removed = len(self.nodes) - len(keep)
        keep.reverse()
        self.nodes = keep
        for name in [k for k, v in self.constants.items() if id(v) not in live]:
            del self.constants[name]
        return removed

    def toposort(self) -> None:
        """Reorder nodes so every value is produced before it is read, keeping the current order
        wherever the dependencies allow (passes append new nodes at the end and call this)."""
        index = {id(n): i for i, n in enumerate(self.nodes)}
        producer = {}
        for n in self.nodes:
            for o in n.outputs:
                producer[id(o)] = n
        deps: dict[int, set] = {}
        users: dict[int, list] = {id(n): [] for n in self.nodes}
        for n in self.nodes:
            reads = [v for v in n.inputs if v is not None]
            for sg in n.subgraphs():
                reads.extend(sg.captured_values())
            d = {id(producer[id(v)]) for v in reads if id(v) in producer and producer[id(v)] is not n}
            deps[id(n)] = d
            for p in d:
                users[p].append(n)
        import heapq
        ready = [(index[id(n)], id(n), n) for n in self.nodes if not deps[id(n)]]
        heapq.heapify(ready)
        order = []
        while ready:
            _, _, n = heapq.heappop(ready)
            order.append(n)
            for u in users[id(n)]:
                d = deps[id(u)]
                d.discard(id(n))
                if not d:
                    heapq.heappush(ready, (index[id(u)], id(u), u))
        if len(order) != len(self.nodes):
            from .errors import VerifyError
            stuck = [n.name for n in self.nodes if deps[id(n)]][:5]
            raise VerifyError(f"graph has a cycle through nodes {stuck}")
        self.nodes = order

    def copy(self, parent: "Graph | None" = None, _map: dict | None = None) -> "Graph":
        """A structural copy: new Graph, Nodes and Values; constant arrays are shared."""
        vmap: dict = {} if _map is None else _map
        g = Graph(self.name, parent=parent)
        g.meta = dict(self.meta)
        g._names = set(self._names)
        g._node_names = set(self._node_names)
        for v in self.inputs:
            nv = Value(v.name, v.type, graph=g)
            nv.meta = dict(v.meta)
            vmap[id(v)] = nv
            g.inputs.append(nv)
        for k, v in self.constants.items():
            nv = Value(v.name, v.type, const=v.const, graph=g)
            nv.meta = dict(v.meta)
            vmap[id(v)] = nv
            g.constants[k] = nv
        for n in self.nodes:
            outs = []
            for o in n.outputs:
                no = Value(o.name, o.type, graph=g)
                no.meta = dict(o.meta)
                vmap[id(o)] = no
                outs.append(no)
            attrs = {}
            for k, a in n.attrs.items():
                if isinstance(a, Graph):
                    attrs[k] = a.copy(parent=g, _map=vmap)
                elif isinstance(a, (list, tuple)) and a and all(isinstance(x, Graph) for x in a):
                    attrs[k] = type(a)(x.copy(parent=g, _map=vmap) for x in a)
                else:
                    attrs[k] = a
            ins = [None if v is None else vmap.get(id(v), v) for v in n.inputs]
            g.nodes.append(Node(n.op, ins, outs, attrs, n.name, n.meta))
        g.outputs = [vmap.get(id(v), v) for v in self.outputs]
        return g

    # ---- checks and views --------------------------------------------------------------
    def verify(self) -> None:
        from .verify import verify_graph
        verify_graph(self)

    def to_networkx(self):
        """A ``networkx.MultiDiGraph``: one vertex per node and per graph input/constant/output,
        one edge per value use (``value=name``); fused groups live in node attribute ``group``."""
        import networkx as nx
        G = nx.MultiDiGraph(name=self.name)
        for v in self.inputs:
            G.add_node(("input", v.name), kind="input", type=repr(v.type))
        for v in self.constants.values():
            G.add_node(("const", v.name), kind="const", type=repr(v.type))
        src: dict[Value, tuple] = {v: ("input", v.name) for v in self.inputs}
        src.update({v: ("const", v.name) for v in self.constants.values()})
        for n in self.nodes:
            key = ("node", n.name)
            G.add_node(key, kind="node", op=n.op, group=n.meta.get("group"))
            for v in n.inputs:
                if v is not None and v in src:
                    G.add_edge(src[v], key, value=v.name)
            for o in n.outputs:
                src[o] = key
        for v in self.outputs:
            G.add_node(("output", v.name), kind="output", type=repr(v.type))
            if v in src:
                G.add_edge(src[v], ("output", v.name), value=v.name)
        return G

    def __str__(self) -> str:
        from .printer import format_graph
        return format_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"


def _is_inside(g: Graph | None, outer: Graph) -> bool:
    while g is not None:
        if g is outer:
            return True
        g = g.parent
    return False
