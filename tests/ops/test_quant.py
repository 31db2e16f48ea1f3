"""Quantization ops, checked integer-exact: round half to even, saturation, per-axis and blocked
scales, integer matmul/conv against Python-int loops, requantization, dynamic quantization."""
from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest

from irgraph import ShapeError, TensorType
from irgraph.dtype import DType

from oprun import build, infer, run

RNG = np.random.default_rng(2)


def T(shape, dtype):
    return TensorType(shape, dtype)


def py_quant(x: float, scale: float, zp: int, lo: int, hi: int) -> int:
    """Python's round() is half-to-even on floats: an independent rounding rule. The quotient
    is a float32 one, as the ops compute it for float32 inputs."""
    q = float(np.float32(x) / np.float32(scale))
    return min(hi, max(lo, round(q) + zp))


# ---- quantize_linear -------------------------------------------------------------------------
def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 300.0, -300.0, 0.49], np.float32)
    got = run("quantize_linear", [x, np.float32(1.0), np.int8(0)])
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, [0, 2, 2, 0, -2, -2, 127, -128, 0])
    got = run("quantize_linear", [x, np.float32(0.5), np.uint8(10)])
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [py_quant(float(v), 0.5, 10, 0, 255) for v in x])
    # no zero point: uint8, or the dtype asked for
    assert run("quantize_linear", [x, np.float32(2.0)]).dtype == np.uint8
    got = run("quantize_linear", [x, np.float32(1.0)], {"dtype": DType.from_name("int16")})
    np.testing.assert_array_equal(got, [0, 2, 2, 0, -2, -2, 300, -300, 0])


def test_quantize_divides_in_the_scales_precision():
    # 0.45 / 0.3 is 1.49976 in float32 but exactly 1.5 in float16, which rounds to 2 (even)
    x = np.array([0.45], np.float32)
    assert run("quantize_linear", [x, np.float16(0.3), np.int8(0)])[0] == 2
    assert run("quantize_linear", [x, np.float16(0.3), np.int8(0)],
               {"precision": DType.from_name("float32")})[0] == 1


def test_quantize_per_axis_and_blocked():
    x = RNG.uniform(-20, 20, (2, 3, 4)).astype(np.float32)
    scale = np.array([0.1, 0.5, 2.0], np.float32)
    zp = np.array([-3, 0, 7], np.int8)
    got = run("quantize_linear", [x, scale, zp], {"axis": 1})
    want = np.array([[[py_quant(float(x[i, c, k]), float(scale[c]), int(zp[c]), -128, 127)
                       for k in range(4)] for c in range(3)] for i in range(2)])
    np.testing.assert_array_equal(got, want)
    # blocks of 3 along axis 2 (size 4): the last block is short
    bs = np.array([[[0.5, 4.0]] * 3] * 2, np.float32)            # (2, 3, 2)
    bz = np.full((2, 3, 2), 1, np.uint8)
    got = run("quantize_linear", [x, bs, bz], {"axis": 2, "block_size": 3})
    want = np.array([[[py_quant(float(x[i, c, k]), float(bs[i, c, k // 3]), 1, 0, 255)
                       for k in range(4)] for c in range(3)] for i in range(2)])
    np.testing.assert_array_equal(got, want)


def test_quantize_int4_and_float8():
    x = np.array([-9.0, -8.4, 7.5, 6.5, 0.0], np.float32)
    got = run("quantize_linear", [x, np.float32(1.0), np.zeros((), ml_dtypes.int4)])
    assert got.dtype == ml_dtypes.int4
    np.testing.assert_array_equal(got.astype(np.int32), [-8, -8, 7, 6, 0])
    big = np.array([1000.0, -1000.0, 3.3, np.inf], np.float32)
    e4 = DType.from_name("float8e4m3fn")
    sat = run("quantize_linear", [big, np.float32(1.0)], {"dtype": e4})
    np.testing.assert_array_equal(sat.astype(np.float32), [448.0, -448.0, 3.25, 448.0])
    raw = run("quantize_linear", [big, np.float32(1.0)], {"dtype": e4, "saturate": False})
    assert np.isnan(raw.astype(np.float32)[[0, 1, 3]]).all()


def test_quantize_inference_and_errors():
    t = infer("quantize_linear", [T(("N", 3), "float16"), T((3,), "float16"), T((3,), "int8")])
    assert t.shape == ("N", 3) and t.dtype.name == "int8"
    with pytest.raises(ShapeError, match="per-axis") as e:
        infer("quantize_linear", [T((2, 3), "float32"), T((4,), "float32")])
    assert "quantize_linear" in str(e.value)
    with pytest.raises(ShapeError, match="blocked"):
        infer("quantize_linear", [T((2, 8), "float32"), T((2, 3), "float32")], {"axis": 1, "block_size": 4})
    with pytest.raises(ShapeError, match="differ"):
        infer("quantize_linear", [T((2,), "float32"), T((), "float32"), T((), "int8")],
              {"dtype": DType.from_name("uint8")})
    with pytest.raises(ShapeError, match="quantized dtype"):
        infer("quantize_linear", [T((2,), "float32"), T((), "float32")], {"dtype": DType.from_name("int32")})


# ---- dequantize_linear -----------------------------------------------------------------------
def test_dequantize_exact_per_axis_and_int32():
    x = np.array([[0, 255, 128], [7, 8, 9]], np.uint8)
    scale = np.array([0.5, 0.25], np.float32)
    zp = np.array([128, 8], np.uint8)
    got = run("dequantize_linear", [x, scale, zp], {"axis": 0})
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[-64.0, 63.5, 0.0], [-0.25, 0.0, 0.25]])
    acc = np.array([2**30, -(2**30) - 1], np.int32)
    got = run("dequantize_linear", [acc, np.float32(0.5)])
    np.testing.assert_array_equal(got, np.array([2.0**29, -(2.0**29) - 0.5], np.float32))
    f16 = run("dequantize_linear", [x, np.float32(2.0)], {"dtype": DType.from_name("float16")})
    assert f16.dtype == np.float16 and f16[0, 1] == 510.0


def test_dequantize_blocked_and_float8():
    x = np.arange(10, dtype=np.int8).reshape(2, 5)
    s = np.array([[1.0, 10.0], [100.0, 1000.0]], np.float32)   # blocks of 3 along axis 1
    got = run("dequantize_linear", [x, s], {"axis": 1, "block_size": 3})
    want = x.astype(np.float64) * np.repeat(s, 3, axis=1)[:, :5]
    np.testing.assert_array_equal(got, want)
    f8 = np.array([0.5, -3.0, 448.0], np.float32).astype(ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(run("dequantize_linear", [f8, np.float32(2.0)]), [1.0, -6.0, 896.0])
    with pytest.raises(ShapeError, match="zero point") as e:
        infer("dequantize_linear", [T((2,), "int8"), T((), "float32"), T((), "uint8")])
    assert "dequantize_linear" in str(e.value)


# ---- matmul_integer ----------------------------------------------------------------------------
def _py_matmul(a, b, azp, bzp):
    m, k = a.shape
    n = b.shape[1]
    return np.array([[sum((int(a[i, t]) - int(azp[i])) * (int(b[t, j]) - int(bzp[j])) for t in range(k))
                      for j in range(n)] for i in range(m)])


def test_matmul_integer_against_python_ints():
    a = RNG.integers(0, 256, (3, 7)).astype(np.uint8)
    b = RNG.integers(-128, 128, (7, 4)).astype(np.int8)
    got = run("matmul_integer", [a, b, np.uint8(12), np.int8(-5)])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _py_matmul(a, b, [12] * 3, [-5] * 4))
    # per-row zero points for A, per-column for B
    azp = np.array([1, 200, 3], np.uint8)
    bzp = np.array([0, -1, 5, 127], np.int8)
    np.testing.assert_array_equal(run("matmul_integer", [a, b, azp, bzp]), _py_matmul(a, b, azp, bzp))
    batched = run("matmul_integer", [np.stack([a, a]), b])
    np.testing.assert_array_equal(batched[1], _py_matmul(a, b, [0] * 3, [0] * 4))


def test_matmul_integer_inference_and_errors():
    assert infer("matmul_integer", [T(("B", 3, 7), "uint8"), T((7, 4), "int8")]).shape == ("B", 3, 4)
    with pytest.raises(ShapeError, match="dtype") as e:
        infer("matmul_integer", [T((3, 7), "float32"), T((7, 4), "int8")])
    assert "matmul_integer" in str(e.value)
    with pytest.raises(ShapeError, match="per-row"):
        infer("matmul_integer", [T((3, 7), "uint8"), T((7, 4), "int8"), T((4,), "uint8")])
    with pytest.raises(ShapeError, match="inner"):
        infer("matmul_integer", [T((3, 7), "uint8"), T((6, 4), "int8")])


# ---- conv_integer ------------------------------------------------------------------------------
def _py_conv2d(x, w, xzp, wzp, strides, pads, dil, group):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.full((n, c, h + pads[0] + pads[2], wd + pads[1] + pads[3]), int(xzp), np.int64)
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x
    oh = (xp.shape[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (xp.shape[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((n, m, oh, ow), np.int64)
    for b, o, i, j in itertools.product(range(n), range(m), range(oh), range(ow)):
        g = o // (m // group)
        s = 0
        for ci, u, v in itertools.product(range(cg), range(kh), range(kw)):
            xv = int(xp[b, g * cg + ci, i * strides[0] + u * dil[0], j * strides[1] + v * dil[1]]) - int(xzp)
            s += xv * (int(w[o, ci, u, v]) - int(wzp[o]))
        y[b, o, i, j] = s
    return y


def test_conv_integer_against_python_loops():
    x = RNG.integers(0, 256, (1, 4, 5, 6)).astype(np.uint8)
    w = RNG.integers(-128, 128, (6, 2, 3, 2)).astype(np.int8)
    wzp = np.arange(6, dtype=np.int8) - 3
    attrs = {"strides": (2, 1), "pads": (1, 0, 1, 1), "dilations": (1, 2), "group": 2}
    got = run("conv_integer", [x, w, np.uint8(17), wzp], attrs)
    assert got.dtype == np.int32
    # padding holds the zero point, i.e. contributes 0 after centering
    np.testing.assert_array_equal(got, _py_conv2d(x, w, 17, wzp, (2, 1), (1, 0, 1, 1), (1, 2), 2))


def test_conv_integer_auto_pad_and_1d():
    x = RNG.integers(-128, 128, (2, 3, 7)).astype(np.int8)
    w = RNG.integers(-128, 128, (4, 3, 3)).astype(np.int8)
    got = run("conv_integer", [x, w], {"auto_pad": "SAME_UPPER", "strides": (2,)})
    assert got.shape == (2, 4, 4)
    want = _py_conv2d(x[..., None], w[..., None], 0, [0] * 4, (2, 1), (1, 0, 1, 0), (1, 1), 1)[..., 0]
    np.testing.assert_array_equal(got, want)


def test_conv_integer_inference_and_errors():
    t = infer("conv_integer", [T(("N", 4, 9, 9), "uint8"), T((8, 2, 3, 3), "int8")],
              {"group": 2, "strides": (2, 2)})
    assert t.shape == ("N", 8, 4, 4) and t.dtype.name == "int32"
    with pytest.raises(ShapeError, match="channels") as e:
        infer("conv_integer", [T((1, 4, 9, 9), "uint8"), T((8, 3, 3, 3), "int8")])
    assert "conv_integer" in str(e.value)
    with pytest.raises(ShapeError, match="does not fit"):
        infer("conv_integer", [T((1, 1, 2, 2), "uint8"), T((1, 1, 3, 3), "int8")])


# ---- requantize --------------------------------------------------------------------------------
def test_requantize_ties_to_even_and_per_channel():
    acc = np.array([[1, 3, 5, -5, 1000, -1000]], np.int32)
    got = run("requantize", [acc, np.float32(0.5), np.int8(0)])
    np.testing.assert_array_equal(got, [[0, 2, 2, -2, 127, -128]])
    acc = np.arange(12, dtype=np.int32).reshape(1, 3, 2, 2) * 10
    mult = np.array([0.1, 0.05, 0.02], np.float32).reshape(1, 3, 1, 1)
    got = run("requantize", [acc, mult, np.uint8(3)])
    want = [[[[min(255, max(0, round(int(acc[0, c, i, j]) * float(mult[0, c, 0, 0])) + 3))
               for j in range(2)] for i in range(2)] for c in range(3)]]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ShapeError, match="int32") as e:
        infer("requantize", [T((2,), "int8"), T((), "float32")])
    assert "requantize" in str(e.value)


# ---- dynamic_quantize_linear -------------------------------------------------------------------
def test_dynamic_quantize_linear_hand_example():
    x = np.array([0.0, 2.0, -3.0, -2.5, 1.34, 0.5], np.float32)
    y, scale, zp = run("dynamic_quantize_linear", [x], num_outputs=3)
    # range [-3, 2] -> scale 5/255; zero point round(3 / scale) = round(153) = 153
    assert scale.dtype == np.float32 and scale.shape == ()
    np.testing.assert_allclose(scale, np.float32(5.0) / np.float32(255), rtol=0)
    assert zp.dtype == np.uint8 and int(zp) == 153
    np.testing.assert_array_equal(y, [py_quant(float(v), float(scale), 153, 0, 255) for v in x])
    # all-positive input: the range still includes 0, so 0 maps to zero point 0
    y, scale, zp = run("dynamic_quantize_linear", [np.array([1.0, 2.0], np.float32)], num_outputs=3)
    assert int(zp) == 0 and y[1] == 255
    with pytest.raises(ShapeError, match="float32"):
        build("dynamic_quantize_linear", [T((2,), "float16")], num_outputs=3)
