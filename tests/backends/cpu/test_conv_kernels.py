"""Convolution on ``target="cpu"`` against the numpy interpreter, through each GEMM formulation of
backends/lower_contract.py: weights as GEMM A (W @ im2col), weights as a compile-time packed GEMM B
(im2col^T @ W^T, then a transpose), im2col in L2-sized blocks of output rows, the copy-free 1x1
path, and the loop-nest fallback (groups), with bias / relu / residual epilogues."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph.backends import lower_contract as lc
from irgraph.graph import Graph
from irgraph.types import TensorType

from lowercheck import private_object_cache  # noqa: F401  (autouse fixture: a temporary object cache)


@pytest.fixture
def paths(monkeypatch):
    """Counts how often each GEMM formulation was chosen while lowering (the direct conv kernels,
    tested in test_conv_direct.py, are switched off so every conv here goes through a GEMM)."""
    from irgraph.backends.cpu import conv_template
    monkeypatch.setattr(conv_template, "choose", lambda *a, **k: None)
    seen = {"as_b": 0, "rows": 0}
    as_b, rows = lc._conv_weights_as_b, lc._conv_rows_chunked

    def count_as_b(*a, **k):
        seen["as_b"] += 1
        return as_b(*a, **k)

    def count_rows(*a, **k):
        r = rows(*a, **k)
        seen["rows"] += int(r)
        return r
    monkeypatch.setattr(lc, "_conv_weights_as_b", count_as_b)
    monkeypatch.setattr(lc, "_conv_rows_chunked", count_rows)
    return seen


def _check(xshape, wshape, attrs, bias=True, relu=False, residual=False, opt_level=2, seed=0):
    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.add_input("x", TensorType(xshape, "float32"))
    w = g.add_const((rng.standard_normal(wshape) / np.sqrt(np.prod(wshape[1:]))).astype(np.float32))
    ins = [x, w]
    if bias:
        ins.append(g.add_const(rng.standard_normal(wshape[0]).astype(np.float32)))
    y = g.op("conv", ins, attrs)
    if residual:
        r = g.add_input("r", TensorType(_out_shape(xshape, wshape, attrs), "float32"))
        y = g.op("add", [y, r])
    if relu:
        y = g.op("relu", [y])
    g.set_outputs([y])
    feeds = [rng.standard_normal(xshape).astype(np.float32)]
    if residual:
        feeds.append(rng.standard_normal(_out_shape(xshape, wshape, attrs)).astype(np.float32))
    ref = irgraph.compile(g).run(*feeds)[0]
    got = irgraph.compile(g, target="cpu", opt_level=opt_level, num_threads=1).run(*feeds)[0]
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def _out_shape(xshape, wshape, attrs):
    k = wshape[2:]
    s = attrs.get("strides", [1] * len(k))
    d = attrs.get("dilations", [1] * len(k))
    p = attrs.get("pads", [0] * 2 * len(k))
    sp = [(xshape[2 + i] + p[i] + p[i + len(k)] - (k[i] - 1) * d[i] - 1) // s[i] + 1 for i in range(len(k))]
    return (xshape[0], wshape[0]) + tuple(sp)


# (x shape, w shape, attrs, which formulation: "as_b" weights as packed B, "a" weights as A)
CASES = [
    ((1, 5, 9, 11), (7, 5, 3, 3), {"pads": [1, 1, 1, 1]}, "as_b"),                 # M <= 64
    ((1, 8, 6, 5), (96, 8, 3, 3), {"pads": [1, 0, 2, 1], "strides": [2, 2]}, "as_b"),  # CK > P
    ((2, 8, 5, 7), (80, 8, 3, 3), {"dilations": [2, 1], "pads": [2, 1, 2, 1]}, "as_b"),  # batch 2
    ((1, 3, 23, 19), (80, 3, 3, 3), {"strides": [1, 2]}, "a"),                    # M > 64, CK < P
    ((2, 6, 13, 13), (70, 6, 2, 2), {"strides": [2, 2], "pads": [0, 1, 1, 0]}, "a"),
    ((1, 16, 7, 9), (65, 16, 1, 1), {}, "a"),                                     # 1x1: no im2col
    ((1, 16, 7, 9), (8, 16, 1, 1), {}, "as_b"),
    ((1, 40, 9, 9), (90, 40, 1, 1), {"strides": [2, 2]}, "as_b"),                 # 1x1 stride 2
    ((1, 3, 17, 17), (12, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}, "as_b"),  # stem-like
    ((1, 4, 5), (6, 4, 3), {"pads": [1, 1]}, "as_b"),                             # 1-D
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs,ws,attrs,path", CASES)
def test_conv_formulations(paths, xs, ws, attrs, path, bias):
    _check(xs, ws, attrs, bias=bias, opt_level=0)
    if path == "as_b":
        assert paths["as_b"] == 1
    else:
        assert paths["as_b"] == 0


@pytest.mark.parametrize("relu,residual", [(True, False), (False, True), (True, True)])
def test_conv_epilogues(paths, relu, residual):
    _check((1, 8, 10, 10), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}, relu=relu, residual=residual)
    _check((1, 8, 10, 10), (96, 8, 3, 3), {"pads": [1, 1, 1, 1]}, relu=relu, residual=residual)
    assert paths["as_b"] == 1


@pytest.mark.parametrize("xs,ws,attrs", [
    ((1, 4, 13, 10), (70, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 3, 15, 9), (66, 3, 3, 3), {"strides": [2, 1], "dilations": [1, 2], "pads": [1, 2, 0, 2]}),
    ((1, 3, 21, 18), (16, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),   # + weights as B
])
def test_conv_row_blocks(paths, monkeypatch, xs, ws, attrs):
    """Row blocks of a few output rows (uneven last block), each im2col + GEMM into its rows."""
    CK = ws[1] * ws[2] * ws[3]
    monkeypatch.setattr(lc, "IM2COL_SPLIT_ABOVE", 0)
    monkeypatch.setattr(lc, "IM2COL_PANEL_BYTES", CK * 4 * 3 * _out_shape(xs, ws, attrs)[3])  # 3 rows
    _check(xs, ws, attrs, relu=True, opt_level=2, seed=3)
    assert paths["rows"] == 1
    out_rows = _out_shape(xs, ws, attrs)[2]
    assert paths["as_b"] == (xs[0] * -(-out_rows // 3) if ws[0] <= 64 else 0)


@pytest.mark.parametrize("attrs,ws", [
    ({"group": 2, "pads": [1, 1, 1, 1]}, (8, 2, 3, 3)),
    ({"group": 4, "strides": [2, 2]}, (8, 1, 3, 3)),      # depthwise
])
def test_grouped_conv(paths, attrs, ws):
    _check((1, 4, 9, 8), ws, attrs, relu=True)
    assert paths["as_b"] == 0 and paths["rows"] == 0


def test_resnet_layer_shapes_choose_formulation(paths):
    """The ResNet-18 choices the speedups rely on: 7x7 layers take weights as B."""
    _check((1, 64, 7, 7), (128, 64, 3, 3), {"pads": [1, 1, 1, 1]}, relu=True)
    assert paths["as_b"] == 1
