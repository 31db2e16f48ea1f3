"""fuse_reductions: composite ops with their elementwise prologue/epilogue, attention written op by
op, and op-by-op mean/variance become one fused group each — with the same results, values read
outside a group still available, and no group that would need a cycle."""
from __future__ import annotations


import numpy as np
import pytest

import irgraph
import models
from irgraph import Graph, TensorType, run_graph
from irgraph.dtype import float32, int64
from irgraph.passes import PassContext, all_passes, pipeline, run_passes
from irgraph.passes.group import make_group
from passcheck import ATOL, RTOL, body_ops, f32_const, fused_groups, graph_feeds, i64_const, run_checked

_c, _i, _groups = f32_const, i64_const, fused_groups


def _fuse(g, passes=("fuse_reductions",)):
    return run_checked(g, graph_feeds(g), passes)[0]


def _body_ops(n):
    return sorted(body_ops(n))


# ---- composite ops --------------------------------------------------------------------------

def _residual_layer_norm(export_sum=False, epilogue=False):
    g = Graph()
    x = g.add_input("x", TensorType((2, 5, 8), float32))
    r = g.add_input("r", TensorType((2, 5, 8), float32))
    s = g.op("add", [x, r], name="residual")
    y = g.op("layer_norm", [s, _c(g, np.full(8, 1.5), "gamma"), _c(g, np.full(8, 0.1), "beta")], {"epsilon": 1e-5})
    if epilogue:
        y = g.op("relu", [g.op("mul", [y, _c(g, 2.0)])])
    outs = [g.op("matmul", [y, _c(g, np.eye(8), "w")])]
    if export_sum:
        outs.append(g.op("exp", [s]))  # the residual sum is read after the norm too
    g.set_outputs(outs)
    return g


def test_layer_norm_with_residual_prologue_and_epilogue():
    g = _fuse(_residual_layer_norm(epilogue=True))
    (grp,) = _groups(g, "layer_norm")
    assert _body_ops(grp) == ["add", "layer_norm", "mul", "relu"]
    assert grp.meta["source"][0] == "residual"
    assert [n.op for n in g.nodes] == ["fused", "matmul"]
    assert {v.name for v in grp.inputs} == {"x", "r"}  # gamma, beta moved into the body


def test_direct_prologue_read_elsewhere_stays_an_output():
    g = _fuse(_residual_layer_norm(export_sum=True))
    (grp,) = _groups(g, "layer_norm")
    assert _body_ops(grp) == ["add", "layer_norm"] and len(grp.outputs) == 2
    assert sorted(n.op for n in g.nodes) == ["exp", "fused", "matmul"]


def test_softmax_with_scale_and_mask_prologue():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 4, 4), float32))
    mask = g.add_input("mask", TensorType((2, 1, 1, 4), float32))
    s = g.op("add", [g.op("mul", [x, _c(g, 0.3)]), mask])
    p = g.op("softmax", [s], {"axis": -1})
    g.set_outputs([g.op("cast", [p], {"to": irgraph.dtype.float64})])
    g = _fuse(g)
    (grp,) = _groups(g)
    assert grp.attrs["group"] == "softmax" and _body_ops(grp) == ["add", "cast", "mul", "softmax"]


def test_each_composite_kind_is_grouped():
    g = Graph()
    x = g.add_input("x", TensorType((2, 4, 3, 3), float32))
    ones, zeros = _c(g, np.ones(4), "s"), _c(g, np.zeros(4), "b")
    outs = [g.op("instance_norm", [x, ones, zeros]),
            g.op("group_norm", [x, ones, zeros], {"num_groups": 2}),
            g.op("rms_norm", [x, _c(g, np.ones(3), "w")]),
            g.op("log_softmax", [x], {"axis": 1})]
    g.set_outputs(outs)
    g = _fuse(g)
    assert sorted(n.attrs["group"] for n in g.nodes) == ["group_norm", "instance_norm", "rms_norm", "softmax"]


def test_attention_op_takes_its_mask_arithmetic():
    g = Graph()
    q, k, v = (g.add_input(n, TensorType((2, 3, 5, 4), float32)) for n in "qkv")
    m = g.add_input("mask", TensorType((2, 1, 1, 5), int64))
    bias = g.op("mul", [g.op("sub", [_c(g, 1.0), g.op("cast", [m], {"to": float32})]), _c(g, -1e4)])
    g.set_outputs([g.op("attention", [q, k, v, bias], {"scale": 0.5})])
    g = _fuse(g)
    (grp,) = _groups(g, "attention")
    assert _body_ops(grp) == ["attention", "cast", "mul", "sub"] and len(g.nodes) == 1


# ---- attention written op by op -------------------------------------------------------------

def _attention_ops(export_probs=False, vector_scale=False):
    """Scaled-dot-product attention with a runtime float mask (which the core op cannot take)."""
    g = Graph()
    q, k, v = (g.add_input(n, TensorType((2, 3, 5, 4), float32)) for n in "qkv")
    mask = g.add_input("mask", TensorType((2, 1, 1, 5), float32))
    qk = g.op("matmul", [q, g.op("transpose", [k], {"perm": (0, 1, 3, 2)})], name="qk")
    c = _c(g, np.linspace(0.5, 1.0, 5)) if vector_scale else _c(g, 2.0)
    s = g.op("add", [mask, g.op("div", [qk, c], name="scale")], name="masked")
    p = g.op("softmax", [s], {"axis": -1})
    y = g.op("matmul", [p, v], name="pv")
    g.set_outputs([g.op("transpose", [y], {"perm": (0, 2, 1, 3)})] + ([p] if export_probs else []))
    return g


def test_attention_ops_one_group_after_recognition_declines():
    g = _fuse(_attention_ops(), ["recognize_patterns", "fuse_reductions"])
    (grp,) = _groups(g)
    assert grp.attrs["group"] == "attention"
    assert _body_ops(grp) == ["add", "div", "matmul", "matmul", "softmax", "transpose"]
    assert [n.op for n in g.nodes] == ["fused", "transpose"]


def test_attention_probabilities_read_elsewhere_are_not_attention():
    g = _fuse(_attention_ops(export_probs=True))
    assert not _groups(g, "attention")
    (grp,) = _groups(g)  # the softmax still gets its prologue
    assert grp.attrs["group"] == "softmax" and _body_ops(grp) == ["add", "div", "softmax"]


def test_attention_regroups_a_matmul_epilogue_group():
    g = _attention_ops()
    nodes = {n.name: n for n in g.nodes}
    epi = make_group(g, [nodes["qk"], nodes["scale"], nodes["masked"]], "matmul_epilogue")
    epi.meta["anchor"] = "qk"
    g = _fuse(g)
    (grp,) = _groups(g)
    assert grp.attrs["group"] == "attention" and "fused" not in _body_ops(grp)
    assert _body_ops(grp) == ["add", "div", "matmul", "matmul", "softmax", "transpose"]


@pytest.mark.parametrize("case", ["probs_read_elsewhere", "scale_per_key"])
def test_matmul_epilogue_group_kept_when_not_attention(case):
    g = _attention_ops(export_probs=case == "probs_read_elsewhere", vector_scale=case == "scale_per_key")
    nodes = {n.name: n for n in g.nodes}
    epi = make_group(g, [nodes["qk"], nodes["scale"], nodes["masked"]], "matmul_epilogue", "qk_epilogue")
    epi.meta["anchor"] = "qk"
    g = _fuse(g)
    (mm,) = _groups(g, "matmul_epilogue")
    assert _body_ops(mm) == ["add", "div", "matmul"] and mm.meta["anchor"] == "qk"
    assert mm.attrs["label"] == "qk_epilogue"
    assert [n.attrs["group"] for n in _groups(g)] == ["matmul_epilogue", "softmax"]


# ---- reductions written op by op ------------------------------------------------------------

def _batch_stats(export_mean=False, extra=False):
    """Normalization over (N, H, W) written out (training-mode batch norm statistics)."""
    g = Graph()
    x = g.add_input("x", TensorType((4, 3, 5, 5), float32))
    x = g.op("add", [x, _c(g, 0.5)], name="shift")
    axes = _i(g, [0, 2, 3])
    mean = g.op("reduce_mean", [x, axes], {"keepdims": 1}, name="mean")
    d = g.op("sub", [x, mean])
    var = g.op("reduce_mean", [g.op("mul", [d, d]), axes], {"keepdims": 1})
    y = g.op("div", [d, g.op("sqrt", [g.op("add", [var, _c(g, 1e-5)])])])
    y = g.op("relu", [g.op("add", [g.op("mul", [y, _c(g, np.full((1, 3, 1, 1), 2.0))]), _c(g, 0.1)])])
    outs = [g.op("conv", [y, _c(g, np.ones((2, 3, 1, 1)) / 3, "w")])]
    if export_mean:
        outs.append(mean)
    if extra:  # a reader of the variance that depends on the group through a conv: not absorbable
        outs.append(g.op("add", [g.op("reduce_sum", [outs[0], _i(g, [0, 1, 2, 3])], {"keepdims": 1}), var]))
    g.set_outputs(outs)
    return g


def test_mean_variance_written_out_is_one_reduction_group():
    g = _fuse(_batch_stats())
    (grp,) = _groups(g, "reduction")
    assert _body_ops(grp) == ["add", "add", "add", "div", "mul", "mul", "reduce_mean", "reduce_mean",
                              "relu", "sqrt", "sub"]
    assert [n.op for n in g.nodes] == ["fused", "conv"]


def test_reduction_group_exports_values_read_outside():
    g = _fuse(_batch_stats(export_mean=True))
    (grp,) = _groups(g, "reduction")
    assert len(grp.outputs) == 2 and g.outputs[1] in grp.outputs


def test_reduction_group_never_needs_a_cycle():
    g = _fuse(_batch_stats(extra=True))  # verify=True: a cycle would fail the verifier
    (grp,) = _groups(g, "reduction")
    assert "sqrt" in _body_ops(grp)
    # the add reading var and the conv's result stays outside (it depends on the group via conv)
    assert any(n.op == "add" for n in g.nodes)


def test_moments_from_the_same_input():
    # var = mean(x * x) - mean(x) ** 2: the square reads the input, not a reduction result
    g = Graph()
    x = g.add_input("x", TensorType((3, 16), float32))
    axes = _i(g, [-1])
    m = g.op("reduce_mean", [x, axes], {"keepdims": 1})
    m2 = g.op("reduce_mean", [g.op("mul", [x, x]), axes], {"keepdims": 1})
    var = g.op("sub", [m2, g.op("mul", [m, m])])
    g.set_outputs([g.op("mul", [g.op("sub", [x, m]), g.op("reciprocal", [g.op("sqrt", [var])])])])
    g = _fuse(g)
    (grp,) = _groups(g, "reduction")
    assert len(g.nodes) == 1 and _body_ops(grp).count("reduce_mean") == 2


def test_lone_reduction_is_left_alone():
    g = Graph()
    x = g.add_input("x", TensorType((3, 16), float32))
    g.set_outputs([g.op("matmul", [g.op("reduce_sum", [x, _i(g, [-1])], {"keepdims": 1}), _c(g, np.ones((1, 2)))])])
    g2, rep = run_passes(g, ["fuse_reductions"], PassContext(verify=True))
    assert not rep.records[0].changed and not _groups(g2)


# ---- models ---------------------------------------------------------------------------------

def _o2():
    have = all_passes()
    return [p for p in pipeline(2) if p in have]


def _contains(n, op):
    return any(b.op == op for b in n.attrs["body"].nodes)


@pytest.mark.parametrize("build,layers", [(lambda: models.bert_layer(), 1),
                                          (lambda: models.bert_encoder(layers=2, hidden=64, heads=4), 2)],
                         ids=["bert_layer", "bert_encoder"])
@pytest.mark.parametrize("passes", ["o2", "raw"])
def test_bert_groups(build, layers, passes):
    """-O2 (the passes registered so far), or recognition and fusion straight on the import."""
    m = build()
    g = irgraph.to_graph(m)
    feeds = models.feeds(m, {"N": 2, "S": 6})
    want = run_graph(g, feeds)
    names = _o2() if passes == "o2" else ["recognize_patterns", "fuse_reductions"]
    g2, _ = run_passes(g.copy(), names, PassContext(verify=True))
    np.testing.assert_allclose(run_graph(g2, feeds)[0], want[0], rtol=RTOL, atol=ATOL)
    att = _groups(g2, "attention")
    ln = _groups(g2, "layer_norm")
    assert len(att) == layers and len(ln) == 2 * layers
    for n in att:  # the whole softmax-attention in the one group
        assert _contains(n, "attention") or (_contains(n, "softmax") and _body_ops(n).count("matmul") == 2)
    assert all(_body_ops(n).count("layer_norm") == 1 for n in ln)
    top = {n.op for n in g2.nodes}
    assert not top & {"softmax", "layer_norm", "attention", "reduce_mean", "erf"}
    gelu = [n for n in g2.nodes if n.op == "gelu" or (n.op == "fused" and _contains(n, "gelu"))]
    assert len(gelu) == layers and g2.op_histogram()["gelu"] == layers
    if passes == "o2" and {"fuse_epilogues", "fuse_elementwise"} & set(all_passes()):
        assert all(n.op == "fused" for n in gelu)
