"""Kernel orders that keep fewer bytes alive at once.

Any topological order of the kernels computes the same results; the order decides which
tensors are alive together. ``candidate_orders`` returns a few cheap heuristic orders (the
graph's own order among them); the planner prices each by its lower bound, places buffers
for the promising ones and keeps the smallest arena. Every heuristic is a list scheduler over the ready kernels, priced by ``BufferSim``
(bytes a kernel allocates minus bytes it frees, in-place reuse and views included), and runs
in O(kernels × ready kernels).
"""
from __future__ import annotations

from .memory_liveness import BufferSim, KernelGraph


def graph_order(kg: KernelGraph) -> list[int]:
    return list(range(len(kg.nodes)))


def greedy_order(kg: KernelGraph, mode: str = "net", inplace: bool = True, views: bool = True) -> list[int]:
    """A list schedule over the ready kernels; ``mode`` picks which ready kernel runs next:

    - ``net``: a kernel that frees at least what it allocates first (the most first); else one
      that makes a waiting kernel ready (not one computing something early, such as a weight
      transpose whose consumer still waits on activations), the smallest growth first; ties
      by graph order;
    - ``free_first``: graph order, except that a kernel freeing at least what it allocates
      jumps the queue (keeps the exporter's order where it does not cost memory);
    - ``depth``: a kernel reading what was just computed (finish a branch before starting
      another), then as ``net``.
    """
    n = len(kg.nodes)
    indeg = [len(d) for d in kg.deps]
    ready = [i for i in range(n) if indeg[i] == 0]
    sim = BufferSim(kg, inplace=inplace, views=views)
    last = -1
    # (priority, decision) per ready kernel; a kernel's decision depends only on the buffers of
    # the values it reads, and its priority on whether it unlocks a successor, so entries are
    # dropped only when one of those changes (graphs with hundreds of ready kernels stay fast)
    cache: dict[int, tuple] = {}

    def entry(i: int) -> tuple:
        c = cache.get(i)
        if c is None:
            d = sim.decide(i)
            if d.net <= 0:
                prio = (0, d.net)
            else:
                unlocks = any(indeg[s] == 1 for s in kg.succs[i]) or not kg.succs[i]
                prio = (1 if unlocks else 2, d.net)
            c = cache[i] = (prio, d)
        return c

    if mode == "net":
        key = lambda i: (entry(i)[0], i)  # noqa: E731
    elif mode == "free_first":
        key = lambda i: (0 if entry(i)[1].net <= 0 else 1, i)  # noqa: E731
    elif mode == "depth":
        key = lambda i: (0 if last in kg.deps[i] else 1, entry(i)[0], i)  # noqa: E731
    else:
        raise ValueError(f"unknown scheduling mode {mode!r}")
    while ready:
        best = min(ready, key=key)
        d = entry(best)[1]
        ready.remove(best)
        sim.commit(d)
        last = best
        touched = {sim.buf_of[v] for v in kg.reads[best] if v in sim.buf_of}
        touched.update(d.pending)
        for b in touched:
            for v in sim.buffers[b].values:
                for r in kg.readers.get(v, ()):
                    cache.pop(r, None)
        for s in kg.succs[best]:
            indeg[s] -= 1
            for p in kg.deps[s]:
                cache.pop(p, None)
            if indeg[s] == 0:
                ready.append(s)
    if len(sim.order) != n:
        raise RuntimeError("kernel graph has a cycle")  # the verifier rules this out
    return sim.order


def candidate_orders(kg: KernelGraph, inplace: bool = True, views: bool = True) -> dict[str, list[int]]:
    """Named candidate orders, the graph's own first; duplicates are dropped."""
    out: dict[str, list[int]] = {"graph": graph_order(kg)}
    seen = {tuple(out["graph"])}
    for mode in ("net", "free_first", "depth"):
        order = greedy_order(kg, mode, inplace=inplace, views=views)
        if tuple(order) not in seen:
            seen.add(tuple(order))
            out[mode] = order
    return out


def is_topological(kg: KernelGraph, order: list[int]) -> bool:
    pos = {i: k for k, i in enumerate(order)}
    if len(pos) != len(kg.nodes) or set(pos) != set(range(len(kg.nodes))):
        return False
    return all(pos[d] < pos[i] for i in range(len(kg.nodes)) for d in kg.deps[i])

