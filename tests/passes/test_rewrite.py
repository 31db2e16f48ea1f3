"""The pattern-rewrite engine: matching (ops, attrs, constants, commutativity, repeated names,
single use), replacement with provenance, fixpoint, and declining rules."""
from __future__ import annotations

import numpy as np

from irgraph import Graph, TensorType, run_graph
from irgraph.dtype import float32
from irgraph.passes.rewrite import Const, Match, Op, Rule, Var, rewrite


def _g():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), float32))
    return g, x


def _run(g, x):
    return run_graph(g, [x])


MUL_ONE = Rule("mul_one", Op("mul", Var("x"), Const(value=1.0), commutative=True), lambda m, g: m["x"])


def test_mul_by_one_removed_on_either_side():
    g, x = _g()
    one = g.add_const(np.ones((), np.float32), "one")
    y = g.op("mul", [one, g.op("mul", [x, one])])
    g.set_outputs([g.op("relu", [y])])
    log = []
    assert rewrite(g, [MUL_ONE], log=log)
    assert log == ["mul_one", "mul_one"]
    assert [n.op for n in g.nodes] == ["relu"] and g.nodes[0].inputs[0] is x
    g.verify()


def test_const_value_must_match_everywhere():
    g, x = _g()
    c = g.add_const(np.array([1, 1, 2], np.float32), "c")
    g.set_outputs([g.op("mul", [x, c])])
    assert not rewrite(g, [MUL_ONE])
    assert [n.op for n in g.nodes] == ["mul"]


def test_repeated_name_binds_same_value():
    # x - x -> 0 only when both sides are the same value
    rule = Rule("sub_self", Op("sub", Var("a"), Var("a")),
                lambda m, g: g.op("mul", [m["a"], g.add_const(np.zeros((), np.float32))]))
    g, x = _g()
    y = g.add_input("y", TensorType((2, 3), float32))
    s1 = g.op("sub", [x, x])
    s2 = g.op("sub", [x, y])
    g.set_outputs([s1, s2])
    assert rewrite(g, [rule])
    assert sorted(n.op for n in g.nodes) == ["mul", "sub"]


def test_single_use_inner_node_and_provenance():
    # neg(neg(x)) -> x only when the inner neg has no other reader
    rule = Rule("double_neg", Op("neg", Op("neg", Var("x"), single_use=True)), lambda m, g: m["x"])
    g, x = _g()
    inner = g.op("neg", [x], name="inner")
    outer = g.op("neg", [inner], name="outer")
    g.set_outputs([outer, inner])  # inner is also a graph output -> two uses
    assert not rewrite(g, [rule])
    g.set_outputs([outer])
    assert rewrite(g, [rule])
    assert g.outputs == [x]


def test_replacement_nodes_inherit_sources_and_numerics_hold():
    # relu(max(x, 0)) -> relu(x): built node gets the matched nodes' sources
    rule = Rule("exp_log", Op("exp", Op("log", Var("x"), name="lg"), name="ex"),
                lambda m, g: g.op("relu", [m["x"]]))
    g, x = _g()
    y = g.op("exp", [g.op("log", [x], name="L")], name="E")
    g.set_outputs([y])
    a = np.abs(np.random.default_rng(0).standard_normal((2, 3))).astype(np.float32) + 0.1
    before = _run(g, a)[0]
    assert rewrite(g, [rule])
    (n,) = g.nodes
    assert n.op == "relu" and set(n.meta["source"]) == {"E", "L"}
    np.testing.assert_allclose(_run(g, a)[0], before, rtol=1e-6)


def test_declining_rule_leaves_graph_untouched():
    def decline(m: Match, g):
        g.op("relu", [m["x"]])  # built, then declined: must not stay in the graph
        return None
    g, x = _g()
    g.set_outputs([g.op("neg", [x])])
    assert not rewrite(g, [Rule("no", Op("neg", Var("x")), decline)])
    assert [n.op for n in g.nodes] == ["neg"]


def test_attr_constraints():
    g, x = _g()
    t = g.op("transpose", [g.op("transpose", [x], {"perm": (1, 0)})], {"perm": (1, 0)})
    g.set_outputs([t])
    rule = Rule("tt", Op("transpose", Op("transpose", Var("x"), attrs={"perm": (1, 0)}), attrs={"perm": (1, 0)}),
                lambda m, g: m["x"])
    assert rewrite(g, [rule])
    assert g.outputs == [x] and not g.nodes
