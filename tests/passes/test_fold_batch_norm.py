"""fold_batch_norm: batch norm folded into conv / conv_transpose / matmul weights, or turned into a
constant per-channel mul + add; never when the conv output has another reader or the weights
are not constants. Structure and numerics (interpreter before vs after)."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
import models
from irgraph import Graph, TensorType
from irgraph.dtype import float16, float32
from passcheck import run_checked


def _rng(seed=0):
    return np.random.default_rng(seed)


def _bn_params(g, c, seed=1, prefix="bn"):
    r = _rng(seed)
    return [g.add_const((1 + 0.2 * r.standard_normal(c)).astype(np.float32), f"{prefix}.scale"),
            g.add_const((0.1 * r.standard_normal(c)).astype(np.float32), f"{prefix}.bias"),
            g.add_const((0.1 * r.standard_normal(c)).astype(np.float32), f"{prefix}.mean"),
            g.add_const((0.5 + r.random(c)).astype(np.float32), f"{prefix}.var")]


def _fold(g, feeds):
    """Run the pass on a copy with verification; check numerics; return the new graph."""
    g2, report = run_checked(g, feeds, ["fold_batch_norm"])
    return g2, report.records[0].changed


def _ops(g):
    return [n.op for n in g.nodes]


@pytest.mark.parametrize("op,group,with_bias", [
    ("conv", 1, False), ("conv", 1, True), ("conv", 2, True),
    ("conv_transpose", 1, False), ("conv_transpose", 2, True),
])
def test_batch_norm_folded_into_conv_weights(op, group, with_bias):
    g = Graph()
    x = g.add_input("x", TensorType(("N", 4, 6, 6), float32))
    r = _rng()
    m = 6
    wshape = (m, 4 // group, 3, 3) if op == "conv" else (4, m // group, 3, 3)
    w = g.add_const(r.standard_normal(wshape).astype(np.float32), "w")
    ins = [x, w] + ([g.add_const(r.standard_normal(m).astype(np.float32), "b")] if with_bias else [])
    y = g.op(op, ins, {"pads": [1, 1, 1, 1], "group": group}, name="Conv_0", meta={"source": ["Conv_0"]})
    out = g.op("batch_norm", [y] + _bn_params(g, m), {"epsilon": 1e-3}, name="BN_1", meta={"source": ["BN_1"]})
    g.set_outputs([g.op("relu", [out], name="Relu_2")])
    g2, changed = _fold(g, [r.standard_normal((2, 4, 6, 6)).astype(np.float32)])
    assert changed
    assert _ops(g2) == [op, "relu"]
    conv = g2.nodes[0]
    assert len(conv.inputs) == 3 and conv.inputs[1].is_const and conv.inputs[2].is_const
    assert conv.inputs[2].shape == (m,)
    assert conv.attrs["group"] == group and conv.attrs["pads"] == (1, 1, 1, 1)
    assert sorted(conv.meta["source"]) == ["BN_1", "Conv_0"]
    # the old weight is gone from the graph (not duplicated)
    assert "w" not in g2.constants


@pytest.mark.parametrize("with_bias", [False, True])
def test_batch_norm_folded_into_matmul(with_bias):
    g = Graph()
    x = g.add_input("x", TensorType(("N", 5), float32))
    r = _rng(2)
    w = g.add_const(r.standard_normal((5, 3)).astype(np.float32), "w")
    y = g.op("matmul", [x, w], name="Gemm_0")
    if with_bias:
        # bias first: the rule must match add in either operand order
        y = g.op("add", [g.add_const(r.standard_normal(3).astype(np.float32), "b"), y], name="Gemm_0_bias")
    g.set_outputs([g.op("batch_norm", [y] + _bn_params(g, 3), name="BN_1")])
    g2, changed = _fold(g, [r.standard_normal((4, 5)).astype(np.float32)])
    assert changed
    assert _ops(g2) == ["matmul", "add"]
    mm, add = g2.nodes
    assert mm.inputs[0].name == "x" and mm.inputs[1].is_const and add.inputs[1].is_const
    assert "BN_1" in add.meta["source"]


def test_matmul_of_rank_3_is_not_folded_into_the_weight():
    # batch norm's channel axis 1 is the sequence axis here, not the weight's output columns
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 5), float32))
    r = _rng(3)
    w = g.add_const(r.standard_normal((5, 4)).astype(np.float32), "w")
    y = g.op("matmul", [x, w])
    g.set_outputs([g.op("batch_norm", [y] + _bn_params(g, 3))])
    g2, changed = _fold(g, [r.standard_normal((2, 3, 5)).astype(np.float32)])
    assert changed
    assert _ops(g2) == ["matmul", "mul", "add"]
    assert g2.nodes[0].inputs[1].name == "w"  # weight untouched


def test_conv_output_read_elsewhere_keeps_the_conv():
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 5, 5), float32))
    r = _rng(4)
    w = g.add_const(r.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    y = g.op("conv", [x, w], name="conv")
    bn = g.op("batch_norm", [y] + _bn_params(g, 4), name="bn")
    g.set_outputs([bn, g.op("exp", [y], name="other")])
    g2, changed = _fold(g, [r.standard_normal((1, 3, 5, 5)).astype(np.float32)])
    assert changed
    conv = next(n for n in g2.nodes if n.op == "conv")
    assert conv.inputs[1].name == "w" and len(conv.inputs) == 2  # not folded
    assert "batch_norm" not in _ops(g2)
    assert sorted(_ops(g2)) == ["add", "conv", "exp", "mul"]
    # the per-channel scale is shaped to broadcast over (N, C, H, W)
    mul = next(n for n in g2.nodes if n.op == "mul")
    assert mul.inputs[1].shape == (4, 1, 1)


def test_conv_output_returned_by_graph_keeps_the_conv():
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 5, 5), float32))
    w = g.add_const(_rng(5).standard_normal((4, 3, 1, 1)).astype(np.float32), "w")
    y = g.op("conv", [x, w])
    g.set_outputs([y, g.op("batch_norm", [y] + _bn_params(g, 4))])
    g2, _ = _fold(g, [_rng(6).standard_normal((1, 3, 5, 5)).astype(np.float32)])
    assert g2.nodes[0].inputs[1].name == "w" and sorted(_ops(g2)) == ["add", "conv", "mul"]


def test_non_constant_weights_are_not_folded():
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 5, 5), float32))
    w = g.add_input("w", TensorType((4, 3, 3, 3), float32))
    y = g.op("conv", [x, w])
    g.set_outputs([g.op("batch_norm", [y] + _bn_params(g, 4))])
    r = _rng(7)
    g2, _ = _fold(g, [r.standard_normal((1, 3, 5, 5)).astype(np.float32),
                      r.standard_normal((4, 3, 3, 3)).astype(np.float32)])
    assert _ops(g2) == ["conv", "mul", "add"] and g2.nodes[0].inputs[1] is g2.inputs[1]


def test_non_constant_statistics_stay_a_batch_norm():
    g = Graph()
    x = g.add_input("x", TensorType((2, 4), float32))
    mean = g.add_input("mean", TensorType((4,), float32))
    p = _bn_params(g, 4)
    g.set_outputs([g.op("batch_norm", [x, p[0], p[1], mean, p[3]])])
    r = _rng(8)
    g2, changed = _fold(g, [r.standard_normal((2, 4)).astype(np.float32), r.standard_normal(4).astype(np.float32)])
    assert not changed and _ops(g2) == ["batch_norm"]


def test_standalone_batch_norm_becomes_scale_and_shift():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 4, 6, 6), float32))
    pooled = g.op("max_pool", [x], {"kernel_shape": [2, 2], "strides": [2, 2]})
    g.set_outputs([g.op("batch_norm", [pooled] + _bn_params(g, 4), name="BN_7", meta={"source": ["BN_7"]})])
    g2, changed = _fold(g, [_rng(9).standard_normal((3, 4, 6, 6)).astype(np.float32)])
    assert changed and _ops(g2) == ["max_pool", "mul", "add"]
    assert all(n.meta["source"] == ["BN_7"] for n in g2.nodes[1:])
    assert all(n.inputs[1].is_const for n in g2.nodes[1:])


def test_per_activation_batch_norm_becomes_scale_and_shift():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 4), float32))
    r = _rng(10)
    params = [g.add_const((1 + 0.1 * r.standard_normal((3, 4))).astype(np.float32)),
              g.add_const(r.standard_normal((3, 4)).astype(np.float32)),
              g.add_const(r.standard_normal((3, 4)).astype(np.float32)),
              g.add_const((0.5 + r.random((3, 4))).astype(np.float32))]
    g.set_outputs([g.op("batch_norm", [x] + params)])
    g2, changed = _fold(g, [r.standard_normal((2, 3, 4)).astype(np.float32)])
    assert changed and _ops(g2) == ["mul", "add"] and g2.nodes[0].inputs[1].shape == (3, 4)


def test_float16_standalone_batch_norm_is_left_alone():
    # its reference computes in float32; mul + add in float16 would round differently
    g = Graph()
    x = g.add_input("x", TensorType((2, 4), float16))
    params = [g.add_const(p.const.astype(np.float16)) for p in _bn_params(g, 4)]
    g.set_outputs([g.op("batch_norm", [x] + params)])
    g2, changed = _fold(g, [_rng(11).standard_normal((2, 4)).astype(np.float16)])
    assert not changed and _ops(g2) == ["batch_norm"]


@pytest.mark.parametrize("build", [lambda: models.resnet(), lambda: models.resnet18(image=64)],
                         ids=["resnet", "resnet18"])
def test_no_batch_norm_left_in_resnets(build):
    m = build()
    g = irgraph.to_graph(m)
    convs = sum(n.op == "conv" for n in g.nodes)
    assert sum(n.op == "batch_norm" for n in g.nodes) == convs
    g2, changed = _fold(g, models.feeds(m, {"N": 2}, seed=1))
    assert changed
    assert "batch_norm" not in _ops(g2)
    assert sum(n.op == "conv" for n in g2.nodes) == convs
    onnx_bn = [n.name for n in m.graph.node if n.op_type == "BatchNormalization"]
    seen = []
    for n in g2.nodes:
        if n.op == "conv":
            # every conv now carries its folded bias, and names the BatchNormalization it absorbed
            assert len(n.inputs) == 3 and n.inputs[2].is_const
            bns = [s for s in n.meta["source"] if s.startswith("BatchNormalization")]
            assert len(bns) == 1
            seen += bns
    assert sorted(seen) == sorted(onnx_bn)


def test_float16_conv_batch_norm_is_left_alone():
    # folding would round W * s to float16, a change beyond reassociation
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 4, 4), float16))
    w = g.add_const(_rng(12).standard_normal((4, 3, 1, 1)).astype(np.float16), "w")
    params = [g.add_const(p.const.astype(np.float16)) for p in _bn_params(g, 4)]
    g.set_outputs([g.op("batch_norm", [g.op("conv", [x, w])] + params)])
    g2, changed = _fold(g, [_rng(13).standard_normal((1, 3, 4, 4)).astype(np.float16)])
    assert not changed and _ops(g2) == ["conv", "batch_norm"]
