"""recognize_patterns: layer norm, RMS norm, GELU (Erf/Tanh), softmax and attention written op by
op become composite ops — in every spelling the rules claim, with the same results — and
nothing changes where a constant, an axis, a shape or an extra reader says it is not that op."""
from __future__ import annotations

import math

import numpy as np
import pytest

import irgraph
import models
from irgraph import Graph, TensorType, run_graph
from irgraph.dtype import float32, int64
from irgraph.passes import PassContext, all_passes, run_passes
from passcheck import ATOL, RTOL, f32_const, graph_feeds, i64_const, run_checked

CLEANUP = ["infer_shapes", "fold_constants", "simplify_algebra", "eliminate_common_subexpressions",
           "eliminate_dead_code", "canonicalize"]


_c, _i = f32_const, i64_const


def _feeds(g, seed=0):
    return graph_feeds(g, seed, scale=2)


def _recognize(g, passes=("recognize_patterns",)):
    """Run the passes (verified) on a copy; check outputs agree; return the new graph."""
    return run_checked(g, _feeds(g), passes)[0]


def _ops(g):
    return g.op_histogram()


def _only(g, op):
    (n,) = [n for n in g.nodes if n.op == op]
    return n


# ---- layer norm ----------------------------------------------------------------------------

def _square(g, d, square, two=2.0):
    return g.op("pow", [d, _c(g, two, "two")]) if square == "pow" else g.op("mul", [d, d])


def _divide(g, num, den, division):
    if division == "div":
        return g.op("div", [num, den])
    if division == "reciprocal":
        return g.op("mul", [g.op("reciprocal", [den]), num])
    return g.op("mul", [num, g.op("div", [_c(g, 1.0, "one"), den])])


def _layer_norm_graph(shape=(2, 3, 8), axes=(-1,), var_axes=None, square="pow", division="div",
                      eps=1e-5, gamma=True, beta=True, export=None, two=2.0):
    g = Graph()
    x = g.add_input("x", TensorType(shape, float32))
    rng = np.random.default_rng(1)
    mean = g.op("reduce_mean", [x, _i(g, axes)], {"keepdims": 1})
    d = g.op("sub", [x, mean])
    var = g.op("reduce_mean", [_square(g, d, square, two), _i(g, var_axes or axes)], {"keepdims": 1})
    std = g.op("sqrt", [g.op("add", [_c(g, eps, "eps"), var])])
    y = _divide(g, d, std, division)
    norm_shape = shape[len(shape) - len(axes):]
    if gamma:
        y = g.op("mul", [y, _c(g, rng.standard_normal(norm_shape), "gamma")])
    if beta:
        y = g.op("add", [_c(g, rng.standard_normal(norm_shape), "beta"), y])
    g.set_outputs([y] + ([{"d": d, "mean": mean}[export]] if export else []))
    return g


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("division", ["div", "reciprocal", "one_over"])
def test_layer_norm_spellings(square, division):
    g = _recognize(_layer_norm_graph(square=square, division=division))
    assert dict(_ops(g)) == {"layer_norm": 1}
    ln = g.nodes[0]
    assert ln.attrs["axis"] == -1 and ln.attrs["epsilon"] == pytest.approx(1e-5)
    assert ln.inputs[1].name.startswith("gamma") and ln.inputs[2].name.startswith("beta")


def test_layer_norm_over_two_trailing_axes_without_affine():
    g = _recognize(_layer_norm_graph(axes=(1, 2), gamma=False, beta=False))
    ln = _only(g, "layer_norm")
    assert dict(_ops(g)) == {"layer_norm": 1} and ln.attrs["axis"] == -2
    assert np.all(ln.inputs[1].const == 1) and ln.inputs[1].const.shape == (3, 8)


def test_layer_norm_with_symbolic_dims():
    g, _ = run_passes(_layer_norm_graph(shape=("n", "s", 8)), ["recognize_patterns"], PassContext(verify=True))
    assert dict(_ops(g)) == {"layer_norm": 1}


@pytest.mark.parametrize("case", ["axis_not_trailing", "axes_differ", "wrong_square", "negative_eps",
                                  "centered_used_elsewhere", "mean_used_elsewhere"])
def test_layer_norm_negatives(case):
    kw = {"axis_not_trailing": dict(axes=(1,), gamma=False, beta=False),
          "axes_differ": dict(axes=(-1,), var_axes=(1, 2), gamma=False, beta=False),
          "wrong_square": dict(two=3.0, gamma=False, beta=False),
          "negative_eps": dict(eps=-1e-5, gamma=False, beta=False),
          "centered_used_elsewhere": dict(export="d"),
          "mean_used_elsewhere": dict(export="mean")}[case]
    g2 = _recognize(_layer_norm_graph(**kw))
    assert "layer_norm" not in _ops(g2)
    assert _ops(g2)["reduce_mean"] >= 1


def test_gamma_that_grows_the_shape_is_not_absorbed():
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 8), float32))
    mean = g.op("reduce_mean", [x, _i(g, [-1])], {"keepdims": 1})
    d = g.op("sub", [x, mean])
    var = g.op("reduce_mean", [g.op("mul", [d, d]), _i(g, [-1])], {"keepdims": 1})
    y = g.op("div", [d, g.op("sqrt", [g.op("add", [var, _c(g, 1e-6)])])])
    g.set_outputs([g.op("mul", [y, _c(g, np.arange(16).reshape(2, 1, 8), "gamma")])])  # (2, 3, 8)
    g2 = _recognize(g)
    assert dict(_ops(g2)) == {"layer_norm": 1, "mul": 1}


# ---- RMS norm ----------------------------------------------------------------------------------

def _rms_graph(square="pow", division="div", axes=(-1,), eps=1e-6, weight=True, shape=(2, 3, 8)):
    g = Graph()
    x = g.add_input("x", TensorType(shape, float32))
    ms = g.op("reduce_mean", [_square(g, x, square), _i(g, axes)], {"keepdims": 1})
    den = g.op("sqrt", [g.op("add", [ms, _c(g, eps, "eps")])])
    y = _divide(g, x, den, division)
    if weight:
        y = g.op("mul", [_c(g, np.random.default_rng(2).standard_normal(shape[-1]), "w"), y])
    g.set_outputs([y])
    return g


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("division", ["div", "reciprocal", "one_over"])
def test_rms_norm_spellings(square, division):
    g = _recognize(_rms_graph(square, division))
    assert dict(_ops(g)) == {"rms_norm": 1}
    n = g.nodes[0]
    assert n.inputs[1].name.startswith("w") and n.attrs["epsilon"] == pytest.approx(1e-6)


def test_rms_norm_negatives():
    assert "rms_norm" not in _ops(_recognize(_rms_graph(axes=(1,))))
    g = _rms_graph(weight=False)
    g.set_outputs(g.outputs + [g.nodes[0].outputs[0]])  # the square read elsewhere
    assert "rms_norm" not in _ops(_recognize(g))


# ---- GELU ------------------------------------------------------------------------------------

def _gelu_graph(kind="erf_div", outer="half_first", k=None, half=0.5, c=0.044715, cube="pow",
                other_x=False, export_inner=False):
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 16), float32))
    x2 = g.add_input("y", TensorType((2, 3, 16), float32)) if other_x else x
    if kind == "erf_div":
        inner = g.op("erf", [g.op("div", [x2, _c(g, math.sqrt(2) if k is None else k)])])
    elif kind == "erf_mul":
        inner = g.op("erf", [g.op("mul", [_c(g, 1 / math.sqrt(2) if k is None else k), x2])])
    else:
        x3 = (g.op("pow", [x2, _c(g, 3.0)]) if cube == "pow"
              else g.op("mul", [g.op("mul", [x2, x2]), x2]))
        poly = g.op("add", [x2, g.op("mul", [_c(g, c), x3])])
        inner = g.op("tanh", [g.op("mul", [poly, _c(g, math.sqrt(2 / math.pi) if k is None else k)])])
    onep = g.op("add", [_c(g, 1.0), inner])
    h = _c(g, half, "half")
    if outer == "half_first":
        y = g.op("mul", [g.op("mul", [h, x]), onep])
    elif outer == "half_last":
        y = g.op("mul", [g.op("mul", [x, onep]), h])
    elif outer == "half_inner":
        y = g.op("mul", [x, g.op("mul", [onep, h])])
    else:
        y = g.op("div", [g.op("mul", [x, onep]), _c(g, 2.0)])
    g.set_outputs([y] + ([inner] if export_inner else []))
    return g


@pytest.mark.parametrize("kind", ["erf_div", "erf_mul", "tanh"])
@pytest.mark.parametrize("outer", ["half_first", "half_last", "half_inner", "div_two"])
def test_gelu_spellings(kind, outer):
    g = _recognize(_gelu_graph(kind, outer))
    assert dict(_ops(g)) == {"gelu": 1}
    assert g.nodes[0].attrs["approximate"] == ("tanh" if kind == "tanh" else "none")


def test_gelu_tanh_with_cube_as_products_and_rounded_constants():
    g = _recognize(_gelu_graph("tanh", cube="mul", k=0.79788, c=0.044715))
    assert dict(_ops(g)) == {"gelu": 1}
    g = _recognize(_gelu_graph("erf_div", k=1.4142))  # rounded to 5 digits: within 1e-4
    assert dict(_ops(g)) == {"gelu": 1}


@pytest.mark.parametrize("case", [dict(kind="erf_div", k=1.5), dict(kind="erf_mul", k=0.75),
                                  dict(kind="erf_div", half=0.6), dict(kind="tanh", c=0.05),
                                  dict(kind="tanh", k=0.8), dict(kind="erf_div", other_x=True),
                                  dict(kind="tanh", export_inner=True)],
                         ids=["sqrt2", "inv_sqrt2", "half", "cubic", "sqrt_2_over_pi", "two_inputs",
                              "inner_read_elsewhere"])
def test_gelu_negatives(case):
    g = _recognize(_gelu_graph(**case))
    assert "gelu" not in _ops(g)


# ---- softmax ---------------------------------------------------------------------------------

def _softmax_graph(max_axes=(-1,), sum_axes=(-1,), log=False, export_exp=False, reciprocal=False):
    g = Graph()
    x = g.add_input("x", TensorType((2, 5, 7), float32))
    s = g.op("sub", [x, g.op("reduce_max", [x, _i(g, max_axes)], {"keepdims": 1})])
    e = g.op("exp", [s])
    total = g.op("reduce_sum", [e, _i(g, sum_axes)], {"keepdims": 1})
    if log:
        y = g.op("sub", [s, g.op("log", [total])])
    elif reciprocal:
        y = g.op("mul", [g.op("reciprocal", [total]), e])
    else:
        y = g.op("div", [e, total])
    g.set_outputs([y] + ([e] if export_exp else []))
    return g


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_and_log_softmax(axis):
    for kw, op in ((dict(), "softmax"), (dict(reciprocal=True), "softmax"), (dict(log=True), "log_softmax")):
        g = _recognize(_softmax_graph((axis,), (axis,), **kw))
        assert dict(_ops(g)) == {op: 1}
        assert g.nodes[0].attrs["axis"] % 3 == axis % 3


def test_softmax_negatives():
    assert "softmax" not in _ops(_recognize(_softmax_graph((-1,), (1,))))
    assert "softmax" not in _ops(_recognize(_softmax_graph((1, 2), (1, 2))))  # two axes: not one softmax
    assert "softmax" not in _ops(_recognize(_softmax_graph(export_exp=True)))
    assert "log_softmax" not in _ops(_recognize(_softmax_graph((-1,), (1,), log=True)))


# ---- attention -------------------------------------------------------------------------------

def _attention_graph(scale="div", mask="int", k_layout="bhsd", axis=-1, shape=(2, 3, 5, 4),
                     export_scores=False):
    b, h, s, d = shape
    g = Graph()
    q = g.add_input("q", TensorType(shape, float32))
    if k_layout == "bhsd":
        k = g.add_input("k", TensorType(shape, float32))
        kt = g.op("transpose", [k], {"perm": (0, 1, 3, 2)})
    elif k_layout == "bshd":  # transposes already merged: (B, S, H, D) -> (B, H, D, S)
        k = g.add_input("k", TensorType((b, s, h, d), float32))
        kt = g.op("transpose", [k], {"perm": (0, 2, 3, 1)})
    else:  # K^T given directly
        kt = g.add_input("kt", TensorType((b, h, d, s), float32))
    v = g.add_input("v", TensorType(shape, float32))
    scores = g.op("matmul", [q, kt])
    if scale == "div":
        scores = g.op("div", [scores, _c(g, math.sqrt(d))])
    elif scale == "mul":
        scores = g.op("mul", [_c(g, 1 / math.sqrt(d)), scores])
    elif scale == "vector":
        scores = g.op("mul", [scores, _c(g, np.linspace(0.1, 1, s))])
    raw = scores
    if mask == "int":  # BERT's (1 - m) * -10000 from an int64 mask
        m = g.add_input("mask", TensorType((b, s), int64))
        m = g.op("cast", [g.op("unsqueeze", [m, _i(g, [1, 2])])], {"to": float32})
        bias = g.op("mul", [g.op("sub", [_c(g, 1.0), m]), _c(g, -10000.0)])
        scores = g.op("add", [bias, scores])
    elif mask == "where_inf":  # a bool mask turned into 0 / -inf: a fully masked row is NaN, not 0
        m = g.add_input("mask", TensorType((b, 1, 1, s), irgraph.dtype.bool_))
        scores = g.op("add", [scores, g.op("where", [m, _c(g, 0.0), _c(g, -np.inf)])])
    elif mask == "float":  # a runtime float mask: may hold -inf
        scores = g.op("add", [scores, g.add_input("mask", TensorType((b, 1, 1, s), float32))])
    elif mask == "const":
        scores = g.op("add", [scores, _c(g, np.triu(np.full((s, s), -1e9), 1), "causal")])
    elif mask == "short":  # last dim 1: broadcasts over keys where attention would pad
        scores = g.op("add", [scores, _c(g, np.zeros((b, 1, s, 1)), "rowbias")])
    probs = g.op("softmax", [scores], {"axis": axis})
    g.set_outputs([g.op("matmul", [probs, v])] + ([raw] if export_scores else []))
    return g


@pytest.mark.parametrize("scale", ["div", "mul", "none"])
@pytest.mark.parametrize("mask", ["int", "const", "none"])
def test_attention_recognized(scale, mask):
    g = _recognize(_attention_graph(scale, mask))
    att = _only(g, "attention")
    assert "softmax" not in _ops(g) and _ops(g)["matmul"] == 0
    want = {"div": 0.5, "mul": 0.5, "none": 1.0}[scale]
    assert att.attrs["scale"] == pytest.approx(want)
    assert att.inputs[1].name == "k"  # K itself: the transpose composed away
    assert len(att.inputs) == (3 if mask == "none" else 4)


def test_attention_k_from_merged_or_missing_transpose():
    g = _recognize(_attention_graph(k_layout="bshd"))
    att = _only(g, "attention")
    kt = att.inputs[1].producer
    assert kt.op == "transpose" and kt.attrs["perm"] == (0, 2, 1, 3)
    assert kt.meta["source"] == ["transpose"]  # provenance of the transpose it replaces
    g = _recognize(_attention_graph(k_layout="kt"))
    assert _only(g, "attention").inputs[1].producer.attrs["perm"] == (0, 1, 3, 2)


@pytest.mark.parametrize("case", [dict(mask="float"), dict(mask="where_inf"), dict(mask="short"), dict(axis=2),
                                  dict(scale="vector"), dict(export_scores=True)],
                         ids=["mask_may_be_inf", "mask_where_inf", "mask_broadcasts_keys", "softmax_axis",
                              "scale_not_scalar", "scores_read_elsewhere"])
def test_attention_negatives(case):
    g = _recognize(_attention_graph(**case))
    assert "attention" not in _ops(g) and _ops(g)["softmax"] == 1


def test_attention_needs_four_dims():
    g = Graph()
    q, k, v = (g.add_input(n, TensorType((6, 5, 4), float32)) for n in "qkv")
    s = g.op("div", [g.op("matmul", [q, g.op("transpose", [k], {"perm": (0, 2, 1)})]), _c(g, 2.0)])
    g.set_outputs([g.op("matmul", [g.op("softmax", [s], {"axis": -1}), v])])
    assert "attention" not in _ops(_recognize(g))


# ---- models ------------------------------------------------------------------------------------

def _cleanup_then_recognize():
    have = all_passes()
    return [p for p in CLEANUP if p in have] + ["recognize_patterns"]


@pytest.mark.parametrize("build,layers", [(lambda: models.bert_layer(), 1),
                                          (lambda: models.bert_encoder(layers=2, hidden=64, heads=4), 2),
                                          (lambda: models.bert_encoder(layers=2, hidden=64, heads=4,
                                                                       batch=2, seq=6), 2)],
                         ids=["bert_layer", "bert_encoder", "bert_encoder_static"])
@pytest.mark.parametrize("cleanup", [True, False], ids=["cleanup", "raw"])
def test_bert_models(build, layers, cleanup):
    m = build()
    g = irgraph.to_graph(m)
    feeds = models.feeds(m, {"N": 2, "S": 6})
    want = run_graph(g, feeds)
    passes = _cleanup_then_recognize() if cleanup else ["recognize_patterns"]
    g2, _ = run_passes(g.copy(), passes, PassContext(verify=True))
    np.testing.assert_allclose(run_graph(g2, feeds)[0], want[0], rtol=RTOL, atol=ATOL)
    ops = _ops(g2)
    assert ops["layer_norm"] == 2 * layers and ops["gelu"] == layers
    for gone in ("erf", "reduce_mean", "sqrt", "pow"):
        assert gone not in ops, gone
    if cleanup or "N" not in str(g.inputs[0].type):
        assert ops["attention"] == layers and "softmax" not in ops and "div" not in ops
    else:
        # raw import with symbolic dims: the runtime-shaped reshapes give Q, K, V fresh dims
        # that cannot be proven equal, so attention is left to fuse_reductions' grouping
        assert ops["attention"] == 0 and ops["softmax"] == layers
    if not cleanup:  # the op-by-op layer norm took its gamma and beta (cleanup drops "* 1" and "+ 0")
        assert all(len(n.inputs) == 3 for n in g2.nodes if n.op == "layer_norm")


@pytest.mark.parametrize("name", ["mlp", "lstm", "resnet"])
def test_other_models_unchanged(name):
    g = irgraph.to_graph(models.ALL[name]())
    before = _ops(g)
    g2, rep = run_passes(g.copy(), ["recognize_patterns"], PassContext(verify=True))
    assert not rep.records[0].changed and _ops(g2) == before


# ---- half precision ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [irgraph.dtype.float16, irgraph.dtype.bfloat16], ids=lambda d: d.name)
def test_half_precision(dtype):
    """Constants stored in 16 bits (sqrt(2) in float16 is 1.4140625) are recognized; the results
    agree to a couple of ulps of the dtype (statistics are kept in the input's dtype)."""
    def c(g, v):
        return g.add_const(np.asarray(v).astype(dtype.np), "c")
    g = Graph()
    x = g.add_input("x", TensorType((4, 32), dtype))
    axes = _i(g, [-1])
    d = g.op("sub", [x, g.op("reduce_mean", [x, axes], {"keepdims": 1})])
    var = g.op("reduce_mean", [g.op("mul", [d, d]), axes], {"keepdims": 1})
    ln = g.op("mul", [g.op("div", [d, g.op("sqrt", [g.op("add", [var, c(g, 1e-5)])])]), c(g, np.full(32, 1.5))])
    ms = g.op("reduce_mean", [g.op("pow", [x, c(g, 2.0)]), axes], {"keepdims": 1})
    rms = g.op("div", [x, g.op("sqrt", [g.op("add", [ms, c(g, 1e-6)])])])
    erf = g.op("erf", [g.op("mul", [x, c(g, 1 / math.sqrt(2))])])
    gelu = g.op("mul", [g.op("mul", [x, c(g, 0.5)]), g.op("add", [erf, c(g, 1.0)])])
    g.set_outputs([ln, rms, gelu])
    feeds = [np.random.default_rng(0).standard_normal((4, 32)).astype(dtype.np)]
    want = run_graph(g, feeds)
    g2, _ = run_passes(g.copy(), ["recognize_patterns"], PassContext(verify=True))
    assert dict(_ops(g2)) == {"layer_norm": 1, "rms_norm": 1, "gelu": 1}
    eps = float(np.finfo(np.float16).eps) if dtype is irgraph.dtype.float16 else 2.0 ** -7
    for a, b in zip(run_graph(g2, feeds), want):
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2 * eps, atol=2 * eps)


def test_pow_exponent_must_be_exactly_two_even_in_bfloat16():
    g = Graph()
    x = g.add_input("x", TensorType((4, 32), irgraph.dtype.bfloat16))
    ms = g.op("reduce_mean", [g.op("pow", [x, g.add_const(np.asarray(2.015625).astype(irgraph.dtype.bfloat16.np))]),
                              _i(g, [-1])], {"keepdims": 1})
    g.set_outputs([g.op("div", [x, g.op("sqrt", [g.op("add", [ms, g.add_const(
        np.asarray(1e-6).astype(irgraph.dtype.bfloat16.np))])])])])
    g2, _ = run_passes(g, ["recognize_patterns"], PassContext(verify=True))
    assert "rms_norm" not in _ops(g2)
