"""Gradient rules of the elementwise ops (irgraph/ops/elementwise_grad.py) against finite
differences.

Inputs stay away from kinks (|x| > 0.05 around 0 for relu-like ops, no ties for maximum) except
where a case checks a subgradient convention on purpose (then every input is fed as a constant
except the one checked, and the kink value is exact)."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case, check_grad

_rng = np.random.default_rng(7)


def u(lo, hi, *shape):
    return _rng.uniform(lo, hi, size=shape)


def away(*shape, lo=0.1, hi=2.0):
    """Values of random sign with |x| in [lo, hi]: away from the kink at 0."""
    return _rng.choice([-1.0, 1.0], size=shape) * _rng.uniform(lo, hi, size=shape)


UNARY_DOMAIN = {
    "neg": (-2, 2), "exp": (-2, 2), "log": (0.2, 3), "sqrt": (0.2, 3), "sin": (-3, 3),
    "cos": (-3, 3), "tan": (-1.2, 1.2), "asin": (-0.9, 0.9), "acos": (-0.9, 0.9),
    "atan": (-3, 3), "sinh": (-2, 2), "cosh": (-2, 2), "asinh": (-3, 3), "acosh": (1.2, 4),
    "atanh": (-0.9, 0.9), "tanh": (-2, 2), "erf": (-2, 2), "sigmoid": (-4, 4),
    "softplus": (-4, 4), "mish": (-3, 3), "gelu": (-3, 3), "identity": (-2, 2),
}
KINKED = ["abs", "relu", "reciprocal", "softsign", "leaky_relu", "elu", "selu", "celu"]

GRAD_CASES = {
    **{op: [case(u(lo, hi, 2, 3))] for op, (lo, hi) in UNARY_DOMAIN.items()},
    **{op: [case(away(3, 4))] for op in KINKED},
    "floor": [case(u(-3, 3, 2, 3) + 0.01)],
    "ceil": [case(u(-3, 3, 2, 3) + 0.01)],
    "round": [case(np.array([-1.7, -0.2, 0.3, 1.2, 2.6, 3.9]))],
    "sign": [case(away(2, 3))],
    "add": [case(u(-1, 1, 2, 3), u(-1, 1, 3), id="broadcast"),
            case(u(-1, 1, 2, 1), u(-1, 1, 1, 3))],
    "sub": [case(u(-1, 1, 3), u(-1, 1, 2, 3))],
    "mul": [case(u(-1, 1, 2, 3), u(-1, 1, 2, 1))],
    "div": [case(u(-2, 2, 2, 3), away(3, lo=0.5)), case(away(1, 3, lo=0.5), u(-2, 2, 2, 1))],
    # quotients are away from integers, where mod jumps
    "mod": [case(np.array([[2.3, -2.3, 5.6], [-7.1, 0.4, 3.3]]), np.array([1.5, -1.5, 2.5])),
            case(np.array([[2.3, -2.3, 5.6], [-7.1, 0.4, 3.3]]), np.array([1.5, -1.5, 2.5]),
                 attrs={"fmod": True}, id="fmod")],
    "pow": [case(u(0.5, 2, 2, 3), u(-1.5, 2.5, 3), id="both"),
            case(u(-2, 2, 2, 3), np.array(3.0), const=(1,), id="cube"),
            case(u(0.5, 2, 2, 3), np.array([2, -1, 3], np.int64), id="int exponent")],
    "maximum": [case(u(-1, 1, 2, 3), u(-1, 1, 3) + 3.0 * (np.arange(3) - 1))],
    "minimum": [case(u(-1, 1, 2, 3), u(-1, 1, 2, 1) + np.array([[-2.0], [2.0]]))],
    "prelu": [case(away(2, 3, 4), u(0.05, 0.5, 3, 1)), case(away(2, 3), u(-1, 1, 3))],
    "hard_sigmoid": [case(np.array([-3.0, -2.0, -0.5, 0.3, 2.1, 4.0]), attrs={"alpha": 0.25, "beta": 0.4}),
                     case(np.array([-3.0, -2.0, -0.5, 0.3, 2.1, 4.0]))],
    "hard_swish": [case(np.array([-4.0, -2.9, -1.0, 0.5, 2.9, 3.5]))],
    "thresholded_relu": [case(np.array([-1.0, 0.5, 1.3, 2.0, 0.9]), attrs={"alpha": 1.0})],
    "shrink": [case(np.array([-2.0, -0.7, -0.3, 0.2, 0.6, 1.4]), attrs={"bias": 0.2, "lambd": 0.5})],
    "swish": [case(u(-3, 3, 2, 3)), case(u(-3, 3, 2, 3), attrs={"alpha": 1.7})],
    "clip": [case(np.array([-2.0, -0.5, 0.1, 0.7, 1.8]), np.array(-1.0), np.array(1.0), id="scalar bounds"),
             case(u(-2, 2, 2, 3), np.array([-1.5, 0.0, 0.5]), np.array([[1.0], [0.3]]) + 0.01,
                  id="tensor bounds"),
             case(np.array([-2.0, 0.5, 2.0]), np.array(1.0), np.array(-1.0), id="lo > hi")],
    "where": [case(np.array([[True, False, True], [False, False, True]]), u(-1, 1, 2, 3), u(-1, 1, 3))],
    # float32 -> float64 casts: test_cast_gradient_keeps_the_input_dtype
    "cast": [case(u(-1, 1, 2, 3), attrs={"to": "float64"})],
    "dropout": [case(u(-1, 1, 4, 5), np.array(0.3), attrs={"seed": 3}, const=(1,), num_outputs=2),
                case(u(-1, 1, 4, 5), np.array(0.3), np.array(False), attrs={"seed": 3}, const=(1, 2),
                     num_outputs=2, id="inference"),
                case(u(-1, 1, 4, 5), np.array(0.4), np.array(True), attrs={"seed": 1}, wrt=(0,),
                     num_outputs=2, id="runtime ratio and mode")],
}
GRAD_CASES["gelu"].append(case(u(-3, 3, 2, 3), attrs={"approximate": "tanh"}))
GRAD_CASES["leaky_relu"].append(case(away(3, 4), attrs={"alpha": 0.2}))
GRAD_CASES["elu"].append(case(away(3, 4), attrs={"alpha": 0.7}))
GRAD_CASES["celu"].append(case(away(3, 4), attrs={"alpha": 1.8}))

_PARAMS = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _PARAMS, ids=[f"{op}-{c.id or i}" for i, (op, c) in enumerate(_PARAMS)])
def test_gradient_matches_finite_differences(op, c):
    check_case(op, c)


# ---- conventions at kinks and dtypes ------------------------------------------------------------
def _grad_at(op, inputs, attrs=None, wrt=0, num_outputs=None):
    """The analytic gradient of sum(op(...)) with respect to input ``wrt``."""
    from irgraph import run_graph
    from irgraph.passes.autodiff import gradients
    from oprun import build
    g, outs, feeds = build(op, inputs, attrs, num_outputs=num_outputs)
    (gv,) = gradients(g, outs[0], [g.inputs[wrt]])
    g.set_outputs([gv])
    g.verify()
    return run_graph(g, feeds)[0]


def test_subgradients_at_zero_follow_pytorch():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(_grad_at("relu", [x]), [0, 0, 1])
    np.testing.assert_array_equal(_grad_at("abs", [x]), [-1, 0, 1])
    np.testing.assert_array_equal(_grad_at("leaky_relu", [x], {"alpha": 0.1}), [0.1, 0.1, 1])


def test_maximum_and_minimum_split_ties():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, 0.0])
    np.testing.assert_array_equal(_grad_at("maximum", [a, b], wrt=0), [0.5, 0, 1])
    np.testing.assert_array_equal(_grad_at("maximum", [a, b], wrt=1), [0.5, 1, 0])
    np.testing.assert_array_equal(_grad_at("minimum", [a, b], wrt=1), [0.5, 0, 1])


def test_pow_at_zero_base_is_finite():
    x, e = np.array([0.0, 0.0, 2.0]), np.array([0.0, 2.0, 3.0])
    np.testing.assert_array_equal(_grad_at("pow", [x, e], wrt=0), [0, 0, 12])
    np.testing.assert_array_equal(_grad_at("pow", [x, e], wrt=1), [0, 0, 8 * np.log(2.0)])


def test_cast_gradient_keeps_the_input_dtype():
    x = u(-1, 1, 2, 3).astype(np.float32)
    g = _grad_at("cast", [x], {"to": "float64"})
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, np.ones_like(x))


def test_dropout_gradient_is_the_scaled_mask():
    x = u(-1, 1, 50)
    from oprun import run
    _, mask = run("dropout", [x, np.array(0.25)], {"seed": 5}, num_outputs=2)
    g = _grad_at("dropout", [x, np.array(0.25)], {"seed": 5}, num_outputs=2)
    np.testing.assert_allclose(g, mask / 0.75, rtol=1e-15)
    assert 0 < mask.sum() < mask.size
    g = _grad_at("dropout", [x, np.array(0.25), np.array(False)], {"seed": 5}, num_outputs=2)
    np.testing.assert_array_equal(g, np.ones_like(x))


def test_large_inputs_use_directional_checks():
    # more elements than the element-by-element limit: the random-direction path of gradcheck
    check_grad("tanh", [u(-2, 2, 8, 9)])
    check_grad("mul", [u(-1, 1, 8, 9), u(-1, 1, 9)])
