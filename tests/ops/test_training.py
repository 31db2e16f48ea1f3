"""adagrad / adam / momentum: hand-computed updates, inference, errors, the ONNX split."""
from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper

import irgraph
from irgraph import ShapeError, TensorType, run_graph
from irgraph.frontends.onnx.importer import import_model

import oprun
from oprun import onnx_model, value_info

F32, F64, I64 = irgraph.dtype.float32, irgraph.dtype.float64, irgraph.dtype.int64


def _run(op, arrays, attrs):
    """The updated tensors and states: one output per input after (R, T) and the first tensor."""
    return oprun.run(op, arrays, attrs, num_outputs=len(arrays) - 3)


def _scalars(r=0.1, t=0):
    return np.array(r, np.float32), np.array(t, np.int64)


def test_adagrad_hand_computed():
    r, t = _scalars(0.5, 2)
    x = np.array([1.0, -2.0], np.float32)
    g = np.array([0.5, 1.0], np.float32)
    h = np.array([1.0, 0.0], np.float32)
    x_new, h_new = _run("adagrad", [r, t, x, g, h],
                        {"decay_factor": 0.5, "epsilon": 0.0, "norm_coefficient": 0.0})
    # rate = 0.5 / (1 + 2 * 0.5) = 0.25; H = [1.25, 1]; X -= 0.25 * G / sqrt(H)
    np.testing.assert_allclose(h_new, [1.25, 1.0], rtol=1e-6)
    np.testing.assert_allclose(x_new, [1.0 - 0.25 * 0.5 / math.sqrt(1.25), -2.0 - 0.25], rtol=1e-6)
    assert x_new.dtype == np.float32 and h_new.dtype == np.float32


def test_adagrad_norm_coefficient_regularizes():
    r, t = _scalars(1.0, 0)
    x, g, h = (np.array([2.0], np.float32), np.array([0.0], np.float32), np.array([0.0], np.float32))
    x_new, h_new = _run("adagrad", [r, t, x, g, h], {"norm_coefficient": 0.5, "epsilon": 0.0})
    # G_reg = 0.5 * 2 = 1; H = 1; X = 2 - 1 * 1 / 1
    np.testing.assert_allclose(h_new, [1.0])
    np.testing.assert_allclose(x_new, [1.0])


@pytest.mark.parametrize("t", [0, 3])
def test_adam_hand_computed(t):
    r, tt = _scalars(0.1, t)
    x = np.array([1.0], np.float64)
    g = np.array([2.0], np.float64)
    v = np.array([0.5], np.float64)
    h = np.array([0.25], np.float64)
    a = {"alpha": 0.9, "beta": 0.99, "epsilon": 0.0, "norm_coefficient": 0.0, "norm_coefficient_post": 0.1}
    x_new, v_new, h_new = _run("adam", [r, tt, x, g, v, h], a)
    v_want = 0.9 * 0.5 + 0.1 * 2.0
    h_want = 0.99 * 0.25 + 0.01 * 4.0
    lr = float(np.float32(0.1))  # R arrives as float32
    rate = lr * math.sqrt(1 - 0.99 ** t) / (1 - 0.9 ** t) if t else lr
    x_want = (1 - 0.1) * (1.0 - rate * v_want / math.sqrt(h_want))
    np.testing.assert_allclose(v_new, [v_want], rtol=1e-12)
    np.testing.assert_allclose(h_new, [h_want], rtol=1e-12)
    np.testing.assert_allclose(x_new, [x_want], rtol=1e-7)
    assert x_new.dtype == np.float64


@pytest.mark.parametrize("mode", ["standard", "nesterov"])
@pytest.mark.parametrize("t", [0, 1])
def test_momentum_hand_computed(mode, t):
    r, tt = _scalars(0.5, t)
    x, g, v = (np.array([1.0, 2.0], np.float32), np.array([1.0, -1.0], np.float32),
               np.array([0.5, 0.5], np.float32))
    x_new, v_new = _run("momentum", [r, tt, x, g, v],
                        {"alpha": 0.9, "beta": 0.5, "norm_coefficient": 0.0, "mode": mode})
    beta = 0.5 if t else 1.0  # the first update takes the gradient unscaled
    v_want = 0.9 * np.array([0.5, 0.5]) + beta * np.array([1.0, -1.0])
    step = v_want if mode == "standard" else np.array([1.0, -1.0]) + 0.9 * v_want
    np.testing.assert_allclose(v_new, v_want, rtol=1e-6)
    np.testing.assert_allclose(x_new, np.array([1.0, 2.0]) - 0.5 * step, rtol=1e-6)


# ---- inference and errors ------------------------------------------------------------------
def _infer(op, types, attrs):
    return oprun.types(op, types, attrs, num_outputs=len(types) - 3)


def test_infer_keeps_symbolic_shape():
    x = TensorType(("N", 4), F32)
    outs = _infer("adam", [TensorType((), F32), TensorType((), I64), x, x, x, x], {})
    assert [o.shape for o in outs] == [("N", 4)] * 3 and all(o.dtype is F32 for o in outs)


@pytest.mark.parametrize("types,match", [
    ([TensorType((), F32), TensorType((), F32)] + [TensorType((3,), F32)] * 3, "T must be int64"),
    ([TensorType((2,), F32), TensorType((), I64)] + [TensorType((3,), F32)] * 3, "R must be a scalar"),
    ([TensorType((), F32), TensorType((), I64), TensorType((3,), F32), TensorType((4,), F32),
      TensorType((3,), F32)], "X's shape"),
    ([TensorType((), F32), TensorType((), I64), TensorType((3,), F32), TensorType((3,), F64),
      TensorType((3,), F32)], "X's dtype"),
])
def test_infer_errors_name_the_op(types, match):
    with pytest.raises(ShapeError, match=match) as e:
        _infer("adagrad", types, {})
    assert "adagrad" in str(e.value)


def test_momentum_requires_known_mode():
    t = [TensorType((), F32), TensorType((), I64)] + [TensorType((3,), F32)] * 3
    with pytest.raises(ShapeError, match="mode"):
        _infer("momentum", t, {"alpha": 0.9, "beta": 1.0, "norm_coefficient": 0.0, "mode": "heavy"})


# ---- the ONNX frontend: one multi-tensor node becomes one core node per tensor -----------------
def test_onnx_multi_tensor_node_is_split():
    dom = "ai.onnx.preview.training"
    names = ["R", "T", "X1", "X2", "G1", "G2", "H1", "H2"]
    node = helper.make_node("Adagrad", names, ["X1n", "X2n", "H1n", "H2n"], domain=dom,
                            epsilon=0.0, decay_factor=0.0)
    shapes = {"R": [], "T": [], "X1": [2], "G1": [2], "H1": [2], "X2": [3], "G2": [3], "H2": [3]}
    ins = [value_info(n, TensorProto.INT64 if n == "T" else TensorProto.FLOAT, shapes[n]) for n in names]
    outs = [value_info(n, TensorProto.FLOAT) for n in ("X1n", "X2n", "H1n", "H2n")]
    model = onnx_model(node, ins, outs, 17, domains={dom: 1})
    g = import_model(model)
    assert [n.op for n in g.nodes] == ["adagrad", "adagrad"]
    feeds = {"R": np.array(1.0, np.float32), "T": np.array(0, np.int64),
             "X1": np.ones(2, np.float32), "G1": np.full(2, 2.0, np.float32), "H1": np.zeros(2, np.float32),
             "X2": np.ones(3, np.float32), "G2": np.full(3, -1.0, np.float32), "H2": np.full(3, 3.0, np.float32)}
    x1, x2, h1, h2 = run_graph(g, feeds)
    np.testing.assert_allclose(h1, [4.0, 4.0])
    np.testing.assert_allclose(h2, [4.0, 4.0, 4.0])
    np.testing.assert_allclose(x1, [0.0, 0.0])       # 1 - 2 / sqrt(4)
    np.testing.assert_allclose(x2, [1.5, 1.5, 1.5])  # 1 + 1 / sqrt(4)
