"""The reference interpreter runs graphs and checks every output against inference."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import Graph, TensorType, run_graph
from irgraph.dtype import float32
from irgraph.errors import ExecutionError


def test_runs_by_position_and_by_name():
    g = Graph()
    x = g.add_input("x", TensorType((2, 2), float32))
    y = g.op("add", [x, g.add_const(np.float32(1.0), "one")])
    g.set_outputs([g.op("mul", [y, y])])
    a = np.array([[0, 1], [2, 3]], np.float32)
    (out,) = run_graph(g, [a])
    np.testing.assert_array_equal(out, (a + 1) ** 2)
    (out2,) = run_graph(g, {"x": a})
    np.testing.assert_array_equal(out2, out)


def test_wrong_inference_is_caught():
    g = Graph()
    x = g.add_input("x", TensorType((2,), float32))
    y = g.op("relu", [x])
    y.type = TensorType((3,), float32)  # simulate a wrong inference
    g.set_outputs([y])
    with pytest.raises(ExecutionError, match="inference said"):
        run_graph(g, [np.zeros(2, np.float32)])


def test_missing_inputs_are_named():
    g = Graph()
    g.add_input("x", TensorType((2,), float32))
    g.set_outputs([g.inputs[0]])
    with pytest.raises(ExecutionError, match="missing inputs"):
        run_graph(g, {})
