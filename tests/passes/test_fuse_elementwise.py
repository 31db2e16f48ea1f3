"""fuse_elementwise: maximal cycle-free groups of connected elementwise ops; values read outside
stay available; fused groups are not absorbed. Structure and numerics (interpreter before vs
after)."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
import models
from irgraph import Graph, TensorType
from irgraph.dtype import float32
from irgraph.passes import PassContext, run_passes
from passcheck import body_ops as _body_ops, fused_groups as _groups, rand as _x, run_checked
from passcheck import top_ops as _top_ops


def _run(g, feeds, passes=("fuse_elementwise",)):
    return run_checked(g, feeds, passes)[0]


def test_chain_becomes_one_group_with_provenance():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 4), float32))
    y = g.add_input("y", TensorType((4,), float32))
    a = g.op("exp", [x], name="Exp_0", meta={"source": ["Exp_0"]})
    b = g.op("mul", [a, g.add_const(np.float32(0.5))], name="Mul_1", meta={"source": ["Mul_1"]})
    c = g.op("add", [b, y], name="Add_2", meta={"source": ["Add_2"]})
    g.set_outputs([g.op("relu", [c], name="Relu_3", meta={"source": ["Relu_3"]})])
    g2 = _run(g, [_x((3, 4)), _x((4,), 1)])
    (f,) = _groups(g2)
    assert _top_ops(g2) == ["fused"] and f.attrs["group"] == "elementwise"
    assert _body_ops(f) == ["exp", "mul", "add", "relu"]
    assert f.meta["source"] == ["Exp_0", "Mul_1", "Add_2", "Relu_3"]
    assert [v.name for v in f.inputs] == ["x", "y"] and len(f.outputs) == 1


def test_diamond_and_broadcast_operands():
    g = Graph()
    x = g.add_input("x", TensorType((4, 1), float32))
    y = g.add_input("y", TensorType((1, 5), float32))
    a = g.op("exp", [x])
    d = g.op("add", [g.op("sin", [a]), g.op("cos", [a])])   # diamond from a
    e = g.op("mul", [d, g.op("tanh", [y])])                  # (4, 1) * (1, 5) -> (4, 5)
    g.set_outputs([g.op("neg", [e])])
    g2 = _run(g, [_x((4, 1)), _x((1, 5), 2)])
    (f,) = _groups(g2)
    assert sorted(_body_ops(f)) == ["add", "cos", "exp", "mul", "neg", "sin", "tanh"]


def test_value_read_outside_stays_available():
    g = Graph()
    x = g.add_input("x", TensorType((3, 4), float32))
    a = g.op("exp", [x], name="a")
    b = g.op("sqrt", [g.op("add", [a, g.add_const(np.float32(1))])], name="b")
    s = g.op("reduce_sum", [a, g.add_const(np.array([1], np.int64))])  # reads a, not fusable
    g.set_outputs([b, s])
    g2 = _run(g, [_x((3, 4), 3)])
    (f,) = _groups(g2)
    assert _body_ops(f) == ["exp", "add", "sqrt"]
    assert sorted(v.name for v in f.outputs) == ["a", "b"]
    red = next(n for n in g2.nodes if n.op == "reduce_sum")
    assert red.inputs[0] is f.outputs[[v.name for v in f.outputs].index("a")]


def test_path_through_a_reduction_is_not_a_fusion():
    # d = neg(exp(x)) + sum(exp(x)): merging d into {exp, neg} would make the group both feed and
    # read the reduction
    g = Graph()
    x = g.add_input("x", TensorType((3, 4), float32))
    a = g.op("exp", [x])
    b = g.op("neg", [a])
    s = g.op("reduce_sum", [a, g.add_const(np.array([1], np.int64))], {"keepdims": 1})
    g.set_outputs([g.op("add", [b, s])])
    g2 = _run(g, [_x((3, 4), 4)])
    (f,) = _groups(g2)
    assert _body_ops(f) == ["exp", "neg"]
    assert _top_ops(g2) == ["fused", "reduce_sum", "add"]


def test_cycle_through_another_group_is_refused():
    # a1 -> a2 and b2 -> b1 are each fine, and so is each group on its own; but a1 -> t1 -> b1 and
    # b2 -> t2 -> a2 mean the groups {a1, a2} and {b2, b1} would feed each other
    g = Graph()
    x = g.add_input("x", TensorType((4, 4), float32))
    y = g.add_input("y", TensorType((4, 4), float32))
    a1 = g.op("exp", [x], name="a1")
    b2 = g.op("sin", [y], name="b2")
    t1 = g.op("transpose", [a1], {"perm": [1, 0]}, name="t1")
    t2 = g.op("transpose", [b2], {"perm": [1, 0]}, name="t2")
    a2 = g.op("mul", [a1, t2], name="a2")
    b1 = g.op("add", [b2, t1], name="b1")
    g.set_outputs([a2, b1])
    g2 = _run(g, [_x((4, 4), 5), _x((4, 4), 6)])
    (f,) = _groups(g2)
    assert _body_ops(f) == ["exp", "mul"]
    assert sorted(_top_ops(g2)) == ["add", "fused", "sin", "transpose", "transpose"]


def test_fused_groups_are_not_absorbed_and_second_run_is_a_no_op():
    m = models.mlp(sizes=(8, 6, 4))
    g = irgraph.to_graph(m)
    g2, rep = run_passes(g, ["fuse_epilogues", "fuse_elementwise"], PassContext(verify=True))
    assert [r.changed for r in rep.records] == [True, False]
    assert all(_body_ops(f)[0] == "matmul" for f in _groups(g2))

    g = Graph()
    x = g.add_input("x", TensorType((3, 4), float32))
    g.set_outputs([g.op("relu", [g.op("exp", [x])])])
    g2, rep = run_passes(g, ["fuse_elementwise", "fuse_elementwise"], PassContext(verify=True))
    assert [r.changed for r in rep.records] == [True, False]
    assert len(_groups(g2)) == 1


def test_lone_ops_and_constant_subexpressions_stay():
    g = Graph()
    x = g.add_input("x", TensorType((3, 4), float32))
    c = g.op("exp", [g.add_const(np.ones(4, np.float32))])  # all inputs known: constant folding's job
    r = g.op("relu", [g.op("matmul", [x, g.add_const(np.ones((4, 4), np.float32))])])
    g.set_outputs([g.op("reduce_sum", [r, g.add_const(np.array([0], np.int64))]), g.op("add", [x, c])])
    g2 = _run(g, [_x((3, 4), 7)])
    assert _groups(g2) == [] and sorted(_top_ops(g2)) == ["add", "exp", "matmul", "reduce_sum", "relu"]


def test_groups_keep_one_iteration_space():
    # {exp (4,1), add -> (4,5)} and mul -> (3,4,1) are each fine, but together they would need
    # the (3,4,5) space that none of their outputs has
    g = Graph()
    x = g.add_input("x", TensorType((4, 1), float32))
    z = g.add_input("z", TensorType((4, 5), float32))
    w = g.add_input("w", TensorType((3, 4, 1), float32))
    p = g.op("exp", [x])
    g.set_outputs([g.op("add", [p, z]), g.op("mul", [p, w])])
    g2 = _run(g, [_x((4, 1), 11), _x((4, 5), 12), _x((3, 4, 1), 13)])
    (f,) = _groups(g2)
    assert _body_ops(f) == ["exp", "add"] and _top_ops(g2) == ["fused", "mul"]


def test_incompatible_shapes_are_not_merged():
    # shapes with different symbols cannot be shown to share one iteration space
    g = Graph()
    x = g.add_input("x", TensorType(("N", 4), float32))
    y = g.add_input("y", TensorType(("M", 4), float32))
    a = g.op("exp", [x])
    b = g.op("exp", [y])
    g.set_outputs([g.op("add", [a, b])])
    g2 = _run(g, [_x((3, 4), 8), _x((3, 4), 9)])
    assert _groups(g2) == []


@pytest.mark.parametrize("name,dims", [("resnet", {"N": 2}), ("bert_layer", {"N": 2, "S": 5}),
                                       ("mlp", {"N": 3}), ("lstm", {"N": 2})])
def test_models_after_the_fusion_passes(name, dims):
    m = models.ALL[name]()
    g = irgraph.to_graph(m)
    g2 = _run(g, models.feeds(m, dims, seed=2), ["fold_batch_norm", "fuse_epilogues", "fuse_elementwise"])
    tops = _top_ops(g2)
    if name == "resnet":
        assert not {"batch_norm", "relu", "add"} & set(tops)
    if name == "bert_layer":
        # the mask arithmetic (cast, 1 - m, * -10000) is one group; the layer norm written out
        # op by op has its elementwise tail (+eps, sqrt, /, *gamma, +beta) as one group
        bodies = [_body_ops(f) for f in _groups(g2) if f.attrs["group"] == "elementwise"]
        assert ["cast", "sub", "mul"] in bodies and ["add", "sqrt", "div", "mul", "add"] in bodies


def test_scale_shift_from_a_standalone_batch_norm_is_fused():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 3, 4, 4), float32))
    p = g.op("max_pool", [x], {"kernel_shape": [2, 2]})
    r = np.random.default_rng(1)
    params = [g.add_const((1 + 0.1 * r.standard_normal(3)).astype(np.float32)),
              g.add_const(r.standard_normal(3).astype(np.float32)),
              g.add_const(r.standard_normal(3).astype(np.float32)),
              g.add_const((0.5 + r.random(3)).astype(np.float32))]
    g.set_outputs([g.op("relu", [g.op("batch_norm", [p] + params, name="BN_1", meta={"source": ["BN_1"]})])])
    g2 = _run(g, [_x((2, 3, 4, 4), 10)], ["fold_batch_norm", "fuse_epilogues", "fuse_elementwise"])
    (f,) = _groups(g2)
    assert _top_ops(g2) == ["max_pool", "fused"] and _body_ops(f) == ["mul", "add", "relu"]
    assert "BN_1" in f.meta["source"]
