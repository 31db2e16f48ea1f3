"""Canonicalization: one spelling per computation, so later pattern matchers (and CSE) need to
know only one form. Every rule is exact (see simplify_algebra.py for the signed-zero note).

  const_right      op(c, x) -> op(x, c) for commutative binary ops (add, mul, maximum, minimum,
                   equal, logical/bitwise and/or/xor): matchers look for the constant on the right
  compare_right    greater(c, x) -> less(x, c), less_equal(c, x) -> greater_equal(x, c), ...
  sub_const        x - c -> x + (-c): bias and shift patterns are all adds (negation is exact,
                   and IEEE x - c is x + (-c) by definition; integers wrap the same way)
  div_pow2         x / c -> x * (1/c) when every element of c is a power of two whose reciprocal
                   is representable: both sides round the same real number (attention's
                   ``/ sqrt(64)`` becomes ``* 0.125``; ``/ sqrt(96)`` stays a division)
  mul_minus_one    x * -1 -> -x
  zero_sub         0 - x -> -x (exact for -0.0; for +0.0 only the sign of a zero result
                   differs, as with x + 0 in simplify_algebra)
  explicit_perm    transpose without perm -> transpose with the reversed perm spelled out
  reduce_axes      reduce_*(x, axes) with the rank known: axes sorted and counted from the end
                   (-1 is the last axis), the spelling exporters use for norms and softmax, and
                   one that does not depend on the rank

Not done, because it is not exact: reassociating add/mul chains (``(x + c1) + c2`` is not
``x + (c1 + c2)`` in floating point), so a Sum lowered to an add chain keeps its order.
"""
from __future__ import annotations

import numpy as np

from irgraph.dtype import DType
from irgraph.graph import Graph, Value
from irgraph.ops.evaluate import known_value

from .registry import register_pass
from .rewrite import Const, Match, Op, Rule, Var
from .simplify_algebra import rewrite_everywhere, same_type, typed, zero

COMMUTATIVE = ("add", "mul", "maximum", "minimum", "equal", "logical_and", "logical_or",
               "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor")
FLIPPED = {"greater": "less", "less": "greater",
           "greater_equal": "less_equal", "less_equal": "greater_equal"}
REDUCTIONS = ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod")
# largest constant a rule copies (negated, inverted): the fold_constants cap, for the same reason
MAX_NEW_CONST_BYTES = 64 * 1024


@register_pass("canonicalize", description="one spelling per computation: constants on the right, "
               "x-c as x+(-c), explicit perms, reduce axes counted from the end")
def canonicalize(graph: Graph, ctx) -> bool:
    return rewrite_everywhere(graph, canonical_rules(
        max_bytes=int(ctx.option("canonicalize.max_bytes", MAX_NEW_CONST_BYTES)),
        signed_zeros=bool(ctx.option("simplify_algebra.signed_zeros", False))))


def _not_known(v: Value) -> bool:
    return known_value(v) is None


def _swap(op: str):
    def build(m: Match, g):
        return g.op(op, [m["x"], m["c"]], dict(m.root.attrs), name=m.root.name)
    return build


def _small(limit: int):
    def check(a: np.ndarray) -> bool:
        return a.dtype != object and a.nbytes <= limit
    return check


def _sub_const(m: Match, g):
    c = m.const("c")
    with np.errstate(all="ignore"):
        neg = np.negative(c).astype(c.dtype)
    return g.op("add", [m["x"], g.add_const(neg, m["c"].name + "_neg")], name=m.root.name)


def _pow2_reciprocal(a: np.ndarray):
    """1/a as a's dtype when every element of a is a power of two with an exact reciprocal."""
    if not DType.from_numpy(a.dtype).is_float or a.size == 0:
        return None
    f = a.astype(np.float64)
    if not np.all(np.isfinite(f)) or np.any(f == 0):
        return None
    mant, _ = np.frexp(f)
    if not np.all(np.abs(mant) == 0.5):
        return None
    with np.errstate(all="ignore"):
        r = (1.0 / f).astype(a.dtype)
    back = r.astype(np.float64)
    if not np.all(np.isfinite(back)) or not np.all(back * f == 1.0):
        return None
    return r


def _div_pow2(m: Match, g):
    if not m["x"].dtype.is_float:
        return None
    r = _pow2_reciprocal(m.const("c"))
    if r is None:
        return None
    return g.op("mul", [m["x"], g.add_const(r, m["c"].name + "_inv")], name=m.root.name)


def _neg_if_same(m: Match, g):
    if m["x"].dtype.kind not in "if" or not same_type(m.root.outputs[0], m["x"]):
        return None  # neg takes floats and signed ints
    return g.op("neg", [m["x"]], name=m.root.name)


def _explicit_perm(m: Match, g):
    rank = m["x"].type.rank
    if rank is None:
        return None
    return g.op("transpose", [m["x"]], {"perm": tuple(range(rank - 1, -1, -1))}, name=m.root.name)


def _reduce_axes(m: Match, g):
    n = m.root
    rank = m["x"].type.rank
    axes = known_value(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else None
    if rank is None or rank == 0 or axes is None:
        return None
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    if any(not -rank <= a < rank for a in axes):
        return None
    want = sorted({a % rank - rank for a in axes})
    if want == axes:
        return None
    new_axes = g.add_const(np.array(want, np.int64), n.inputs[1].name)
    return g.op(n.op, [m["x"], new_axes] + list(n.inputs[2:]), dict(n.attrs), name=m.root.name)


def _minus_one(a: np.ndarray) -> bool:
    return a.size > 0 and DType.from_numpy(a.dtype).kind in "if" and bool(np.all(a == -1))


def canonical_rules(max_bytes: int = MAX_NEW_CONST_BYTES, signed_zeros: bool = False) -> list[Rule]:
    small = _small(max_bytes)
    rules = [Rule(f"const_right_{op}", Op(op, Const("c"), Var("x", where=_not_known)), _swap(op))
             for op in COMMUTATIVE]
    rules += [Rule(f"compare_right_{op}", Op(op, Const("c"), Var("x", where=_not_known)),
                   _swap(FLIPPED[op])) for op in FLIPPED]
    rules += [
        Rule("sub_const", Op("sub", Var("x", where=_not_known), Const("c", where=small)), _sub_const),
        Rule("div_pow2", Op("div", Var("x", where=_not_known), Const("c", where=small)), _div_pow2),
        Rule("mul_minus_one", Op("mul", Var("x"), Const(where=_minus_one)), _neg_if_same),
        # -0.0 - x is -x for every x; +0.0 - x only up to the sign of a zero result
        Rule("zero_sub", Op("sub", Const(where=zero(True if signed_zeros else None)), Var("x")),
             _neg_if_same),
        Rule("explicit_perm", Op("transpose", Var("x"), where=lambda n: n.attrs.get("perm") is None),
             _explicit_perm),
        Rule("reduce_axes", Op(REDUCTIONS, Var("x"), where=lambda n: len(n.inputs) > 1), _reduce_axes),
    ]
    return [Rule(r.name, r.pattern, typed(r.replace)) for r in rules]
