"""Recognize op-by-op spellings of composite ops that exporters write, and replace them by the
registry's composite op: layer norm, RMS norm, GELU (Erf and Tanh forms), softmax and
log-softmax, scaled-dot-product attention.

The rules live beside this file (``recognize_norms.py``, ``recognize_activations.py``,
``recognize_attention.py``) and run here, in that order, with the one rewrite engine. Every
rule checks what a structural match cannot: constants by value (with a tolerance where
exporters round them), reduction axes (the normalized trailing axes), shapes (a broadcasting
constant must not grow the result) and that no intermediate is read outside the pattern — a
rule that matched the wrong thing would silently change numerics.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from irgraph.dtype import DType
from irgraph.errors import IrgraphError
from irgraph.graph import Graph, Value
from irgraph.ops.evaluate import known_value
from irgraph.types import is_static_dim

from .registry import register_pass
from .rewrite import Match, Rule, rewrite

# ---- helpers the rule modules share ----------------------------------------------------------


def _as_float64(a: np.ndarray) -> np.ndarray | None:
    try:
        kind = DType.from_numpy(a.dtype).kind
    except IrgraphError:
        return None
    return np.asarray(a, dtype=np.float64) if kind in "fiu" else None  # bfloat16 & co. have numpy kind "V"


def scalar(v: Value | None) -> float | None:
    """The value of a compile-time-known tensor whose elements are all equal (and finite)."""
    a = known_value(v)
    if a is None or a.size == 0:
        return None
    flat = _as_float64(a)
    if flat is None:
        return None
    flat = flat.reshape(-1)
    if not np.all(np.isfinite(flat)) or not np.all(flat == flat[0]):
        return None
    return float(flat[0])


def near(value: float | None, target: float, rtol: float = 1e-6) -> bool:
    return value is not None and abs(value - target) <= rtol * abs(target)


def near_const(v: Value, target: float, rtol: float = 1e-6) -> bool:
    """``v`` is one value within ``rtol`` of ``target``, or within two ulps of the dtype it is
    stored in (sqrt(2) in float16 is 1.4140625, 1.5e-4 off)."""
    ulp = 2 * float(ml_dtypes.finfo(v.dtype.np).eps) if v.dtype.is_float else 0.0
    return near(scalar(v), target, max(rtol, ulp))


def same_dim(a, b) -> bool:
    """Provably equal dims: equal static sizes, or one symbol."""
    if is_static_dim(a) and is_static_dim(b):
        return int(a) == int(b)
    return a == b


def same_shape(a: Value, b: Value) -> bool:
    sa, sb = a.shape, b.shape
    return sa is not None and sb is not None and len(sa) == len(sb) and all(
        same_dim(x, y) for x, y in zip(sa, sb))


def internal_only(m: Match, graph: Graph) -> bool:
    """Every value the match computes, except the root's, is read only inside the match."""
    inner = [n for n in m.matched if n is not m.root]
    if not inner:
        return True
    members = set(m.matched)
    outs = {id(v) for v in graph.outputs}
    users = graph.users()
    for n in inner:
        for o in n.outputs:
            if id(o) in outs or any(u not in members for u in users.get(o, ())):
                return False
    return True


def reduce_axes(node, rank: int) -> tuple[int, ...] | None:
    """The normalized, sorted axes of a keepdims reduction with known axes (None otherwise)."""
    if len(node.inputs) < 2 or node.inputs[1] is None or not node.attrs.get("keepdims", 1):
        return None
    a = known_value(node.inputs[1])
    if a is None or a.size == 0:
        return None
    axes = sorted({int(x) + rank if int(x) < 0 else int(x) for x in np.asarray(a).reshape(-1)})
    if axes[0] < 0 or axes[-1] >= rank:
        return None
    return tuple(axes)


def trailing_axis(axes: tuple[int, ...] | None, rank: int) -> int | None:
    """``k`` when ``axes`` are exactly [k, rank): the axes a layer/RMS norm normalizes."""
    if not axes or tuple(range(axes[0], rank)) != axes:
        return None
    return axes[0]


def float_value(v: Value) -> bool:
    return v.dtype.is_float and v.shape is not None


# ---- the pass ------------------------------------------------------------------------------


def all_rules() -> list[Rule]:
    """Every recognition rule, in priority order (the first rule that matches a node wins)."""
    from . import recognize_activations, recognize_attention, recognize_norms
    return recognize_norms.RULES + recognize_activations.RULES + recognize_attention.RULES


@register_pass("recognize_patterns",
               description="layer norm, RMS norm, GELU, softmax and attention written op by op "
                           "become the registry's composite ops")
def recognize_patterns(graph, ctx) -> bool:
    rules = all_rules()
    disabled = set(ctx.option("recognize_patterns.disabled_rules", ()) or ())
    rules = [r for r in rules if r.name not in disabled]
    changed = rewrite(graph, rules)
    for n in graph.nodes:
        for sg in n.subgraphs():
            changed |= rewrite(sg, rules)
    return changed
