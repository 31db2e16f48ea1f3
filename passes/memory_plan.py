"""The memory plan as data (a plain JSON-serializable dict) and its validator.

A plan is what backends read to lay out one arena (``graph.meta["memory_plan"]``)::

    {"version": 1, "alignment": 64,
     "dims": {"N": 1, "S": 128},                 # the symbol bindings the sizes are for
     "inputs": {"x": {"shape": [1, 3, 224, 224], "dtype": "float32"}},
     "order": ["conv_1", ...],                   # kernel order = the graph's node order
     "order_strategy": "graph", "placement": "size",   # which heuristics won (for reports)
     "arena_bytes": 6422528, "peak_bytes": 6422528,
     "naive_bytes": 34975552, "lower_bound_bytes": 6422528,
     "values": {"conv_2": {"offset": 0, "bytes": 3211264, "shape": [1, 64, 112, 112],
                           "dtype": "float32", "buffer": 0, "first": 0, "last": 1}, ...},
     "buffers": [{"offset": 0, "bytes": 3211264, "first": 0, "last": 2, "values": ["conv_2", ...]}],
     "inplace": {"relu_10": "batchnormalization_8"},   # output written over a dying input
     "views": {"reshape_24": "add_22"},                # output is its input's bytes, reshaped
     "dynamic": [],                                    # data-dependent sizes: allocated at run time
     "outputs": ["gemm_239"]}                          # graph outputs held in the arena

Steps count kernels in ``order`` from 0; a value lives from the kernel producing it (``first``)
through its last reader (``last``); graph outputs live through the last kernel. Inputs and
constants are not in the arena. ``peak_bytes`` is the arena size (alignment padding included);
``lower_bound_bytes`` is the largest sum of (unpadded) bytes of buffers live at one step, where
a buffer is a set of values sharing memory through views and in-place updates, so
``lower_bound_bytes <= peak_bytes`` always holds; ``naive_bytes`` is the sum of every planned
value's bytes (one buffer per value, nothing reused).
"""
from __future__ import annotations

from irgraph.errors import VerifyError
from irgraph.graph import Graph, Node, Value

from .memory_liveness import VIEW_OPS, bind_types, is_elementwise_kernel, storage_bytes

PLAN_VERSION = 1


def node_reads(n: Node) -> list[Value]:
    vals = [v for v in n.inputs if v is not None]
    for sg in n.subgraphs():
        vals.extend(sg.captured_values())
    return vals


def value_intervals(graph: Graph, order: list[Node]) -> dict[Value, tuple[int, int]]:
    """(first, last) step of every top-level node output for ``order``: produced at ``first``,
    last read at ``last`` (the last step for graph outputs; ``first`` when nobody reads it)."""
    step = {id(n): t for t, n in enumerate(order)}
    end = max(len(order) - 1, 0)
    iv: dict[Value, list[int]] = {}
    for t, n in enumerate(order):
        for o in n.outputs:
            iv[o] = [t, t]
    for n in order:
        t = step[id(n)]
        for v in node_reads(n):
            if v in iv and t > iv[v][1]:
                iv[v][1] = t
    for v in graph.outputs:
        if v in iv:
            iv[v][1] = end
    return {v: (a, b) for v, (a, b) in iv.items()}


# ---- validation -----------------------------------------------------------------------------
def validate_plan(graph: Graph, plan: dict | None = None) -> None:
    """Check ``plan`` (default ``graph.meta["memory_plan"]``) against ``graph`` from scratch:
    the order is a topological order of the graph's nodes, every intermediate has an aligned
    slot of the right size inside the arena, no two values live at the same step overlap unless
    the plan shares them legally (a view of the same bytes, or an elementwise kernel writing
    over an input that dies there), and the reported figures add up. Raises ``VerifyError``."""
    plan = graph.meta.get("memory_plan") if plan is None else plan
    if not isinstance(plan, dict):
        raise VerifyError("the graph has no memory plan", hint="run the plan_memory pass")
    errors: list[str] = []
    _validate(graph, plan, errors)
    if errors:
        shown = "; ".join(errors[:8]) + (f"; … {len(errors) - 8} more" if len(errors) > 8 else "")
        raise VerifyError(f"invalid memory plan ({len(errors)} problem(s)): {shown}")


def _validate(graph: Graph, plan: dict, errors: list[str]) -> None:
    by_name = {n.name: n for n in graph.nodes}
    names = list(plan.get("order", []))
    if sorted(names) != sorted(by_name) or len(set(names)) != len(names):
        errors.append("the order does not list every node of the graph exactly once")
        return
    order = [by_name[x] for x in names]
    produced_at = {o: t for t, n in enumerate(order) for o in n.outputs}
    for t, n in enumerate(order):
        for v in node_reads(n):
            if produced_at.get(v, -1) >= t:
                errors.append(f"kernel {n.name!r} at step {t} reads {v.name!r} before it is produced")
    if errors:
        return
    align = plan.get("alignment", 0)
    arena = plan.get("arena_bytes", -1)
    if not isinstance(align, int) or align <= 0:
        errors.append(f"bad alignment {align!r}")
        return
    if plan.get("peak_bytes") != arena:
        errors.append("peak_bytes differs from arena_bytes")
    types = bind_types(graph, plan.get("dims", {}))
    values: dict = plan.get("values", {})
    dynamic = set(plan.get("dynamic", []))
    iv = value_intervals(graph, order)
    slot: dict[Value, tuple[int, int]] = {}
    for n in order:
        for o in n.outputs:
            want = storage_bytes(types[o])
            rec = values.get(o.name)
            if rec is None:
                if o.name not in dynamic or want is not None:
                    errors.append(f"intermediate {o.name!r} has no slot in the arena")
                continue
            if o.name in dynamic:
                errors.append(f"{o.name!r} is both planned and dynamic")
            off, nb = rec.get("offset"), rec.get("bytes")
            if want is None or nb != want:
                errors.append(f"{o.name!r}: slot of {nb} bytes, the value takes {want}")
            if list(rec.get("shape", [])) != list(types[o].shape or []) or rec.get("dtype") != o.dtype.name:
                errors.append(f"{o.name!r}: recorded type {rec.get('dtype')}{rec.get('shape')} differs "
                              f"from {types[o]!r}")
            if not isinstance(off, int) or off < 0 or off % align:
                errors.append(f"{o.name!r}: offset {off!r} is not a non-negative multiple of {align}")
                continue
            if not isinstance(nb, int) or off + nb > arena:
                errors.append(f"{o.name!r}: slot [{off}, {off}+{nb}) leaves the arena of {arena} bytes")
                continue
            slot[o] = (off, nb)
    planned_names = {v.name for v in slot} | dynamic
    for extra in set(values) - planned_names:
        errors.append(f"the plan has a slot for {extra!r}, which no kernel produces")
    if errors:
        return
    by_vname = {v.name: v for v in slot}

    # legal sharing: views (same bytes under another shape) and in-place elementwise updates
    gen: dict[Value, Value] = {}
    views = plan.get("views", {})
    inplace = plan.get("inplace", {})
    for out_name, src_name in list(views.items()) + list(inplace.items()):
        o, s = by_vname.get(out_name), by_vname.get(src_name)
        if o is None or s is None:
            errors.append(f"sharing {out_name!r} <- {src_name!r} names a value without a slot")
            continue
        p = o.producer
        kind = "view" if out_name in views else "in-place"
        if s not in p.inputs:
            errors.append(f"{kind} {out_name!r} <- {src_name!r}: not an input of kernel {p.name!r}")
        if kind == "view" and (p.op not in VIEW_OPS or p.inputs[0] is not s):
            errors.append(f"view {out_name!r} <- {src_name!r}: {p.op} is not a view of its first input")
        if kind == "in-place":
            if not is_elementwise_kernel(p):
                errors.append(f"in-place {out_name!r} <- {src_name!r}: kernel {p.name!r} ({p.op}) is not elementwise")
            if types[o].numel != types[s].numel:
                errors.append(f"in-place {out_name!r} <- {src_name!r}: element counts differ")
        if slot[o] != slot[s]:
            errors.append(f"{kind} {out_name!r} <- {src_name!r}: slots differ ({slot[o]} vs {slot[s]})")
    if errors:
        return

    def root(v: Value) -> Value:
        while v.name in views:
            v = by_vname[views[v.name]]
        return v

    for v in slot:
        gen[v] = root(v)

    def legal(u: Value, w: Value) -> bool:
        if iv[u][0] > iv[w][0] or (iv[u][0] == iv[w][0] and u.name > w.name):
            u, w = w, u
        if slot[u] != slot[w]:
            return False
        if gen[u] is gen[w]:
            return True          # the same bytes seen through views
        r = gen[w]
        src = by_vname.get(inplace.get(r.name, ""))
        # w's bytes were written over u's generation by the kernel at step first(r): u must die there
        return src is not None and gen[src] is gen[u] and iv[u][1] == iv[r][0] == iv[w][0]

    live = sorted((v for v in slot if slot[v][1] > 0), key=lambda v: slot[v][0])
    for k, u in enumerate(live):
        u_off, u_nb = slot[u]
        for w in live[k + 1:]:
            if slot[w][0] >= u_off + u_nb:
                break
            if iv[u][0] <= iv[w][1] and iv[w][0] <= iv[u][1] and not legal(u, w):
                errors.append(f"{u.name!r} (steps {iv[u][0]}..{iv[u][1]}, bytes {u_off}+{u_nb}) and "
                              f"{w.name!r} (steps {iv[w][0]}..{iv[w][1]}, bytes {slot[w][0]}+{slot[w][1]}) "
                              "are live at the same time and overlap")

    # the reported figures
    naive = sum(nb for _, nb in slot.values())
    if plan.get("naive_bytes") != naive:
        errors.append(f"naive_bytes is {plan.get('naive_bytes')}, the values sum to {naive}")
    end = max(len(order) - 1, 0)
    for v in graph.outputs:
        if v in slot and iv[v][1] != end:
            errors.append(f"graph output {v.name!r} does not live to the end")
    lb = _lower_bound(slot, gen, inplace, by_vname, iv, len(order))
    if plan.get("lower_bound_bytes") != lb:
        errors.append(f"lower_bound_bytes is {plan.get('lower_bound_bytes')}, recomputed {lb}")
    top = max((off + nb for off, nb in slot.values()), default=0)
    if arena < top or plan.get("lower_bound_bytes", 0) > arena:
        errors.append(f"arena of {arena} bytes is smaller than its contents ({top}) or the lower bound")


def _lower_bound(slot, gen, inplace, by_vname, iv, steps) -> int:
    """Largest sum of bytes live at one step, a buffer (values joined by views and in-place
    updates) counted once."""
    parent: dict = {}

    def find(v):
        while parent.get(v, v) is not v:
            v = parent[v]
        return v

    for v in slot:
        parent.setdefault(v, v)
        g = gen[v]
        if find(v) is not find(g):
            parent[find(v)] = find(g)
    for out_name, src_name in inplace.items():
        a, b = find(by_vname[out_name]), find(by_vname[src_name])
        if a is not b:
            parent[a] = b
    span: dict = {}
    for v in slot:
        r = find(v)
        lo, hi, nb = span.get(r, (iv[v][0], iv[v][1], slot[v][1]))
        span[r] = (min(lo, iv[v][0]), max(hi, iv[v][1]), nb)
    delta = [0] * (steps + 2)
    for lo, hi, nb in span.values():
        delta[lo] += nb
        delta[hi + 1] -= nb
    best = cur = 0
    for d in delta:
        cur += d
        best = max(best, cur)
    return best
