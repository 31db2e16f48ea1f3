"""Normalizations: references against independent (float64, loop-based) expectations, inference
and errors, decompositions against references, and the ONNX converters' opset variants."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from irgraph import Graph, ShapeError, TensorType, run_graph
from irgraph import dtype as dt
from irgraph.ops.registry import get_op

from oprun import infer, onnx_run, raises, run_on

RNG = np.random.default_rng(0)


def f32(*shape, lo=-2.0, hi=2.0):
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


def T(*shape, dtype="float32"):
    return TensorType(shape, dtype)


# ---- batch_norm ----------------------------------------------------------------------------
def _bn64(x, s, b, m, v, eps):
    sh = (1, -1) + (1,) * (x.ndim - 2)
    x = x.astype(np.float64)
    return (x - m.reshape(sh)) / np.sqrt(v.reshape(sh) + eps) * s.reshape(sh) + b.reshape(sh)


def test_batch_norm_reference_and_decomposition():
    x = f32(2, 3, 4, 5)
    s, b, m = f32(3), f32(3), f32(3)
    v = f32(3, lo=0.1, hi=1.0)
    want = _bn64(x, s, b, m, v, 1e-2)
    np.testing.assert_allclose(run_on("batch_norm", x, s, b, m, v, attrs={"epsilon": 1e-2}), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_on("batch_norm", x, s, b, m, v, attrs={"epsilon": 1e-2}, decompose=True),
                               want, rtol=1e-5, atol=1e-6)
    # (N, C) input: no spatial dims
    x2 = f32(4, 3)
    np.testing.assert_allclose(run_on("batch_norm", x2, s, b, m, v), _bn64(x2, s, b, m, v, 1e-5), rtol=1e-5, atol=1e-6)


def test_batch_norm_mixed_dtypes_and_per_activation_params():
    x = f32(2, 3, 4).astype(np.float16)
    s, b, m = f32(3), f32(3), f32(3)
    v = f32(3, lo=0.5, hi=1.0)
    y = run_on("batch_norm", x, s, b, m, v)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), _bn64(x, s, b, m, v, 1e-5), rtol=3e-3, atol=3e-3)
    # per-activation (ONNX spatial=0) parameters of shape x.shape[1:]
    x = f32(2, 3, 4)
    p = [f32(3, 4) for _ in range(3)] + [f32(3, 4, lo=0.5, hi=1.0)]
    want = (x - p[2]) / np.sqrt(p[3] + 1e-5) * p[0] + p[1]
    np.testing.assert_allclose(run_on("batch_norm", x, *p), want, rtol=1e-5, atol=1e-6)


def test_batch_norm_errors():
    c = T(3)
    raises("batch_norm", lambda: infer("batch_norm", [T(2, 3, 4), c, c, c, T(4)]), "per channel")
    raises("batch_norm", lambda: infer("batch_norm", [T(3), c, c, c, c]), "rank >= 2")
    raises("batch_norm", lambda: infer("batch_norm", [T(2, 3, dtype="int32"), c, c, c, c]), "dtype")
    assert infer("batch_norm", [T("N", 3, 7), c, c, c, c]) == T("N", 3, 7)


def test_batch_norm_training_outputs():
    x = f32(4, 3, 5)
    s, b, m = f32(3), f32(3), f32(3)
    v = f32(3, lo=0.1, hi=1.0)
    attrs = {"epsilon": 1e-3, "momentum": 0.8}
    y, rm, rv, bm, bv = run_on("batch_norm_training", x, s, b, m, v, attrs=attrs, num_outputs=5)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2))
    var = (x64 ** 2).mean(axis=(0, 2)) - mean ** 2  # population variance, another way round
    np.testing.assert_allclose(bm, mean, rtol=1e-5)
    np.testing.assert_allclose(bv, var, rtol=1e-4)
    np.testing.assert_allclose(rm, m * 0.8 + mean * 0.2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, v * 0.8 + var * 0.2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, _bn64(x, s, b, mean, var, 1e-3), rtol=1e-4, atol=1e-5)
    d = run_on("batch_norm_training", x, s, b, m, v, attrs=attrs, num_outputs=5, decompose=True)
    for got, want in zip(d, (y, rm, rv, bm, bv)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_batch_norm_training_inference_and_errors():
    c = T(3)
    ys = infer("batch_norm_training", [T("N", 3, 4), c, c, c, c], num_outputs=3)
    assert ys == [T("N", 3, 4), T(3), T(3)]
    raises("batch_norm_training",
           lambda: infer("batch_norm_training", [T(2, 3), c, c, c, c], num_outputs=6), "1 to 5")
    raises("batch_norm_training",
           lambda: infer("batch_norm_training", [T(2, 3), c, c, c, T(3, dtype="float64")]), "dtype")


# ---- instance_norm / group_norm ------------------------------------------------------------
def _group_norm_loops(x, groups, scale, bias, eps):
    n, c = x.shape[:2]
    per = c // groups
    y = np.empty(x.shape, np.float64)
    for i in range(n):
        for g in range(groups):
            sl = x[i, g * per:(g + 1) * per].astype(np.float64)
            y[i, g * per:(g + 1) * per] = (sl - sl.mean()) / np.sqrt(sl.var() + eps)
    sh = (1, -1) + (1,) * (x.ndim - 2)
    return y * scale.reshape(sh) + bias.reshape(sh)


def test_instance_norm_against_loops():
    x = f32(2, 3, 4, 5)
    s, b = f32(3), f32(3)
    want = _group_norm_loops(x, 3, s, b, 1e-2)
    np.testing.assert_allclose(run_on("instance_norm", x, s, b, attrs={"epsilon": 1e-2}), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run_on("instance_norm", x, s, b, attrs={"epsilon": 1e-2}, decompose=True),
                               want, rtol=1e-4, atol=1e-5)
    raises("instance_norm", lambda: infer("instance_norm", [T(2, 3, 4), T(4), T(3)]), "per channel")
    raises("instance_norm", lambda: infer("instance_norm", [T(2, 3, 4), T(3, dtype="float64"), T(3)]), "dtype")


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_against_loops(groups):
    x = f32(2, 4, 3, 2)
    s, b = f32(4), f32(4)
    want = _group_norm_loops(x, groups, s, b, 1e-5)
    attrs = {"num_groups": groups}
    np.testing.assert_allclose(run_on("group_norm", x, s, b, attrs=attrs), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(run_on("group_norm", x, s, b, attrs=attrs, decompose=True), want, rtol=1e-4, atol=1e-5)


def test_group_norm_errors():
    raises("group_norm", lambda: infer("group_norm", [T(2, 6, 4), T(6), T(6)], {"num_groups": 4}), "groups")
    raises("group_norm", lambda: infer("group_norm", [T(2, 6, 4), T(3), T(3)], {"num_groups": 3}), "per channel")
    raises("group_norm", lambda: infer("group_norm", [T(2, 6), T(6), T(6)]), "num_groups")


# ---- layer_norm / rms_norm -------------------------------------------------------------------
def test_layer_norm_outputs():
    x = f32(2, 3, 4)
    for axis in (0, 1, -1):
        ax = axis % 3
        red = tuple(range(ax, 3))
        s, b = f32(*x.shape[ax:]), f32(*x.shape[ax:])
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=red, keepdims=True)
        inv = 1 / np.sqrt(((x64 - mean) ** 2).mean(axis=red, keepdims=True) + 1e-5)
        y, m, i = run_on("layer_norm", x, s, b, attrs={"axis": axis}, num_outputs=3)
        np.testing.assert_allclose(y, (x64 - mean) * inv * s + b, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(i, inv, rtol=1e-4)
        for got, want in zip(run_on("layer_norm", x, s, b, attrs={"axis": axis}, num_outputs=3, decompose=True),
                             (y, m, i)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # bias is optional and scale broadcasts over the normalized dims
    (y,) = run_on("layer_norm", x, np.float32([2.0]), num_outputs=1)
    x64 = x.astype(np.float64)
    mean = x64.mean(-1, keepdims=True)
    np.testing.assert_allclose(y, 2 * (x64 - mean) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5), rtol=1e-4, atol=1e-5)


def test_layer_norm_inference_and_errors():
    ts = infer("layer_norm", [T("B", 5, 8, dtype="float16"), T(8, dtype="float16")], {"axis": -1}, num_outputs=3)
    assert ts[0] == T("B", 5, 8, dtype="float16")
    assert ts[1] == ts[2] == T("B", 5, 1, dtype="float32")  # statistics in the stash dtype
    raises("layer_norm", lambda: infer("layer_norm", [T(2, 3, 4), T(3)]), "broadcast")
    raises("layer_norm", lambda: infer("layer_norm", [T(2, 3, 4), T(4)], {"axis": 3}), "out of range")
    raises("layer_norm", lambda: infer("layer_norm", [T(2, 4), T(4)], num_outputs=4), "1 to 3")


def test_layer_norm_float16_stashes_in_float32():
    x = (f32(2, 64) * 100).astype(np.float16)
    y, m, _ = run_on("layer_norm", x, np.ones(64, np.float16), np.zeros(64, np.float16), num_outputs=3)
    assert y.dtype == np.float16 and m.dtype == np.float32
    np.testing.assert_allclose(m[:, 0], x.astype(np.float64).mean(-1), rtol=1e-5)


def test_rms_norm():
    x = f32(2, 3, 4)
    for axis in (1, -1):
        red = tuple(range(axis % 3, 3))
        s = f32(*x.shape[axis % 3:])
        x64 = x.astype(np.float64)
        want = x64 / np.sqrt((x64 ** 2).mean(axis=red, keepdims=True) + 0.1) * s
        attrs = {"axis": axis, "epsilon": 0.1}
        np.testing.assert_allclose(run_on("rms_norm", x, s, attrs=attrs), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run_on("rms_norm", x, s, attrs=attrs, decompose=True), want, rtol=1e-5, atol=1e-6)
    # the output takes the scale's dtype
    assert run_on("rms_norm", x, np.ones(4, np.float64)).dtype == np.float64
    raises("rms_norm", lambda: infer("rms_norm", [T(2, 3), T(2)]), "broadcast")


# ---- lrn ------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_lrn_against_loops(size):
    x = f32(2, 5, 3, 2)
    alpha, beta, bias = 0.3, 0.6, 1.5
    want = np.empty(x.shape, np.float64)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    for c in range(x.shape[1]):
        win = x[:, max(0, c - lo):min(x.shape[1], c + hi + 1)].astype(np.float64)
        want[:, c] = x[:, c] / (bias + alpha / size * (win ** 2).sum(axis=1)) ** beta
    got = run_on("lrn", x, attrs={"size": size, "alpha": alpha, "beta": beta, "bias": bias})
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_lrn_errors():
    raises("lrn", lambda: infer("lrn", [T(2, 3)], {"size": 0}), "positive")
    with pytest.raises(ShapeError, match="size"):
        infer("lrn", [T(2, 3)])


# ---- ONNX converters ---------------------------------------------------------------------------
def test_onnx_batch_norm_opsets():
    x = f32(2, 3, 4)
    s, b, m = f32(3), f32(3), f32(3)
    v = f32(3, lo=0.1, hi=1.0)
    feeds = {"x": x, "s": s, "b": b, "m": m, "v": v}
    for opset in (7, 9, 15):
        node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
        (y,) = onnx_run(node, feeds, opset)
        np.testing.assert_allclose(y, _bn64(x, s, b, m, v, 1e-5), rtol=1e-5, atol=1e-6)
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"],
                            training_mode=1, momentum=0.5)
    y, rm, rv = onnx_run(node, feeds, 15, n_out=3)
    np.testing.assert_allclose(rm, 0.5 * m + 0.5 * x.mean(axis=(0, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, 0.5 * v + 0.5 * x.var(axis=(0, 2)), rtol=1e-5, atol=1e-6)
    # opsets 7-13 signal training by asking for the statistics
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm"], momentum=0.5)
    _, rm9 = onnx_run(node, feeds, 9, n_out=2)
    np.testing.assert_allclose(rm9, rm, rtol=1e-6)


def test_onnx_group_norm_18_spreads_group_params():
    x = f32(2, 4, 3)
    s, b = f32(2), f32(2)
    want = _group_norm_loops(x, 2, np.repeat(s, 2), np.repeat(b, 2), 1e-5)
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)
    (y,) = onnx_run(node, {"x": x, "s": s, "b": b}, 18)  # parameters as run-time inputs
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    (y,) = onnx_run(node, {"x": x}, 18, consts={"s": s, "b": b})  # and as initializers
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)
    (y,) = onnx_run(node, {"x": x, "s": np.repeat(s, 2), "b": np.repeat(b, 2)}, 21)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def test_onnx_mvn_and_lp_normalization():
    x = f32(2, 3, 2, 2)
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"])
    (y,) = onnx_run(node, {"x": x}, 13)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x64 - mean) / (x64.std(axis=(0, 2, 3), keepdims=True) + 1e-9), rtol=1e-4, atol=1e-5)
    z = np.array([[3, 4], [0, 0]], np.float32)
    (y,) = onnx_run(helper.make_node("LpNormalization", ["x"], ["y"], axis=1, p=2), {"x": z}, 22)
    np.testing.assert_allclose(y, [[0.6, 0.8], [0, 0]], rtol=1e-6)
    (y,) = onnx_run(helper.make_node("LpNormalization", ["x"], ["y"], axis=0, p=1), {"x": z}, 1)
    np.testing.assert_allclose(y, [[1, 1], [0, 0]], rtol=1e-6)


def test_onnx_layer_norm_with_statistics():
    x = f32(2, 3)
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "", "inv"])
    y, inv = onnx_run(node, {"x": x, "s": np.ones(3, np.float32)}, 17, n_out=3)
    np.testing.assert_allclose(inv[:, 0], 1 / np.sqrt(x.astype(np.float64).var(-1) + 1e-5), rtol=1e-4)
    assert inv.dtype == np.float32 and inv.shape == (2, 1)
    np.testing.assert_allclose(y, (x - x.mean(-1, keepdims=True)) * inv, rtol=1e-5, atol=1e-6)


def test_group_norm_decomposition_with_symbolic_batch():
    x = f32(3, 4, 5)
    s, b = f32(4), f32(4)
    g = Graph()
    xv = g.add_input("x", TensorType(("N", 4, 5), dt.float32))
    opdef = get_op("group_norm")
    outs = opdef.decompose(g, [xv, g.add_const(s, "s"), g.add_const(b, "b")], opdef.normalize_attrs({"num_groups": 2}))
    g.set_outputs(list(outs))
    np.testing.assert_allclose(run_graph(g, [x])[0], _group_norm_loops(x, 2, s, b, 1e-5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op,params,attrs", [
    ("batch_norm", [np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32),
                    np.ones(3, np.float32)], {}),
    ("instance_norm", [np.ones(3, np.float16), np.zeros(3, np.float16)], {}),
    ("group_norm", [np.ones(3, np.float16), np.zeros(3, np.float16)], {"num_groups": 3}),
    ("rms_norm", [np.ones(4, np.float16)], {}),
])
def test_float16_decompositions_agree_with_references(op, params, attrs):
    x = (f32(2, 3, 4) * 3).astype(np.float16)
    want = run_on(op, x, *params, attrs=attrs)
    got = run_on(op, x, *params, attrs=attrs, decompose=True)
    assert got.dtype == want.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)
