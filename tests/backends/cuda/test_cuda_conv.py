"""Convolution as an implicit GEMM (backends/cuda/conv.py): every stride, padding, dilation,
group count and rank, odd sizes that fill no tile, the depthwise direct kernel, weights that
are graph inputs, and the fused epilogue (bias, BatchNorm folded in, ReLU, residual add), each
against the interpreter under forward, reverse and shuffled schedules. The im2col matrix and
the padded input are never stored: one launch per conv group."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from cudacheck import assert_schedules_agree, program_for, run_schedules, shared_module  # noqa: E402

import irgraph  # noqa: E402
from irgraph.interpreter import run_graph  # noqa: E402

rng = np.random.default_rng(3)


def conv_model(xs, ws, *, bias=True, relu=False, residual=None, weight_input=False, **attrs):
    """Conv (+ bias) (+ residual add of an input of shape ``residual``) (+ relu) on ``x``."""
    w = rng.standard_normal(ws).astype(np.float32)
    inits, inputs = [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)]
    if weight_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, ws))
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(ws[0]).astype(np.float32), "b"))
        ins.append("b")
    nodes = [helper.make_node("Conv", ins, ["c"], **attrs)]
    last = "c"
    if residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, residual))
        nodes.append(helper.make_node("Add", [last, "r"], ["s"]))
        last = "s"
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["y"]))
        last = "y"
    g = helper.make_graph(nodes, "conv", inputs, [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


CASES = {
    "pad_bias": (conv_model([2, 3, 9, 11], [20, 3, 3, 3], pads=[1, 1, 1, 1]), "small"),
    "stride_asym_pad_relu": (conv_model([1, 5, 13, 10], [40, 5, 3, 3], strides=[2, 2], pads=[1, 0, 2, 1],
                                        relu=True), "small"),
    "dilation_rect_kernel": (conv_model([2, 4, 12, 12], [33, 4, 3, 2], dilations=[2, 3], relu=True), "small"),
    "groups": (conv_model([2, 8, 7, 9], [24, 4, 3, 3], group=2, pads=[1, 1, 1, 1]), "small"),
    "depthwise": (conv_model([2, 6, 8, 8], [6, 1, 3, 3], group=6, pads=[1, 1, 1, 1], relu=True), "direct"),
    "depthwise_mult_stride": (conv_model([1, 4, 9, 9], [8, 1, 3, 3], group=4, strides=[2, 2]), "direct"),
    "pointwise_no_bias": (conv_model([2, 16, 5, 7], [70, 16, 1, 1], bias=False), "small"),
    "conv1d": (conv_model([2, 3, 17], [10, 3, 4], pads=[2, 1], strides=[3]), "small"),
    "conv3d": (conv_model([1, 2, 5, 6, 7], [9, 2, 2, 3, 2], pads=[1, 0, 1, 1, 0, 1]), "small"),
    "auto_pad_same": (conv_model([1, 3, 10, 7], [36, 3, 4, 3], auto_pad="SAME_UPPER", strides=[2, 1]), "small"),
    "residual_relu_mid_tile": (conv_model([1, 64, 14, 14], [130, 64, 3, 3], pads=[1, 1, 1, 1], relu=True,
                                          residual=[1, 130, 14, 14]), None),
    "weights_as_input": (conv_model([2, 5, 8, 6], [12, 5, 3, 3], weight_input=True, pads=[0, 1, 0, 1]), "small"),
}


def _feeds(model) -> dict:
    out = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _reduction(model) -> int:
    """The length of each output's sum (C/groups * kernel size): its atol scale."""
    (w,) = [vi for vi in model.graph.input if vi.name == "w"] or [None]
    dims = [d.dim_value for d in w.type.tensor_type.shape.dim] if w is not None else \
        list(next(i for i in model.graph.initializer if i.name == "w").dims)
    return int(np.prod(dims[1:]))


@pytest.fixture(scope="module")
def built():
    progs = {k: program_for(m, prefix=f"cv_{k}_") for k, (m, _) in CASES.items()}
    return progs, shared_module(progs.values())


@pytest.mark.parametrize("name", list(CASES))
def test_conv_matches_interpreter_under_every_schedule(name, built):
    progs, mod = built
    model, config = CASES[name]
    prog = progs[name]
    g = irgraph.compile(model).graph
    feeds = _feeds(model)
    want = run_graph(g, [feeds[v.name] for v in g.inputs])[0]
    outs = assert_schedules_agree(run_schedules(prog, mod, [feeds[v.name] for v in prog.graph.inputs]))
    np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-5 * math.sqrt(_reduction(model)))
    kinds = [(la.launch.kind, la.launch.config) for la in prog.launches()]
    assert len(kinds) == 1 and kinds[0][0].startswith("conv"), kinds    # no pad/im2col/bias passes
    if config is not None:
        assert kinds[0][1] == config
    fused = "b" in {i.name for i in model.graph.initializer} or len(model.graph.node) > 1
    assert kinds[0][0] == ("conv+epilogue" if fused else "conv")
