"""quantize_static: which values get quantized, the observers, keep_float (names and "auto"), the
accuracy report, and end to end: the small ResNet and MLP of tests/models compiled int8 on cpu
stay close to float, run on int8 kernels, and the compiled model equals its QDQ simulation."""
from __future__ import annotations

import math

import models
import numpy as np
import pytest

import irgraph
from irgraph import Graph, TensorType
from irgraph import dtype as dt
from irgraph.errors import CompileError
from irgraph.passes import PassContext, run_passes
from irgraph.passes.quant_observers import (Entropy, MinMax, Percentile, int8_weights, kl_threshold,
                                            make_observer, uint8_params)
from irgraph.passes.quant_report import QuantReport, sqnr_db
from irgraph.passes.quantize_static import activation_values, is_layer

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def resnet():
    m = models.resnet(widths=(8, 16), blocks=1, image=12, batch="N")
    calib = {"x": RNG.standard_normal((6, 3, 12, 12)).astype(np.float32)}
    return m, calib


@pytest.fixture(scope="module")
def resnet_int8(resnet):
    m, calib = resnet
    return irgraph.compile(m, target="cpu", quantize="int8", calibrate=calib)


def test_resnet_runs_int8_and_stays_close(resnet, resnet_int8):
    m, _ = resnet
    q = resnet_int8
    hist = q.graph.op_histogram()
    assert hist["quant_conv"] == 6 and hist["quant_matmul"] == 1 and "conv" not in hist and "matmul" not in hist
    # the first residual add (identity shortcut, both inputs int8) is one integer kernel
    assert hist["quant_add"] == 1
    x = RNG.standard_normal((3, 3, 12, 12)).astype(np.float32)
    f = irgraph.compile(m, target="cpu")
    assert sqnr_db(f(x), q(x)) > 25
    assert "call qgemm" in q._run.kernels_ir() and not q._run.report.fallback
    names = [r.name for r in q.pass_report.records]
    assert names.index("fold_batch_norm") < names.index("quantize_static") < names.index("fold_qdq") \
        < names.index("fuse_epilogues")


def test_report(resnet_int8):
    r = resnet_int8.quant_report
    assert isinstance(r, QuantReport) and r.observer == "minmax" and r.samples == 6
    assert len(r.layers) == 7 and all(row.quantized for row in r.layers)
    for row in r.layers:
        assert row.isolated["sqnr_db"] > 25 and 0 <= row.isolated["max_rel_err"] < 0.1
        assert row.cumulative["sqnr_db"] > 20
    (name, sim), = r.outputs.items()
    comp = r.compiled_outputs[name]
    # the compiled int8 kernels reproduce the quantize/dequantize simulation closely
    assert abs(comp["sqnr_db"] - sim["sqnr_db"]) < 1.0
    text = r.format()
    assert "7 of 7 layers quantized" in text and "compiled int8 model" in text
    assert QuantReport.from_dict(r.to_dict()).format() == text


def test_keep_float_by_name_and_auto(resnet):
    m, calib = resnet
    q = irgraph.compile(m, target="interp", quantize="int8", calibrate=calib, keep_float=["Gemm_76"])
    assert "matmul" in q.graph.op_histogram() and q.quant_report.kept_float == ["Gemm_76_0"]
    # a threshold no layer reaches: everything stays float, the report says why
    g = irgraph.to_graph(m)
    g2, _ = run_passes(g.copy(), ["infer_shapes", "fold_batch_norm", "quantize_static"],
                       PassContext(options={"quantize.calibration": [calib], "quantize.keep_float": "auto",
                                            "quantize.min_sqnr_db": 1000.0}))
    rep = QuantReport.from_dict(g2.meta["quant_report"])
    assert len(rep.kept_float) == 7 and "below 1000 dB" in rep.layers[0].reason
    assert "quantize_linear" not in g2.op_histogram()
    with pytest.raises(CompileError, match="no quantizable layer: nope"):
        irgraph.compile(m, target="interp", quantize="int8", calibrate=calib, keep_float="nope")


def test_activation_values_follow_commuting_ops_and_residual_adds():
    g = Graph("acts")
    x = g.add_input("x", TensorType((1, 4, 6, 6), dt.float32))
    w = g.add_const(RNG.standard_normal((4, 4, 3, 3)).astype(np.float32))
    h = g.op("relu", [g.op("conv", [x, w], {"pads": (1, 1, 1, 1)})])
    p = g.op("max_pool", [h], {"kernel_shape": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0)})
    y = g.op("conv", [p, g.add_const(RNG.standard_normal((4, 4, 1, 1)).astype(np.float32))])
    s = g.op("relu", [g.op("add", [y, p])])
    z = g.op("conv", [s, g.add_const(RNG.standard_normal((2, 4, 1, 1)).astype(np.float32))])
    g.set_outputs([z])
    layers = [n for n in g.nodes if is_layer(n)]
    vals = activation_values(g, layers)
    # x; the relu before the pool (the pool's output p, read by a conv and the add, is then an
    # integer max_pool of it); the add's other input y; the relu after the add (the last input)
    assert [v.name for v in vals] == [x.name, h.name, y.name, s.name]
    # an input read by something else is quantized after the commuting op instead
    g2 = Graph("pool")
    x2 = g2.add_input("x", TensorType((1, 4, 6, 6), dt.float32))
    h2 = g2.op("relu", [x2])
    p2 = g2.op("max_pool", [h2], {"kernel_shape": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0)})
    g2.set_outputs([g2.op("conv", [p2, w]), h2])
    assert [v.name for v in activation_values(g2, [n for n in g2.nodes if is_layer(n)])] == [p2.name]


def test_float_readers_keep_the_float_activation():
    """A transformer layer's input feeds an int8 matmul and the float residual add + layer norm:
    only the matmul reads the quantized copy; the add reads x itself (no dequantize kernel, no
    8-bit round trip on the residual stream), in the simulation and in the compiled model."""
    g = Graph("residual")
    x = g.add_input("x", TensorType((2, 8, 32), dt.float32))
    w = g.add_const((RNG.standard_normal((32, 32)) * 0.2).astype(np.float32))
    y = g.op("add", [g.op("matmul", [x, w]), x])
    g.set_outputs([g.op("layer_norm", [y, g.add_const(np.ones(32, np.float32)),
                                       g.add_const(np.zeros(32, np.float32))], {"axis": -1})])
    calib = [{"x": RNG.standard_normal((2, 8, 32)).astype(np.float32)} for _ in range(4)]
    q = irgraph.compile(g, target="cpu", quantize="int8", calibrate=calib)
    hist = q.graph.op_histogram()
    assert hist["quant_matmul"] == 1 and "dequantize_linear" not in hist and "matmul" not in hist, hist
    add = next(n for n in q.graph.nodes for b in ([n] + (n.attrs["body"].nodes if n.op == "fused" else []))
               if b.op == "add")
    assert q.graph.inputs[0] in add.inputs          # the residual reads the float input
    xv = RNG.standard_normal((2, 8, 32)).astype(np.float32)
    want = irgraph.run_graph(g, [xv])[0]
    assert sqnr_db(want, q(xv)) > 35
    r = q.quant_report
    assert r.compiled_outputs[q.output_names[0]]["sqnr_db"] == pytest.approx(
        r.outputs[q.output_names[0]]["sqnr_db"], abs=0.5)


def test_observers():
    a = np.concatenate([np.maximum(RNG.standard_normal(100000), 0), [60.0]]).astype(np.float32)
    ranges = {}
    for kind in ("minmax", "percentile", "entropy"):
        o = make_observer(kind)
        o.update(a[:50000])
        o.update(a[50000:])
        ranges[kind] = o.range()
    assert ranges["minmax"] == (0.0, 60.0)
    # the single outlier does not stretch the clipped ranges
    assert 3.0 < ranges["percentile"][1] < 5.0 and 2.5 < ranges["entropy"][1] < 8.0
    assert all(lo <= 0.0 <= hi for lo, hi in ranges.values())
    mm = MinMax()
    mm.update(np.array([2.0, 3.0], np.float32))
    assert mm.range() == (0.0, 3.0)               # 0 is always representable
    assert MinMax().range() == (0.0, 0.0)
    with pytest.raises(CompileError):
        make_observer("mse")
    with pytest.raises(CompileError):
        Percentile(percentile=30)
    e = Entropy()
    e.update(RNG.standard_normal(50000).astype(np.float32))
    lo, hi = e.range()
    assert -4.5 < lo < -1.5 and 1.5 < hi < 4.5


def test_kl_threshold_keeps_a_uniform_histogram_whole():
    hist = np.full(2048, 10.0)
    edges = np.linspace(0, 1, 2049)
    assert kl_threshold(hist, edges) == pytest.approx(1.0)


def test_quantization_parameters():
    s, z = uint8_params(-1.0, 3.0)
    assert s == np.float32(4.0 / 255) and z == 64
    assert uint8_params(0.0, 0.0) == (np.float32(1.0), np.uint8(0))
    w = RNG.standard_normal((5, 7)).astype(np.float32)
    w[2] = 0
    q, scale = int8_weights(w, axis=0)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and scale[2] == 1.0
    np.testing.assert_allclose(q * scale[:, None], w, atol=float(scale.max()) / 2 + 1e-7)


def test_mlp_static_with_percentile_observer():
    m = models.mlp(sizes=(20, 16, 8), batch="N")
    calib = {"x": RNG.standard_normal((16, 20)).astype(np.float32)}
    q = irgraph.compile(m, target="cpu", quantize="int8", calibrate=calib, observer="percentile")
    assert q.graph.op_histogram()["quant_matmul"] == 2 and q.quant_report.observer == "percentile"
    f = irgraph.compile(m, target="interp")
    x = RNG.standard_normal((4, 20)).astype(np.float32)
    assert sqnr_db(f(x), q(x)) > 25
    assert math.isfinite(q.quant_report.compiled_outputs["logits"]["sqnr_db"])


def test_missing_calibration_input_is_named():
    m = models.mlp(sizes=(20, 8), batch="N")
    with pytest.raises(irgraph.IrgraphError, match="missing"):
        irgraph.compile(m, target="interp", quantize="int8", calibrate={"y": np.zeros((2, 20), np.float32)})
    g = irgraph.to_graph(m)
    with pytest.raises(CompileError, match="calibration"):
        run_passes(g, ["quantize_static"], PassContext())
