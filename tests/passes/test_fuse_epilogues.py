"""fuse_epilogues: conv / conv_transpose / matmul + bias + activation + residual add as one fused
group; intermediates read outside stay outside, no cycles, provenance kept. Structure and
numerics (interpreter before vs after)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import irgraph
import models
from irgraph import Graph, TensorType
from irgraph.dtype import float32
from irgraph.passes import PassContext, run_passes
from passcheck import body_ops as _body_ops, fused_groups as _groups, rand, run_checked
from passcheck import top_ops as _top_ops


def _rng(seed=0):
    return np.random.default_rng(seed)


def _run(g, feeds, passes=("fuse_epilogues",)):
    """Run ``passes`` on a copy with verification, check numerics, return the new graph."""
    return run_checked(g, feeds, passes)[0]


def _conv_input(g, c=4, hw=6):
    return g.add_input("x", TensorType(("N", c, hw, hw), float32))


def _w(g, shape, seed=1, name="w"):
    return g.add_const((_rng(seed).standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)


def _x(shape, seed=2):
    return rand(shape, seed)


# ---- the ResNets ------------------------------------------------------------------------------
def test_resnet18_every_conv_carries_its_epilogue():
    m = models.resnet18(image=64)
    g = irgraph.to_graph(m)
    g2 = _run(g, models.feeds(m, {"N": 2}, seed=3), ["fold_batch_norm", "fuse_epilogues"])
    onnx_ops = {n.name: n.op_type for n in m.graph.node}
    top = Counter(_top_ops(g2))
    # no batch norm, and no activation or residual add left outside a group
    assert not {"batch_norm", "relu", "add"} & set(top)
    groups = _groups(g2)
    conv_groups = [f for f in groups if f.attrs["group"] == "conv_epilogue"]
    assert len(conv_groups) == 17 and top["conv"] == 3  # the 1x1 shortcut convs have no epilogue
    covered = Counter()
    for f in conv_groups:
        ops = _body_ops(f)
        assert ops[0] == "conv" and ops.count("conv") == 1 and len(f.outputs) == 1
        assert ops[1:] in (["relu"], ["add", "relu"])
        assert f.meta["epilogue"] == (["relu"] if len(ops) == 2 else ["add[residual]", "relu"])
        assert f.meta["anchor"] == "conv"
        assert len(f.attrs["body"].constants) == 2  # folded weight and bias live in the body
        kinds = Counter(onnx_ops[s] for s in f.meta["source"])
        assert kinds == Counter({"Conv": 1, "BatchNormalization": 1, "Relu": 1, "Add": len(ops) - 2})
        covered.update(f.meta["source"])
    for n in g2.nodes:
        if n.op == "conv":
            # a shortcut conv feeds exactly one residual group
            (reader,) = [u for u in g2.nodes if n.outputs[0] in u.inputs]
            assert reader.op == "fused" and reader.meta["epilogue"][0] == "add[residual]"
            assert tuple(n.inputs[1].shape[2:]) == (1, 1)
            covered.update(n.meta["source"])
    # every ONNX Conv/BatchNormalization/Relu/Add node is in exactly one place
    want = [k for k, v in onnx_ops.items() if v in ("Conv", "BatchNormalization", "Relu", "Add")]
    assert sorted(covered) == sorted(want) and set(covered.values()) == {1}
    # the classifier: matmul + bias
    (mm,) = [f for f in groups if f.attrs["group"] == "matmul_epilogue"]
    assert _body_ops(mm) == ["matmul", "add"] and mm.meta["epilogue"] == ["add[bias]"]


def test_cifar_resnet():
    m = models.resnet(blocks=2)
    g = irgraph.to_graph(m)
    g2 = _run(g, models.feeds(m, {"N": 2}, seed=4), ["fold_batch_norm", "fuse_epilogues"])
    assert not {"batch_norm", "relu", "add"} & set(_top_ops(g2))
    assert sum(_body_ops(f).count("conv") for f in _groups(g2)) + _top_ops(g2).count("conv") == 15


def test_mlp_and_bert_layer():
    m = models.mlp()
    g2 = _run(irgraph.to_graph(m), models.feeds(m, {"N": 3}))
    assert [(_body_ops(f), f.meta["epilogue"]) for f in _groups(g2)] == [
        (["matmul", "add", "relu"], ["add[bias]", "relu"])] * 2 + [(["matmul", "add"], ["add[bias]"])]
    assert [f.meta["source"] for f in _groups(g2)][0] == ["Gemm_4", "Relu_6"]

    m = models.bert_layer()
    g = irgraph.to_graph(m)
    g2 = _run(g, models.feeds(m, {"N": 2, "S": 5}))
    # every matmul with weights is in a group with its bias; the FFN's GELU (Erf form) joins it
    assert _top_ops(g2).count("matmul") == 1  # probs @ v: its reader is a transpose
    gelu = [f for f in _groups(g2) if "erf" in _body_ops(f)]
    assert len(gelu) == 1 and _body_ops(gelu[0]) == ["matmul", "add", "mul", "div", "erf", "add", "mul"]
    assert all(f.attrs["group"] == "matmul_epilogue" for f in _groups(g2))


# ---- hand-built epilogues -----------------------------------------------------------------------
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "gelu", "hard_swish", "leaky_relu", "clip", "silu"])
def test_conv_bias_activation(act):
    g = Graph()
    x = _conv_input(g)
    y = g.op("conv", [x, _w(g, (8, 4, 3, 3))], {"pads": [1, 1, 1, 1]})
    y = g.op("add", [y, g.add_const(_x((8, 1, 1), 5), "bias")])  # bias as a separate add
    if act == "clip":
        y = g.op("clip", [y, g.add_const(np.float32(0)), g.add_const(np.float32(6))])
    elif act == "silu":
        y = g.op("mul", [y, g.op("sigmoid", [y])])
    else:
        y = g.op(act, [y])
    g.set_outputs([g.op("max_pool", [y], {"kernel_shape": [2, 2]})])
    g2 = _run(g, [_x((2, 4, 6, 6))])
    (f,) = _groups(g2)
    assert _top_ops(g2) == ["fused", "max_pool"] and f.attrs["group"] == "conv_epilogue"
    want = {"clip": ["add[bias]", "clip"], "silu": ["add[bias]", "sigmoid", "mul"]}.get(act, ["add[bias]", act])
    assert f.meta["epilogue"] == want
    assert [v.name for v in f.inputs] == ["x"] and len(f.outputs) == 1


def test_conv_transpose_and_unbiased_matmul():
    g = Graph()
    x = _conv_input(g)
    y = g.op("conv_transpose", [x, _w(g, (4, 3, 2, 2)), g.add_const(_x((3,), 6))], {"strides": [2, 2]})
    y = g.op("leaky_relu", [y], {"alpha": 0.1})
    a = g.add_input("a", TensorType((3, 5), float32))
    b = g.add_input("b", TensorType((5, 7), float32))
    z = g.op("relu", [g.op("mul", [g.op("matmul", [a, b]), g.add_const(np.float32(0.5))])])
    g.set_outputs([y, z])
    g2 = _run(g, [_x((1, 4, 6, 6)), _x((3, 5), 7), _x((5, 7), 8)])
    assert sorted((f.attrs["group"], tuple(_body_ops(f))) for f in _groups(g2)) == [
        ("conv_epilogue", ("conv_transpose", "leaky_relu")), ("matmul_epilogue", ("matmul", "mul", "relu"))]
    assert _top_ops(g2) == ["fused", "fused"]


def test_residual_block_with_activation_after_the_add():
    g = Graph()
    x = _conv_input(g)
    y = g.op("relu", [g.op("conv", [x, _w(g, (4, 4, 3, 3)), g.add_const(_x((4,), 9))], {"pads": [1, 1, 1, 1]})])
    y = g.op("conv", [y, _w(g, (4, 4, 3, 3), 2), g.add_const(_x((4,), 10))], {"pads": [1, 1, 1, 1]})
    y = g.op("relu", [g.op("add", [x, y])])  # residual on the left
    g.set_outputs([y])
    g2 = _run(g, [_x((2, 4, 6, 6))])
    assert [f.meta["epilogue"] for f in _groups(g2)] == [["relu"], ["add[residual]", "relu"]]
    assert _top_ops(g2) == ["fused", "fused"]
    # the residual is the block input, read by both groups
    assert all("x" in [v.name for v in f.inputs] for f in _groups(g2))


# ---- what must not be fused ---------------------------------------------------------------------
def test_intermediate_read_outside_ends_the_epilogue():
    g = Graph()
    x = _conv_input(g)
    y = g.op("conv", [x, _w(g, (4, 4, 3, 3))], {"pads": [1, 1, 1, 1]})
    biased = g.op("add", [y, g.add_const(_x((4, 1, 1), 11))], name="bias")
    r = g.op("relu", [biased], name="act")
    other = g.op("exp", [biased], name="other")  # a second reader of the biased value
    g.set_outputs([r, other])
    g2 = _run(g, [_x((2, 4, 6, 6))])
    (f,) = _groups(g2)
    assert _body_ops(f) == ["conv", "add"] and [v.name for v in f.outputs] == ["bias"]
    assert sorted(_top_ops(g2)) == ["exp", "fused", "relu"]


def test_returned_intermediate_ends_the_epilogue():
    g = Graph()
    x = _conv_input(g)
    y = g.op("relu", [g.op("conv", [x, _w(g, (4, 4, 1, 1))])])
    g.set_outputs([y, g.op("sigmoid", [y])])  # y is both returned and read
    g2 = _run(g, [_x((1, 4, 6, 6))])
    (f,) = _groups(g2)
    assert _body_ops(f) == ["conv", "relu"] and [v.name for v in f.outputs] == [y.name]
    assert _top_ops(g2) == ["fused", "sigmoid"]


def test_no_epilogue_no_group():
    g = Graph()
    x = _conv_input(g)
    y = g.op("conv", [x, _w(g, (4, 4, 1, 1))])
    g.set_outputs([g.op("relu", [y]), g.op("global_pool", [y], {"mode": "avg"})])
    g2 = _run(g, [_x((1, 4, 6, 6))])
    assert _groups(g2) == [] and sorted(_top_ops(g2)) == ["conv", "global_pool", "relu"]


def test_operand_that_is_not_per_channel_is_not_absorbed():
    g = Graph()
    x = _conv_input(g)
    y = g.op("conv", [x, _w(g, (4, 4, 1, 1)), g.add_const(_x((4,), 12))])
    y = g.op("relu", [y])
    y = g.op("add", [y, g.add_const(_x((1, 1, 6, 6), 13))])  # varies over space, not channels
    a = g.add_input("a", TensorType((3, 5), float32))
    z = g.op("matmul", [a, _w(g, (5, 7), 3, "w2")])
    z = g.op("add", [z, g.add_const(_x((3, 1), 14))])  # a per-row bias
    g.set_outputs([y, z])
    g2 = _run(g, [_x((1, 4, 6, 6)), _x((3, 5), 15)])
    (f,) = _groups(g2)
    assert _body_ops(f) == ["conv", "relu"]
    assert sorted(_top_ops(g2)) == ["add", "add", "fused", "matmul"]


def test_squeeze_excitation_mul_would_be_a_cycle():
    # y = relu(conv(x)); s = sigmoid(conv(pool(y))); out = y * s: s is computed from y, so the
    # mul cannot join conv+relu (the group would feed the pool and read its result)
    g = Graph()
    x = _conv_input(g)
    y = g.op("relu", [g.op("conv", [x, _w(g, (4, 4, 3, 3))], {"pads": [1, 1, 1, 1]})], name="y")
    s = g.op("global_pool", [y], {"mode": "avg"})
    s = g.op("sigmoid", [g.op("conv", [s, _w(g, (4, 4, 1, 1), 4, "w_se")])], name="s")
    g.set_outputs([g.op("mul", [y, s], name="scale")])
    g2 = _run(g, [_x((2, 4, 6, 6))])
    groups = {tuple(_body_ops(f)) for f in _groups(g2)}
    assert groups == {("conv", "relu"), ("conv", "sigmoid")}
    assert sorted(_top_ops(g2)) == ["fused", "fused", "global_pool", "mul"]


def test_residual_computed_from_the_group_is_not_absorbed():
    # out = relu(conv(x)) + reshape(reshape(relu(...))): the add's other operand depends on the group
    g = Graph()
    x = _conv_input(g)
    r = g.op("relu", [g.op("conv", [x, _w(g, (4, 4, 3, 3))], {"pads": [1, 1, 1, 1]})])
    flat = g.op("reshape", [r, g.add_const(np.array([0, -1], np.int64))])
    back = g.op("reshape", [flat, g.add_const(np.array([0, 4, 6, 6], np.int64))])
    g.set_outputs([g.op("add", [r, back])])
    g2 = _run(g, [_x((2, 4, 6, 6))])
    (f,) = _groups(g2)
    assert _body_ops(f) == ["conv", "relu"]
    assert _top_ops(g2) == ["fused", "reshape", "reshape", "add"]


def test_second_run_changes_nothing():
    m = models.mlp(sizes=(8, 6, 4))
    g = irgraph.to_graph(m)
    g2, rep = run_passes(g, ["fuse_epilogues", "fuse_epilogues"], PassContext(verify=True))
    assert [r.changed for r in rep.records] == [True, False]


def test_operand_depending_on_the_contraction_can_never_join():
    # the stopping rule ends the SE block's epilogue at the pool's reader already; the status
    # check itself must also refuse the mul, whose other operand is computed from the conv
    from irgraph.passes.fuse_epilogues import _NEVER, _Region
    g = Graph()
    x = _conv_input(g)
    y = g.op("relu", [g.op("conv", [x, _w(g, (4, 4, 3, 3))], {"pads": [1, 1, 1, 1]})])
    s = g.op("sigmoid", [g.op("reshape", [y, g.add_const(np.array([0, 4, 6, 6], np.int64))])])
    out = g.op("mul", [y, s])
    other = g.op("mul", [y, g.add_input("z", TensorType(("N", 4, 6, 6), float32))])
    g.set_outputs([out, other])
    r = _Region(g, g.nodes[0], g.users(), {n: i for i, n in enumerate(g.nodes)})
    r.add(y.producer)
    assert r.status(out.producer) != "yes"  # at best once sigmoid joins, which it never can:
    assert r.status(s.producer) == _NEVER
    # the same shape from outside the group is a residual operand
    assert r.status(other.producer) == "yes"


def test_operand_roles():
    from irgraph.passes.fuse_epilogues import operand_role
    g = Graph()
    out = ("N", 8, 5, 5)
    role = {shape: operand_role(g.add_input("v", TensorType(shape, float32)), out, 1)
            for shape in [(8, 1, 1), (1, 8, 1, 1), (), (1,), ("N", 8, 5, 5), (8,), (5, 5), (1, 1, 5, 5),
                          (2, "N", 8, 5, 5), ("N", 8, 1, 1)]}
    assert role == {(8, 1, 1): "channel", (1, 8, 1, 1): "channel", (): "channel", (1,): "channel",
                    ("N", 8, 5, 5): "full", (8,): None, (5, 5): None, (1, 1, 5, 5): None,
                    (2, "N", 8, 5, 5): None, ("N", 8, 1, 1): None}
