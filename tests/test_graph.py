"""The IR: building graphs, SSA/type/acyclicity verification, the printer and networkx view."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import Graph, Node, TensorType, Value
from irgraph.dtype import DType, float32, int64
from irgraph.errors import ShapeError, VerifyError


def _mlp_graph():
    g = Graph("tiny")
    x = g.add_input("x", TensorType(("batch", 4), float32))
    w = g.add_const(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    h = g.op("matmul", [x, w], name="fc")
    y = g.op("relu", [h], name="act")
    g.set_outputs([y])
    return g, x, w, h, y


def test_build_infers_symbolic_shapes():
    g, x, w, h, y = _mlp_graph()
    assert h.type == TensorType(("batch", 3), float32)
    assert y.producer.op == "relu"
    g.verify()


def test_verify_rejects_use_before_definition():
    g, x, w, h, y = _mlp_graph()
    g.nodes.reverse()  # relu now reads matmul's output before it exists
    with pytest.raises(VerifyError, match="before it is defined"):
        g.verify()


def test_verify_rejects_double_definition():
    g, x, w, h, y = _mlp_graph()
    g.nodes.append(Node("relu", [x], [h], name="dup"))
    with pytest.raises(VerifyError, match="defined twice|two producers|producer"):
        g.verify()


def test_verify_rejects_cycle():
    g = Graph()
    x = g.add_input("x", TensorType((2,), float32))
    a = Value("a", TensorType((2,), float32), graph=g)
    b = Value("b", TensorType((2,), float32), graph=g)
    g.nodes += [Node("add", [x, b], [a], name="n1"), Node("relu", [a], [b], name="n2")]
    g.set_outputs([b])
    with pytest.raises(VerifyError, match="cycle"):
        g.verify()


def test_verify_rejects_wrong_output_type():
    g, x, w, h, y = _mlp_graph()
    y.type = TensorType(("batch", 3), int64)
    with pytest.raises(VerifyError, match="inference gives"):
        g.verify()


def test_shape_errors_name_node_and_op():
    g = Graph()
    a = g.add_input("a", TensorType((2, 3), float32))
    b = g.add_input("b", TensorType((4, 5), float32))
    with pytest.raises(ShapeError) as e:
        g.op("matmul", [a, b], name="mm")
    msg = str(e.value)
    assert "'mm'" in msg and "matmul" in msg and "K=3" in msg and "K=4" in msg


def test_unknown_attribute_is_refused():
    g = Graph()
    a = g.add_input("a", TensorType((2,), float32))
    with pytest.raises(ShapeError, match="unknown attribute 'alpha'"):
        g.op("relu", [a], {"alpha": 1.0})


def test_printer_shows_types_ops_and_attrs():
    g, *_ = _mlp_graph()
    text = str(g)
    assert "graph tiny(%x: float32[batch,4])" in text
    assert "= matmul(%x, %w)" in text
    assert "float32[batch,3] = relu(" in text
    assert text.strip().endswith("}")


def test_networkx_view_has_edges_per_use():
    g, *_ = _mlp_graph()
    G = g.to_networkx()
    assert G.has_edge(("input", "x"), ("node", "fc"))
    assert G.has_edge(("node", "fc"), ("node", "act"))
    assert G.number_of_nodes() == 5  # input, const, 2 nodes, output


def test_names_are_unique():
    g = Graph()
    names = {g.unique_name("v") for _ in range(50)}
    assert len(names) == 50


def test_dtype_round_trips():
    for d in DType.all():
        assert DType.from_name(d.name) is d
        assert DType.from_onnx(d.onnx) is d
    assert DType.from_numpy(np.float32) is float32
    assert irgraph.dtype.bfloat16.itemsize == 2


def test_tensor_type_matches_arrays_and_binds_symbols():
    t = TensorType(("n", 3), float32)
    bind = {}
    assert t.matches(np.zeros((2, 3), np.float32), bind) and bind == {"n": 2}
    assert not t.matches(np.zeros((5, 3), np.float32), bind)
    assert not t.matches(np.zeros((2, 3), np.float64))
    assert TensorType((2, 3), float32).nbytes == 24


def test_negative_dimension_refused():
    with pytest.raises(ShapeError):
        TensorType((-1, 3), float32)
