"""fold_qdq and fuse_quantized_elementwise: structure (the QDQ spellings become quant_conv /
quant_matmul, integer tensors flow between kernels) and numerics (the interpreter's outputs do not
change, bit for bit, and the cpu target's int8 kernels equal the interpreter's reference); the
quant ops' reference against their decomposition into integer ops."""
from __future__ import annotations

import numpy as np
import pytest
from passcheck import run_pass, top_ops

import irgraph
from irgraph import Graph, TensorType, run_graph
from irgraph import dtype as dt
from irgraph.errors import ShapeError
from irgraph.ops import qlinear  # noqa: F401
from irgraph.ops.registry import get_op
from irgraph.passes import PassContext, run_passes

RNG = np.random.default_rng(0)


def c(g, a, name="c"):
    return g.add_const(np.asarray(a), name)


def qdq(g, v, scale, zp, dtype=np.uint8):
    s, z = c(g, np.float32(scale), "s"), c(g, np.asarray(zp, dtype), "z")
    return g.op("dequantize_linear", [g.op("quantize_linear", [v, s, z]), s, z])


def dq_weights(g, w, axis):
    """Per-channel symmetric int8 weights as DQ(const)."""
    red = tuple(k for k in range(w.ndim) if k != axis)
    s = (np.abs(w).max(axis=red) / 127).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / s.reshape(shape)), -127, 127).astype(np.int8)
    return g.op("dequantize_linear", [c(g, q, "wq"), c(g, s, "ws")], {"axis": axis})


def qdq_conv_graph(act="relu", out_q=True):
    g = Graph("qdq_conv")
    x = g.add_input("x", TensorType((2, 3, 7, 6), dt.float32))
    w = RNG.standard_normal((5, 3, 3, 3)).astype(np.float32)
    y = g.op("conv", [qdq(g, x, 0.03, 128), dq_weights(g, w, 0), c(g, RNG.standard_normal(5).astype(np.float32))],
             {"pads": (1, 1, 1, 1), "strides": (2, 1)})
    if act == "relu":
        y = g.op("relu", [y])
    elif act == "clip":
        y = g.op("clip", [y, c(g, np.float32(0)), c(g, np.float32(2))])
    if out_q:
        y = qdq(g, y, 0.02, 0 if act else 120)
    g.set_outputs([y])
    return g


def feeds(g, scale=1.0):
    return [(RNG.standard_normal(v.shape) * scale).astype(np.float32) for v in g.inputs]


@pytest.mark.parametrize("act", ["relu", "clip", None])
@pytest.mark.parametrize("out_q", [True, False], ids=["uint8_out", "float_out"])
def test_conv_qdq_folds_into_one_int8_kernel(act, out_q):
    g = qdq_conv_graph(act, out_q)
    before = g.copy()
    g, rec = run_pass(g, "fold_qdq")
    assert rec.changed
    ops = top_ops(g)
    assert ops.count("quant_conv") == 1 and "conv" not in ops and "relu" not in ops and "clip" not in ops
    q = next(n for n in g.nodes if n.op == "quant_conv")
    assert q.outputs[0].dtype is (dt.uint8 if out_q else dt.float32)
    assert q.attrs["activation"] == (act or "none")
    x = feeds(g)
    want = run_graph(before, x)[0]
    got = run_graph(g, x)[0]
    if out_q:   # the same integers: the dequantized outputs are equal up to float32 rounding
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and the cpu target's int8 kernel computes the interpreter's integers
    m = irgraph.compile(g, target="cpu", opt_level=0)
    np.testing.assert_array_equal(m(*x), got)
    assert "call qgemm" in m._run.kernels_ir()


def test_matmul_gemm_spelling_with_transposed_weights_and_bias():
    g = Graph("linear")
    x = g.add_input("x", TensorType((4, 12), dt.float32))
    w = RNG.standard_normal((9, 12)).astype(np.float32)         # (N, K) as Gemm transB stores it
    wt = g.op("transpose", [dq_weights(g, w, 0)], {"perm": (1, 0)})
    y = g.op("add", [g.op("matmul", [qdq(g, x, 0.02, 130), wt]), c(g, RNG.standard_normal(9).astype(np.float32))])
    y = qdq(g, g.op("relu", [y]), 0.05, 0)
    g.set_outputs([y])
    before = g.copy()
    g, _ = run_pass(g, "fold_qdq")
    assert top_ops(g).count("quant_matmul") == 1 and "matmul" not in top_ops(g) and "add" not in top_ops(g)
    x_ = feeds(g)
    np.testing.assert_allclose(run_graph(g, x_)[0], run_graph(before, x_)[0], rtol=0, atol=1e-6)


def test_integer_chain_through_pool_and_reshape():
    """Q/DQ around max_pool and reshape cancel: the uint8 tensor flows from kernel to kernel."""
    g = Graph("chain")
    x = g.add_input("x", TensorType((1, 4, 8, 8), dt.float32))
    h = g.op("relu", [g.op("conv", [qdq(g, x, 0.03, 128), dq_weights(g, RNG.standard_normal((6, 4, 3, 3)), 0)],
                           {"pads": (1, 1, 1, 1)})])
    h = qdq(g, h, 0.04, 0)
    h = qdq(g, g.op("max_pool", [h], {"kernel_shape": (2, 2), "strides": (2, 2)}), 0.04, 0)
    h = g.op("reshape", [h, c(g, np.array([1, 96], np.int64))])
    y = g.op("matmul", [qdq(g, h, 0.04, 0), dq_weights(g, RNG.standard_normal((96, 3)).astype(np.float32), 1)])
    g.set_outputs([y])
    before = g.copy()
    g, _ = run_pass(g, "fold_qdq")
    ops = top_ops(g)
    assert ops == ["quantize_linear", "quant_conv", "max_pool", "reshape", "quant_matmul"], ops
    mp = next(n for n in g.nodes if n.op == "max_pool")
    assert mp.outputs[0].dtype is dt.uint8
    x_ = feeds(g)
    np.testing.assert_allclose(run_graph(g, x_)[0], run_graph(before, x_)[0], rtol=1e-5, atol=1e-6)


def test_requantize_with_other_parameters_is_kept():
    g = Graph("rq")
    x = g.add_input("x", TensorType((10,), dt.float32))
    y = qdq(g, qdq(g, x, 0.1, 3), 0.2, 7)      # two different quantizations: both must stay
    g.set_outputs([y])
    g2, _ = run_pass(g.copy(), "fold_qdq")
    assert top_ops(g2).count("quantize_linear") == 2
    g3 = Graph("same")
    x = g3.add_input("x", TensorType((10,), dt.float32))
    g3.set_outputs([qdq(g3, qdq(g3, x, 0.1, 3), 0.1, 3)])
    g3, _ = run_pass(g3, "fold_qdq")
    assert top_ops(g3).count("quantize_linear") == 1


def residual_graph(a_dt=dt.uint8, b_dt=dt.uint8, y_dt=dt.uint8):
    g = Graph("res")
    a = g.add_input("a", TensorType((1, 4, 5, 5), a_dt))
    b = g.add_input("b", TensorType((1, 4, 5, 5), b_dt))
    s1, z1 = c(g, np.float32(0.02)), c(g, np.asarray(3, a_dt.np))
    s2, z2 = c(g, np.float32(0.05)), c(g, np.asarray(-20 if b_dt is dt.int8 else 140, b_dt.np))
    y = g.op("relu", [g.op("add", [g.op("dequantize_linear", [a, s1, z1]), g.op("dequantize_linear", [b, s2, z2])])])
    g.set_outputs([g.op("quantize_linear", [y, c(g, np.float32(0.04)), c(g, np.asarray(1, y_dt.np))])])
    return g


@pytest.mark.parametrize("a_dt,b_dt,y_dt", [(dt.uint8, dt.uint8, dt.uint8), (dt.uint8, dt.int8, dt.int8)])
def test_residual_add_becomes_quant_add(a_dt, b_dt, y_dt):
    g = residual_graph(a_dt, b_dt, y_dt)
    before = g.copy()
    g, _ = run_pass(g, "fold_qdq")
    assert top_ops(g) == ["quant_add"] and g.nodes[0].attrs["activation"] == "relu"
    ins = [RNG.integers(-128 if v.dtype is dt.int8 else 0, 128 if v.dtype is dt.int8 else 256, v.shape)
           .astype(v.dtype.np) for v in g.inputs]
    want = run_graph(before, ins)[0]
    np.testing.assert_array_equal(run_graph(g, ins)[0], want)
    m = irgraph.compile(g, target="cpu", opt_level=0)
    np.testing.assert_array_equal(m(*ins), want)
    assert "call qadd" in m._run.kernels_ir()


def test_residual_region_becomes_one_integer_loop():
    g = Graph("res")
    a = g.add_input("a", TensorType((1, 4, 5, 5), dt.uint8))
    b = g.add_input("b", TensorType((1, 4, 5, 5), dt.uint8))
    s1, z1, s2, z2 = c(g, np.float32(0.02)), c(g, np.uint8(3)), c(g, np.float32(0.05)), c(g, np.uint8(140))
    y = g.op("relu", [g.op("add", [g.op("dequantize_linear", [a, s1, z1]), g.op("dequantize_linear", [b, s2, z2])])])
    g.set_outputs([g.op("quantize_linear", [y, c(g, np.float32(0.04)), c(g, np.uint8(0))])])
    before = g.copy()
    g, rec = run_pass(g, "fuse_quantized_elementwise")
    assert top_ops(g) == ["fused"] and g.nodes[0].attrs["group"] == "quantized"
    ins = [RNG.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8) for _ in range(2)]
    np.testing.assert_array_equal(run_graph(g, ins)[0], run_graph(before, ins)[0])
    m = irgraph.compile(g, target="cpu", opt_level=0)
    np.testing.assert_array_equal(m(*ins), run_graph(before, ins)[0])


# ---- the ops -----------------------------------------------------------------------------------
def quant_node(op, xdt, wdt, yz_dtype, act="relu", wz=None, acc_bias=True, conv_attrs=None, runtime_w=False):
    g = Graph(op)
    if op == "quant_conv":
        x = g.add_input("x", TensorType((2, 5, 6, 7), xdt))
        wshape, ch = (6, 5, 3, 3), 6
    else:
        x = g.add_input("x", TensorType((2, 3, 10), xdt))
        wshape, ch = (10, 6), 6
    lo, hi = (-128, 128) if wdt is dt.int8 else (0, 256)
    wa = RNG.integers(lo, hi, wshape).astype(wdt.np)
    w = g.add_input("w", TensorType(wshape, wdt)) if runtime_w else c(g, wa, "w")
    ins = [x, c(g, np.asarray(7 if xdt is dt.uint8 else -7, xdt.np)), w,
           None if wz is None else c(g, np.asarray(wz, wdt.np)),
           c(g, (RNG.random(ch) * 1e-3 + 1e-4).astype(np.float32)),
           c(g, RNG.integers(-500, 500, ch).astype(np.int32)) if acc_bias else None,
           c(g, RNG.standard_normal(ch).astype(np.float32)),
           None if yz_dtype is None else c(g, np.asarray(5, yz_dtype.np))]
    attrs = {"activation": act, **(conv_attrs or {})}
    g.set_outputs([g.op(op, ins, attrs)])
    feeds_ = [RNG.integers(-128 if xdt is dt.int8 else 0, 128 if xdt is dt.int8 else 256, x.shape).astype(xdt.np)]
    if runtime_w:
        feeds_.append(wa)
    return g, feeds_


def decomposed(g):
    n = g.nodes[0]
    d = Graph("decomposed")
    ins = [None if v is None else (d.add_const(v.const, v.name) if v.const is not None else d.add_input(v.name, v.type))
           for v in n.inputs]
    d.set_outputs(get_op(n.op).decompose(d, ins, dict(n.attrs)))
    return d


CASES = [("quant_conv", dt.uint8, dt.int8, dt.uint8, {"pads": (1, 0, 1, 2), "strides": (1, 2)}),
         ("quant_conv", dt.int8, dt.int8, dt.int8, {"dilations": (2, 1)}),
         ("quant_conv", dt.uint8, dt.int8, None, {"dilations": (1, 2), "pads": (1, 2, 0, 1)}),
         ("quant_matmul", dt.uint8, dt.int8, None, {}),
         ("quant_matmul", dt.int8, dt.uint8, dt.uint8, {})]


@pytest.mark.parametrize("op,xdt,wdt,ydt,attrs", CASES)
def test_reference_equals_decomposition_and_cpu(op, xdt, wdt, ydt, attrs):
    wz = 128 if wdt is dt.uint8 else None      # uint8 weights with zero point 128: symmetric
    g, x = quant_node(op, xdt, wdt, ydt, wz=wz, conv_attrs=attrs)
    want = run_graph(g, x)[0]
    np.testing.assert_array_equal(run_graph(decomposed(g), x)[0], want)
    m = irgraph.compile(g, target="cpu", opt_level=0)
    np.testing.assert_array_equal(m(*x), want)
    assert "call qgemm" in m._run.kernels_ir()


def test_what_the_int8_kernel_cannot_take_lowers_through_the_decomposition():
    # asymmetric weights and weights known only at run time: integer loops, same numbers
    for kw in ({"wz": 3}, {"runtime_w": True}):
        g, x = quant_node("quant_matmul", dt.uint8, dt.int8, dt.uint8, **kw)
        m = irgraph.compile(g, target="cpu", opt_level=0)
        np.testing.assert_array_equal(m(*x), run_graph(g, x)[0])
        assert "call qgemm" not in m._run.kernels_ir()


def test_inference_errors():
    g = Graph("bad")
    x = g.add_input("x", TensorType((2, 8), dt.uint8))
    w = c(g, np.zeros((8, 4), np.int8))
    with pytest.raises(ShapeError, match="multiplier"):
        g.op("quant_matmul", [x, None, w, None, c(g, np.zeros(4, np.float64))])
    with pytest.raises(ShapeError, match="one value per output channel"):
        g.op("quant_matmul", [x, None, w, None, c(g, np.zeros(3, np.float32))])
    with pytest.raises(ShapeError, match="8-bit"):
        g.op("quant_matmul", [g.add_input("f", TensorType((2, 8), dt.float32)), None, w, None,
                              c(g, np.zeros(4, np.float32))])


def test_pipeline_folds_imported_qdq_models_before_constant_folding():
    """irgraph.compile of a QDQ graph runs fold_qdq first (constant folding would otherwise turn
    DQ(weights) into float weights)."""
    g = qdq_conv_graph("relu", True)
    m = irgraph.compile(g, target="cpu")
    names = [r.name for r in m.pass_report.records]
    assert names[0] == "fold_qdq" and "fuse_quantized_elementwise" in names
    assert "quant_conv" in m.graph.op_histogram()
    x = feeds(g)
    np.testing.assert_allclose(m(*x), run_graph(g, x)[0], rtol=0, atol=1e-6)
    _, report = run_passes(g.copy(), ["fold_qdq"], PassContext(verify=True))
    assert report.records[0].ops_added.get("quant_conv") == 1
