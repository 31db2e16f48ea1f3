"""simplify_algebra: each rule removes its pattern, keeps results exact (special values included),
and declines where the identity would change a shape, a dtype or a value."""
from __future__ import annotations

import numpy as np
import pytest

import models
from irgraph import Graph, TensorType, run_graph
from irgraph import dtype as dt
from irgraph.passes import PassContext, run_passes
from passcheck import (SPECIAL, full_const, imported, light_feeds, light_model,
                       run_pass, same_results, unary_graph)
from irgraph.passes.simplify_algebra import lossless_cast


def _simplify(g, **options):
    return run_pass(g, "simplify_algebra", **options)


def _ops(g):
    return sorted(n.op for n in g.nodes)


def _check(before: Graph, after: Graph, feeds, exact=True) -> None:
    same_results(before, after, feeds, exact=exact)  # exact: NaN == NaN; -0.0 == 0.0 (see signed zeros)


_unary_graph = unary_graph
_c = full_const


CASES = {
    # name: (builder, ops left)
    "mul_one": (lambda g, x: g.op("relu", [g.op("mul", [_c(g, 1.0), x])]), ["relu"]),
    "mul_one_vector": (lambda g, x: g.op("mul", [x, _c(g, 1.0, shape=(32,))]), []),
    "div_one": (lambda g, x: g.op("div", [x, _c(g, 1.0)]), []),
    "add_zero": (lambda g, x: g.op("add", [_c(g, 0.0, shape=(1,)), x]), []),
    "sub_zero": (lambda g, x: g.op("sub", [x, _c(g, 0.0)]), []),
    "pow_one": (lambda g, x: g.op("pow", [x, _c(g, 1.0)]), []),
    "pow_two": (lambda g, x: g.op("pow", [x, _c(g, 2.0)]), ["mul"]),
    "neg_neg": (lambda g, x: g.op("neg", [g.op("neg", [x])]), []),
    "add_neg": (lambda g, x: g.op("add", [g.op("neg", [x]), g.op("exp", [x])]), ["exp", "sub"]),
    "sub_neg": (lambda g, x: g.op("sub", [g.op("exp", [x]), g.op("neg", [x])]), ["add", "exp"]),
    "relu_relu": (lambda g, x: g.op("relu", [g.op("relu", [x])]), ["relu"]),
    "abs_abs": (lambda g, x: g.op("abs", [g.op("abs", [x])]), ["abs"]),
    "abs_neg": (lambda g, x: g.op("abs", [g.op("neg", [x])]), ["abs"]),
    "cast_noop": (lambda g, x: g.op("cast", [x], {"to": dt.float32}), []),
    "cast_roundtrip": (lambda g, x: g.op("cast", [g.op("cast", [x], {"to": dt.float64})], {"to": dt.float32}), []),
    "concat_single": (lambda g, x: g.op("concat", [x], {"axis": 0}), []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_removes_its_pattern_exactly(name):
    build, left = CASES[name]
    g = _unary_graph(build)
    before = g.copy()
    g, rec = _simplify(g)
    assert rec.changed and _ops(g) == left
    _check(before, g, [SPECIAL])


def test_integer_identities():
    def build(g, x):
        y = g.op("mul", [g.op("add", [x, _c(g, 0, np.int32)]), _c(g, 1, np.int32)])
        return g.op("div", [g.op("sub", [y, _c(g, 0, np.int32)]), _c(g, 1, np.int32)])
    g = _unary_graph(build, shape=(8,), dtype=dt.int32)
    before = g.copy()
    g, _ = _simplify(g)
    assert _ops(g) == [] and g.outputs == g.inputs
    _check(before, g, [np.array([0, -1, 7, 2 ** 31 - 1, -2 ** 31, 5, 6, 9], np.int32)])


def test_broadcasting_constants_are_kept():
    # x * ones(3, 32) has shape (3, 32), not x's (32,): dropping it would change the output shape
    for op, value in (("mul", 1.0), ("add", 0.0), ("div", 1.0), ("sub", 0.0), ("pow", 1.0)):
        g = _unary_graph(lambda g, x: g.op(op, [x, _c(g, value, shape=(3, 32))]))
        before = g.copy()
        g, rec = _simplify(g)
        assert not rec.changed, op
        _check(before, g, [SPECIAL])


def test_non_identities_are_kept():
    for build in (lambda g, x: g.op("mul", [x, _c(g, 2.0)]),
                  lambda g, x: g.op("add", [x, _c(g, 1e-30)]),
                  lambda g, x: g.op("div", [_c(g, 1.0), x]),
                  lambda g, x: g.op("sub", [_c(g, 0.0), x]),
                  lambda g, x: g.op("pow", [x, _c(g, 3.0)]),
                  lambda g, x: g.op("cast", [g.op("cast", [x], {"to": dt.float16})], {"to": dt.float32})):
        g = _unary_graph(build)
        _, rec = _simplify(g)
        assert not rec.changed


def test_signed_zeros_option_keeps_only_always_exact_forms():
    def build(g, x):
        a = g.op("add", [x, g.add_const(np.array(0.0, np.float32), "pz")], name="add_pz")
        b = g.op("add", [a, g.add_const(np.array(-0.0, np.float32), "nz")], name="add_nz")
        c = g.op("sub", [b, g.add_const(np.array(-0.0, np.float32), "nz2")], name="sub_nz")
        return g.op("sub", [c, g.add_const(np.array(0.0, np.float32), "pz2")], name="sub_pz")
    g, rec = _simplify(_unary_graph(build), **{"simplify_algebra.signed_zeros": True})
    assert sorted(n.name for n in g.nodes) == ["add_pz", "sub_nz"]
    out = run_graph(g, [SPECIAL])[0]
    np.testing.assert_array_equal(np.signbit(out), np.signbit(SPECIAL + np.float32(0.0)))
    # by default all four go: only the sign of a zero may differ
    g, _ = _simplify(_unary_graph(build))
    assert g.nodes == []


def test_pow_with_an_integer_base_and_float_exponent_keeps_the_pow():
    g = Graph()
    x = g.add_input("x", TensorType((3,), dt.int64))
    g.set_outputs([g.op("pow", [x, g.add_const(np.array(1.0, np.float32), "one")])])
    _, rec = _simplify(g)
    assert not rec.changed


# ---- transposes -------------------------------------------------------------------------------
def test_transposes_compose_and_identities_vanish():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 2, 3, 4), dt.float32))
    t1 = g.op("transpose", [x], {"perm": (0, 2, 1, 3)})
    t2 = g.op("transpose", [t1], {"perm": (0, 1, 3, 2)})      # composed: (0, 2, 3, 1)
    back = g.op("transpose", [g.op("transpose", [x], {"perm": (3, 2, 1, 0)})])  # reversed twice
    ident = g.op("transpose", [x], {"perm": (0, 1, 2, 3)})
    g.set_outputs([t2, back, ident])
    before = g.copy()
    g, _ = _simplify(g)
    (t,) = g.nodes
    assert t.op == "transpose" and t.attrs["perm"] == (0, 2, 3, 1) and t.inputs == [x]
    assert g.outputs[1] is x and g.outputs[2] is x
    assert t.outputs[0].type == TensorType(("N", 3, 4, 2), dt.float32)
    _check(before, g, [np.random.default_rng(0).standard_normal((2, 2, 3, 4)).astype(np.float32)])


# ---- views ------------------------------------------------------------------------------------
def _i64(g, values, name="s"):
    return g.add_const(np.array(values, np.int64), name)


def test_view_chains_collapse():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 6, 4), dt.float32))
    r = g.op("reshape", [g.op("reshape", [x, _i64(g, [-1, 3, 2, 4])]), _i64(g, [-1, 24])], name="r2")
    u = g.op("unsqueeze", [g.op("unsqueeze", [x, _i64(g, [1])]), _i64(g, [-1, 0])], name="u2")
    sq = g.op("squeeze", [g.op("unsqueeze", [x, _i64(g, [2])]), _i64(g, [2])], name="noop")
    same = g.op("reshape", [x, _i64(g, [0, 6, 4])], name="same")
    g.set_outputs([r, u, sq, same])
    before = g.copy()
    g, _ = _simplify(g)
    assert _ops(g) == ["reshape", "unsqueeze"]
    rs = next(n for n in g.nodes if n.op == "reshape")
    assert rs.inputs[0] is x and list(rs.inputs[1].const) == [-1, 24]
    un = next(n for n in g.nodes if n.op == "unsqueeze")
    # x: (N,6,4) -> axis 1 -> (N,1,6,4) -> axes -1, 0 -> (1,N,1,6,4,1)
    assert un.inputs[0] is x and list(un.inputs[1].const) == [0, 2, 5]
    assert un.outputs[0].type == TensorType((1, "N", 1, 6, 4, 1), dt.float32)
    assert g.outputs[2] is x and g.outputs[3] is x
    _check(before, g, [np.arange(72, dtype=np.float32).reshape(3, 6, 4)])


def test_static_view_chains_become_one_reshape_and_squeezes_compose():
    g = Graph()
    x = g.add_input("x", TensorType((1, 6, 1, 4, 1), dt.float32))
    a = g.op("unsqueeze", [g.op("squeeze", [x, _i64(g, [0])]), _i64(g, [0, 5])], name="mix")
    b = g.op("squeeze", [g.op("squeeze", [x, _i64(g, [0])]), _i64(g, [-1, 1])], name="sq2")
    g.set_outputs([a, b])
    before = g.copy()
    g, _ = _simplify(g)
    assert _ops(g) == ["reshape", "squeeze"]
    sq = next(n for n in g.nodes if n.op == "squeeze")
    assert sq.inputs[0] is x and list(sq.inputs[1].const) == [0, 2, 4]
    _check(before, g, [np.arange(24, dtype=np.float32).reshape(1, 6, 1, 4, 1)])


def test_reshape_chain_with_copy_entries_reads_the_intermediate():
    # reshape(reshape(x, [2, 12]), [0, 3, 4]): the 0 copies the intermediate's dim, so the
    # target cannot be applied to x directly -- but the static shape can
    g = Graph()
    x = g.add_input("x", TensorType(("N", 6, 4), dt.float32))
    y = g.op("reshape", [g.op("reshape", [x, _i64(g, [-1, 12])]), _i64(g, [0, 3, 4])])
    g.set_outputs([y])
    _, rec = _simplify(g)
    assert not rec.changed


def test_expand_slice_noops():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 5), dt.float32))
    e = g.op("expand", [x, _i64(g, [1, 5])])
    s = g.op("slice", [x, _i64(g, [0, 0], "st"), _i64(g, [2 ** 62, 5], "en")])
    part = g.op("slice", [x, _i64(g, [1], "st1"), _i64(g, [5], "en1"), _i64(g, [1], "ax1")])
    rev = g.op("slice", [x, _i64(g, [-1], "st2"), _i64(g, [-2 ** 62], "en2"), _i64(g, [1], "ax2"),
                         _i64(g, [-1], "sp2")])
    g.set_outputs([e, s, part, rev])
    before = g.copy()
    g, _ = _simplify(g)
    assert _ops(g) == ["slice", "slice"]  # the partial slice and the reversal stay
    assert g.outputs[0] is x and g.outputs[1] is x
    _check(before, g, [np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)])


# ---- casts and dropout ------------------------------------------------------------------------
def test_lossless_casts():
    assert lossless_cast(dt.float32, dt.float64) and lossless_cast(dt.float16, dt.float32)
    assert lossless_cast(dt.bfloat16, dt.float32) and lossless_cast(dt.int16, dt.float32)
    assert lossless_cast(dt.int32, dt.float64) and lossless_cast(dt.uint8, dt.int16)
    assert lossless_cast(dt.bool_, dt.int8)
    assert not lossless_cast(dt.float16, dt.bfloat16) and not lossless_cast(dt.bfloat16, dt.float16)
    assert not lossless_cast(dt.int32, dt.float32) and not lossless_cast(dt.int8, dt.uint8)
    assert not lossless_cast(dt.float32, dt.int64) and not lossless_cast(dt.int64, dt.float64)


def test_cast_chains():
    g = Graph()
    x = g.add_input("x", TensorType((6,), dt.int16))
    back = g.op("cast", [g.op("cast", [x], {"to": dt.float32})], {"to": dt.int16})  # exact round trip
    narrow = g.op("cast", [g.op("cast", [x], {"to": dt.int8})], {"to": dt.int16})   # wraps: kept
    h = g.add_input("h", TensorType((6,), dt.float16))
    wide = g.op("cast", [g.op("cast", [h], {"to": dt.float32})], {"to": dt.float64})
    g.set_outputs([back, narrow, wide])
    before = g.copy()
    g, _ = _simplify(g)
    assert g.outputs[0] is x
    assert _ops(g) == ["cast", "cast", "cast"]
    w = g.outputs[2].producer
    assert w.op == "cast" and w.inputs == [h] and w.attrs["to"] is dt.float64
    _check(before, g, [np.array([0, 1, -1, 300, -32768, 32767], np.int16),
                       np.array([0, -0.0, 65504, np.nan, np.inf, 1e-7], np.float16)])


def test_inference_dropout_is_removed_training_dropout_is_kept():
    for train, ratio, removed in ((False, 0.5, True), (True, 0.0, True), (True, 0.5, False)):
        g = Graph()
        x = g.add_input("x", TensorType((4, 4), dt.float32))
        y, mask = g.op("dropout", [x, g.add_const(np.array(ratio, np.float32), "r"),
                                   g.add_const(np.array(train), "t")], {"seed": 0}, num_outputs=2)
        g.set_outputs([g.op("relu", [y]), mask])
        before = g.copy()
        g, rec = _simplify(g)
        assert rec.changed is removed
        if removed:
            assert _ops(g) == ["full_like", "relu"] and g.outputs[0].producer.inputs[0] is x
            _check(before, g, [np.ones((4, 4), np.float32)])


# ---- whole models ---------------------------------------------------------------------------
def test_bert_layer_patterns():
    m = models.bert_layer()
    g, before = imported(m)
    g, rec = _simplify(g)
    # K^T composed into one transpose; the mask's two unsqueezes into one; x**2 -> x*x;
    # the decomposed LayerNorm's weight (ones) and bias (zeros) vanish
    assert rec.ops_removed == {"transpose": 1, "unsqueeze": 1, "pow": 1, "add": 1}
    assert [n.attrs["perm"] for n in g.nodes if n.op == "transpose"].count((0, 2, 3, 1)) == 1
    _check(before, g, models.feeds(m, {"N": 2, "S": 5}, seed=1), exact=False)


@pytest.mark.parametrize("name", sorted(models.ALL))
def test_models_keep_their_results(name):
    m = models.ALL[name]()
    g, before = imported(m)
    g, rec = run_passes(g, ["infer_shapes", "fold_constants", "simplify_algebra"], PassContext(verify=True))
    _check(before, g, models.feeds(m, {"N": 3, "S": 4}, seed=2), exact=False)


def test_light_shufflenet_keeps_its_results():
    m = light_model("shufflenet")
    g, before = imported(m)
    g, _ = run_passes(g, ["infer_shapes", "fold_constants", "simplify_algebra"], PassContext(verify=True))
    feeds = light_feeds(m)
    _check(before, g, feeds, exact=False)
