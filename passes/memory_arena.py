"""Running a graph over its memory plan: every planned value lives in one numpy byte arena.

    outputs = run_with_arena(graph, feeds)            # uses graph.meta["memory_plan"]

Kernels run in the plan's order with the interpreter's reference implementations; each result
is copied into its slot of one ``uint8`` arena (a view with the value's dtype and shape) and
later kernels read it from there. A plan that lets two live values overlap therefore corrupts
results. Freed buffers are filled with a poison pattern (NaN for floats), so reading a value
after its planned last use corrupts results too. With ``check=True`` (the default) every read is
also compared with the value as it was written and checked against the plan's lifetimes, so
the first clobbered value is named.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from irgraph.dtype import DType
from irgraph.errors import ExecutionError, InputError, IrgraphError
from irgraph.graph import Graph
from irgraph.interpreter import _Env, order_feeds, run_graph
from irgraph.ops.registry import get_op

POISON = 0xFF          # all-ones bytes: NaN in every float format, -1 in signed ints


def run_with_arena(graph: Graph, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray],
                   plan: dict | None = None, *, check: bool = True) -> list[np.ndarray]:
    """Run ``graph`` with every planned intermediate stored in one arena; returns the outputs
    (copied out of the arena). Input shapes must match the dims the plan was made for."""
    plan = graph.meta.get("memory_plan") if plan is None else plan
    if not isinstance(plan, dict):
        raise ExecutionError("the graph has no memory plan; run the plan_memory pass first")
    feeds = _feeds(graph, inputs, plan)
    arena = np.full(int(plan["arena_bytes"]), POISON, np.uint8)
    slots = plan["values"]
    by_name = {n.name: n for n in graph.nodes}
    order = [by_name[x] for x in plan["order"]]
    frees: dict[int, list[dict]] = {}
    end = len(order) - 1
    outputs = set(plan.get("outputs", []))
    for b in plan["buffers"]:
        if b["last"] < end or not outputs.intersection(b["values"]):
            frees.setdefault(b["last"], []).append(b)

    env = _Env()
    for v, a in zip(graph.inputs, feeds):
        env.vals[v] = a
    written: dict[str, np.ndarray] = {}      # value name -> its bytes as written (check=True)
    freed: dict[str, int] = {}               # value name -> step its buffer was freed

    def run_sub(sub: Graph, sub_inputs):
        return run_graph(sub, sub_inputs, _parent=env)

    with np.errstate(all="ignore"):
        for t, node in enumerate(order):
            opdef = get_op(node.op)
            args = [None if v is None else env.get(v) for v in node.inputs]
            if check:
                for v in node.inputs:
                    if v is None:
                        continue
                    if v.name in freed:
                        raise ExecutionError(f"arena value {v.name!r} is read at step {t} after the plan "
                                             f"freed its buffer at step {freed[v.name]}",
                                             node=node.name, op=node.op)
                    if v.name in written:
                        _check_intact(v.name, env.get(v), written[v.name], node, t)
            try:
                outs = opdef.run_reference(args, node.attrs, run_sub if opdef.runs_subgraphs else None)
            except IrgraphError as e:
                raise e.with_context(node=node.name, op=node.op)
            except Exception as e:
                raise ExecutionError(f"failed while running: {type(e).__name__}: {e}",
                                     node=node.name, op=node.op) from e
            for v, a in zip(node.outputs, outs):
                a = np.asarray(a)
                rec = slots.get(v.name)
                if rec is None:                        # dynamic size: allocated on its own
                    env.vals[v] = a
                    continue
                view = _slot(arena, rec)
                if a.shape != view.shape or a.dtype != view.dtype:
                    raise ExecutionError(f"output {v.name!r} is {a.dtype}{list(a.shape)}, its slot "
                                         f"{view.dtype}{list(view.shape)}", node=node.name, op=node.op)
                if check:
                    written[v.name] = a.copy()
                np.copyto(view, a)
                env.vals[v] = view
            for b in frees.get(t, ()):
                arena[b["offset"]:b["offset"] + b["bytes"]] = POISON
                for name in b["values"]:
                    written.pop(name, None)
                    freed[name] = t
    return [np.array(env.get(v), copy=True) for v in graph.outputs]


def _slot(arena: np.ndarray, rec: dict) -> np.ndarray:
    dt = DType.from_name(rec["dtype"]).np
    off, nb = rec["offset"], rec["bytes"]
    return arena[off:off + nb].view(dt).reshape(rec["shape"])


def _check_intact(name: str, got: np.ndarray, want: np.ndarray, node, t: int) -> None:
    if got.tobytes() != want.tobytes():
        raise ExecutionError(f"arena value {name!r} was overwritten before kernel {node.name!r} "
                             f"(step {t}) read it: the memory plan overlaps live buffers",
                             node=node.name, op=node.op)


def _feeds(graph: Graph, inputs, plan: dict) -> list[np.ndarray]:
    feeds = order_feeds(graph, inputs, error=InputError)
    out = []
    for v, a in zip(graph.inputs, feeds):
        a = np.asarray(a, dtype=v.dtype.np) if v.dtype.kind != "s" else np.asarray(a)
        want = plan.get("inputs", {}).get(v.name, {}).get("shape")
        if want is not None and list(a.shape) != list(want):
            raise InputError(f"shape {list(a.shape)} differs from the one the memory plan was made "
                             f"for {want} (dims {plan.get('dims')})", input=v.name, expected=want,
                             actual=list(a.shape))
        out.append(a)
    return out
