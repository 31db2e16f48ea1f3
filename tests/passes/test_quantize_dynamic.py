"""quantize_dynamic: matmuls with constant weights become run-time-quantized int8 matmuls (one
dynamic_quantize_linear per activation, shared by q/k/v), bias and GELU fold into the kernel,
attention's activation x activation matmuls stay float; the compiled model equals the
interpreter's reference of the quantized graph and stays close to float."""
from __future__ import annotations

import models
import numpy as np
import pytest
from passcheck import run_pass

import irgraph
from irgraph import run_graph
from irgraph.errors import CompileError
from irgraph.passes.quant_report import sqnr_db

RNG = np.random.default_rng(0)


def test_mlp_structure_and_numerics():
    m = models.mlp(sizes=(40, 32, 8), batch="N")
    g = irgraph.to_graph(m)
    before = g.copy()
    g, rec = run_pass(g, "quantize_dynamic")
    assert rec.ops_added == {"dynamic_quantize_linear": 2, "mul": 2, "quant_matmul": 2}
    assert rec.ops_removed == {"matmul": 2}
    x = RNG.standard_normal((5, 40)).astype(np.float32)
    assert sqnr_db(run_graph(before, [x])[0], run_graph(g, [x])[0]) > 30
    q = irgraph.compile(m, target="cpu", quantize="dynamic")
    hist = q.graph.op_histogram()
    # bias adds (and the ReLU) folded into the kernels' epilogues
    assert hist["quant_matmul"] == 2 and "add" not in hist and "relu" not in hist
    np.testing.assert_array_equal(q(x), run_graph(q.graph, [x])[0])
    assert "call qgemm" in q._run.kernels_ir() and q.quant_report is None


def test_bert_layer_shares_quantization_and_keeps_attention_float():
    m = models.bert_layer(batch=1, seq=8)
    q = irgraph.compile(m, target="cpu", quantize="dynamic")
    hist = q.graph.op_histogram()
    # q, k, v read one input: one run-time quantization for the three
    assert hist["quant_matmul"] == 6 and hist["dynamic_quantize_linear"] == 4
    assert "gelu" not in hist      # folded into the first FFN matmul
    f = irgraph.compile(m, target="cpu")
    feeds = models.feeds(m, {"N": 1, "S": 8})
    x = [feeds["x"], feeds["mask"]]
    assert sqnr_db(f(*x), q(*x)) > 25
    np.testing.assert_allclose(q(*x), run_graph(q.graph, x)[0], rtol=1e-4, atol=1e-4)


def test_keep_float_names_and_errors():
    m = models.mlp(sizes=(12, 10, 4), batch="N")
    q = irgraph.compile(m, target="interp", quantize="dynamic", keep_float=["Gemm_4"])
    assert q.graph.op_histogram()["quant_matmul"] == 1
    with pytest.raises(CompileError, match="no quantizable matmul: nope"):
        irgraph.compile(m, target="interp", quantize="dynamic", keep_float="nope")
    with pytest.raises(CompileError, match="auto"):
        irgraph.compile(m, target="interp", quantize="dynamic", keep_float="auto")
    with pytest.raises(CompileError, match="calibration"):
        irgraph.compile(m, target="interp", quantize="dynamic", calibrate={"x": np.zeros((1, 12), np.float32)})
