"""eliminate_common_subexpressions: identical nodes and constants merged (cascading), attributes
compared by value, commutative inputs in either order; random ops and different bodies kept."""
from __future__ import annotations

import numpy as np
import pytest

import models
from irgraph import Graph, TensorType
from irgraph import dtype as dt
from passcheck import imported, light_feeds, light_model, run_pass, same_results


def _cse(g):
    return run_pass(g, "eliminate_common_subexpressions")


def _check(before: Graph, after: Graph, feeds, exact=True) -> None:
    same_results(before, after, feeds, exact=exact)


def _xy():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 4), dt.float32))
    y = g.add_input("y", TensorType(("N", 4), dt.float32))
    return g, x, y


def _feeds(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2)]


def test_identical_nodes_merge_in_cascade_and_outputs_follow():
    g, x, y = _xy()
    a1 = g.op("add", [x, y], name="a1", meta={"source": ["Add_1"]})
    a2 = g.op("add", [y, x], name="a2", meta={"source": ["Add_2"]})  # commutative: same value
    e1 = g.op("exp", [a1], name="e1")
    e2 = g.op("exp", [a2], name="e2")
    s1 = g.op("sub", [x, y], name="s1")
    s2 = g.op("sub", [y, x], name="s2")  # not commutative: kept
    g.set_outputs([g.op("mul", [e1, s1]), g.op("mul", [e2, s2]), e2])
    before = g.copy()
    g, rec = _cse(g)
    assert rec.ops_removed == {"add": 1, "exp": 1}
    assert g.outputs[2] is e1  # a graph output read the merged value
    assert a1.producer.meta["source"] == ["Add_1", "Add_2"]
    _check(before, g, _feeds())
    _, rec = _cse(g)
    assert not rec.changed


def test_attributes_must_be_equal():
    g, x, y = _xy()
    t = [g.op("transpose", [x], {"perm": p}) for p in ((1, 0), (1, 0), (0, 1))]
    lr = [g.op("leaky_relu", [x], {"alpha": a}) for a in (0.0, -0.0, 0.1, 0.1)]
    fill = [g.op("constant_of_shape", [g.add_const(np.array([2, 2], np.int64), f"s{i}")],
                 {"value": np.array([v], np.float32)}) for i, v in enumerate((1.5, 1.5, 2.5))]
    g.set_outputs(t + lr + fill)
    before = g.copy()
    g, rec = _cse(g)
    # equal perms merge; 0.0 and -0.0 are different alphas; array attributes compare by value
    assert rec.ops_removed == {"transpose": 1, "leaky_relu": 1, "constant_of_shape": 1}
    assert g.outputs[0] is g.outputs[1] and g.outputs[0] is not g.outputs[2]
    assert g.outputs[3] is not g.outputs[4] and g.outputs[5] is g.outputs[6]
    assert g.outputs[7] is g.outputs[8] and g.outputs[8] is not g.outputs[9]
    _check(before, g, _feeds()[:2])


def test_constants_merge_by_bytes():
    g, x, y = _xy()
    w = np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32)
    c1, c2 = g.add_const(w, "w1"), g.add_const(w.copy(), "w2")
    z1, z2 = g.add_const(np.zeros(4, np.float32), "z"), g.add_const(-np.zeros(4, np.float32), "nz")
    n1, n2 = g.add_const(np.full(4, np.nan, np.float32), "n1"), g.add_const(np.full(4, np.nan, np.float32), "n2")
    i1 = g.add_const(np.zeros(4, np.int32), "i0")  # same bytes as z, another dtype
    m1, m2 = g.op("matmul", [x, c1]), g.op("matmul", [x, c2])
    g.set_outputs([m1, m2, g.op("add", [x, z1]), g.op("add", [x, z2]), g.op("add", [x, n1]),
                   g.op("add", [x, n2]), g.op("cast", [i1], {"to": dt.float32})])
    before = g.copy()
    g, rec = _cse(g)
    assert set(g.constants) == {"w1", "z", "nz", "n1", "i0"}
    assert rec.ops_removed == {"matmul": 1, "add": 1}  # the two weight reads, the two NaN adds
    _check(before, g, _feeds())


def test_random_ops_are_never_merged():
    g = Graph()
    s = g.add_const(np.array([3], np.int64), "s")
    r1 = g.op("random_uniform", [s])
    r2 = g.op("random_uniform", [s])
    g.set_outputs([r1, r2])
    _, rec = _cse(g)
    assert not rec.changed


def _if(g, cond, x):
    then = Graph("then", parent=g)
    then.set_outputs([then.op("exp", [x])])
    other = Graph("else", parent=g)
    other.set_outputs([other.op("neg", [x])])
    (y,) = g.op("if", [cond], {"then_branch": then, "else_branch": other}, num_outputs=1)
    return y


def test_subgraphs_compare_by_identity_and_are_cleaned_inside():
    g, x, y = _xy()
    c = g.add_input("c", TensorType((), dt.bool_))
    a, b = _if(g, c, x), _if(g, c, x)  # equal bodies, different objects: kept
    body = Graph("body", parent=g)
    body.set_outputs([body.op("add", [body.op("relu", [y]), body.op("relu", [y])])])
    (z,) = g.op("if", [c], {"then_branch": body, "else_branch": body}, num_outputs=1)
    g.set_outputs([a, b, z])
    before = g.copy()
    g, rec = _cse(g)
    assert [n.op for n in g.nodes] == ["if", "if", "if"]
    assert [n.op for n in body.nodes] == ["relu", "add"]  # merged inside the body
    for cond in (True, False):
        _check(before, g, _feeds() + [np.array(cond)])


def test_bert_layer_shape_arithmetic_merges():
    m = models.bert_layer()
    g, before = imported(m)
    g, rec = _cse(g)
    # the second Concat's Unsqueezes repeat the first's; 'one' and 'one1' are the same 1.0
    assert rec.ops_removed == {"unsqueeze": 2}
    assert len(g.constants) < len(before.constants)
    _check(before, g, models.feeds(m, {"N": 2, "S": 5}, seed=1))


@pytest.mark.parametrize("name", sorted(models.ALL))
def test_models_keep_their_results(name):
    m = models.ALL[name]()
    g, before = imported(m)
    g, _ = _cse(g)
    _check(before, g, models.feeds(m, {"N": 2, "S": 3}, seed=2))


def test_light_inception_weights_merge():
    # its weights are identical ConstantOfShape fills: the fills of equal shape merge
    m = light_model("inception_v1")
    g, before = imported(m)
    g, rec = _cse(g)
    # ... and then convs that read one input with one (merged) weight are the same conv
    assert rec.ops_removed["constant_of_shape"] >= 20 and rec.ops_removed["conv"] >= 1
    assert not rec.ops_added
    feeds = light_feeds(m)
    _check(before, g, feeds, exact=False)
