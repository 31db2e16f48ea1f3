"""infer_shapes: types re-derived and made more specific, shape arithmetic followed symbolically,
static shape values turned into constants; results unchanged and the graph valid."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest

import irgraph
import models
from irgraph import Graph, TensorType
from irgraph.dtype import float32, int64
from irgraph.errors import ShapeError
from passcheck import LIGHT_DIR, imported, light_feeds, light_model, run_pass, same_results


def _run(g):
    return run_pass(g, "infer_shapes")


def _same_results(before: Graph, after: Graph, feeds) -> None:
    same_results(before, after, feeds)


def _values(g: Graph):
    for n in g.nodes:
        yield from n.outputs


def _fresh_dims(g: Graph) -> list:
    return [(v.name, v.type) for v in _values(g)
            if v.type.shape is None or any(isinstance(d, str) and d.startswith("?") for d in v.type.shape)]


# ---- the Shape->Gather->Concat->Reshape arithmetic -------------------------------------------
def test_symbolic_shape_arithmetic_keeps_symbols():
    m = models.bert_layer()
    g, before = imported(m)
    assert _fresh_dims(g), "the imported graph should have fresh reshape symbols to refine"
    g, rec = _run(g)
    assert rec.changed
    assert _fresh_dims(g) == []  # every dim is now static or a named input symbol
    reshapes = [n for n in g.nodes if n.op == "reshape"]
    assert sorted(str(n.outputs[0].type) for n in reshapes) == \
        ["float32[N,S,4,16]"] * 3 + ["float32[N,S,64]"]
    # symbolic sizes stay computed in the graph
    assert "shape" in {n.op for n in g.nodes}
    _same_results(before, g, models.feeds(m, {"N": 3, "S": 7}, seed=1))


def test_static_shape_arithmetic_becomes_constants():
    m = models.bert_layer(batch=2, seq=5)
    g, before = imported(m)
    g, rec = _run(g)
    assert rec.ops_removed == {"shape": 1, "gather": 2, "unsqueeze": 4, "concat": 2}
    int_nodes = [n for n in g.nodes if n.outputs[0].dtype is int64]
    assert [n.op for n in int_nodes] == ["unsqueeze", "unsqueeze"]  # the mask's, from an input
    for n in g.nodes:
        if n.op == "reshape":
            assert n.inputs[1].is_const
    # values kept their names: the reshapes read the constant that replaced the concat
    assert any(v.name.startswith("concat") for v in g.constants.values())
    _same_results(before, g, models.feeds(m, seed=2))


def _flatten_graph(batch):
    g = Graph()
    x = g.add_input("x", TensorType((batch, 3, 4, 5), float32))
    shape = g.op("shape", [x])
    n = g.op("gather", [shape, g.add_const(np.array(0, np.int64), "i0")], {"axis": 0})
    n1 = g.op("unsqueeze", [n, g.add_const(np.array([0], np.int64), "ax")])
    target = g.op("concat", [n1, g.add_const(np.array([-1], np.int64), "m1")], {"axis": 0})
    y = g.op("reshape", [x, target], name="flat")
    # channels * height from the shape vector, by arithmetic
    c = g.op("gather", [shape, g.add_const(np.array([1], np.int64), "i1")], {"axis": 0})
    h = g.op("gather", [shape, g.add_const(np.array([2], np.int64), "i2")], {"axis": 0})
    ch = g.op("mul", [c, h])
    t2 = g.op("concat", [n1, ch, g.add_const(np.array([5], np.int64), "five")], {"axis": 0})
    z = g.op("reshape", [x, t2], name="merge")
    e = g.op("constant_of_shape", [t2], {"value": np.array([1.5], np.float32)}, name="fill")
    ex = g.op("expand", [g.add_const(np.ones((1, 1, 5), np.float32), "one"), t2], name="bcast")
    g.set_outputs([y, z, e, ex])
    return g


def test_flatten_and_arithmetic_with_a_symbolic_batch():
    g = _flatten_graph("B")
    before = g.copy()
    assert g.nodes[[n.name for n in g.nodes].index("flat")].outputs[0].type.shape[0] != "B"
    g, _ = _run(g)
    types = {n.name: n.outputs[0].type for n in g.nodes}
    assert types["flat"] == TensorType(("B", 60), float32)
    assert types["merge"] == TensorType(("B", 12, 5), float32)
    assert types["fill"] == TensorType(("B", 12, 5), float32)
    assert types["bcast"] == TensorType(("B", 12, 5), float32)
    # c * h is static (3 * 4) even though the shape vector is not: it became a constant
    assert "mul" not in {n.op for n in g.nodes}
    a = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    _same_results(before, g, [a])


def test_flatten_with_static_shapes_leaves_no_shape_ops():
    g = _flatten_graph(2)
    before = g.copy()
    g, _ = _run(g)
    assert {n.op for n in g.nodes} == {"reshape", "constant_of_shape", "expand"}
    a = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    _same_results(before, g, [a])


# ---- merging old and new types --------------------------------------------------------------
def test_types_only_get_more_specific():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 8), float32))
    y = g.op("relu", [x])
    z = g.op("exp", [y])
    g.set_outputs([z])
    # a vaguer type than inference gives is refined; a named symbol is never replaced by a fresh one
    y.type = TensorType(("?old", "?older"), float32)
    z.type = TensorType(None, float32)
    g, rec = _run(g)
    assert rec.changed
    assert y.type == TensorType(("N", 8), float32) and z.type == TensorType(("N", 8), float32)
    # nothing left to learn: unchanged
    _, rec = _run(g)
    assert not rec.changed


def test_conflicting_static_sizes_are_an_error():
    g = Graph()
    x = g.add_input("x", TensorType((4,), float32))
    y = g.op("relu", [x], name="act")
    g.set_outputs([y])
    y.type = TensorType((5,), float32)  # corrupt: inference says 4
    with pytest.raises(ShapeError, match="node 'act'.*in pass 'infer_shapes'.*different static sizes"):
        _run(g)


def test_subgraph_bodies_are_inferred():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 6), float32))
    c = g.add_input("c", TensorType((), irgraph.dtype.bool_))
    then = Graph("then", parent=g)
    s = then.op("shape", [x])
    r = then.op("reshape", [x, then.op("concat", [s, then.add_const(np.array([1], np.int64), "one")],
                                       {"axis": 0})], name="r3")
    then.set_outputs([r])
    other = Graph("else", parent=g)
    other.set_outputs([other.op("unsqueeze", [x, other.add_const(np.array([2], np.int64), "ax")])])
    (y,) = g.op("if", [c], {"then_branch": then, "else_branch": other}, num_outputs=1)
    g.set_outputs([y])
    before = g.copy()
    g, _ = _run(g)
    assert r.type == TensorType(("N", 6, 1), float32)
    a = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    for cond in (True, False):
        _same_results(before, g, [a, np.array(cond)])


# ---- whole models ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(models.ALL))
def test_models_keep_their_results(name):
    m = models.ALL[name]()
    g, before = imported(m)
    g, rec = _run(g)
    assert rec.nodes_after <= rec.nodes_before
    assert _fresh_dims(g) == []
    _same_results(before, g, models.feeds(m, {"N": 2, "S": 6}, seed=3))


@pytest.mark.parametrize("light", ["squeezenet", "shufflenet"])
def test_light_models_keep_their_results(light):
    m = light_model(light)
    g, before = imported(m)
    g, rec = _run(g)
    if light == "squeezenet":
        assert rec.ops_removed == {"shape": 1}  # its Shape of a static tensor is a constant now
    assert _fresh_dims(g) == []
    feeds = light_feeds(m)
    _same_results(before, g, feeds)


def test_light_models_are_present():
    assert len(glob.glob(os.path.join(LIGHT_DIR, "light_*.onnx"))) >= 2
