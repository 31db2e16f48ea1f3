"""Common subexpression elimination: one node per distinct computation, one constant per value.

Two nodes are the same computation when they run the same op on the same input Values with
equal attributes: numpy arrays compare by dtype, shape and bytes; floats by their bits (so
``0.0`` and ``-0.0`` differ and NaN equals itself); subgraphs by identity (two bodies are never
compared structurally). For commutative binary ops (add, mul, maximum, minimum, equal, the
logical and bitwise and/or/xor) the order of the two inputs does not matter: IEEE addition
and multiplication commute exactly. Random ops are never merged.

Constants with the same dtype, shape and bytes are merged first (hashed by their bytes), so
nodes reading two copies of one weight become mergeable too. The kept node's provenance
(``meta["source"]``) gains the names of the nodes merged into it.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

from irgraph.dtype import DType
from irgraph.graph import Graph, Node, Value
from irgraph.ops.registry import get_op

from .registry import register_pass

COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum", "equal", "logical_and", "logical_or",
                         "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor"})


@register_pass("eliminate_common_subexpressions",
               description="merge identical nodes (same op, inputs, attributes) and identical constants")
def eliminate_common_subexpressions(graph: Graph, ctx) -> bool:
    repl: dict[int, Value] = {}
    changed = _cse_graph(graph, repl)
    if repl:
        _remap(graph, repl)
    return changed


def _cse_graph(graph: Graph, repl: dict) -> bool:
    changed = _merge_constants(graph, repl)
    seen: dict = {}
    keep = []
    for n in graph.nodes:
        n.inputs = [None if v is None else repl.get(id(v), v) for v in n.inputs]
        for sg in n.subgraphs():
            changed |= _cse_graph(sg, repl)
        key = _node_key(n)
        if key is not None:
            first = seen.get(key)
            if first is not None and len(first.outputs) == len(n.outputs) and all(
                    a.type.dtype is b.type.dtype for a, b in zip(first.outputs, n.outputs)):
                for a, b in zip(n.outputs, first.outputs):
                    repl[id(a)] = b
                    _keep_better_type(b, a)
                src = first.meta.setdefault("source", [first.name])
                for s in n.meta.get("source", [n.name]):
                    if s not in src:
                        src.append(s)
                changed = True
                continue
            seen[key] = n
        keep.append(n)
    graph.nodes = keep
    return changed


def _keep_better_type(kept: Value, dropped: Value) -> None:
    """Both types describe one tensor: keep whatever the dropped value's type knew more."""
    from .simplify_algebra import refine
    kept.type = refine(kept.type, dropped.type)


def _merge_constants(graph: Graph, repl: dict) -> bool:
    by_key: dict = {}
    changed = False
    for name, v in list(graph.constants.items()):
        a = v.const
        if a.dtype == object:
            key = ("object", a.shape, tuple(str(x) for x in a.reshape(-1).tolist()))
        else:
            data = _raw(a)
            key = (v.dtype.name, a.shape, hashlib.blake2b(data, digest_size=16).digest())
        group = by_key.setdefault(key, [])
        for other in group:
            if _same_array(other.const, a):
                repl[id(v)] = other
                del graph.constants[name]
                changed = True
                break
        else:
            group.append(v)
    return changed


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return a.reshape(-1).tolist() == b.reshape(-1).tolist()
    return bool(np.array_equal(_raw(a), _raw(b)))


def _raw(a: np.ndarray) -> np.ndarray:
    """The array's bytes as a uint8 vector (a view when the array is contiguous): compares
    bit patterns, so -0.0 differs from 0.0 and a NaN equals the same NaN."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _attr_key(v):
    if isinstance(v, Graph):
        return ("graph", id(v))
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            return ("array", "object", v.shape, tuple(str(x) for x in v.reshape(-1).tolist()))
        return ("array", str(v.dtype), v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, float):
        return ("float", struct.pack("<d", v))
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, DType):
        return ("dtype", v.name)
    if isinstance(v, (list, tuple)):
        return (type(v).__name__,) + tuple(_attr_key(x) for x in v)
    if isinstance(v, dict):
        return ("dict",) + tuple(sorted((k, _attr_key(x)) for k, x in v.items()))
    if v is None or isinstance(v, (str, bytes)):
        return (type(v).__name__, v)
    return ("object", id(v))  # anything else: only the very same object is equal


def _node_key(n: Node):
    if get_op(n.op).random:
        return None
    ins = [None if v is None else id(v) for v in n.inputs]
    if n.op in COMMUTATIVE and len(ins) == 2 and None not in ins:
        ins.sort()
    attrs = tuple(sorted((k, _attr_key(v)) for k, v in n.attrs.items()))
    return (n.op, tuple(ins), attrs, len(n.outputs))


def _remap(graph: Graph, repl: dict) -> None:
    """Point every remaining reader (nodes, subgraph captures, graph outputs) at the kept values."""
    for n in graph.nodes:
        n.inputs = [None if v is None else repl.get(id(v), v) for v in n.inputs]
        for sg in n.subgraphs():
            _remap(sg, repl)
    graph.outputs = [repl.get(id(v), v) for v in graph.outputs]
