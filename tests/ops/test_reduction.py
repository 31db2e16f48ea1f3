"""Reductions, arg-reductions, cumulative scans and the softmax family: references against
independent expectations, inference (static, symbolic and run-time axes), errors naming the
op, decompositions, and the ONNX converters' opset variants."""
from __future__ import annotations

from functools import partial

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

from irgraph import TensorType, run_graph
from irgraph import dtype as dt
from irgraph.ops.registry import get_op

import oprun
from oprun import ALL, build, i64, onnx_run, raises, run_on

infer = partial(oprun.infer, const=ALL)  # array operands are constants


def run_decomposed(op, x, attrs=None):
    """Run the op's decomposition (only primitives) on ``x``."""
    return run_on(op, x, attrs=attrs, decompose=True)


X = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 10], [11, 12]]], np.float32)  # (3, 2, 2)


# ---- reduce_* references ----------------------------------------------------------------------
def test_reduce_values_by_hand():
    np.testing.assert_array_equal(run_on("reduce_sum", X, i64(1), attrs={"keepdims": 0}),
                                  [[4, 6], [12, 14], [20, 22]])
    np.testing.assert_array_equal(run_on("reduce_mean", X, i64(-1)), [[[1.5], [3.5]], [[5.5], [7.5]], [[9.5], [11.5]]])
    np.testing.assert_array_equal(run_on("reduce_max", X, i64(0, 2), attrs={"keepdims": 0}), [10, 12])
    np.testing.assert_array_equal(run_on("reduce_min", X, i64(0, 2), attrs={"keepdims": 0}), [1, 3])
    np.testing.assert_array_equal(run_on("reduce_prod", X[:, :, :1], i64(0), attrs={"keepdims": 0}),
                                  [[1 * 5 * 9], [3 * 7 * 11]])


def test_reduce_without_axes_reduces_everything():
    assert run_on("reduce_sum", X).shape == (1, 1, 1)
    assert run_on("reduce_sum", X)[0, 0, 0] == 78
    r = run_on("reduce_max", X, attrs={"keepdims": 0})
    assert r.shape == () and r == 12
    # an empty axes tensor means "all axes" too …
    assert run_on("reduce_sum", X, np.zeros(0, np.int64), attrs={"keepdims": 0}) == 78


def test_reduce_noop_with_empty_axes_returns_input():
    # … unless noop_with_empty_axes is set
    np.testing.assert_array_equal(run_on("reduce_sum", X, np.zeros(0, np.int64),
                                      attrs={"noop_with_empty_axes": 1}), X)
    np.testing.assert_array_equal(run_on("reduce_min", X, attrs={"noop_with_empty_axes": 1}), X)


def test_reduce_empty_set_gives_identity():
    e = np.zeros((2, 0, 4), np.float32)
    for op, want in [("reduce_sum", 0.0), ("reduce_prod", 1.0), ("reduce_max", -np.inf), ("reduce_min", np.inf)]:
        r = run_on(op, e, i64(1))
        assert r.shape == (2, 1, 4)
        assert np.all(r == want), op
    assert np.all(np.isnan(run_on("reduce_mean", e, i64(1))))
    assert not run_on("reduce_max", np.zeros((2, 0), bool), i64(1)).any()
    assert run_on("reduce_min", np.zeros((2, 0), bool), i64(1)).all()
    assert np.all(run_on("reduce_max", np.zeros((3, 0), np.int32), i64(1)) == np.iinfo(np.int32).min)
    # a zero-size axis that is not reduced stays zero-size
    assert run_on("reduce_sum", np.zeros((0, 3), np.float32), i64(1)).shape == (0, 1)


def test_reduce_bool_max_min():
    b = np.array([[True, False], [False, False], [True, True]])
    np.testing.assert_array_equal(run_on("reduce_max", b, i64(1), attrs={"keepdims": 0}), [True, False, True])
    np.testing.assert_array_equal(run_on("reduce_min", b, i64(1), attrs={"keepdims": 0}), [False, False, True])


def test_reduce_nan_propagates_through_max():
    x = np.array([[1, np.nan, 3], [1, 2, 3]], np.float32)
    r = run_on("reduce_max", x, i64(1), attrs={"keepdims": 0})
    assert np.isnan(r[0]) and r[1] == 3


def test_reduce_integer_dtypes_are_kept():
    x = np.full((4,), 2 ** 30, np.int32)
    r = run_on("reduce_sum", x, attrs={"keepdims": 0})
    assert r.dtype == np.int32 and r == np.int32(0)  # 2**32 wraps, as int32 arithmetic does
    u = np.full((3,), 200, np.uint8)
    assert run_on("reduce_sum", u, attrs={"keepdims": 0}) == (600 % 256)
    # integer mean truncates toward zero
    np.testing.assert_array_equal(run_on("reduce_mean", np.array([[-3, 0], [3, 4]], np.int64), i64(1),
                                      attrs={"keepdims": 0}), [-1, 3])


def test_low_precision_sums_accumulate_in_float32():
    # a bfloat16 accumulator stalls at 256 when adding 0.5s (its ulp there is 2)
    x = np.full((1000,), 0.5, ml_dtypes.bfloat16)
    r = run_on("reduce_sum", x, attrs={"keepdims": 0})
    assert r.dtype == ml_dtypes.bfloat16 and float(r) == 500.0
    h = np.full((5000,), 0.1, np.float16)
    assert abs(float(run_on("reduce_mean", h, attrs={"keepdims": 0})) - 0.1) < 1e-3
    assert abs(float(run_on("reduce_sum", h, attrs={"keepdims": 0})) - 500) < 1


# ---- reduce_* inference ------------------------------------------------------------------------
def test_reduce_inference_with_known_axes():
    t = TensorType(("N", 3, 4), "float32")
    assert infer("reduce_sum", [t, i64(1)]).shape == ("N", 1, 4)
    assert infer("reduce_sum", [t, i64(-1, 0)], {"keepdims": 0}).shape == (3,)
    assert infer("reduce_max", [t]).shape == (1, 1, 1)
    assert infer("reduce_max", [t], {"noop_with_empty_axes": 1}).shape == ("N", 3, 4)
    assert infer("reduce_mean", [TensorType(None, "float16"), i64(0)]).shape is None
    assert infer("reduce_min", [TensorType((2,), "bool"), i64(0)]).dtype.name == "bool"


def test_reduce_inference_with_runtime_axes():
    t = TensorType((5, 1, 4), "float32")
    k = infer("reduce_sum", [t, TensorType((2,), "int64")])
    # each dim may or may not be reduced: unknown, except that a 1 stays 1
    assert len(k.shape) == 3 and k.shape[1] == 1
    assert isinstance(k.shape[0], str) and isinstance(k.shape[2], str)
    nk = infer("reduce_sum", [t, TensorType((2,), "int64")], {"keepdims": 0})
    assert len(nk.shape) == 1 and isinstance(nk.shape[0], str)
    assert infer("reduce_sum", [t, TensorType(("n",), "int64")], {"keepdims": 0}).shape is None
    assert infer("reduce_sum", [t, TensorType((0,), "int64")], {"keepdims": 0}).shape == ()
    assert infer("reduce_sum", [t, TensorType((0,), "int64")],
                 {"keepdims": 0, "noop_with_empty_axes": 1}).shape == (5, 1, 4)


def test_reduce_errors_name_the_op():
    t = TensorType((2, 3), "float32")
    raises("reduce_sum", lambda: infer("reduce_sum", [t, i64(2)]), "out of range")
    raises("reduce_sum", lambda: infer("reduce_sum", [t, i64(1, -1)]), "repeated")
    raises("reduce_mean", lambda: infer("reduce_mean", [t, np.array([0], np.int32)]), "int64")
    raises("reduce_sum", lambda: infer("reduce_sum", [TensorType((2,), "bool")]), "dtype")
    raises("reduce_max", lambda: infer("reduce_max", [t, TensorType((3,), "int64")], {"keepdims": 0}),
           "3 axes")


def test_reduction_combine_formulas_and_identities():
    from irgraph.ops.reduction import REDUCTION_IDENTITY
    from irgraph.ops.scalar import NumpyScalar
    b = NumpyScalar()
    x = np.array([3.0, -1.0, 2.0], np.float32)
    for op, want in [("reduce_sum", 4.0), ("reduce_prod", -6.0), ("reduce_max", 3.0), ("reduce_min", -1.0)]:
        acc = np.float32(REDUCTION_IDENTITY[op](dt.float32))
        for v in x:
            acc = get_op(op).scalar(b, acc, v)
        assert acc == want, op
        assert get_op(op).kind == "reduction"


# ---- argmax / argmin -------------------------------------------------------------------------------
def test_argmax_argmin_ties_and_last_index():
    x = np.array([[2, 7, 7], [5, 1, 5]], np.float32)
    np.testing.assert_array_equal(run_on("argmax", x, attrs={"axis": 1, "keepdims": 0}), [1, 0])
    np.testing.assert_array_equal(run_on("argmax", x, attrs={"axis": 1, "keepdims": 0, "select_last_index": 1}), [2, 2])
    np.testing.assert_array_equal(run_on("argmin", x, attrs={"axis": 0}), [[0, 1, 1]])
    np.testing.assert_array_equal(run_on("argmin", np.array([3, 1, 1, 2], np.int32),
                                      attrs={"select_last_index": 1}), [2])
    r = run_on("argmax", X, attrs={"axis": -1})
    assert r.dtype == np.int64 and r.shape == (3, 2, 1) and np.all(r == 1)


def test_argmax_inference_and_errors():
    t = TensorType(("N", 4, 0), "float32")
    assert infer("argmax", [t], {"axis": 1, "keepdims": 0}).shape == ("N", 0)
    assert infer("argmin", [t], {"axis": -2}).shape == ("N", 1, 0)
    raises("argmax", lambda: infer("argmax", [t], {"axis": 3}), "out of range")
    raises("argmax", lambda: infer("argmax", [t], {"axis": 2}), "size 0")
    raises("argmin", lambda: infer("argmin", [TensorType((3,), "bool")]), "dtype")


# ---- cumsum / cumprod ---------------------------------------------------------------------------
def _loop_scan(x, axis, combine, identity, exclusive, reverse):
    """An independent, element-by-element cumulative scan."""
    x = np.moveaxis(x, axis, 0)
    out = np.empty_like(x)
    order = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    acc = np.full(x.shape[1:], identity, x.dtype)
    for i in order:
        if exclusive:
            out[i] = acc
            acc = combine(acc, x[i])
        else:
            acc = combine(acc, x[i])
            out[i] = acc
    return np.moveaxis(out, 0, axis)


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum_cumprod_against_loops(exclusive, reverse):
    rng = np.random.default_rng(1)
    x = rng.integers(1, 4, size=(3, 4, 2)).astype(np.float64)
    attrs = {"exclusive": exclusive, "reverse": reverse}
    for axis in (0, 1, -1):
        np.testing.assert_array_equal(run_on("cumsum", x, np.array(axis, np.int32), attrs=attrs),
                                      _loop_scan(x, axis, np.add, 0, exclusive, reverse))
        np.testing.assert_array_equal(run_on("cumprod", x, i64(axis), attrs=attrs),
                                      _loop_scan(x, axis, np.multiply, 1, exclusive, reverse))


def test_cumsum_keeps_int_dtype_and_handles_runtime_axis():
    x = np.array([1, 2, 3], np.int32)
    g, outs, _ = build("cumsum", [TensorType.of(x), TensorType((), "int64")], {"exclusive": 1})
    assert outs[0].type == TensorType((3,), "int32")
    r = run_graph(g, [x, np.array(0, np.int64)])[0]
    assert r.dtype == np.int32
    np.testing.assert_array_equal(r, [0, 1, 3])


def test_cumsum_errors():
    t = TensorType((2, 3), "float32")
    raises("cumsum", lambda: infer("cumsum", [t, np.array(2, np.int64)]), "out of range")
    raises("cumprod", lambda: infer("cumprod", [t, np.array([0, 1], np.int64)]), "scalar")
    raises("cumsum", lambda: infer("cumsum", [t, np.array(0.0, np.float32)]), "scalar")


# ---- softmax family -------------------------------------------------------------------------------
def _softmax64(x, axis):
    e = np.exp(x.astype(np.float64))
    return e / e.sum(axis=axis, keepdims=True)


def test_softmax_log_softmax_against_float64():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    for axis in (0, 1, -1):
        want = _softmax64(x, axis)
        np.testing.assert_allclose(run_on("softmax", x, attrs={"axis": axis}), want, rtol=1e-6)
        np.testing.assert_allclose(run_on("log_softmax", x, attrs={"axis": axis}), np.log(want), rtol=1e-5, atol=1e-6)


def test_softmax_is_stable_for_large_inputs():
    x = np.array([[1000, 1001, 1002], [-1000, -1000, -1000]], np.float32)
    y = run_on("softmax", x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(run_on("log_softmax", x)[0], np.log(_softmax64(x[:1] - 1000, -1)[0]), rtol=1e-5)


def test_softmax_decompositions_match_references():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2, 3, 4)) * 10).astype(np.float32)
    for op in ("softmax", "log_softmax"):
        for axis in (0, -1):
            np.testing.assert_allclose(run_decomposed(op, x, {"axis": axis}), run_on(op, x, attrs={"axis": axis}),
                                       rtol=1e-5, atol=1e-6)


def test_softmax_of_empty_tensor_is_empty():
    e = np.zeros((0, 3), np.float32)
    assert run_on("softmax", e).shape == (0, 3)
    assert run_on("log_softmax", np.zeros((2, 0), np.float32)).shape == (2, 0)


def test_hardmax_marks_first_maximum():
    x = np.array([[3, 1, 3, 2], [0, 0, 0, 0], [-1, 5, 2, 5]], np.float32)
    np.testing.assert_array_equal(run_on("hardmax", x), [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(run_on("hardmax", x, attrs={"axis": 0}), [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]])
    assert run_on("hardmax", np.zeros((2, 0), np.float32)).shape == (2, 0)


def test_softmax_family_inference_and_errors():
    t = TensorType(("B", 7), "float16")
    assert infer("softmax", [t]) == t
    assert infer("log_softmax", [t], {"axis": 0}) == t
    raises("softmax", lambda: infer("softmax", [TensorType((2, 3), "int32")]), "dtype")
    raises("hardmax", lambda: infer("hardmax", [t], {"axis": 2}), "out of range")


# ---- ONNX converters ------------------------------------------------------------------------------
def test_onnx_reduce_attribute_axes_in_old_opsets():
    node = helper.make_node("ReduceSum", ["x"], ["y"], axes=[0, 2], keepdims=0)
    (y,) = onnx_run(node, {"x": X}, opset=11)
    np.testing.assert_array_equal(y, X.sum(axis=(0, 2)))
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1])
    (y,) = onnx_run(node, {"x": X}, opset=13)
    np.testing.assert_array_equal(y, X.mean(axis=-1, keepdims=True))


def test_onnx_composed_reductions():
    x = np.array([[3, -4, 0], [1, 2, 2]], np.float32)
    cases = {"ReduceL1": np.abs(x).sum(1), "ReduceL2": np.sqrt((x * x).sum(1)),
             "ReduceSumSquare": (x * x).sum(1), "ReduceLogSum": np.log(np.abs(x).sum(1)),
             "ReduceLogSumExp": np.log(np.exp(x.astype(np.float64)).sum(1))}
    for op, want in cases.items():
        xin = np.abs(x) if op == "ReduceLogSum" else x
        node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)
        (y,) = onnx_run(node, {"x": xin, "axes": i64(1)}, opset=18)
        np.testing.assert_allclose(y, want, rtol=1e-6, err_msg=op)


def test_onnx_log_sum_exp_edge_rows():
    x = np.array([[-np.inf, -np.inf], [np.inf, 0], [1000, 1000]], np.float32)
    node = helper.make_node("ReduceLogSumExp", ["x"], ["y"], axes=[1], keepdims=0)
    (y,) = onnx_run(node, {"x": x}, opset=13)
    assert y[0] == -np.inf and y[1] == np.inf
    np.testing.assert_allclose(y[2], 1000 + np.log(2), rtol=1e-6)


def test_onnx_softmax_before_opset_13_coerces_to_2d():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    node = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    (y,) = onnx_run(node, {"x": x}, opset=11)
    # one softmax over the 12 values of each batch row
    want = _softmax64(x.reshape(2, 12), 1).reshape(2, 3, 4)
    np.testing.assert_allclose(y, want, rtol=1e-6)
    node = helper.make_node("Hardmax", ["x"], ["y"], axis=0)
    (y,) = onnx_run(node, {"x": x}, opset=11)
    assert y.sum() == 1 and y.reshape(-1)[np.argmax(x)] == 1
    node = helper.make_node("Softmax", ["x"], ["y"], axis=3)  # axis == rank: a [N, 1] view
    (y,) = onnx_run(node, {"x": x}, opset=11)
    np.testing.assert_array_equal(y, np.ones_like(x))
    node = helper.make_node("LogSoftmax", ["x"], ["y"])  # default axis 1
    (y,) = onnx_run(node, {"x": x}, opset=9)
    np.testing.assert_allclose(y, np.log(want), rtol=1e-5, atol=1e-6)


def test_onnx_argmax_and_cumsum():
    x = np.array([[1, 5, 5], [7, 0, 7]], np.float32)
    node = helper.make_node("ArgMax", ["x"], ["y"], axis=1, select_last_index=1)
    (y,) = onnx_run(node, {"x": x}, opset=12, out_dtype=TensorProto.INT64)
    np.testing.assert_array_equal(y, [[2], [2]])
    node = helper.make_node("CumSum", ["x", "a"], ["y"], reverse=1)
    (y,) = onnx_run(node, {"x": x, "a": np.array(1, np.int32)}, opset=11)
    np.testing.assert_array_equal(y, [[11, 10, 5], [14, 7, 7]])
