"""Algebraic simplification: rewrite rules that remove work without changing results.

Every rule is an exact identity on IEEE values (NaN stays NaN, infinities stay infinities),
and a rule that would change a result's shape or dtype -- ``x * ones(3, 4)`` with ``x`` of
shape ``[4]`` broadcasts -- declines: an operand is only dropped when the node's output type
equals that operand's type.

One documented exception, signed zeros: ``x + 0.0`` gives ``+0.0`` for ``x = -0.0``, so
removing it turns a ``+0.0`` into a ``-0.0``. The two compare equal and differ only through
``1/x``, ``atan2`` or ``copysign``; like most compilers' default (no-signed-zeros) mode this
pass removes ``x + 0.0`` (and ``x - (-0.0)``, ``0.0 - x -> -x`` in canonicalize). With
``ctx.options["simplify_algebra.signed_zeros"] = True`` only the always-exact forms are used
(``x + (-0.0)``, ``x - 0.0``).

The rules (names as logged by the rewrite engine):
  mul_one, div_one, add_zero, sub_zero, pow_one   x*1, 1*x, x/1, x+0, 0+x, x-0, x**1 -> x
  pow_two                                         x**2 -> x*x (float x; x*x is the correctly
                                                  rounded square, pow at best equal to it)
  neg_neg, add_neg, sub_neg                       -(-x) -> x, x+(-y) -> x-y, x-(-y) -> x+y
  relu_relu, abs_abs, abs_neg                     idempotent activations
  transpose_identity, transpose_transpose         identity perms dropped, two perms composed
  view_noop                                       reshape/squeeze/unsqueeze/expand to x's own shape
  view_of_view                                    chains of reshape/squeeze/unsqueeze -> one op
  cast_noop, cast_roundtrip                       cast to x's dtype; a lossless cast undone
  dropout_inference                               dropout with ratio 0 or training_mode false
  concat_single, slice_all                        concat of one input; slice covering x

ONNX Identity never reaches the graph (the importer maps it to its input), so there is no
identity op to remove. Left alone because they are not exact: x*0 and x-x (inf, NaN), x/x,
sqrt(x)*sqrt(x) and sqrt(x*x) (rounding, overflow), x**0.5 -> sqrt(x) (they differ at -0.0
and -inf), x**-1 -> 1/x, and any reassociation.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from irgraph import dtype as dt
from irgraph.dtype import DType
from irgraph.graph import Graph, Node, Value
from irgraph.ops.evaluate import known_value
from irgraph.types import TensorType

from .registry import register_pass
from .rewrite import Const, Match, Op, Rule, Var, rewrite

VIEWS = ("reshape", "squeeze", "unsqueeze")


@register_pass("simplify_algebra", description="exact algebraic identities: x*1, x+0, double "
               "transpose, reshape chains, no-op casts, inference dropout ...")
def simplify_algebra(graph: Graph, ctx) -> bool:
    rules = algebra_rules(signed_zeros=bool(ctx.option("simplify_algebra.signed_zeros", False)))
    return rewrite_everywhere(graph, rules)


def rewrite_everywhere(graph: Graph, rules: list[Rule]) -> bool:
    """``rewrite`` on the graph and on every subgraph body inside it."""
    changed = rewrite(graph, rules)
    for n in graph.nodes:
        for sg in n.subgraphs():
            changed |= rewrite_everywhere(sg, rules)
    return changed


# ---- helpers -----------------------------------------------------------------------------
def same_type(out: Value, x: Value) -> bool:
    """``out`` can stand for ``x``: same dtype and the same (known) shape, symbols included."""
    return out.dtype is x.dtype and out.type.shape is not None and out.type.shape == x.type.shape


def _keep_shape(m: Match, g, name: str = "x"):
    x = m[name]
    return x if same_type(m.root.outputs[0], x) else None


def zero(signed: bool | None):
    """Constants equal to zero; with ``signed`` True/False only -0.0/+0.0 in float arrays."""
    def check(a: np.ndarray) -> bool:
        if a.size == 0 or a.dtype == object or not bool(np.all(a == 0)):
            return False
        if signed is None or not DType.from_numpy(a.dtype).is_float:
            return True
        neg = np.signbit(a.astype(np.float64))
        return bool(np.all(neg)) if signed else not bool(np.any(neg))
    return check


def refine(new: TensorType, old: TensorType) -> TensorType:
    """The more specific of two true types of one tensor (static > named symbol > fresh)."""
    if new.dtype is not old.dtype or old.shape is None:
        return new
    if new.shape is None:
        return old
    if len(new.shape) != len(old.shape):
        return new
    dims = []
    for a, b in zip(new.shape, old.shape):
        if isinstance(a, int) or not isinstance(b, int) and (not a.startswith("?") or b.startswith("?")):
            dims.append(a)
        else:
            dims.append(b)
    return TensorType(tuple(dims), new.dtype)


def typed(fn):
    """Wrap a replacement so the values it builds keep the matched outputs' types: they hold
    the same tensors, and the old types may know more (symbols a fresh inference cannot see)."""
    def build(m: Match, g: Graph):
        start = len(g.nodes)
        res = fn(m, g)
        if res is None:
            return None
        built = {id(o) for n in g.nodes[start:] for o in n.outputs}
        for new, old in zip([res] if isinstance(res, Value) else list(res), m.root.outputs):
            if id(new) in built:
                new.type = refine(new.type, old.type)
        return res
    return build


def _perm(n: Node):
    perm = n.attrs.get("perm")
    if perm is not None:
        return tuple(perm)
    r = n.inputs[0].type.rank
    return None if r is None else tuple(range(r - 1, -1, -1))


def _ints(v: Value | None):
    a = known_value(v)
    return None if a is None else [int(x) for x in np.asarray(a).reshape(-1)]


def _const(g: Graph, values, name: str) -> Value:
    return g.add_const(np.asarray(values, dtype=np.int64), name)


# ---- arithmetic ----------------------------------------------------------------------------
def _pow_one(m: Match, g):
    x = m["x"]
    if not x.dtype.is_float and not DType.from_numpy(m.const("c").dtype).is_int:
        return None  # an int base with a float exponent is computed in float64 and truncated
    return _keep_shape(m, g)


def _pow_two(m: Match, g):
    x = m["x"]
    if not x.dtype.is_float or not same_type(m.root.outputs[0], x):
        return None
    return g.op("mul", [x, x], name=m.root.name)


def _neg_binary(op: str):
    def build(m: Match, g):
        return g.op(op, [m["x"], m["y"]], name=m.root.name)
    return build


def _same_node_output(name: str):
    def build(m: Match, g):
        return m[name]
    return build


# ---- transposes ----------------------------------------------------------------------------
def _is_identity_perm(n: Node) -> bool:
    p = _perm(n)
    return p is not None and p == tuple(range(len(p)))


def _compose_transposes(m: Match, g):
    inner, outer = m.node("inner"), m.root
    p1, p2 = _perm(inner), _perm(outer)
    if p1 is None or p2 is None:
        return None
    perm = tuple(p1[j] for j in p2)  # output axis j is x's axis p1[p2[j]]
    if perm == tuple(range(len(perm))):
        return m["x"]
    return g.op("transpose", [m["x"]], {"perm": perm}, name=m.root.name)


# ---- views -------------------------------------------------------------------------------
def _view_of_view(m: Match, g):
    inner, outer, x = m.node("inner"), m.root, m["x"]
    out = outer.outputs[0]
    if same_type(out, x):
        return x
    rank = x.type.rank
    if outer.op == inner.op == "unsqueeze" and rank is not None:
        a1, a2 = _ints(inner.inputs[1]), _ints(outer.inputs[1])
        if a1 is not None and a2 is not None:
            r1, r2 = rank + len(a1), rank + len(a1) + len(a2)
            a1 = sorted(a % r1 for a in a1)
            a2 = sorted(a % r2 for a in a2)
            rest = [i for i in range(r2) if i not in a2]  # the intermediate's axes, in order
            axes = sorted(a2 + [rest[k] for k in a1])
            return g.op("unsqueeze", [x, _const(g, axes, "axes")], name=m.root.name)
    if outer.op == inner.op == "squeeze" and rank is not None and len(inner.inputs) > 1 \
            and len(outer.inputs) > 1:
        a1, a2 = _ints(inner.inputs[1]), _ints(outer.inputs[1])
        if a1 is not None and a2 is not None:
            a1 = sorted(a % rank for a in a1)
            kept = [i for i in range(rank) if i not in a1]
            a2 = [a % len(kept) for a in a2] if kept else []
            axes = sorted(a1 + [kept[k] for k in a2])
            return g.op("squeeze", [x, _const(g, axes, "axes")], name=m.root.name)
    if out.type.is_static:
        shape = list(out.type.shape)
        return g.op("reshape", [x, _const(g, shape, "shape")], {"allowzero": int(0 in shape)},
                    name=m.root.name)
    if outer.op == "reshape":
        spec = _ints(outer.inputs[1])
        allowzero = outer.attrs.get("allowzero", 0)
        if allowzero or (spec is not None and 0 not in spec):
            # the target does not refer to the intermediate's dims: read x directly
            return g.op("reshape", [x, outer.inputs[1]], {"allowzero": allowzero}, name=m.root.name)
    return None


def _slice_is_all(n: Node) -> bool:
    if len(n.inputs) > 4 and n.inputs[4] is not None:
        steps = _ints(n.inputs[4])
        if steps is None or any(s != 1 for s in steps):
            return False
    # with unit steps an axis keeps its length only when the slice starts at 0 and runs to the end
    return same_type(n.outputs[0], n.inputs[0])


# ---- casts -------------------------------------------------------------------------------
def lossless_cast(src: DType, dst: DType) -> bool:
    """Does casting ``src`` to ``dst`` keep every value exactly (so casting back restores it)?"""
    if src is dst:
        return True
    if "float8e8m0" in (src.name, dst.name) or src.kind not in "biuf" or dst.kind not in "biuf":
        return False
    if src.kind == "b":
        return True
    if dst.kind == "b":
        return False
    if src.kind in "iu" and dst.kind in "iu":
        a, b = ml_dtypes.iinfo(src.np), ml_dtypes.iinfo(dst.np)
        return b.min <= a.min and a.max <= b.max
    if src.kind in "iu":
        a = ml_dtypes.iinfo(src.np)
        need = max(abs(int(a.min)), int(a.max)).bit_length()
        return ml_dtypes.finfo(dst.np).nmant + 1 >= need
    if dst.kind != "f":
        return False
    a, b = ml_dtypes.finfo(src.np), ml_dtypes.finfo(dst.np)
    return (b.nmant >= a.nmant and b.maxexp >= a.maxexp and b.minexp <= a.minexp
            and b.minexp - b.nmant <= a.minexp - a.nmant)


def _cast_roundtrip(m: Match, g):
    inner, outer, x = m.node("inner"), m.root, m["x"]
    mid, to = inner.attrs["to"], outer.attrs["to"]
    if not lossless_cast(x.dtype, mid):
        return None
    if to is x.dtype:
        return x
    if x.dtype.is_float and mid.is_float and to.is_float:
        # the intermediate holds x exactly, so rounding it to ``to`` is rounding x
        return g.op("cast", [x], dict(outer.attrs), name=m.root.name)
    return None


def _dropout_inference(m: Match, g):
    n = m.root
    ratio = known_value(n.inputs[1])
    training = known_value(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None else None
    off = (training is not None and not bool(np.asarray(training).reshape(-1)[0])) or \
          (ratio is not None and float(np.asarray(ratio).reshape(-1)[0]) == 0.0)
    if not off:
        return None
    x = m["x"]
    mask = g.op("full_like", [x], {"value": 1.0, "dtype": dt.bool_}, name=m.root.name)
    return [x, mask][:len(n.outputs)]


# ---- the rule set -----------------------------------------------------------------------
def algebra_rules(signed_zeros: bool = False) -> list[Rule]:
    add_zero = zero(True if signed_zeros else None)       # x + (-0.0) is always x
    sub_zero = zero(False if signed_zeros else None)      # x - (+0.0) is always x
    rules = [
        Rule("identity", Op("identity", Var("x")), _keep_shape),
        Rule("mul_one", Op("mul", Var("x"), Const("c", value=1), commutative=True), _keep_shape),
        Rule("div_one", Op("div", Var("x"), Const("c", value=1)), _keep_shape),
        Rule("add_zero", Op("add", Var("x"), Const("c", where=add_zero), commutative=True), _keep_shape),
        Rule("sub_zero", Op("sub", Var("x"), Const("c", where=sub_zero)), _keep_shape),
        Rule("pow_one", Op("pow", Var("x"), Const("c", value=1)), _pow_one),
        Rule("pow_two", Op("pow", Var("x"), Const("c", value=2)), _pow_two),
        Rule("neg_neg", Op("neg", Op("neg", Var("x"))), _keep_shape),
        Rule("add_neg", Op("add", Var("x"), Op("neg", Var("y")), commutative=True), _neg_binary("sub")),
        Rule("sub_neg", Op("sub", Var("x"), Op("neg", Var("y"))), _neg_binary("add")),
        Rule("relu_relu", Op("relu", Op("relu", Var("x"), name="inner")), _same_node_output("inner")),
        Rule("abs_abs", Op("abs", Op("abs", Var("x"), name="inner")), _same_node_output("inner")),
        Rule("abs_neg", Op("abs", Op("neg", Var("x"))),
             lambda m, g: g.op("abs", [m["x"]], name=m.root.name)),
        Rule("transpose_identity", Op("transpose", Var("x"), where=_is_identity_perm), _keep_shape),
        Rule("transpose_transpose", Op("transpose", Op("transpose", Var("x"), name="inner")),
             _compose_transposes),
        Rule("view_noop", Op(VIEWS + ("expand",), Var("x"),
                             where=lambda n: same_type(n.outputs[0], n.inputs[0])), _keep_shape),
        Rule("view_of_view", Op(VIEWS, Op(VIEWS, Var("x"), name="inner")), _view_of_view),
        Rule("cast_noop", Op("cast", Var("x"), where=lambda n: n.attrs["to"] is n.inputs[0].dtype),
             _keep_shape),
        Rule("cast_roundtrip", Op("cast", Op("cast", Var("x"), name="inner")), _cast_roundtrip),
        Rule("dropout_inference", Op("dropout", Var("x")), _dropout_inference),
        Rule("concat_single", Op("concat", Var("x"), where=lambda n: len(n.inputs) == 1), _keep_shape),
        Rule("slice_all", Op("slice", Var("x"), where=_slice_is_all), _keep_shape),
    ]
    return [Rule(r.name, r.pattern, typed(r.replace)) for r in rules]
