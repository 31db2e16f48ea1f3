"""The autodiff engine (passes/autodiff.py): the reverse walk, gradient sums for values used
twice, differentiation through fused bodies, zeros for unreached parameters, rule checking, and
the pass form. Per-op rules are checked in tests/ops/test_grad_*.py."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import Graph, IrgraphError, TensorType, run_graph
from irgraph.ops.registry import get_op
from irgraph.passes import PassContext, run_passes
from irgraph.passes.autodiff import differentiate, gradients
from irgraph.passes.group import make_group

F64 = "float64"


def _graph():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), F64))
    w = g.add_input("w", TensorType((3,), F64))
    u = g.add_input("u", TensorType((3,), F64))
    xw = g.op("mul", [x, w], name="xw")
    y = g.op("add", [g.op("mul", [xw, xw], name="sq"), x], name="y")   # x*w used twice
    g.set_outputs([y])
    return g, x, w, u, y


def test_value_used_twice_sums_its_gradients():
    g, x, w, u, y = _graph()
    d = differentiate(g, "y", ["x", "w", "u"])
    assert [v.name for v in d.outputs] == ["y", "grad_x", "grad_w", "grad_u"]
    d.verify()
    rng = np.random.default_rng(0)
    xv, wv, uv = rng.standard_normal((2, 3)), rng.standard_normal(3), rng.standard_normal(3)
    yv, gx, gw, gu = run_graph(d, [xv, wv, uv])
    np.testing.assert_allclose(yv, (xv * wv) ** 2 + xv)
    np.testing.assert_allclose(gx, 2 * xv * wv * wv + 1)                  # seed: ones
    np.testing.assert_allclose(gw, np.sum(2 * xv * wv * xv, axis=0))      # broadcast summed back
    np.testing.assert_array_equal(gu, np.zeros(3))                        # not on the path


def test_original_graph_is_left_alone():
    g, *_ = _graph()
    n = len(g.nodes)
    differentiate(g, "y", ["x"])
    assert len(g.nodes) == n and [v.name for v in g.outputs] == ["y"]


def test_seed_is_the_cotangent():
    g, x, w, u, y = _graph()
    seed = g.add_input("dy", TensorType((2, 3), F64))
    (gx,) = gradients(g, y, [x], seeds=[seed])
    g.set_outputs([gx])
    rng = np.random.default_rng(1)
    xv, wv, uv, dv = (rng.standard_normal(s) for s in [(2, 3), 3, 3, (2, 3)])
    (got,) = run_graph(g, [xv, wv, uv, dv])
    np.testing.assert_allclose(got, dv * (2 * xv * wv * wv + 1))


def test_gradient_through_a_fused_body():
    g, x, w, u, y = _graph()
    plain = run_graph(differentiate(g, "y", ["x", "w"]), [np.ones((2, 3)), np.arange(3.0), np.ones(3)])
    make_group(g, [n for n in g.nodes], "generic")
    assert [n.op for n in g.nodes] == ["fused"]
    fused = run_graph(differentiate(g, "y", ["x", "w"]), [np.ones((2, 3)), np.arange(3.0), np.ones(3)])
    for a, b in zip(plain, fused):
        np.testing.assert_allclose(a, b)


def test_non_differentiable_ops_pass_no_gradient():
    g = Graph()
    x = g.add_input("x", TensorType((4,), F64))
    mask = g.op("cast", [g.op("greater", [x, g.add_const(np.zeros(4))])], {"to": "float64"})
    g.set_outputs([g.op("mul", [mask, x])])
    d = differentiate(g, g.outputs[0].name, ["x"])
    xv = np.array([-1.0, 2.0, -3.0, 4.0])
    # cast has a rule of its own (identity on floats) but greater is piecewise constant
    _, gx = run_graph(d, [xv])
    np.testing.assert_array_equal(gx, (xv > 0).astype(np.float64))


def test_a_rule_returning_the_wrong_type_is_named(monkeypatch):
    g, *_ = _graph()
    bad = lambda ctx: [ctx.op("reduce_sum", [ctx.dy()], {"keepdims": 0})] * 2   # noqa: E731
    monkeypatch.setattr(get_op("add"), "grad", bad)
    with pytest.raises(IrgraphError, match="wrong type") as e:
        differentiate(g, "y", ["x"])
    assert e.value.node == "y" and e.value.op == "add"


def test_unknown_names_and_integer_targets_are_refused():
    g, *_ = _graph()
    with pytest.raises(IrgraphError, match="no value named 'nope'"):
        differentiate(g, "y", ["nope"])
    g2 = Graph()
    i = g2.add_input("i", TensorType((3,), "int64"))
    g2.set_outputs([g2.op("add", [i, i])])
    with pytest.raises(IrgraphError, match="non-float"):
        differentiate(g2, g2.outputs[0].name, ["i"])


def test_pass_form_reads_its_options():
    g, *_ = _graph()
    out, _ = run_passes(g, ["autodiff"], PassContext(options={"autodiff.loss": "y", "autodiff.wrt": ["w"]},
                                                     verify=True))
    assert [v.name for v in out.outputs] == ["y", "grad_w"]
    with pytest.raises(IrgraphError, match="autodiff.loss"):
        run_passes(_graph()[0], ["autodiff"], PassContext())
