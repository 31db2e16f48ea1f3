"""fold_constants: nodes of known inputs become constants (bit-exact, names kept), within the
size cap that keeps weights from being duplicated; random ops and real control flow stay."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
import models
from irgraph import Graph, TensorType, run_graph
from irgraph.dtype import bool_, float32
from irgraph.passes.fold_constants import DEFAULT_MAX_BYTES
from passcheck import imported, light_feeds, light_model, rand, run_pass, same_results


def _fold(g, **options):
    return run_pass(g, "fold_constants", **options)


def _same_results(before: Graph, after: Graph, feeds, exact=False) -> None:
    same_results(before, after, feeds, exact=exact)


def _rand(*shape, seed=0):
    return rand(shape, seed)


def test_constant_chain_folds_bit_exactly_and_keeps_names():
    g = Graph()
    x = g.add_input("x", TensorType((3,), float32))
    a = g.add_const(_rand(3, seed=1), "a")
    b = g.add_const(_rand(3, seed=2), "b")
    s = g.op("exp", [g.op("add", [a, b], name="sum")], name="e")
    y = g.op("mul", [x, s], name="y")
    g.set_outputs([y])
    before = g.copy()
    g, rec = _fold(g)
    assert rec.changed and [n.op for n in g.nodes] == ["mul"]
    assert g.nodes[0].inputs[1] is s and s.is_const and s.name == "e"
    np.testing.assert_array_equal(s.const, np.exp(a.const + b.const))
    assert "a" not in g.constants and "b" not in g.constants  # their only reader was folded
    _same_results(before, g, [_rand(3, seed=3)], exact=True)
    _, rec = _fold(g)
    assert not rec.changed


def _weight_graph(shared: bool, n=300):
    g = Graph()
    x = g.add_input("x", TensorType(("B", n), float32))
    w = g.add_const(_rand(n, n, seed=4), "w")
    wt = g.op("transpose", [w], {"perm": (1, 0)}, name="wt")
    y = g.op("matmul", [x, wt], name="y")
    outs = [y]
    if shared:
        outs.append(g.op("matmul", [x, w], name="z"))  # the original weight is still read
    g.set_outputs(outs)
    return g


def test_weight_only_chain_folds_into_the_weights_place():
    g = _weight_graph(shared=False)
    assert g.constants["w"].const.nbytes > DEFAULT_MAX_BYTES
    before = g.copy()
    g, rec = _fold(g)
    assert [n.op for n in g.nodes] == ["matmul"]
    assert list(g.constants) == ["wt"]  # replaced, not duplicated
    _same_results(before, g, [_rand(2, 300, seed=5)], exact=True)


def test_a_large_weight_still_in_use_is_not_materialized_twice():
    g = _weight_graph(shared=True)
    g, rec = _fold(g)
    assert not rec.changed and "transpose" in {n.op for n in g.nodes}
    # a cap raised above its size lets it fold
    g, rec = _fold(g, **{"fold_constants.max_bytes": 1 << 20})
    assert rec.changed and "transpose" not in {n.op for n in g.nodes}
    assert set(g.constants) == {"w", "wt"}


def test_large_fills_stay_computed_small_ones_fold():
    g = Graph()
    x = g.add_input("x", TensorType((512, 512), float32))
    big = g.op("constant_of_shape", [g.add_const(np.array([512, 512], np.int64), "s")],
               {"value": np.array([0.5], np.float32)}, name="big")
    small = g.op("constant_of_shape", [g.add_const(np.array([512], np.int64), "s1")],
                 {"value": np.array([2.0], np.float32)}, name="small")
    g.set_outputs([g.op("add", [g.op("mul", [x, big]), small])])
    before = g.copy()
    g, rec = _fold(g)
    assert rec.ops_removed == {"constant_of_shape": 1}
    assert big.producer is not None and small.is_const
    _same_results(before, g, [_rand(512, 512)], exact=True)
    # with a zero cap nothing that adds bytes folds
    g2, rec = _fold(before.copy(), **{"fold_constants.max_bytes": 0})
    assert not rec.changed


def test_random_ops_are_never_folded():
    g = Graph()
    shape = g.add_const(np.array([4], np.int64), "shape")
    r = g.op("random_normal", [shape], {"seed": 3.0}, name="r")
    x = g.add_const(np.ones(4, np.float32), "x")
    y, mask = g.op("dropout", [x, g.add_const(np.array(0.5, np.float32), "ratio"),
                               g.add_const(np.array(True), "train")], {"seed": 1}, num_outputs=2)
    g.set_outputs([g.op("add", [r, y])])
    g, rec = _fold(g)
    assert not rec.changed
    assert sorted(n.op for n in g.nodes) == ["add", "dropout", "random_normal"]


def test_shape_of_a_static_tensor_folds_symbolic_does_not():
    for batch, folded in ((2, True), ("N", False)):
        g = Graph()
        x = g.add_input("x", TensorType((batch, 6), float32))
        s = g.op("shape", [x])
        g.set_outputs([g.op("reshape", [x, g.op("concat", [s, g.add_const(np.array([1], np.int64), "one")],
                                                         {"axis": 0})])])
        g, rec = _fold(g)
        assert rec.changed is folded
        assert ("shape" in {n.op for n in g.nodes}) is not folded
        np.testing.assert_array_equal(run_graph(g, [_rand(2, 6)])[0], _rand(2, 6).reshape(2, 6, 1))


def _if_graph(cond_value):
    g = Graph()
    x = g.add_input("x", TensorType((3,), float32))
    if cond_value is None:
        c = g.add_input("c", TensorType((), bool_))
    else:
        c = g.add_const(np.array(cond_value), "c")
    then = Graph("then", parent=g)
    then.set_outputs([then.op("exp", [x])])
    other = Graph("else", parent=g)
    other.set_outputs([other.op("neg", [x])])
    (y,) = g.op("if", [c], {"then_branch": then, "else_branch": other}, num_outputs=1, name="branch")
    g.set_outputs([g.op("add", [y, x])])
    return g


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_a_known_condition_becomes_its_branch(cond):
    g = _if_graph(cond)
    before = g.copy()
    g, rec = _fold(g)
    assert rec.changed
    assert sorted(n.op for n in g.nodes) == sorted(["add", "exp" if cond else "neg"])
    assert all(n.meta["source"] == ["branch"] for n in g.nodes if n.op != "add")
    _same_results(before, g, [_rand(3)], exact=True)


def test_if_with_an_unknown_condition_stays():
    g = _if_graph(None)
    g, rec = _fold(g)
    assert not rec.changed and "if" in {n.op for n in g.nodes}


def test_folding_inside_a_loop_body():
    g = Graph()
    x = g.add_input("x", TensorType((3,), float32))
    body = Graph("body", parent=g)
    it = body.add_input("i", TensorType((), irgraph.dtype.int64))
    cond = body.add_input("cond", TensorType((), bool_))
    acc = body.add_input("acc", TensorType((3,), float32))
    k = body.op("sqrt", [body.add_const(np.array([4.0, 9.0, 16.0], np.float32), "k")], name="k2")
    body.set_outputs([cond, body.op("add", [acc, k])])
    (y,) = g.op("loop", [g.add_const(np.array(3, np.int64), "n"), g.add_const(np.array(True), "t"), x],
                {"body": body}, num_outputs=1)
    g.set_outputs([y])
    before = g.copy()
    g, rec = _fold(g)
    assert rec.changed and [n.op for n in body.nodes] == ["add"] and k.is_const
    _same_results(before, g, [_rand(3)], exact=True)


# ---- whole models ---------------------------------------------------------------------------
def test_mlp_transposed_weights_fold():
    m = models.mlp()
    g, before = imported(m)
    g, rec = _fold(g)
    assert rec.ops_removed == {"transpose": 3}
    assert before.parameter_count() == g.parameter_count()  # no weight duplicated
    _same_results(before, g, models.feeds(m, {"N": 4}, seed=1), exact=True)


@pytest.mark.parametrize("name", sorted(models.ALL))
def test_models_keep_their_results(name):
    m = models.ALL[name]()
    g, before = imported(m)
    g, rec = _fold(g)
    assert g.parameter_count() <= before.parameter_count()
    _same_results(before, g, models.feeds(m, {"N": 2, "S": 5}, seed=2), exact=True)


@pytest.mark.parametrize("light", ["squeezenet", "inception_v1"])
def test_light_models_keep_their_results(light):
    # their weights are ConstantOfShape fills: the small ones fold, the large ones stay fills
    m = light_model(light)
    g, before = imported(m)
    g, rec = _fold(g)
    assert rec.ops_removed.get("constant_of_shape", 0) > 0
    for n in g.nodes:
        if n.op == "constant_of_shape":
            assert n.outputs[0].type.nbytes > DEFAULT_MAX_BYTES
    for v in g.constants.values():  # new constants respect the cap
        assert v.name in before.constants or v.const.nbytes <= DEFAULT_MAX_BYTES
    feeds = light_feeds(m)
    _same_results(before, g, feeds)


def test_scalars_stay_scalars():
    # a folded 0-d value keeps rank 0 (np.ascontiguousarray would have made it 1-d)
    g = Graph()
    x = g.add_input("x", TensorType((3, 4), float32))
    n = g.op("size", [x], name="n")
    half = g.op("mul", [g.op("cast", [n], {"to": float32}), g.add_const(np.array(0.5, np.float32), "h")])
    g.set_outputs([n, g.op("mul", [x, half])])
    before = g.copy()
    g, rec = _fold(g)
    assert [nd.op for nd in g.nodes] == ["mul"] and n.is_const and n.const.shape == ()
    _same_results(before, g, [_rand(3, 4)], exact=True)
