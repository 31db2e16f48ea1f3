"""Elementwise ops: references against independent expectations (math module, hand-computed
values, the ONNX spec's tables), scalar formulas against references for every dtype, inference
(broadcasting with symbolic dims, dtypes) with errors that name the op, and the ONNX converters."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import irgraph
from irgraph import TensorType
from irgraph import dtype as dt
from irgraph.ops.elementwise import erf_np
from irgraph.ops.registry import get_op
from irgraph.ops.scalar import SCALAR_METHODS, NumpyScalar

import oprun
from oprun import onnx_model, raises, value_info

F16, BF16, F32, F64 = np.float16, ml_dtypes.bfloat16, np.float32, np.float64


# ---- helpers ---------------------------------------------------------------------------
def run(op, *arrays, num_outputs=None, **attrs):
    """Run ``op`` on arrays fed as graph inputs; the interpreter checks dtype and shape against
    the op's inference, so every call here tests inference too."""
    return oprun.run(op, arrays, attrs, num_outputs=num_outputs)


def infer(op, *types, **attrs):
    return oprun.types(op, types, attrs)[0]


def f32(*v):
    return np.array(v, dtype=np.float32)


# ---- math functions against the math module ---------------------------------------------
UNARY_MATH = [
    ("exp", math.exp, (-5, 5)), ("log", math.log, (0.01, 50)), ("sqrt", math.sqrt, (0, 50)),
    ("sin", math.sin, (-6, 6)), ("cos", math.cos, (-6, 6)), ("tan", math.tan, (-1.4, 1.4)),
    ("asin", math.asin, (-1, 1)), ("acos", math.acos, (-1, 1)), ("atan", math.atan, (-20, 20)),
    ("sinh", math.sinh, (-5, 5)), ("cosh", math.cosh, (-5, 5)), ("tanh", math.tanh, (-5, 5)),
    ("asinh", math.asinh, (-20, 20)), ("acosh", math.acosh, (1, 20)), ("atanh", math.atanh, (-0.99, 0.99)),
    ("erf", math.erf, (-4, 4)), ("floor", math.floor, (-9, 9)), ("ceil", math.ceil, (-9, 9)),
    ("reciprocal", lambda v: 1 / v, (0.1, 9)),
]


@pytest.mark.parametrize("name,fn,domain", UNARY_MATH, ids=[u[0] for u in UNARY_MATH])
@pytest.mark.parametrize("dtype,rtol", [(F64, 1e-13), (F32, 3e-7)], ids=["f64", "f32"])
def test_unary_math_matches_math_module(name, fn, domain, dtype, rtol):
    x = np.random.default_rng(1).uniform(*domain, size=200).astype(dtype)
    want = np.array([fn(float(v)) for v in x])
    got = run(name, x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=1e-300)


def test_erf_is_accurate_everywhere():
    x = np.concatenate([np.linspace(-6, 6, 4001), [1e-30, -1e-8, 3e-4, 0.4999, 0.5, 0.5001]])
    want = np.array([math.erf(v) for v in x])
    # float32 path: within ~2 float32 ulps relative, also for tiny arguments
    np.testing.assert_allclose(erf_np(x.astype(np.float32)).astype(np.float64), want, rtol=2.5e-7, atol=1e-38)
    np.testing.assert_array_equal(erf_np(x), want)  # float64 is exact
    special = erf_np(f32(np.inf, -np.inf, np.nan, 0.0))
    np.testing.assert_array_equal(special, f32(1, -1, np.nan, 0))
    assert erf_np(np.zeros((0, 3), np.float32)).shape == (0, 3)


def test_round_sign_abs_neg():
    np.testing.assert_array_equal(run("round", f32(0.5, 1.5, 2.5, -0.5, -1.5, 2.4, -2.6)),
                                  f32(0, 2, 2, -0, -2, 2, -3))  # half to even
    np.testing.assert_array_equal(run("sign", np.array([-3, 0, 7], np.int8)), np.array([-1, 0, 1], np.int8))
    np.testing.assert_array_equal(run("sign", f32(-0.1, 0, 2)), f32(-1, 0, 1))
    np.testing.assert_array_equal(run("abs", np.array([-128, -1, 5], np.int8)), np.array([-128, 1, 5], np.int8))
    np.testing.assert_array_equal(run("abs", np.array([0, 255], np.uint8)), np.array([0, 255], np.uint8))
    np.testing.assert_array_equal(run("neg", np.array([1, -2], np.int64)), np.array([-1, 2], np.int64))


def test_isnan_isinf_with_detect_flags():
    x = f32(np.nan, np.inf, -np.inf, 0, 1e38)
    np.testing.assert_array_equal(run("isnan", x), [True, False, False, False, False])
    np.testing.assert_array_equal(run("isinf", x), [False, True, True, False, False])
    np.testing.assert_array_equal(run("isinf", x, detect_negative=False), [False, True, False, False, False])
    np.testing.assert_array_equal(run("isinf", x, detect_positive=False), [False, False, True, False, False])
    np.testing.assert_array_equal(run("isinf", x, detect_positive=False, detect_negative=False), [False] * 5)


# ---- arithmetic with ONNX integer semantics -----------------------------------------------------
def test_integer_division_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 0, 6, -6], np.int32)
    b = np.array([2, 2, -2, -2, 3, 3, -3], np.int32)
    np.testing.assert_array_equal(run("div", a, b), np.array([3, -3, -3, 3, 0, 2, 2], np.int32))
    # exact for int64 magnitudes that float64 cannot hold
    big = np.array([2 ** 62 + 1, -(2 ** 62 + 1)], np.int64)
    np.testing.assert_array_equal(run("div", big, np.array([3, 3], np.int64)),
                                  np.array([(2 ** 62 + 1) // 3, -((2 ** 62 + 1) // 3)], np.int64))
    np.testing.assert_array_equal(run("div", np.array([250], np.uint8), np.array([7], np.uint8)), [35])
    np.testing.assert_allclose(run("div", f32(1, -3), f32(4, 2)), f32(0.25, -1.5))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_mod_sign_follows_divisor_or_dividend(dtype):
    a = np.array([-4, 7, 5, 4, -7, 8], dtype)
    b = np.array([2, -3, 8, -2, 3, 5], dtype)
    # fmod=0: a - floor(a / b) * b, the divisor's sign; fmod=1: C fmod, the dividend's sign
    want0 = [ai - math.floor(ai / bi) * bi for ai, bi in zip(a.tolist(), b.tolist())]
    want1 = [int(math.fmod(ai, bi)) for ai, bi in zip(a.tolist(), b.tolist())]
    np.testing.assert_array_equal(run("mod", a, b), np.array(want0, dtype))
    np.testing.assert_array_equal(run("mod", a, b, fmod=True), np.array(want1, dtype))
    assert want0 == [0, -2, 5, 0, 2, 3] and want1 == [0, 1, 5, 0, -1, 3]


def test_float_mod_special_cases():
    # the ONNX spec's table for fmod=0
    x = f32(0.0, -0.0, -3, 3, -1, 1, np.inf, 1, np.nan, 5.5)
    y = f32(-2, 2, np.inf, np.inf, -np.inf, -np.inf, 2, 0, 2, -2)
    got = run("mod", x, y)
    want = f32(-0.0, 0.0, np.inf, 3, -1, -np.inf, np.nan, np.nan, np.nan, -0.5)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got[:2]), [True, False])
    np.testing.assert_array_equal(run("mod", f32(5.5, -5.5, 1), f32(-2, 2, 0), fmod=True), f32(1.5, -1.5, np.nan))


def test_pow_mixed_dtypes_keep_the_base_dtype():
    got = run("pow", f32(2, 3, 4), np.array([3, -1, 0], np.int64))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, f32(8, 1 / 3, 1))
    got = run("pow", np.array([2, 3, 4], np.int32), f32(0.5, 2, -1))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [1, 9, 0])  # 1.414 -> 1, 0.25 -> 0: truncated toward zero
    got = run("pow", np.array([2, -2, 1, -1, 5, 0], np.int64), np.array([62, 3, -5, -3, -2, 0], np.int64))
    np.testing.assert_array_equal(got, [2 ** 62, -8, 1, -1, 0, 1])
    assert run("pow", np.array([3], np.int8), np.array([5], np.int8))[0] == np.int8(243 - 256)  # wraps
    np.testing.assert_allclose(run("pow", np.array([1.5], F16), np.array([2], np.int32)), [2.25])


def test_maximum_minimum_propagate_nan():
    np.testing.assert_array_equal(run("maximum", f32(1, np.nan, 3), f32(2, 0, np.nan)), f32(2, np.nan, np.nan))
    np.testing.assert_array_equal(run("minimum", np.array([[1], [5]], np.uint8), np.array([3, 4], np.uint8)),
                                  np.array([[1, 1], [3, 4]], np.uint8))


# ---- activations: hand-computed values -------------------------------------------------------
def _np64(fn, x):
    return np.array([fn(float(v)) for v in np.ravel(x)])


def _sig(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def _softplus(v):
    return max(v, 0) + math.log1p(math.exp(-abs(v)))


ACTIVATIONS = [
    ("sigmoid", {}, _sig),
    ("softplus", {}, _softplus),
    ("softsign", {}, lambda v: v / (1 + abs(v))),
    ("elu", {"alpha": 0.7}, lambda v: v if v >= 0 else 0.7 * math.expm1(v)),
    ("selu", {"alpha": 1.5, "gamma": 2.0}, lambda v: 2.0 * (v if v > 0 else 1.5 * math.expm1(v))),
    ("celu", {"alpha": 2.0}, lambda v: max(0, v) + min(0, 2.0 * math.expm1(v / 2.0))),
    ("hard_sigmoid", {"alpha": 0.3, "beta": 0.4}, lambda v: min(1, max(0, 0.3 * v + 0.4))),
    ("hard_swish", {}, lambda v: v * min(1, max(0, v / 6 + 0.5))),
    ("leaky_relu", {"alpha": 0.1}, lambda v: v if v >= 0 else 0.1 * v),
    ("thresholded_relu", {"alpha": 1.5}, lambda v: v if v > 1.5 else 0.0),
    ("relu", {}, lambda v: max(v, 0.0)),
    ("gelu", {}, lambda v: 0.5 * v * math.erfc(-v / math.sqrt(2))),  # = 0.5 v (1 + erf(v / sqrt 2))
    # 0.5 (1 + tanh(u)) = sigmoid(2u), written so that neither side cancels for v << 0
    ("gelu", {"approximate": "tanh"}, lambda v: v * _sig(2 * math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))),
    ("mish", {}, lambda v: v * math.tanh(_softplus(v))),
    ("swish", {"alpha": 1.7}, lambda v: v * _sig(1.7 * v)),
    ("shrink", {"bias": 0.25, "lambd": 1.0}, lambda v: v + 0.25 if v < -1 else v - 0.25 if v > 1 else 0.0),
]


@pytest.mark.parametrize("name,attrs,fn", ACTIVATIONS,
                         ids=[f"{a[0]}{'-' + str(a[1].get('approximate')) if 'approximate' in a[1] else ''}"
                              for a in ACTIVATIONS])
def test_activation_values(name, attrs, fn):
    x = np.concatenate([np.linspace(-8, 8, 321), [-1e-6, 1e-6, -100, 100, 1.5, -1]])
    np.testing.assert_allclose(run(name, x, **attrs), _np64(fn, x), rtol=1e-13, atol=1e-300)
    got32 = run(name, x.astype(np.float32), **attrs)
    assert got32.dtype == np.float32 and np.isfinite(got32).all()  # no overflow at +-100
    # float32 arithmetic inside (alpha * x + beta ...) may cancel near 0: an absolute bound there
    np.testing.assert_allclose(got32, _np64(fn, x.astype(np.float32)), rtol=2e-6, atol=1e-7)
    for half in (F16, BF16):  # computed in float32 and rounded once
        h = x.astype(half)
        got = run(name, h, **attrs)
        assert got.dtype == h.dtype
        np.testing.assert_array_equal(got, _np64(fn, h.astype(np.float32)).astype(np.float32).astype(half))


def test_activation_spot_values():
    assert run("gelu", f32(1))[0] == pytest.approx(0.8413447460685429, rel=1e-7)
    assert run("gelu", f32(1), approximate="tanh")[0] == pytest.approx(0.8411919906082768, rel=1e-7)
    assert run("mish", f32(1))[0] == pytest.approx(0.8650983882673103, rel=1e-7)
    np.testing.assert_array_equal(run("hard_swish", f32(-3, 0, 3, 6)), f32(0, 0, 3, 6))
    np.testing.assert_array_equal(run("sigmoid", f32(-200, 0, 200)), f32(0, 0.5, 1))
    assert run("softplus", f32(-100))[0] == pytest.approx(math.exp(-100), rel=1e-6)
    assert run("elu", np.array([-1e-7], F32))[0] == pytest.approx(math.expm1(-1e-7), rel=1e-6)


def test_prelu_broadcasts_slope():
    x = np.array([[-1, 2], [-3, -4]], np.float32)
    np.testing.assert_array_equal(run("prelu", x, f32(0.5, 0.25)), np.array([[-0.5, 2], [-1.5, -1]], np.float32))
    np.testing.assert_array_equal(run("prelu", np.array([-4, 4], np.int32), np.array([2], np.int32)), [-8, 4])


def test_clip_bounds_and_inverted_bounds():
    x = f32(-5, -1, 0, 1, 5, np.nan)
    np.testing.assert_array_equal(run("clip", x, f32(-2)[0], f32(2)[0]), f32(-2, -1, 0, 1, 2, np.nan))
    np.testing.assert_array_equal(run("clip", x[:5], f32(3)[0], f32(1)[0]), f32(1, 1, 1, 1, 1))  # lo > hi -> hi
    i = np.array([-128, 0, 127], np.int8)
    np.testing.assert_array_equal(run("clip", i, np.int8(-10), np.int8(100)), np.array([-10, 0, 100], np.int8))


# ---- comparisons, logic, bits ------------------------------------------------------------
def test_comparisons_broadcast_and_give_bool():
    a = np.array([[1], [2], [3]], np.int16)
    b = np.array([2, 3], np.int16)
    for name, fn in [("less", np.less), ("less_equal", np.less_equal), ("greater", np.greater),
                     ("greater_equal", np.greater_equal), ("equal", np.equal)]:
        got = run(name, a, b)
        assert got.dtype == np.bool_ and got.shape == (3, 2)
        want = [[fn(int(p), int(q)) for q in b] for p in a[:, 0]]
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(run("less", f32(np.nan), f32(1)), [False])
    s = np.array(["ab", "c", ""], dtype=object)
    np.testing.assert_array_equal(run("equal", s, np.array(["ab", "d", ""], dtype=object)), [True, False, True])


def test_logic_ops_truth_tables():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    np.testing.assert_array_equal(run("logical_and", a, b), [True, False, False, False])
    np.testing.assert_array_equal(run("logical_or", a, b), [True, True, True, False])
    np.testing.assert_array_equal(run("logical_xor", a, b), [False, True, True, False])
    np.testing.assert_array_equal(run("logical_not", a), [False, False, True, True])


def test_bitwise_ops():
    a = np.array([0b1100, 0xFF], np.uint8)
    b = np.array([0b1010, 0x0F], np.uint8)
    np.testing.assert_array_equal(run("bitwise_and", a, b), [0b1000, 0x0F])
    np.testing.assert_array_equal(run("bitwise_or", a, b), [0b1110, 0xFF])
    np.testing.assert_array_equal(run("bitwise_xor", a, b), [0b0110, 0xF0])
    np.testing.assert_array_equal(run("bitwise_not", a), [0xF3, 0x00])
    np.testing.assert_array_equal(run("bitwise_not", np.array([0, -1, 5], np.int32)), [-1, 0, -6])


def test_shifts_follow_onnx_edge_rules():
    x = np.array([-8, 4, -1, 64, 1], np.int8)
    y = np.array([1, -1, 8, 1, 7], np.int8)
    # out-of-range amounts (negative, >= 8 bits) give the sign fill: 0 left, -1/0 right
    np.testing.assert_array_equal(run("shift_left", x, y), np.array([-16, 0, 0, -128, -128], np.int8))
    np.testing.assert_array_equal(run("shift_right", x, y), np.array([-4, 0, -1, 32, 0], np.int8))
    u = np.array([1, 0x80000000, 5], np.uint32)
    s = np.array([31, 31, 32], np.uint32)
    np.testing.assert_array_equal(run("shift_left", u, s), np.array([0x80000000, 0, 0], np.uint32))
    np.testing.assert_array_equal(run("shift_right", u, s), np.array([0, 1, 0], np.uint32))


# ---- where, full_like, dropout -----------------------------------------------------------
def test_where_broadcasts_three_ways():
    c = np.array([[True], [False]])
    got = run("where", c, f32(1, 2, 3), np.float32(9))
    np.testing.assert_array_equal(got, np.array([[1, 2, 3], [9, 9, 9]], np.float32))


def test_full_like():
    x = np.zeros((2, 3), np.float16)
    m = run("full_like", x, value=1.0, dtype=dt.bool_)
    assert m.dtype == np.bool_ and m.shape == (2, 3) and m.all()
    np.testing.assert_array_equal(run("full_like", x, value=2.5), np.full((2, 3), 2.5, np.float16))


def test_dropout_training_and_inference():
    x = np.ones((200, 50), np.float32)
    y, keep = run("dropout", x, np.float32(0.25), np.bool_(True), num_outputs=2, seed=3)
    assert keep.dtype == np.bool_ and 0.70 < keep.mean() < 0.80
    np.testing.assert_allclose(y, np.where(keep, 1 / 0.75, 0), rtol=1e-6)
    y2, keep2 = run("dropout", x, np.float32(0.25), np.bool_(True), num_outputs=2, seed=3)
    np.testing.assert_array_equal(keep, keep2)  # a seed makes it reproducible
    y, keep = run("dropout", x, np.float32(0.25), np.bool_(False), num_outputs=2)
    np.testing.assert_array_equal(y, x)
    assert keep.all()
    assert get_op("dropout").random


# ---- inference -----------------------------------------------------------------------------
def test_inference_broadcasts_symbolic_dims():
    t = infer("add", TensorType(("N", 1, 4), "float32"), TensorType((3, 1), "float32"))
    assert t.shape == ("N", 3, 4) and t.dtype is dt.float32
    assert infer("less", TensorType(("N", 4), "int64"), TensorType(("N", 1), "int64")).shape == ("N", 4)
    assert infer("less", TensorType(("N", 4), "int64"), TensorType(("N", 1), "int64")).dtype is dt.bool_
    assert infer("sigmoid", TensorType(None, "float16")).shape is None
    assert infer("pow", TensorType((2,), "float32"), TensorType((), "int64")).dtype is dt.float32
    t = infer("where", TensorType(("B", 1), "bool"), TensorType((5,), "int8"), TensorType((), "int8"))
    assert t.shape == ("B", 5) and t.dtype is dt.int8
    assert infer("cast", TensorType(("N",), "float32"), to=dt.float8e4m3fn).dtype is dt.float8e4m3fn


def test_inference_errors_name_the_op():
    raises("add", lambda: infer("add", TensorType((2, 3), "float32"), TensorType((4,), "float32")),
           match="do not broadcast")
    raises("add", lambda: infer("add", TensorType((2,), "float32"), TensorType((2,), "float64")),
           match="share one dtype")
    raises("sin", lambda: infer("sin", TensorType((2,), "int32")), match="unsupported dtype")
    raises("bitwise_and", lambda: infer("bitwise_and", TensorType((2,), "float32"), TensorType((2,), "float32")))
    raises("logical_not", lambda: infer("logical_not", TensorType((2,), "int8")))
    raises("where", lambda: infer("where", TensorType((2,), "int8"), TensorType((2,), "float32"),
                                  TensorType((2,), "float32")), match="condition must be bool")
    raises("gelu", lambda: infer("gelu", TensorType((2,), "float32"), approximate="fast"), match="approximate")
    raises("cast", lambda: infer("cast", TensorType((2,), "float32"), to=dt.int8, round_mode="sideways"),
           match="round_mode")
    raises("dropout", lambda: infer("dropout", TensorType((2,), "float32"), TensorType((1,), "float32")),
           match="scalar")
    raises("mod", lambda: infer("mod", TensorType((2,), "float32")), match="inputs")


# ---- scalar formulas agree with references, for every dtype ------------------------------
class _Recorder:
    """NumpyScalar that fails on any method outside the builder interface."""

    def __init__(self):
        self._np = NumpyScalar()

    def __getattr__(self, name):
        assert name in SCALAR_METHODS, f"formula uses {name!r}, which is not a scalar-builder method"
        return getattr(self._np, name)


def _gen(kind, dtype, rng, n=64):
    d = np.dtype(dtype)
    if d.kind == "b":
        return rng.random(n) < 0.5
    if d.kind in "iu":
        lo, hi = {"any": (-20, 20), "nz": (1, 20), "pos": (1, 20), "exp": (0, 5),
                  "shift": (-2, d.itemsize * 8 + 2)}[kind]
        if d.kind == "u":
            lo = max(lo, 0 if kind != "nz" else 1)
        v = rng.integers(lo, hi, n)
        if kind == "nz" and d.kind == "i":
            v = v * rng.choice([-1, 1], n)
        return v.astype(d)
    lo, hi = {"any": (-6, 6), "nz": (0.5, 6), "pos": (0.05, 6), "unit": (-0.95, 0.95), "ge1": (1, 6),
              "exp": (-3, 3), "shift": (-6, 6)}[kind]
    v = rng.uniform(lo, hi, n)
    if kind == "nz":
        v = v * rng.choice([-1, 1], n)
    return v.astype(d)


FL = (F16, BF16, F32, F64)
INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
SINTS = (np.int8, np.int16, np.int32, np.int64)
FORMULAS = [  # op, input domains, dtypes, attrs
    ("add", "any,any", FL + INTS, {}), ("sub", "any,any", FL + INTS, {}), ("mul", "any,any", FL + INTS, {}),
    ("div", "any,nz", FL + INTS, {}), ("mod", "any,nz", FL + INTS, {}), ("mod", "any,nz", FL + INTS, {"fmod": True}),
    ("pow", "pos,exp", FL + (np.int32, np.int64), {}), ("maximum", "any,any", FL + INTS, {}),
    ("minimum", "any,any", FL + INTS, {}), ("neg", "any", FL + SINTS, {}), ("abs", "any", FL + INTS, {}),
    ("sign", "any", FL + INTS, {}), ("reciprocal", "nz", FL, {}),
    ("exp", "any", FL, {}), ("log", "pos", FL, {}), ("sqrt", "pos", FL, {}), ("sin", "any", FL, {}),
    ("cos", "any", FL, {}), ("tan", "unit", FL, {}), ("asin", "unit", FL, {}), ("acos", "unit", FL, {}),
    ("atan", "any", FL, {}), ("sinh", "any", FL, {}), ("cosh", "any", FL, {}), ("asinh", "any", FL, {}),
    ("acosh", "ge1", FL, {}), ("atanh", "unit", FL, {}), ("tanh", "any", FL, {}), ("floor", "any", FL, {}),
    ("ceil", "any", FL, {}), ("round", "any", FL, {}), ("erf", "any", FL, {}), ("isnan", "any", FL, {}),
    ("isinf", "any", FL, {"detect_negative": False}),
    ("relu", "any", FL + SINTS, {}), ("sigmoid", "any", FL, {}), ("leaky_relu", "any", FL, {"alpha": 0.2}),
    ("prelu", "any,any", FL + INTS, {}), ("elu", "any", FL, {"alpha": 0.5}), ("selu", "any", FL, {}),
    ("celu", "any", FL, {"alpha": 1.5}), ("hard_sigmoid", "any", FL, {}), ("hard_swish", "any", FL, {}),
    ("softplus", "any", FL, {}), ("softsign", "any", FL, {}), ("thresholded_relu", "any", FL, {"alpha": 0.5}),
    ("gelu", "any", FL, {}), ("gelu", "any", FL, {"approximate": "tanh"}), ("mish", "any", FL, {}),
    ("swish", "any", FL, {"alpha": 0.7}), ("shrink", "any", FL, {"bias": 0.5, "lambd": 1.0}),
    ("clip", "any,any,any", FL + INTS, {}),
    ("equal", "any,any", FL + INTS + (np.bool_,), {}), ("less", "any,any", FL + INTS, {}),
    ("less_equal", "any,any", FL + INTS, {}), ("greater", "any,any", FL + INTS, {}),
    ("greater_equal", "any,any", FL + INTS, {}),
    ("logical_and", "any,any", (np.bool_,), {}), ("logical_or", "any,any", (np.bool_,), {}),
    ("logical_xor", "any,any", (np.bool_,), {}), ("logical_not", "any", (np.bool_,), {}),
    ("bitwise_and", "any,any", INTS, {}), ("bitwise_or", "any,any", INTS, {}),
    ("bitwise_xor", "any,any", INTS, {}), ("bitwise_not", "any", INTS, {}),
    ("shift_left", "any,shift", INTS, {}), ("shift_right", "any,shift", INTS, {}),
    ("full_like", "any", FL + INTS, {"value": 3.0}),
    ("cast", "any", FL + INTS, {"to": dt.float8e4m3fn}), ("cast", "any", FL + INTS, {"to": dt.int8}),
    ("cast", "any", FL + INTS, {"to": dt.float16}), ("cast", "any", FL, {"to": dt.float8e5m2, "saturate": False}),
]


def _close(dtype):
    return {F16: 2e-3, BF16: 1.6e-2, F32: 2e-6, F64: 1e-12}.get(dtype, 0)


@pytest.mark.parametrize("name,domains,dtypes,attrs", FORMULAS,
                         ids=[f"{f[0]}{'-' + '-'.join(f'{k}={v}' for k, v in f[3].items()) if f[3] else ''}"
                              for f in FORMULAS])
def test_scalar_formula_matches_reference(name, domains, dtypes, attrs):
    op = get_op(name)
    assert op.kind == "elementwise" and callable(op.scalar)
    a = op.normalize_attrs(attrs)
    rng = np.random.default_rng(7)
    for dtype in dtypes:
        xs = [_gen(k, dtype, rng) for k in domains.split(",")]
        if name == "pow":
            xs[1] = xs[1].astype(np.int64 if np.dtype(dtype).kind == "f" else np.float32)
        with np.errstate(all="ignore"):
            want = op.run_reference(xs, a)[0]
            got = np.asarray(op.scalar(_Recorder(), *xs, **a))
        got = np.broadcast_to(got, want.shape)
        assert got.dtype == want.dtype, (dtype, got.dtype, want.dtype)
        if want.dtype.kind in "fV" and want.dtype != np.bool_:
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), equal_nan=True,
                                       rtol=_close(want.dtype.type) or 1e-12, atol=1e-6, err_msg=str(dtype))
        else:
            np.testing.assert_array_equal(got, want, err_msg=str(dtype))


# ---- ONNX converters -----------------------------------------------------------------------
def _onnx_run(nodes, inputs, outputs, feeds, opset, initializers=()):
    m = onnx_model(nodes, inputs, outputs, opset, initializers, ir_version=7 if opset < 15 else 8)
    return irgraph.compile(m).run(**feeds)


def test_onnx_clip_attributes_and_inputs():
    x = f32(-5, 0.5, 5)
    old = _onnx_run([helper.make_node("Clip", ["x"], ["y"], min=-1.0)], [value_info("x", TensorProto.FLOAT, [3])],
                    [value_info("y", TensorProto.FLOAT, [3])], {"x": x}, opset=6)
    np.testing.assert_array_equal(old[0], f32(-1, 0.5, 5))
    new = _onnx_run([helper.make_node("Clip", ["x", "", "hi"], ["y"])],
                    [value_info("x", TensorProto.FLOAT, [3]), value_info("hi", TensorProto.FLOAT, [])],
                    [value_info("y", TensorProto.FLOAT, [3])], {"x": x, "hi": np.float32(2)}, opset=13)
    np.testing.assert_array_equal(new[0], f32(-5, 0.5, 2))


def test_onnx_variadic_ops_become_chains():
    a, b, c = f32(1, 5), f32(3, 2), f32(2, 8)
    ins = [value_info(n, TensorProto.FLOAT, [2]) for n in "abc"]
    feeds = {"a": a, "b": b, "c": c}
    for op_type, want in [("Max", f32(3, 8)), ("Min", f32(1, 2)), ("Sum", f32(6, 15)), ("Mean", f32(2, 5))]:
        got = _onnx_run([helper.make_node(op_type, ["a", "b", "c"], ["y"])], ins,
                        [value_info("y", TensorProto.FLOAT, [2])], feeds, opset=13)
        np.testing.assert_array_equal(got[0], want, err_msg=op_type)
    one = _onnx_run([helper.make_node("Mean", ["a"], ["y"])], ins[:1], [value_info("y", TensorProto.FLOAT, [2])],
                    {"a": a}, opset=13)
    np.testing.assert_array_equal(one[0], a)


def test_onnx_dropout_masks_by_opset():
    x = f32(1, 2, 3)
    got = _onnx_run([helper.make_node("Dropout", ["x"], ["y", "m"], ratio=0.5)], [value_info("x", TensorProto.FLOAT, [3])],
                    [value_info("y", TensorProto.FLOAT, [3]), value_info("m", TensorProto.FLOAT, [3])], {"x": x}, opset=7)
    np.testing.assert_array_equal(got[0], x)
    assert got[1].dtype == np.float32 and (got[1] == 1).all()  # opsets < 10: mask of the input's type
    got = _onnx_run([helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"])],
                    [value_info("x", TensorProto.FLOAT, [3]), value_info("r", TensorProto.FLOAT, []), value_info("t", TensorProto.BOOL, [])],
                    [value_info("y", TensorProto.FLOAT, [3]), value_info("m", TensorProto.BOOL, [3])],
                    {"x": x, "r": np.float32(0.5), "t": np.bool_(False)}, opset=13)
    np.testing.assert_array_equal(got[0], x)
    assert got[1].dtype == np.bool_ and got[1].all()


def test_onnx_cast_forms_and_castlike():
    x = f32(1.9, -1.9)
    got = _onnx_run([helper.make_node("Cast", ["x"], ["y"], to="INT32")], [value_info("x", TensorProto.FLOAT, [2])],
                    [value_info("y", TensorProto.INT32, [2])], {"x": x}, opset=5)
    np.testing.assert_array_equal(got[0], np.array([1, -1], np.int32))
    got = _onnx_run([helper.make_node("CastLike", ["x", "like"], ["y"])],
                    [value_info("x", TensorProto.FLOAT, [2]), value_info("like", TensorProto.INT8, [1])],
                    [value_info("y", TensorProto.INT8, [2])], {"x": x, "like": np.zeros(1, np.int8)}, opset=15)
    np.testing.assert_array_equal(got[0], np.array([1, -1], np.int8))


def test_onnx_legacy_broadcast_with_axis():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = f32(10, 20, 30)
    got = _onnx_run([helper.make_node("Add", ["a", "b"], ["y"], broadcast=1, axis=1)],
                    [value_info("a", TensorProto.FLOAT, [2, 3, 4]), value_info("b", TensorProto.FLOAT, [3])],
                    [value_info("y", TensorProto.FLOAT, [2, 3, 4])], {"a": a, "b": b}, opset=6)
    np.testing.assert_array_equal(got[0], a + b[:, None])


def test_onnx_bitshift_and_mod():
    x = np.array([16, 1], np.uint8)
    y = np.array([2, 3], np.uint8)
    ins = [value_info("x", TensorProto.UINT8, [2]), value_info("s", TensorProto.UINT8, [2])]
    outs = [value_info("y", TensorProto.UINT8, [2])]
    got = _onnx_run([helper.make_node("BitShift", ["x", "s"], ["y"], direction="RIGHT")], ins, outs,
                    {"x": x, "s": y}, opset=11)
    np.testing.assert_array_equal(got[0], [4, 0])
    with pytest.raises(irgraph.IrgraphError, match="direction"):
        _onnx_run([helper.make_node("BitShift", ["x", "s"], ["y"], direction="UP")], ins, outs,
                  {"x": x, "s": y}, opset=11)
    got = _onnx_run([helper.make_node("Mod", ["a", "b"], ["y"], fmod=1)],
                    [value_info("a", TensorProto.INT32, [2]), value_info("b", TensorProto.INT32, [2])],
                    [value_info("y", TensorProto.INT32, [2])],
                    {"a": np.array([-7, 7], np.int32), "b": np.array([3, -3], np.int32)}, opset=13)
    np.testing.assert_array_equal(got[0], [-1, 1])


def test_onnx_activation_defaults_are_onnx_float32_values():
    x = f32(-2.0)
    got = _onnx_run([helper.make_node("Selu", ["x"], ["y"])], [value_info("x", TensorProto.FLOAT, [1])],
                    [value_info("y", TensorProto.FLOAT, [1])], {"x": x}, opset=13)
    alpha, gamma = np.float32(1.67326319217681884765625), np.float32(1.05070102214813232421875)
    assert got[0][0] == pytest.approx(float(gamma) * float(alpha) * math.expm1(-2.0), rel=1e-6)
    assert onnx.defs.get_schema("Selu").attributes["alpha"].default_value.f == float(alpha)
