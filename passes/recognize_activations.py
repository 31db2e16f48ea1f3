"""Recognition rules for GELU and the softmax family written op by op (run by
``recognize_patterns``).

GELU, exact (Erf) and tanh-approximated, in the arrangements exporters write::

    0.5 * x * (1 + erf(x / sqrt(2)))            (x * 0.5 first, or the 0.5 last, or x * (0.5 * (...)),
    0.5 * x * (1 + erf(x * (1 / sqrt(2))))       or (x * (...)) / 2)
    0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))     (x ** 3 also as x * x * x)

Constants are checked by value: 0.5, 1, 2 and 3 exactly, sqrt(2), 1/sqrt(2), sqrt(2/pi) and
0.044715 within a relative 1e-4 (exporters round them) or two ulps of their dtype (float16).

Softmax ``exp(x - max(x)) / sum(exp(x - max(x)))`` and log-softmax ``(x - max) - log(sum(exp(x
- max)))``, with the max and the sum over the same single axis (keepdims).
"""
from __future__ import annotations

import math

from irgraph.graph import Graph

from .recognize_patterns import float_value, internal_only, near, near_const, reduce_axes, same_shape, scalar
from .rewrite import Const, Match, Op, Rule, Var

_ROUNDED = 1e-4  # relative tolerance for irrational constants that exporters round
_INNER_K = {"erf_div": math.sqrt(2.0), "erf_mul": 1.0 / math.sqrt(2.0), "tanh": math.sqrt(2.0 / math.pi)}


def _gelu_inners() -> list[tuple[str, Op]]:
    x = Var("x")
    cubes = [Op("pow", x, Const("three")), Op("mul", x, Op("mul", x, x), commutative=True)]
    inners = [("erf_div", Op("erf", Op("div", x, Const("k")))),
              ("erf_mul", Op("erf", Op("mul", x, Const("k"), commutative=True)))]
    for cube in cubes:
        poly = Op("add", x, Op("mul", cube, Const("c"), commutative=True), commutative=True)
        inners.append(("tanh", Op("tanh", Op("mul", poly, Const("k"), commutative=True))))
    return inners


def _gelu_outers(onep: Op) -> list[Op]:
    """0.5 * x * onep in its arrangements (x is matched before onep, so it binds first)."""
    x = Var("x")
    return [
        Op("mul", Op("mul", x, Const("half"), commutative=True), onep, commutative=True),
        Op("mul", Op("mul", x, onep, commutative=True), Const("half"), commutative=True),
        Op("mul", x, Op("mul", onep, Const("half"), commutative=True), commutative=True),
        Op("div", Op("mul", x, onep, commutative=True), Const("two")),
    ]


def _gelu(kind: str):
    def replace(m: Match, g: Graph):
        x = m["x"]
        if not float_value(x) or not same_shape(m.root.outputs[0], x):
            return None
        exact = {"one": 1.0, "half": 0.5, "two": 2.0, "three": 3.0}
        if any(name in m and not near(scalar(m[name]), want) for name, want in exact.items()):
            return None
        if not near_const(m["k"], _INNER_K[kind], _ROUNDED):
            return None
        if kind == "tanh" and not near_const(m["c"], 0.044715, _ROUNDED):
            return None
        if not internal_only(m, g):
            return None
        return g.op("gelu", [x], {"approximate": "tanh" if kind == "tanh" else "none"})
    return replace


def _single_axis(m: Match, a: str, b: str) -> int | None:
    x = m["x"]
    if not float_value(x) or not same_shape(m.root.outputs[0], x):
        return None
    rank = len(x.shape)
    axes = reduce_axes(m.node(a), rank)
    if axes is None or len(axes) != 1 or axes != reduce_axes(m.node(b), rank):
        return None
    return axes[0] - rank


def _softmax(op: str):
    def replace(m: Match, g: Graph):
        axis = _single_axis(m, "max", "sum")
        if axis is None or not internal_only(m, g):
            return None
        return g.op(op, [m["x"]], {"axis": axis})
    return replace


def _rules() -> list[Rule]:
    rules = []
    for kind, inner in _gelu_inners():
        onep = Op("add", inner, Const("one"), commutative=True)
        rules += [Rule(f"gelu_{kind}", outer, _gelu(kind)) for outer in _gelu_outers(onep)]
    x = Var("x")
    shifted = Op("sub", x, Op("reduce_max", x, Const("axes1"), name="max"), name="s")
    e = Op("exp", shifted, name="e")
    total = Op("reduce_sum", Var("e"), Const("axes2"), name="sum")
    rules += [Rule("softmax", Op("div", e, total), _softmax("softmax")),
              Rule("softmax", Op("mul", e, Op("reciprocal", total), commutative=True), _softmax("softmax"))]
    lse = Op("log", Op("reduce_sum", Op("exp", Var("s")), Const("axes2"), name="sum"))
    rules.append(Rule("log_softmax", Op("sub", shifted, lse), _softmax("log_softmax")))
    return rules


RULES = _rules()
