"""The IR's invariants, checked: SSA (each value produced once, defined before use), registry
ops with valid arity, acyclicity, and output types that agree with each op's inference."""
from __future__ import annotations

from .errors import VerifyError, IrgraphError
from .graph import Graph, Value
from .ops.registry import get_op, has_op


def verify_graph(graph: Graph, _outer: frozenset = frozenset()) -> None:
    defined: set[int] = set(_outer)
    for v in graph.inputs:
        _define(defined, v, "graph input")
    for v in graph.constants.values():
        if v.const is None:
            raise VerifyError(f"constant {v.name!r} has no value")
        _define(defined, v, "constant")
    names: set[str] = set()
    for n in graph.nodes:
        if not has_op(n.op):
            raise VerifyError(f"op {n.op!r} is not in the registry", node=n.name)
        opdef = get_op(n.op)
        for i, v in enumerate(n.inputs):
            if v is None:
                continue
            if id(v) not in defined:
                # a use before its definition means a cycle or a value from nowhere
                raise VerifyError(f"input {i} ({v.name!r}) is used before it is defined "
                                  "(dangling value or cycle)", node=n.name, op=n.op)
        if n.name in names:
            raise VerifyError(f"node name {n.name!r} is used twice", node=n.name, op=n.op)
        names.add(n.name)
        try:
            types = opdef.infer_types(n.inputs, n.attrs, node=n.name, num_outputs=len(n.outputs))
        except IrgraphError as e:
            raise VerifyError(f"inference fails: {e}", node=n.name, op=n.op) from e
        if len(types) != len(n.outputs):
            raise VerifyError("wrong number of outputs", node=n.name, op=n.op,
                              expected=len(types), actual=len(n.outputs))
        for v, t in zip(n.outputs, types):
            if v.producer is not n:
                raise VerifyError(f"output {v.name!r} does not point back to its producer", node=n.name)
            if v.dtype is not t.dtype or (t.rank is not None and v.type.rank is not None and v.type.rank != t.rank):
                raise VerifyError(f"output {v.name!r} has type {v.type!r}, inference gives {t!r}",
                                  node=n.name, op=n.op, expected=t, actual=v.type)
            if t.shape is not None and v.type.shape is not None and any(
                    isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(v.type.shape, t.shape)):
                raise VerifyError(f"output {v.name!r} has shape {v.type.shape}, inference gives {t.shape}",
                                  node=n.name, op=n.op, expected=t, actual=v.type)
            _define(defined, v, "node output")
        for sg in n.subgraphs():
            verify_graph(sg, frozenset(defined))
    for v in graph.outputs:
        if id(v) not in defined:
            raise VerifyError(f"graph output {v.name!r} is never defined")


def _define(defined: set, v: Value, what: str) -> None:
    if id(v) in defined:
        raise VerifyError(f"{what} {v.name!r} is defined twice (SSA violation)")
    defined.add(id(v))
