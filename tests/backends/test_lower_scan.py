"""scan lowered natively (backends/lower_scan.py: the body inside a serial loop over the sequence)
against the numpy interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.backends.lower import lower_node
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)

F32 = dt.float32


def _body(parent: Graph, state_shape, x_shape, w=None) -> Graph:
    """(s, x) -> (s_new, s_old * 2, s_new + x): s_new = tanh(s @ w) + x when w is given
    (w a constant of the enclosing graph), else s + x; the second output reads the old state
    after the new one exists."""
    b = Graph("body", parent=parent)
    s = b.add_input("s", TensorType(state_shape, F32))
    x = b.add_input("x", TensorType(x_shape, F32))
    if w is None:
        new = b.op("add", [s, x])
    else:
        new = b.op("add", [b.op("tanh", [b.op("matmul", [s, w])]), x])
    old2 = b.op("mul", [s, b.add_const(np.array(2.0, np.float32), "two")])
    b.set_outputs([new, old2, b.op("add", [new, x])])
    return b


@pytest.mark.parametrize("length", [1, 5])
@pytest.mark.parametrize("in_axis,in_dir,out_axis,out_dir", [(0, 0, 0, 0), (1, 1, 0, 1), (-1, 0, 1, 1)])
def test_scan_matches_interpreter(length, in_axis, in_dir, out_axis, out_dir):
    rng = np.random.default_rng(length)
    width = 3
    xshape = [width, width]
    xshape.insert(in_axis % 3 if in_axis >= 0 else 2, length)
    g = Graph()
    s0 = g.add_input("s0", TensorType((width, width), F32))
    xs = g.add_input("xs", TensorType(tuple(xshape), F32))
    # one case with a matmul (a GEMM call inside the loop); the others elementwise (fast to compile)
    w = g.add_const(rng.standard_normal((width, width)).astype(np.float32) * 0.5, "w") \
        if (length, in_axis) == (5, 0) else None
    attrs = {"body": _body(g, (width, width), (width, width), w), "num_scan_inputs": 1,
             "scan_input_axes": [in_axis], "scan_input_directions": [in_dir],
             "scan_output_axes": [out_axis, -1], "scan_output_directions": [out_dir, 0]}
    g.set_outputs(list(g.op("scan", [s0, xs], attrs)))
    _compare(g, rng.standard_normal((width, width)).astype(np.float32),
             rng.standard_normal(tuple(xshape)).astype(np.float32), rtol=1e-5, atol=1e-5)


def test_scan_with_two_states_two_inputs_and_scalars():
    g = Graph()
    b = Graph("body", parent=g)
    s, t = b.add_input("s", TensorType((), F32)), b.add_input("t", TensorType((2,), F32))
    x, y = b.add_input("x", TensorType((), F32)), b.add_input("y", TensorType((2,), F32))
    s2 = b.op("add", [s, x])
    t2 = b.op("mul", [t, y])
    b.set_outputs([s2, t2, b.op("add", [t2, s2]), s])
    ins = [g.add_input("s0", TensorType((), F32)), g.add_input("t0", TensorType((2,), F32)),
           g.add_input("xs", TensorType((7,), F32)), g.add_input("ys", TensorType((7, 2), F32))]
    g.set_outputs(list(g.op("scan", ins, {"body": b, "num_scan_inputs": 2, "scan_input_directions": [0, 1]})))
    rng = np.random.default_rng(3)
    _compare(g, np.float32(0.5), rng.standard_normal(2).astype(np.float32),
             rng.standard_normal(7).astype(np.float32), rng.uniform(0.5, 1.5, (7, 2)).astype(np.float32),
             rtol=1e-6, atol=1e-6)


def test_scan_batched_opset8_form():
    g = Graph()
    s0 = g.add_input("s0", TensorType((3, 2, 2), F32))
    xs = g.add_input("xs", TensorType((3, 4, 2, 2), F32))
    attrs = {"body": _body(g, (2, 2), (2, 2)), "num_scan_inputs": 1, "batched": True}
    g.set_outputs(list(g.op("scan", [s0, xs], attrs)))
    rng = np.random.default_rng(4)
    _compare(g, rng.standard_normal((3, 2, 2)).astype(np.float32),
             rng.standard_normal((3, 4, 2, 2)).astype(np.float32), rtol=1e-6, atol=1e-6)


def test_scan_body_reading_a_run_time_value_of_the_enclosing_graph_is_refused():
    from irgraph.backends.kernel_ir import LoweringError
    g = Graph()
    s0 = g.add_input("s0", TensorType((2,), F32))
    xs = g.add_input("xs", TensorType((3, 2), F32))
    outer = g.op("neg", [s0])
    b = Graph("body", parent=g)
    s, x = b.add_input("s", TensorType((2,), F32)), b.add_input("x", TensorType((2,), F32))
    b.set_outputs([b.op("add", [b.op("add", [s, x]), outer])])
    g.set_outputs(list(g.op("scan", [s0, xs], {"body": b, "num_scan_inputs": 1})))
    with pytest.raises(LoweringError, match="run time"):
        lower_node(g.nodes[-1])
