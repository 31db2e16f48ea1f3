"""Gradient rules of the elementwise ops (``elementwise.py``), and the helpers other families'
rules build with (``GradOps``).

A rule gets a GradCtx (irgraph/ops/grad.py) and returns one gradient per input, built from
registry ops. Subgradients at kinks follow PyTorch: relu'(0) = 0, abs'(0) = 0, the slope of
leaky_relu/prelu/elu/selu at 0 is the negative side's, hard_sigmoid's is 0 at both ends, and
maximum/minimum give each operand half the gradient on ties.
"""
from __future__ import annotations

import math

import numpy as np

from .evaluate import known_value
from .grad import is_float


class GradOps:
    """Terse op building inside gradient rules: ``o.mul(a, b)``, ``o.k(0.5, like)``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def build(*inputs, num_outputs=None, **attrs):
            return self.ctx.op(name, list(inputs), attrs, num_outputs=num_outputs)
        return build

    def k(self, value, like):
        """A scalar constant in ``like``'s dtype (broadcasts in elementwise ops)."""
        return self.ctx.const(value, like=like)

    def gate(self, cond, g):
        """``g`` where ``cond`` holds, 0 elsewhere."""
        return self.where(cond, g, self.k(0, g))


def _needs(ctx, i: int) -> bool:
    """Whether input ``i`` can take a gradient (a float operand)."""
    return i < len(ctx.inputs) and is_float(ctx.inputs[i])


def unary_grad(f):
    """A rule for a one-input op from ``f(o, x, y, dy, **attrs) -> dx`` (y: the forward output)."""
    def rule(ctx):
        return [f(GradOps(ctx), ctx.inputs[0], ctx.outputs[0], ctx.dy(), **ctx.attrs)]
    rule.__name__ = getattr(f, "__name__", "unary_grad")
    return rule


def zero_grad(ctx):
    # piecewise constant (floor, ceil, round, sign): the derivative is 0 almost everywhere
    return [ctx.zeros_like(ctx.inputs[0])]


def identity_grad(ctx):
    return [ctx.dy()]


def add_grad(ctx):
    a, b = ctx.inputs
    return [ctx.sum_to(ctx.dy(), a), ctx.sum_to(ctx.dy(), b)]


def sub_grad(ctx):
    a, b = ctx.inputs
    return [ctx.sum_to(ctx.dy(), a), ctx.sum_to(ctx.op("neg", [ctx.dy()]), b)]


def mul_grad(ctx):
    a, b = ctx.inputs
    return [ctx.sum_to(ctx.op("mul", [ctx.dy(), b]), a), ctx.sum_to(ctx.op("mul", [ctx.dy(), a]), b)]


def div_grad(ctx):
    o, (a, b), y, dy = GradOps(ctx), ctx.inputs, ctx.outputs[0], ctx.dy()
    # d(a/b)/db = -a/b^2 = -y/b
    return [ctx.sum_to(o.div(dy, b), a), ctx.sum_to(o.neg(o.div(o.mul(dy, y), b)), b)]


def mod_grad(ctx):
    o, (a, b), y, dy = GradOps(ctx), ctx.inputs, ctx.outputs[0], ctx.dy()
    # a = q * b + y with q = floor(a/b) (mod) or trunc(a/b) (fmod): dy/db = -q. q is recovered
    # from the output, rounded to the integer it is, so both conventions share one rule.
    q = o.round(o.div(o.sub(a, y), b))
    return [ctx.sum_to(dy, a), ctx.sum_to(o.neg(o.mul(dy, q)), b)]


def pow_grad(ctx):
    o, (x, e), y, dy = GradOps(ctx), ctx.inputs, ctx.outputs[0], ctx.dy()
    zero = o.k(0, x)
    ex = ctx.cast_like(e, x)
    # x ** 0 is constant even at x = 0 (where e * x^(e-1) would be 0 * inf), as in PyTorch
    gx = o.where(o.equal(ex, zero), zero, o.mul(dy, o.mul(ex, o.pow(x, o.sub(ex, o.k(1, x))))))
    ge = None
    if _needs(ctx, 1):
        # d/de = y * log(x); 0 at x = 0 for e >= 0 (PyTorch's convention; log(0) = -inf)
        at0 = o.logical_and(o.equal(x, zero), o.greater_equal(ex, zero))
        ge = ctx.sum_to(o.where(at0, zero, o.mul(dy, o.mul(y, o.log(x)))), e)
    return [ctx.sum_to(gx, x), ge]


def extremum_grad(ctx):
    o, (a, b), dy = GradOps(ctx), ctx.inputs, ctx.dy()
    win = "greater" if ctx.node.op == "maximum" else "less"
    one, half, zero = o.k(1, dy), o.k(0.5, dy), o.k(0, dy)
    # share of a: 1 where a wins, 1/2 on ties, 0 where b wins
    wa = o.where(getattr(o, win)(a, b), one, o.where(o.equal(a, b), half, zero))
    ga = o.mul(dy, wa)
    return [ctx.sum_to(ga, a), ctx.sum_to(o.sub(dy, ga), b)]


def prelu_grad(ctx):
    o, (x, s), dy = GradOps(ctx), ctx.inputs, ctx.dy()
    pos = o.greater(x, o.k(0, x))
    return [ctx.sum_to(o.where(pos, dy, o.mul(dy, s)), x),
            ctx.sum_to(o.where(pos, o.k(0, dy), o.mul(dy, x)), s)]


def clip_grad(ctx):
    o, (x, lo, hi), dy = GradOps(ctx), ctx.inputs, ctx.dy()
    # PyTorch's clamp rule: x inside [lo, hi] passes the gradient, lo takes it below lo
    # (when lo < hi), hi above hi or everywhere when hi < lo (the output is hi there)
    inside = o.logical_and(o.greater_equal(x, lo), o.less_equal(x, hi))
    below = o.logical_and(o.less(x, lo), o.less(lo, hi))
    above = o.logical_or(o.greater(x, hi), o.less(hi, lo))
    return [ctx.sum_to(o.gate(inside, dy), x), ctx.sum_to(o.gate(below, dy), lo),
            ctx.sum_to(o.gate(above, dy), hi)]


def where_grad(ctx):
    o, (c, x, y), dy = GradOps(ctx), ctx.inputs, ctx.dy()
    zero = o.k(0, dy)
    return [None, ctx.sum_to(o.where(c, dy, zero), x), ctx.sum_to(o.where(c, zero, dy), y)]


def cast_grad(ctx):
    x = ctx.inputs[0]
    return [ctx.cast_like(ctx.dy(), x) if _needs(ctx, 0) else None]


def dropout_grad(ctx):
    o, ratio, mask, dy = GradOps(ctx), ctx.inputs[1], ctx.outputs[1], ctx.dy()
    train = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    # y = where(mask, x * s, 0) with s = 1/(1 - ratio) when training with 0 < ratio < 1, and
    # y = x (mask all true, s = 1) otherwise; ratio >= 1 gives an all-false mask. The ratio is
    # a rate, not a parameter: no gradient flows to it (PyTorch treats it the same way).
    r, t = known_value(ratio), known_value(train)
    if r is not None and (train is None or t is not None):
        r = float(np.asarray(r))
        active = (True if train is None else bool(np.asarray(t))) and 0 < r < 1
        return [o.gate(mask, o.mul(dy, o.k(1 / (1 - r), dy))) if active else dy]
    rr = ctx.cast_like(ratio, dy)
    zero, one = o.k(0, rr), o.k(1, rr)
    act = o.logical_and(o.greater(rr, zero), o.less(rr, one))
    if train is not None:
        act = o.logical_and(act, train)
    s = o.div(one, o.where(act, o.sub(one, rr), one))
    return [o.gate(mask, o.mul(dy, s))]


def gelu_grad(ctx):
    o, x, dy = GradOps(ctx), ctx.inputs[0], ctx.dy()
    k = lambda v: o.k(v, x)  # noqa: E731
    if ctx.attrs["approximate"] == "tanh":
        # y = x * s with s = sigmoid(2u), u = c (x + a x^3): y' = s + 2 x s (1 - s) u'
        c, a = math.sqrt(2 / math.pi), 0.044715
        x2 = o.mul(x, x)
        s = o.sigmoid(o.mul(k(2 * c), o.mul(x, o.add(k(1), o.mul(k(a), x2)))))
        du = o.mul(k(2 * c), o.add(k(1), o.mul(k(3 * a), x2)))
        d = o.add(s, o.mul(o.mul(x, du), o.mul(s, o.sub(k(1), s))))
    else:
        # y = x Phi(x): y' = Phi(x) + x phi(x)
        cdf = o.mul(k(0.5), o.add(k(1), o.erf(o.mul(x, k(1 / math.sqrt(2))))))
        pdf = o.mul(k(1 / math.sqrt(2 * math.pi)), o.exp(o.mul(k(-0.5), o.mul(x, x))))
        d = o.add(cdf, o.mul(x, pdf))
    return [o.mul(dy, d)]


def _one_minus_sq(o, v):
    """1 - v^2 as (1 - v)(1 + v): no cancellation near |v| = 1."""
    one = o.k(1, v)
    return o.mul(o.sub(one, v), o.add(one, v))


# ---- one-input ops: dx from (o, x, y, dy, **attrs) -------------------------------------------
_UNARY_GRADS = {
    "neg": lambda o, x, y, dy: o.neg(dy),
    "abs": lambda o, x, y, dy: o.mul(dy, o.sign(x)),
    "reciprocal": lambda o, x, y, dy: o.neg(o.mul(dy, o.mul(y, y))),
    "exp": lambda o, x, y, dy: o.mul(dy, y),
    "log": lambda o, x, y, dy: o.div(dy, x),
    "sqrt": lambda o, x, y, dy: o.div(o.mul(dy, o.k(0.5, x)), y),
    "sin": lambda o, x, y, dy: o.mul(dy, o.cos(x)),
    "cos": lambda o, x, y, dy: o.neg(o.mul(dy, o.sin(x))),
    "tan": lambda o, x, y, dy: o.mul(dy, o.add(o.k(1, x), o.mul(y, y))),
    "asin": lambda o, x, y, dy: o.div(dy, o.sqrt(_one_minus_sq(o, x))),
    "acos": lambda o, x, y, dy: o.neg(o.div(dy, o.sqrt(_one_minus_sq(o, x)))),
    "atan": lambda o, x, y, dy: o.div(dy, o.add(o.k(1, x), o.mul(x, x))),
    "sinh": lambda o, x, y, dy: o.mul(dy, o.cosh(x)),
    "cosh": lambda o, x, y, dy: o.mul(dy, o.sinh(x)),
    "asinh": lambda o, x, y, dy: o.div(dy, o.sqrt(o.add(o.mul(x, x), o.k(1, x)))),
    "acosh": lambda o, x, y, dy: o.div(dy, o.sqrt(o.mul(o.sub(x, o.k(1, x)), o.add(x, o.k(1, x))))),
    "atanh": lambda o, x, y, dy: o.div(dy, _one_minus_sq(o, x)),
    "tanh": lambda o, x, y, dy: o.mul(dy, _one_minus_sq(o, y)),
    "erf": lambda o, x, y, dy: o.mul(dy, o.mul(o.k(2 / math.sqrt(math.pi), x), o.exp(o.neg(o.mul(x, x))))),
}


# ---- activations --------------------------------------------------------------------------
def _pos(o, x):
    return o.greater(x, o.k(0, x))


def _hard_swish_grad(o, x, y, dy):
    # PyTorch: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above
    inner = o.mul(dy, o.add(o.mul(x, o.k(1 / 3, x)), o.k(0.5, x)))
    return o.gate(o.greater_equal(x, o.k(-3, x)), o.where(o.less_equal(x, o.k(3, x)), inner, dy))


def _softsign_grad(o, x, y, dy):
    t = o.add(o.k(1, x), o.abs(x))
    return o.div(dy, o.mul(t, t))


def _mish_grad(o, x, y, dy):
    t = o.tanh(o.softplus(x))
    # d/dx x tanh(sp(x)) = t + x (1 - t^2) sigmoid(x)
    one = o.k(1, x)
    return o.mul(dy, o.add(t, o.mul(o.mul(x, o.sigmoid(x)), o.mul(o.sub(one, t), o.add(one, t)))))


def _swish_grad(o, x, y, dy, alpha):
    ax = o.mul(o.k(alpha, x), x)
    s = o.sigmoid(ax)
    # d/dx x s(ax) = s + a x s (1 - s)
    return o.mul(dy, o.add(s, o.mul(ax, o.mul(s, o.sub(o.k(1, x), s)))))


_ACT_GRADS = {
    "relu": lambda o, x, y, dy: o.gate(_pos(o, x), dy),
    "sigmoid": lambda o, x, y, dy: o.mul(dy, o.mul(y, o.sub(o.k(1, y), y))),
    "leaky_relu": lambda o, x, y, dy, alpha: o.where(_pos(o, x), dy, o.mul(dy, o.k(alpha, x))),
    "elu": lambda o, x, y, dy, alpha: o.where(_pos(o, x), dy, o.mul(dy, o.mul(o.k(alpha, x), o.exp(x)))),
    "selu": lambda o, x, y, dy, alpha, gamma: o.mul(dy, o.where(
        _pos(o, x), o.k(gamma, x), o.mul(o.k(alpha * gamma, x), o.exp(x)))),
    "celu": lambda o, x, y, dy, alpha: o.where(_pos(o, x), dy, o.mul(dy, o.exp(o.div(x, o.k(alpha, x))))),
    # 0 where the clip is active, with PyTorch's strict inequalities at its ends
    "hard_sigmoid": lambda o, x, y, dy, alpha, beta: o.gate(
        o.logical_and(o.greater(y, o.k(0, y)), o.less(y, o.k(1, y))), o.mul(dy, o.k(alpha, x))),
    "hard_swish": _hard_swish_grad,
    "softplus": lambda o, x, y, dy: o.mul(dy, o.sigmoid(x)),
    "softsign": _softsign_grad,
    "thresholded_relu": lambda o, x, y, dy, alpha: o.gate(o.greater(x, o.k(alpha, x)), dy),
    "mish": _mish_grad,
    "swish": _swish_grad,
    "shrink": lambda o, x, y, dy, bias, lambd: o.gate(o.greater(o.abs(x), o.k(lambd, x)), dy),
}


# op name -> gradient rule of every one-input op whose rule is a formula above
UNARY_RULES = {name: unary_grad(f) for name, f in {**_UNARY_GRADS, **_ACT_GRADS}.items()}
