"""Memory planning: kernel order, liveness, in-place reuse and one arena with static offsets.

    graph, _ = run_passes(graph, ["plan_memory"], PassContext(options={"plan_memory.dims": {"N": 1}}))
    plan = graph.meta["memory_plan"]          # a plain dict; see memory_plan.py for its fields
    plan["peak_bytes"], plan["lower_bound_bytes"], plan["naive_bytes"]

Each top-level node is one kernel (after fusion, a ``fused`` group). The planner

1. binds the graph's symbolic dims (``plan_memory.dims``; every other input symbol is 1) and
   re-infers the static size of every intermediate (memory_liveness.bind_types);
2. picks the kernel order: the graph's own and a few greedy list schedules that prefer kernels
   freeing memory (memory_order.py), keeping the one with the smallest arena; the graph's
   nodes are put in that order;
3. walks the order assigning values to buffers: views (reshape/squeeze/unsqueeze) share their
   input's buffer, an elementwise kernel (or ``elementwise`` fused group) overwrites an input
   that dies there and has the same size, everything else gets a new buffer
   (memory_liveness.BufferSim);
4. places buffers in one arena, best fit, largest first, 64-byte aligned (memory_offsets.py);
5. records the plan in ``graph.meta["memory_plan"]`` (memory_plan.py documents the format and
   ``validate_plan`` checks one from scratch; memory_arena.run_with_arena runs the graph over it).

Graph inputs and constants are not in the arena; graph outputs are, and live to the end (the
caller copies them out after the last kernel), so one arena holds everything a call writes.
Values whose size depends on data (NonZero …) cannot be planned statically: they are listed
under ``dynamic`` and allocated at run time.

Options: ``plan_memory.dims`` (dict, symbol -> int), ``plan_memory.alignment`` (64),
``plan_memory.reorder`` (True: choose the kernel order; False: keep the graph's),
``plan_memory.inplace`` (True) and ``plan_memory.views`` (True) to turn sharing off.
"""
from __future__ import annotations

from irgraph.errors import CompileError
from irgraph.graph import Graph

from .memory_liveness import KernelGraph, assign_buffers, bind_dims, bind_types, lower_bound
from .memory_offsets import ALIGNMENT, place
from .memory_order import candidate_orders, graph_order
from .memory_plan import PLAN_VERSION, value_intervals
from .registry import register_pass


def build_plan(graph: Graph, dims: dict | None = None, *, alignment: int = ALIGNMENT,
               reorder: bool = True, inplace: bool = True, views: bool = True) -> dict:
    """The memory plan of ``graph`` for the symbol bindings ``dims`` (see memory_plan.py for the
    format). The graph is not modified; ``plan["order"]`` names its kernels in planned order."""
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise CompileError(f"plan_memory.alignment must be a power of two, got {alignment!r}")
    dims = bind_dims(graph, dims)
    types = bind_types(graph, dims)
    kg = KernelGraph(graph, types)
    names = [o.name for o in kg.nbytes]
    if len(set(names)) != len(names):
        dup = sorted({x for x in names if names.count(x) > 1})[:5]
        raise CompileError(f"memory planning needs unique value names; repeated: {dup}")

    orders = candidate_orders(kg, inplace, views) if reorder else {"graph": graph_order(kg)}
    # price every candidate order by its lower bound, then place buffers for the promising
    # ones: an arena is never smaller than its order's lower bound, so the rest cannot win
    cands = []
    for k, (strategy, order) in enumerate(orders.items()):
        sim = assign_buffers(kg, order, inplace, views)
        cands.append((lower_bound(sim.buffers, len(order)), k, strategy, order, sim))
    cands.sort(key=lambda c: c[:2])
    best = None
    for lb, _, strategy, order, sim in cands:
        if best is not None and lb >= best[0]:
            break
        offsets, arena, placement = place(sim.buffers, alignment)
        if best is None or arena < best[0]:
            best = (arena, lb, strategy, placement, order, sim, offsets)
    arena, lb, strategy, placement, order, sim, offsets = best
    buffers = sim.buffers
    for b, off in zip(buffers, offsets):
        b.offset = off
    nodes = [kg.nodes[i] for i in order]
    iv = value_intervals(graph, nodes)

    values = {}
    for b in buffers:
        for v in b.values:
            t = types[v]
            values[v.name] = {"offset": b.offset, "bytes": kg.nbytes[v], "shape": list(t.shape),
                              "dtype": v.dtype.name, "buffer": b.index,
                              "first": iv[v][0], "last": iv[v][1]}
    return {
        "version": PLAN_VERSION,
        "alignment": alignment,
        "dims": dims,
        "inputs": {v.name: {"shape": None if types[v].shape is None else list(types[v].shape),
                            "dtype": v.dtype.name} for v in graph.inputs},
        "order": [n.name for n in nodes],
        "order_strategy": strategy,
        "placement": placement,
        "arena_bytes": arena,
        "peak_bytes": arena,
        "naive_bytes": sum(kg.nbytes.values()),
        "lower_bound_bytes": lb,
        "values": values,
        "buffers": [{"offset": b.offset, "bytes": b.nbytes, "first": b.first, "last": b.last,
                     "values": [v.name for v in b.values]} for b in buffers],
        "inplace": {o.name: s.name for o, s in sim.inplace.items()},
        "views": {o.name: s.name for o, s in sim.views.items()},
        "dynamic": [v.name for v in kg.dynamic],
        "outputs": [v.name for v in graph.outputs if v.name in values],
    }


@register_pass("plan_memory", ensures={"memory_plan"},
               description="kernel order, liveness, in-place reuse, one arena with static offsets")
def plan_memory(graph: Graph, ctx) -> bool:
    plan = build_plan(graph, ctx.option("plan_memory.dims", None),
                      alignment=ctx.option("plan_memory.alignment", ALIGNMENT),
                      reorder=ctx.option("plan_memory.reorder", True),
                      inplace=ctx.option("plan_memory.inplace", True),
                      views=ctx.option("plan_memory.views", True))
    by_name = {n.name: n for n in graph.nodes}
    new_nodes = [by_name[x] for x in plan["order"]]
    changed = new_nodes != graph.nodes or graph.meta.get("memory_plan") != plan
    graph.nodes = new_nodes
    graph.meta["memory_plan"] = plan
    return changed
