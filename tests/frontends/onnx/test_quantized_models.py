"""Quantized ONNX models made by onnxruntime's own quantization tool import, run on the cpu target's
int8 kernels (no float conv/matmul left, no numpy fallback), and match onnxruntime's outputs
within one quantization step of the output (dynamic models, computed in float: to float32
rounding)."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import irgraph

ort = pytest.importorskip("onnxruntime")
oq = pytest.importorskip("onnxruntime.quantization")
logging.getLogger().setLevel(logging.ERROR)   # the tool's "consider pre-processing" warnings

OPSET = 17


def _model(nodes, inits, x_shape, y_shape, name):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          [numpy_helper.from_array(a, k) for k, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    return m


def _w(rng, *shape, scale=None):
    fan = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return (rng.standard_normal(shape) * (scale or 1 / np.sqrt(fan))).astype(np.float32)


def conv_net(seed=0):
    """Conv + Relu, MaxPool, strided Conv + Relu, Flatten, MatMul + bias."""
    r = np.random.default_rng(seed)
    inits = {"w1": _w(r, 8, 3, 3, 3), "b1": _w(r, 8, scale=0.1), "w2": _w(r, 16, 8, 3, 3),
             "b2": _w(r, 16, scale=0.1), "w3": _w(r, 144, 10), "b3": _w(r, 10, scale=0.1),
             "shape": np.array([1, 144], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Reshape", ["r2", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w3"], ["m"]),
             helper.make_node("Add", ["m", "b3"], ["y"])]
    return _model(nodes, inits, [1, 3, 10, 10], [1, 10], "conv_net")


def residual_net(seed=1):
    """A ResNet basic block (two convs, residual Add, Relu), global pooling and a MatMul head."""
    r = np.random.default_rng(seed)
    inits = {"w1": _w(r, 8, 8, 3, 3), "b1": _w(r, 8, scale=0.1), "w2": _w(r, 8, 8, 3, 3),
             "b2": _w(r, 8, scale=0.1), "w3": _w(r, 8, 5), "shape": np.array([1, 8], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["gp"]),
             helper.make_node("Reshape", ["gp", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w3"], ["y"])]
    return _model(nodes, inits, [1, 8, 6, 6], [1, 5], "residual_net")


def mlp(seed=2):
    r = np.random.default_rng(seed)
    inits = {"w1": _w(r, 32, 24), "b1": _w(r, 24, scale=0.1), "w2": _w(r, 24, 8)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("MatMul", ["r1", "w2"], ["y"])]
    return _model(nodes, inits, [3, 32], [3, 8], "mlp")


def _inputs(model, n, seed):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


class _Reader(oq.CalibrationDataReader):
    def __init__(self, xs):
        self.it = iter([{"x": x} for x in xs])

    def get_next(self):
        return next(self.it, None)


def quantized(tmp_path, model, kind, **kw):
    src, dst = tmp_path / "float.onnx", tmp_path / f"{kind}.onnx"
    onnx.save(model, src)
    if kind == "dynamic":
        oq.quantize_dynamic(str(src), str(dst), **kw)
    else:
        fmt = oq.QuantFormat.QDQ if kind == "qdq" else oq.QuantFormat.QOperator
        oq.quantize_static(str(src), str(dst), _Reader(_inputs(model, 4, 1)), quant_format=fmt, **kw)
    return onnx.load(str(dst))


def output_step(q: onnx.ModelProto) -> float | None:
    """The scale of the DequantizeLinear that produces the graph output (directly or through
    one float op such as a bias Add): one quantization step of the output."""
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    by_out = {o: n for n in q.graph.node for o in n.output}
    frontier = [q.graph.output[0].name]
    for _ in range(3):
        nxt = []
        for v in frontier:
            n = by_out.get(v)
            if n is None:
                continue
            if n.op_type == "DequantizeLinear":
                return float(np.max(inits[n.input[1]]))
            nxt.extend(n.input)
        frontier = nxt
    return None


def check_int8(q: onnx.ModelProto, tol=None):
    m = irgraph.compile(q, target="cpu")
    hist = m.graph.op_histogram()
    assert not {"conv", "matmul", "conv_integer", "matmul_integer", "requantize"} & set(hist), hist
    assert hist["quant_conv"] + hist["quant_matmul"] >= 2
    sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    step = output_step(q) if tol is None else tol
    assert step is not None
    for x in _inputs(q, 3, 7):
        want = sess.run(None, {"x": x})[0]
        got = m(x)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.max(np.abs(got - want)) <= step * 1.0001 + 1e-6, (np.max(np.abs(got - want)), step)
    run = m._run
    assert not run.report.fallback
    assert "call qgemm" in run.kernels_ir()
    return m


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_qdq_conv_net(tmp_path, per_channel):
    # onnxruntime's defaults: int8 activations and weights
    check_int8(quantized(tmp_path, conv_net(), "qdq", per_channel=per_channel))


def test_qdq_residual_uint8(tmp_path):
    q = quantized(tmp_path, residual_net(), "qdq", activation_type=oq.QuantType.QUInt8,
                  weight_type=oq.QuantType.QInt8)
    m = check_int8(q)
    # the residual Add (DQ, DQ, Add, Relu, Q) runs as one integer kernel between the int8 kernels
    assert m.graph.op_histogram()["quant_add"] == 1


def test_qoperator_qlinearconv_qlinearmatmul(tmp_path):
    q = quantized(tmp_path, conv_net(), "qoperator", per_channel=True, op_types_to_quantize=["Conv", "MatMul"],
                  activation_type=oq.QuantType.QUInt8, weight_type=oq.QuantType.QInt8)
    ops = {n.op_type for n in q.graph.node}
    assert {"QLinearConv", "QLinearMatMul"} <= ops
    check_int8(q)


def _float_tol(q):
    sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": _inputs(q, 1, 7)[0]})[0]
    return 1e-5 * float(np.max(np.abs(y)))


def test_dynamic_matmulinteger(tmp_path):
    q = quantized(tmp_path, mlp(), "dynamic")
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type for n in q.graph.node}
    check_int8(q, tol=_float_tol(q))


def test_dynamic_convinteger(tmp_path):
    q = quantized(tmp_path, conv_net(), "dynamic", op_types_to_quantize=["Conv", "MatMul"])
    assert {"ConvInteger", "MatMulInteger"} <= {n.op_type for n in q.graph.node}
    check_int8(q, tol=_float_tol(q))
