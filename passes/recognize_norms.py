"""Recognition rules for normalizations written op by op (run by ``recognize_patterns``).

Layer norm, as exporters spell it::

    mean = ReduceMean(x, axes);  d = x - mean
    var  = ReduceMean(d ** 2 | d * d, axes)
    y    = d / Sqrt(var + eps)  |  d * Reciprocal(Sqrt(var + eps))  |  d * (1 / Sqrt(...))

becomes ``layer_norm(x, ones)``; a following ``* gamma`` and ``+ beta`` are then absorbed into
its scale and bias. RMS norm (``x / Sqrt(ReduceMean(x ** 2) + eps)`` and the reciprocal forms,
then ``* w``) becomes ``rms_norm``. The axes must be the trailing axes [k, rank) (the only axes
these ops normalize), both reductions must agree, eps must be one finite value >= 0 and the
square a square. Statistics are computed in the input's dtype (``stash_type``), as the
op-by-op graph did.
"""
from __future__ import annotations

import numpy as np

from irgraph.graph import Graph, Value

from .recognize_patterns import (float_value, internal_only, near, reduce_axes, same_dim, same_shape, scalar,
                                 trailing_axis)
from .rewrite import Const, Match, Op, Rule, Var


def _squares(name: str) -> list[Op]:
    return [Op("pow", Var(name), Const("two")), Op("mul", Var(name), Var(name))]


def _divisions(num, den) -> list[Op]:
    """num / den in the spellings exporters use."""
    return [Op("div", num, den),
            Op("mul", num, Op("reciprocal", den), commutative=True),
            Op("mul", num, Op("div", Const("one"), den), commutative=True)]


def _checks_common(m: Match, g: Graph) -> bool:
    """The square is a square, 1 is one, and the root has x's shape (no constant broadcast grew it)."""
    if "two" in m and not near(scalar(m["two"]), 2.0):
        return False
    if "one" in m and not near(scalar(m["one"]), 1.0):
        return False
    return same_shape(m.root.outputs[0], m["x"])


def _epsilon(m: Match) -> float | None:
    eps = scalar(m["eps"])
    return eps if eps is not None and eps >= 0 else None


def _ones(g: Graph, x: Value, axis: int) -> Value:
    """A scale of ones over the normalized dims (a scalar when those dims are symbolic)."""
    dims = x.shape[axis:]
    shape = tuple(int(d) for d in dims) if all(isinstance(d, int) for d in dims) else ()
    return g.add_const(np.ones(shape, dtype=x.dtype.np), "norm_scale")


def _layer_norm(m: Match, g: Graph):
    x = m["x"]
    if not float_value(x) or not _checks_common(m, g):
        return None
    rank = len(x.shape)
    axes = reduce_axes(m.node("mean"), rank)
    if axes is None or axes != reduce_axes(m.node("var"), rank):
        return None
    k = trailing_axis(axes, rank)
    eps = _epsilon(m)
    if k is None or eps is None or not internal_only(m, g):
        return None
    return g.op("layer_norm", [x, _ones(g, x, k)], {"axis": k - rank, "epsilon": eps, "stash_type": x.dtype})


def _rms_norm(m: Match, g: Graph):
    x = m["x"]
    if not float_value(x) or not _checks_common(m, g):
        return None
    rank = len(x.shape)
    k = trailing_axis(reduce_axes(m.node("ms"), rank), rank)
    eps = _epsilon(m)
    if k is None or eps is None or not internal_only(m, g):
        return None
    return g.op("rms_norm", [x, _ones(g, x, k)], {"axis": k - rank, "epsilon": eps, "stash_type": x.dtype})


# ---- absorbing the affine step ------------------------------------------------------------


def param_onto(g: Graph, p: Value, norm_dims: tuple) -> Value | None:
    """``p`` as a scale/bias over ``norm_dims`` (it must broadcast onto them without growing);
    a constant with extra leading 1-dims is reshaped. None when ``p`` is not such a parameter."""
    shp = p.shape
    if shp is None:
        return None
    if len(shp) > len(norm_dims):
        extra = len(shp) - len(norm_dims)
        if p.const is None or any(d != 1 for d in shp[:extra]):
            return None
        shp = shp[extra:]
        p = g.add_const(p.const.reshape(shp), p.name)
    for got, want in zip(reversed(shp), reversed(norm_dims)):
        if got != 1 and not same_dim(got, want):
            return None
    return p


def _absorb(which: str):
    """``norm(x, ones) * gamma`` -> ``norm(x, gamma)``; ``layer_norm(x, s) + beta`` -> ``layer_norm(x, s, beta)``."""

    def replace(m: Match, g: Graph):
        norm = m.node("norm")
        x, p = norm.inputs[0], m["p"]
        if len(norm.outputs) != 1 or (len(norm.inputs) > 2 and norm.inputs[2] is not None):
            return None  # already has a bias: a later scale is not its affine step
        if which == "scale" and scalar(norm.inputs[1]) != 1.0:
            return None
        if p.dtype is not x.dtype or x.shape is None or not same_shape(m.root.outputs[0], norm.outputs[0]):
            return None
        if not internal_only(m, g):
            return None
        rank = len(x.shape)
        axis = norm.attrs["axis"] + rank if norm.attrs["axis"] < 0 else norm.attrs["axis"]
        p = param_onto(g, p, tuple(x.shape[axis:]))
        if p is None:
            return None
        ins = [x, p] if which == "scale" else [x, norm.inputs[1], p]
        return g.op(norm.op, ins, dict(norm.attrs))
    return replace


def _rules() -> list[Rule]:
    rules = []
    # layer norm before RMS norm: an RMS norm of (x - mean) is a layer norm
    mean = Op("reduce_mean", Var("x"), Const("axes1"), name="mean")
    d = Op("sub", Var("x"), mean, name="d")
    for sq in _squares("d"):
        std = Op("sqrt", Op("add", Op("reduce_mean", sq, Const("axes2"), name="var"), Const("eps"),
                            commutative=True))
        rules += [Rule("layer_norm", form, _layer_norm) for form in _divisions(d, std)]
    for sq in _squares("x"):
        rms = Op("sqrt", Op("add", Op("reduce_mean", sq, Const("axes"), name="ms"), Const("eps"),
                            commutative=True))
        rules += [Rule("rms_norm", form, _rms_norm) for form in _divisions(Var("x"), rms)]
    for op in ("layer_norm", "rms_norm"):
        rules.append(Rule(f"{op}_scale", Op("mul", Op(op, Var(), Var(), name="norm"), Var("p"), commutative=True),
                          _absorb("scale")))
    rules.append(Rule("layer_norm_bias", Op("add", Op("layer_norm", Var(), Var(), name="norm"), Var("p"),
                                            commutative=True), _absorb("bias")))
    return rules


RULES = _rules()
