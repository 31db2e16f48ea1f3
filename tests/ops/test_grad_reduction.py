"""Gradient rules of the reductions, running scans and softmaxes (irgraph/ops/reduction.py)
against finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case

_rng = np.random.default_rng(11)


def u(lo, hi, *shape):
    return _rng.uniform(lo, hi, size=shape)


def i64(*v):
    return np.array(v, dtype=np.int64)


def distinct(*shape):
    """Values without ties (so max/min have one winner) in random order."""
    n = int(np.prod(shape))
    return (_rng.permutation(n) * 0.37 - n * 0.15 + u(-0.05, 0.05, n)).reshape(shape)


def _reductions(x_of):
    """Cases of one reduction over several axes/keepdims settings; x_of(shape) makes inputs."""
    return [
        case(x_of(2, 3, 4), i64(1), const=(1,), id="axis 1"),
        case(x_of(2, 3, 4), i64(0, 2), attrs={"keepdims": 0}, const=(1,), id="axes 0,2 no keepdims"),
        case(x_of(2, 3, 4), i64(-1, 0), const=(1,), id="negative axis"),
        case(x_of(2, 3), id="all axes"),
        case(x_of(2, 3), attrs={"keepdims": 0}, id="all axes to a scalar"),
        case(x_of(2, 3), i64(), attrs={"noop_with_empty_axes": 1}, const=(1,), id="noop"),
        case(x_of(2, 3), i64(), attrs={"keepdims": 0}, const=(1,), id="empty axes = all"),
        case(x_of(2, 3, 2), i64(2), id="runtime axes, keepdims"),
    ]


def _with_zeros(*shape):
    x = u(0.5, 1.5, *shape) * _rng.choice([-1.0, 1.0], size=shape)
    x.reshape(-1)[[1, 7]] = 0.0  # one zero in one row, two in another: the hard cases
    return x


GRAD_CASES = {
    "reduce_sum": _reductions(lambda *s: u(-1, 1, *s)),
    "reduce_mean": _reductions(lambda *s: u(-1, 1, *s)),
    "reduce_prod": _reductions(lambda *s: u(0.5, 1.5, *s) * _rng.choice([-1.0, 1.0], size=s))[:-1] + [
        case(_with_zeros(2, 4), i64(1), const=(1,), id="zeros"),
        case(_with_zeros(3, 4), i64(0, 1), attrs={"keepdims": 0}, const=(1,), id="zeros, all axes")],
    "reduce_max": _reductions(distinct),
    "reduce_min": _reductions(distinct),
    "cumsum": [case(u(-1, 1, 3, 4), i64(1), const=(1,)),
               case(u(-1, 1, 3, 4), np.array(0, np.int64), attrs={"exclusive": 1}, const=(1,),
                    id="exclusive"),
               case(u(-1, 1, 3, 4), i64(-1), attrs={"reverse": 1}, const=(1,), id="reverse"),
               case(u(-1, 1, 3, 4), i64(1), attrs={"reverse": 1, "exclusive": 1}, id="both, runtime axis")],
    "cumprod": [case(u(0.5, 1.5, 3, 4), i64(1), const=(1,)),
                case(u(0.5, 1.5, 3, 4), i64(0), attrs={"exclusive": 1}, const=(1,), id="exclusive"),
                case(u(0.5, 1.5, 3, 4), i64(1), attrs={"reverse": 1}, const=(1,), id="reverse"),
                case(np.array([[1.5, 0.0, 2.0, 0.7, -1.2], [0.0, 0.0, 1.1, 2.0, 0.9],
                               [0.8, -1.3, 0.6, 1.4, 0.0]]), i64(1), const=(1,), id="zeros"),
                case(np.array([[1.5, 0.0, 2.0, 0.7, -1.2], [0.0, 0.0, 1.1, 2.0, 0.9],
                               [0.8, -1.3, 0.6, 1.4, 0.0]]), i64(1), attrs={"exclusive": 1},
                     const=(1,), id="zeros exclusive"),
                case(np.array([[1.5, 0.0, 2.0, 0.7, -1.2], [0.0, 0.0, 1.1, 2.0, 0.9],
                               [0.8, -1.3, 0.6, 1.4, 0.0]]), i64(1),
                     attrs={"exclusive": 1, "reverse": 1}, const=(1,), id="zeros exclusive reverse"),
                case(np.array([[1.5, 0.0, 2.0, 0.7, -1.2], [0.0, 0.0, 1.1, 2.0, 0.9],
                               [0.8, -1.3, 0.6, 1.4, 0.0]]), i64(1), attrs={"reverse": 1},
                     const=(1,), id="zeros reverse")],
    "softmax": [case(u(-2, 2, 2, 3, 4)), case(u(-2, 2, 2, 3, 4), attrs={"axis": 1}),
                case(u(-2, 2, 3, 5), attrs={"axis": 0})],
    "log_softmax": [case(u(-2, 2, 2, 3, 4)), case(u(-2, 2, 2, 3, 4), attrs={"axis": 0}),
                    case(u(-2, 2, 3, 5), attrs={"axis": -2})],
}

_PARAMS = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _PARAMS, ids=[f"{op}-{c.id or i}" for i, (op, c) in enumerate(_PARAMS)])
def test_gradient_matches_finite_differences(op, c):
    check_case(op, c)


def _grad_of_sum(op, inputs, attrs=None):
    from irgraph import run_graph
    from irgraph.passes.autodiff import gradients
    from oprun import build
    g, outs, feeds = build(op, inputs, attrs, const=range(1, len(inputs)))
    (gv,) = gradients(g, outs[0], [g.inputs[0]])
    g.set_outputs([gv])
    return run_graph(g, feeds)[0]


def test_max_ties_share_the_gradient_evenly():
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    got = _grad_of_sum("reduce_max", [x, i64(1)])
    np.testing.assert_array_equal(got, [[0, 0.5, 0.5, 0], [0.25, 0.25, 0.25, 0.25]])
    got = _grad_of_sum("reduce_min", [x, i64(1)])
    np.testing.assert_array_equal(got, [[0, 0, 0, 1], [0.25, 0.25, 0.25, 0.25]])


def test_softmax_rules_are_explicit():
    """softmax/log_softmax have their own rule (a few fused ops), not their decomposition's."""
    from irgraph.ops.registry import get_op
    assert get_op("softmax").grad is not None and get_op("log_softmax").grad is not None
