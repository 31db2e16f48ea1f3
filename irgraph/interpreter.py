"""The numpy reference interpreter: runs any Graph node by node with each op's reference.

It is the oracle every pass and backend is tested against, so it also checks, after every
node, that the arrays produced have the dtype and static dims the op's inference promised.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .dtype import DType
from .errors import ExecutionError, IrgraphError
from .graph import Graph, Value
from .ops.registry import get_op
from .types import is_static_dim


class _Env:
    """Values computed so far in one graph run; falls back to the enclosing graph's run."""

    __slots__ = ("vals", "parent")

    def __init__(self, parent: "_Env | None" = None):
        self.vals: dict[Value, np.ndarray] = {}
        self.parent = parent

    def get(self, v: Value) -> np.ndarray:
        e = self
        while e is not None:
            r = e.vals.get(v)
            if r is not None:
                return r
            e = e.parent
        if v.const is not None:
            return v.const
        raise KeyError(v.name)


def order_feeds(graph: Graph, inputs, error=ExecutionError) -> list:
    """The graph's inputs in order, from a sequence (by position) or a mapping (by input name)."""
    if isinstance(inputs, Mapping):
        missing = [v.name for v in graph.inputs if v.name not in inputs]
        if missing:
            raise error(f"missing inputs {missing} for graph {graph.name!r}")
        return [inputs[v.name] for v in graph.inputs]
    feeds = list(inputs)
    if len(feeds) != len(graph.inputs):
        raise error(f"graph {graph.name!r} takes {len(graph.inputs)} inputs",
                    expected=len(graph.inputs), actual=len(feeds))
    return feeds


def run_graph(graph: Graph, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray], *,
              check_types: bool = True, _parent: _Env | None = None) -> list[np.ndarray]:
    """Run ``graph`` on ``inputs`` (by position or by input name); returns its outputs."""
    env = _Env(_parent)
    feeds = order_feeds(graph, inputs)
    for v, a in zip(graph.inputs, feeds):
        env.vals[v] = a if isinstance(a, np.ndarray) and a.dtype != object or v.dtype.kind == "s" else np.asarray(a, dtype=v.dtype.np)

    def run_sub(sub: Graph, sub_inputs):
        return run_graph(sub, sub_inputs, check_types=check_types, _parent=env)

    with np.errstate(all="ignore"):
        for node in graph.nodes:
            opdef = get_op(node.op)
            args = [None if v is None else env.get(v) for v in node.inputs]
            try:
                outs = opdef.run_reference(args, node.attrs, run_sub if opdef.runs_subgraphs else None)
            except IrgraphError as e:
                raise e.with_context(node=node.name, op=node.op)
            except Exception as e:  # a reference crashing on valid-typed inputs is our bug or bad data
                raise ExecutionError(f"failed while running: {type(e).__name__}: {e}",
                                     node=node.name, op=node.op) from e
            if len(outs) < len(node.outputs):
                raise ExecutionError(f"reference returned {len(outs)} outputs",
                                     node=node.name, op=node.op, expected=len(node.outputs), actual=len(outs))
            for v, a in zip(node.outputs, outs):
                a = np.asarray(a) if not isinstance(a, np.ndarray) else a
                if check_types:
                    _check(node, v, a)
                env.vals[v] = a
    return [env.get(v) for v in graph.outputs]


def _check(node, v: Value, a: np.ndarray) -> None:
    t = v.type
    got = DType.from_numpy(a.dtype)
    if got is not t.dtype:
        raise ExecutionError(f"output {v.name!r} has dtype {got.name} but inference said {t.dtype.name}",
                             node=node.name, op=node.op, expected=t.dtype.name, actual=got.name)
    if t.shape is None:
        return
    if a.ndim != len(t.shape) or any(is_static_dim(d) and d != s for d, s in zip(t.shape, a.shape)):
        raise ExecutionError(f"output {v.name!r} has shape {a.shape} but inference said {t.shape}",
                             node=node.name, op=node.op, expected=t.shape, actual=a.shape)
