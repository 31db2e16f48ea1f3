"""``prune_magnitude``: unstructured pruning — the smallest-magnitude weights of conv / matmul
layers become zero, to a target sparsity.

Options (set by ``irgraph.compile(prune="magnitude:0.5[:layer|global]")``, see prune_options.py):

- ``prune.ratio``: the fraction of weights that are zero afterwards, 0 <= ratio < 1 (weights
  that were already zero count towards it);
- ``prune.scope``: ``"layer"`` (default) — every layer reaches the ratio on its own, so no layer
  loses more than the others; ``"global"`` — one magnitude threshold over all layers' weights
  together, so layers of small weights lose more (and large layers, which hold most of the
  redundancy, reach the ratio on average).

Exactly ``floor(ratio * n)`` weights are zero in each layer (or in all of them, globally); ties
at the threshold are broken by position, so the result is deterministic. Layers: conv,
conv_transpose and matmul whose weight (input 1) is a float constant of rank >= 2 (Gemm imports
as matmul; a weight shared by several layers is pruned once). Biases are not pruned. The model's
shapes do not change; ``use_sparse_kernels`` later runs layers past the measured crossover with
CSR kernels, which is where the bytes and the time are saved.
"""
from __future__ import annotations

import numpy as np

from irgraph.errors import CompileError
from irgraph.graph import Graph

from . import prune_report
from .prune_report import DENSE_OPS
from .registry import register_pass


def layers(graph: Graph) -> dict:
    """{id(weight Value): (weight Value, [(node, input index), ...])} of the prunable layers."""
    out: dict = {}
    for n in graph.nodes:
        if n.op not in DENSE_OPS or len(n.inputs) < 2 or n.inputs[1] is None:
            continue
        w = n.inputs[1]
        if w.const is None or w.const.dtype.kind != "f" or w.const.ndim < 2 or w.const.size == 0:
            continue
        out.setdefault(id(w), (w, []))[1].append((n, 1))
    return out


def smallest(magnitudes: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the ``k`` smallest entries (ties by position: a stable order)."""
    if k <= 0:
        return np.zeros(0, np.int64)
    flat = magnitudes.reshape(-1)
    return np.argsort(flat, kind="stable")[:k]


def check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise CompileError("the pruning ratio must be a number in [0, 1)", expected="0 <= ratio < 1",
                           actual=repr(ratio))
    return float(ratio)


def prune_arrays(weights: list, ratio: float, scope: str) -> list:
    """The weights (float arrays) with the smallest magnitudes set to zero."""
    out = [np.array(w, copy=True) for w in weights]
    if scope == "layer":
        for w in out:
            w.reshape(-1)[smallest(np.abs(w), int(ratio * w.size))] = 0
        return out
    if scope != "global":
        raise CompileError(f"unknown pruning scope {scope!r}", expected="layer | global", actual=scope)
    sizes = [w.size for w in out]
    mags = np.concatenate([np.abs(w.astype(np.float64)).reshape(-1) for w in out]) if out else np.zeros(0)
    idx = smallest(mags, int(ratio * mags.size))
    bounds = np.cumsum([0] + sizes)
    for i, w in enumerate(out):
        mine = idx[(idx >= bounds[i]) & (idx < bounds[i + 1])] - bounds[i]
        w.reshape(-1)[mine] = 0
    return out


@register_pass("prune_magnitude",
               description="zero the smallest-magnitude conv/matmul weights to a target sparsity "
                           "(per layer or global; options prune.ratio, prune.scope)")
def prune_magnitude(graph: Graph, ctx) -> bool:
    ratio = ctx.option("prune.ratio") if ctx is not None else None
    if ratio is None:
        raise CompileError("prune_magnitude needs the option prune.ratio",
                           hint="irgraph.compile(model, prune='magnitude:0.5') sets it")
    ratio = check_ratio(ratio)
    scope = ctx.option("prune.scope", "layer")
    prune_report.start(graph, ctx.option("prune.spec", f"magnitude:{ratio}:{scope}"))
    found = list(layers(graph).values())
    if not found:
        graph.meta["prune_report"]["notes"].append("no conv/matmul layer with a constant float weight")
        return False
    new = prune_arrays([w.const for w, _ in found], ratio, scope)
    changed = False
    for (w, uses), arr in zip(found, new):
        if np.count_nonzero(arr) == np.count_nonzero(w.const):
            continue
        v = graph.add_const(arr.astype(w.const.dtype, copy=False), w.name + "_pruned")
        for n, i in uses:
            n.inputs[i] = v
        changed = True
    if changed:
        graph.remove_unused()
    prune_report.finish(graph)
    return changed
