"""canonicalize: one spelling per computation (constants on the right, x-c as x+(-c), exact
power-of-two divisions as multiplications, explicit perms, reduce axes from the end), exactly."""
from __future__ import annotations

import numpy as np
import pytest

import models
from irgraph import Graph, TensorType, run_graph
from irgraph import dtype as dt
from irgraph.passes import PassContext, run_passes
from passcheck import (SPECIAL, full_const, imported, light_feeds, light_model,
                       run_pass, same_results, unary_graph)


def _canon(g, **options):
    return run_pass(g, "canonicalize", **options)


def _check(before: Graph, after: Graph, feeds, exact=True) -> None:
    same_results(before, after, feeds, exact=exact)


def _graph(build, dtype=dt.float32, shape=(32,)):
    return unary_graph(build, shape, dtype)


_c = full_const


@pytest.mark.parametrize("op", ["add", "mul", "maximum", "minimum", "equal"])
def test_constants_move_right_of_commutative_ops(op):
    g = _graph(lambda g, x: g.op(op, [_c(g, 1.5, shape=(32,)), x]))
    before = g.copy()
    g, rec = _canon(g)
    (n,) = g.nodes
    assert rec.changed and n.op == op and n.inputs[0] is g.inputs[0] and n.inputs[1].is_const
    _check(before, g, [SPECIAL])
    _, rec = _canon(g)
    assert not rec.changed  # already canonical


def test_logical_ops_and_two_constants():
    g = Graph()
    b = g.add_input("b", TensorType((4,), dt.bool_))
    t = g.add_const(np.array([True, False, True, False]), "t")
    both = g.op("logical_and", [t, g.add_const(np.ones(4, bool), "u")])  # no input: left alone
    g.set_outputs([g.op("logical_or", [t, b]), g.op("logical_xor", [t, b]), both])
    before = g.copy()
    g, rec = _canon(g)
    assert [n.inputs[0].name for n in g.nodes if n.op != "logical_and"] == ["b", "b"]
    assert next(n for n in g.nodes if n.op == "logical_and").inputs[0] is t
    _check(before, g, [np.array([True, True, False, False])])


@pytest.mark.parametrize("op,flipped", [("greater", "less"), ("less", "greater"),
                                        ("greater_equal", "less_equal"), ("less_equal", "greater_equal")])
def test_comparisons_flip_to_put_the_constant_right(op, flipped):
    g = _graph(lambda g, x: g.op(op, [_c(g, 1.5), x]))
    before = g.copy()
    g, _ = _canon(g)
    (n,) = g.nodes
    assert n.op == flipped and n.inputs[1].is_const
    _check(before, g, [SPECIAL])


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8])
def test_subtracting_a_constant_becomes_adding_its_negation(dtype):
    g = _graph(lambda g, x: g.op("sub", [x, g.add_const(np.array([3, 0, 200, 1], dtype), "c")]),
               dtype=dt.DType.from_numpy(np.dtype(dtype)), shape=(2, 4))
    before = g.copy()
    g, _ = _canon(g)
    (n,) = g.nodes
    assert n.op == "add" and n.inputs[1].is_const
    x = (np.array([[0, 1, 255, 7], [200, 3, 4, 250]]) if dtype is np.uint8 else
         np.array([[0, -0.0 if dtype is np.float32 else 0, 1e9, -7], [np.iinfo(np.int32).min, 3, 4, 5]]))
    _check(before, g, [x.astype(dtype)])


def test_large_constants_are_not_copied():
    g = _graph(lambda g, x: g.op("sub", [x, g.add_const(np.ones((300, 300), np.float32), "big")]),
               shape=(300, 300))
    _, rec = _canon(g)
    assert not rec.changed


def test_power_of_two_divisions_become_multiplications():
    g = Graph()
    x = g.add_input("x", TensorType((32,), dt.float32))
    d8 = g.op("div", [x, g.add_const(np.array(8.0, np.float32), "eight")], name="d8")
    dv = g.op("div", [x, g.add_const(np.array([0.25, -4.0] * 16, np.float32), "vec")], name="dv")
    d3 = g.op("div", [x, g.add_const(np.array(3.0, np.float32), "three")], name="d3")
    tiny = g.op("div", [x, g.add_const(np.array(2.0 ** -140, np.float32), "tiny")], name="tiny")
    g.set_outputs([d8, dv, d3, tiny])
    before = g.copy()
    g, _ = _canon(g)
    assert [n.op for n in g.nodes] == ["div", "div", "mul", "mul"]  # 1/3 inexact; 2**140 overflows
    assert float(g.outputs[0].producer.inputs[1].const) == 0.125
    _check(before, g, [SPECIAL])


def test_half_precision_division():
    g = _graph(lambda g, x: g.op("div", [x, g.add_const(np.array(16.0, np.float16), "c")]), dtype=dt.float16,
               shape=(6,))
    before = g.copy()
    g, _ = _canon(g)
    assert [n.op for n in g.nodes] == ["mul"]
    _check(before, g, [np.array([1e-7, -3.0, 65504, np.nan, -0.0, 0.1], np.float16)])


def test_negations_and_signed_zero_option():
    def build(g, x):
        a = g.op("mul", [x, g.add_const(np.array(-1.0, np.float32), "m1")])
        b = g.op("sub", [g.add_const(np.array(-0.0, np.float32), "nz"), a])
        return g.op("sub", [g.add_const(np.array(0.0, np.float32), "pz"), b])
    g = _graph(build)
    before = g.copy()
    g, _ = _canon(g)
    assert [n.op for n in g.nodes] == ["neg", "neg", "neg"]
    _check(before, g, [SPECIAL])  # -0.0 == 0.0 here
    g, _ = _canon(before.copy(), **{"simplify_algebra.signed_zeros": True})
    assert [n.op for n in g.nodes] == ["neg", "neg", "sub"]
    got, want = run_graph(g, [SPECIAL])[0], run_graph(before, [SPECIAL])[0]
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_unsigned_negation_is_not_introduced():
    g = _graph(lambda g, x: g.op("sub", [g.add_const(np.array(0, np.uint8), "z"), x]), dtype=dt.uint8)
    _, rec = _canon(g)
    assert not rec.changed


def test_explicit_perm_and_reduce_axes():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 3, 4), dt.float32))
    t = g.op("transpose", [x], name="t")
    r1 = g.op("reduce_mean", [x, g.add_const(np.array([2, 1], np.int64), "a")], {"keepdims": 1}, name="r1")
    r2 = g.op("reduce_sum", [x, g.add_const(np.array([-1], np.int64), "b")], {"keepdims": 0}, name="r2")
    g.set_outputs([t, r1, r2])
    before = g.copy()
    g, rec = _canon(g)
    ops = {n.op: n for n in g.nodes}
    assert ops["transpose"].attrs["perm"] == (2, 1, 0)
    assert list(ops["reduce_mean"].inputs[1].const) == [-2, -1]
    assert list(ops["reduce_sum"].inputs[1].const) == [-1]  # already canonical
    assert ops["transpose"].outputs[0].type == TensorType((4, 3, "N"), dt.float32)
    _check(before, g, [np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)])


# ---- whole models ---------------------------------------------------------------------------
def test_bert_layer_attention_scale_becomes_a_multiplication():
    m = models.bert_layer()
    g, before = imported(m)
    g, rec = _canon(g)
    assert rec.ops_removed == {"div": 1} and rec.ops_added == {"mul": 1}  # / sqrt(16) -> * 0.25
    _check(before, g, models.feeds(m, {"N": 2, "S": 5}, seed=1))


@pytest.mark.parametrize("name", sorted(models.ALL))
def test_models_keep_their_results(name):
    m = models.ALL[name]()
    g, before = imported(m)
    g, _ = run_passes(g, ["infer_shapes", "fold_constants", "simplify_algebra", "canonicalize"],
                      PassContext(verify=True))
    _check(before, g, models.feeds(m, {"N": 3, "S": 4}, seed=2), exact=False)


def test_light_squeezenet_keeps_its_results():
    m = light_model("squeezenet")
    g, before = imported(m)
    g, _ = _canon(g)
    feeds = light_feeds(m)
    _check(before, g, feeds)
