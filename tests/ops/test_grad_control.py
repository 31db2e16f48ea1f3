"""Gradients of loop and scan (bodies unrolled over a static trip count) against central finite
differences in float64; the gradients of captured values (if, and loop/scan bodies reading outer
values) through the ``captures`` protocol of control_grad.py; clear errors for data-dependent
trip counts."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import Graph, IrgraphError, TensorType, run_graph
from irgraph.passes import autodiff  # noqa: F401  (the walk the control rules call back into)

from gradcheck import case, check_case

F64, I64, BOOL = irgraph.dtype.float64, irgraph.dtype.int64, irgraph.dtype.bool_
R = np.random.default_rng(13)


def _loop_body(k: float = 0.5) -> Graph:
    """(i, cond, a[3], b[3]) -> (cond, a * b + i, b - k a, a * a)."""
    g = Graph("body")
    i = g.add_input("i", TensorType((), I64))
    cond = g.add_input("cond", TensorType((), BOOL))
    a = g.add_input("a", TensorType((3,), F64))
    b = g.add_input("b", TensorType((3,), F64))
    fi = g.op("cast", [i], {"to": F64})
    a2 = g.op("add", [g.op("mul", [a, b]), fi])
    b2 = g.op("sub", [b, g.op("mul", [a, g.add_const(np.array(k), "k")])])
    g.set_outputs([cond, a2, b2, g.op("mul", [a, a])])
    return g


def _scan_body(sx=(2,)) -> Graph:
    """(s[2], x_t[2]) -> (s * x_t + x_t, (s * x_t) * s)."""
    g = Graph("body")
    s = g.add_input("s", TensorType((2,), F64))
    x = g.add_input("x", TensorType(sx, F64))
    sx_ = g.op("mul", [s, x])
    g.set_outputs([g.op("add", [sx_, x]), g.op("mul", [sx_, s])])
    return g


def v(*shape, scale=0.7):
    return R.standard_normal(shape) * scale


_M3, _M0 = np.array(3, np.int64), np.array(0, np.int64)

# ops whose finite-difference check needs a graph the one-node harness cannot build (a branch
# reading the enclosing graph's values): op -> the test in this module that checks it
CHECKED_ELSEWHERE = {"if": "test_if_gradient_reaches_captured_values"}

GRAD_CASES = {
    "loop": [
        case(_M3, None, v(3), v(3), attrs={"body": _loop_body()}, const=(0,), num_outputs=3, id="for-3"),
        case(_M3, np.array(True), v(3), v(3), attrs={"body": _loop_body(1.5)}, const=(0, 1), num_outputs=3,
             id="condition-passed-through"),
        case(_M0, None, v(3), v(3), attrs={"body": _loop_body()}, const=(0,), num_outputs=3, id="zero-trips"),
    ],
    "scan": [
        case(v(2), v(4, 2), attrs={"body": _scan_body(), "num_scan_inputs": 1}, num_outputs=2, id="forward"),
        case(v(2), v(2, 3), attrs={"body": _scan_body(), "num_scan_inputs": 1, "scan_input_axes": [1],
                                   "scan_input_directions": [1], "scan_output_directions": [1],
                                   "scan_output_axes": [-1]}, num_outputs=2, id="reverse-axis1"),
        case(v(2, 2), v(2, 3, 2), attrs={"body": _scan_body(), "num_scan_inputs": 1, "batched": True},
             num_outputs=2, id="batched"),
    ],
}

_ALL = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _ALL, ids=[f"{op}-{c.id}" for op, c in _ALL])
def test_gradient(op, c):
    check_case(op, c)


# ---- captured values: the rules' ``captures`` protocol ---------------------------------------
def _capture_check(build, x0, extra_feeds=()):
    """d sum(cot * out) / d x for an op node reading ``x`` as a capture (the reverse walk passes
    captures to the rule), against differences."""
    g = Graph()
    x = g.add_input("x", TensorType(x0.shape, F64))
    extra = [g.add_input(f"e{i}", TensorType(np.shape(a), irgraph.dtype.DType.from_numpy(np.asarray(a).dtype)))
             for i, a in enumerate(extra_feeds)]
    node_out = build(g, x, *extra)
    g.set_outputs([node_out])
    fwd = g.copy()
    cot = R.standard_normal(node_out.shape)
    seed = g.add_input("cot", TensorType(node_out.shape, F64))
    (gx,) = autodiff.gradients(g, [node_out], [x], seeds=[seed])   # x reaches the node as a capture only
    assert gx is not None
    g.set_outputs([gx])
    got = run_graph(g, [x0, *extra_feeds, cot])[0]

    def loss(xv):
        return float(np.sum(cot * run_graph(fwd, [xv, *extra_feeds])[0]))
    num = np.zeros_like(x0)
    for j in range(x0.size):
        d = np.zeros(x0.size)
        d[j] = 1e-6
        d = d.reshape(x0.shape)
        num.reshape(-1)[j] = (loss(x0 + d) - loss(x0 - d)) / 2e-6
    np.testing.assert_allclose(got, num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cond", [True, False])
@pytest.mark.parametrize("known", [False, True])
def test_if_gradient_reaches_captured_values(cond, known):
    def build(g, x, c):
        c = g.add_const(np.array(cond), "k") if known else c
        then = Graph("then", parent=g)
        then.set_outputs([then.op("mul", [x, x])])
        other = Graph("else", parent=g)
        other.set_outputs([other.op("sub", [x, other.op("mul", [x, other.add_const(np.array(3.0), "three")])])])
        (y,) = g.op("if", [c], {"then_branch": then, "else_branch": other})
        return y
    _capture_check(build, v(3), [np.array(cond)])


def test_loop_and_scan_gradients_reach_captured_values():
    def loop(g, x, a0):
        body = Graph("body", parent=g)
        body.add_input("i", TensorType((), I64))
        cond = body.add_input("cond", TensorType((), BOOL))
        a = body.add_input("a", TensorType((3,), F64))
        body.set_outputs([cond, body.op("mul", [body.op("add", [a, x]), x])])
        return g.op("loop", [g.add_const(np.array(3, np.int64), "m"), None, a0], {"body": body})[0]
    _capture_check(loop, v(3), [v(3)])

    def scan(g, x, s0, xs):
        body = Graph("body", parent=g)
        s = body.add_input("s", TensorType((3,), F64))
        t = body.add_input("t", TensorType((3,), F64))
        s2 = body.op("add", [body.op("mul", [s, x]), t])
        body.set_outputs([s2, body.op("mul", [s2, x])])
        return g.op("scan", [s0, xs], {"body": body, "num_scan_inputs": 1}, num_outputs=2)[1]
    _capture_check(scan, v(3), [v(3), v(2, 3)])


def test_data_dependent_trip_counts_raise():
    g = Graph()
    m = g.add_input("m", TensorType((), I64))
    a = g.add_input("a", TensorType((3,), F64))
    b = g.add_input("b", TensorType((3,), F64))
    y = g.op("loop", [m, None, a, b], {"body": _loop_body()})[0]
    with pytest.raises(IrgraphError, match="trip count M known at compile time"):
        autodiff.gradients(g, [y], [a])
    c = g.add_input("c", TensorType((), BOOL))
    y = g.op("loop", [g.add_const(np.array(3, np.int64), "k"), c, a, b], {"body": _loop_body()})[0]
    with pytest.raises(IrgraphError, match="early exit"):
        autodiff.gradients(g, [y], [a])
