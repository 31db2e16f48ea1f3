"""Shape ops: shape, size, constant_of_shape, range, eye_like — references, inference, values
known at compile time — and the ONNX Shape/Constant converters that feed them."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from irgraph import TensorType
from irgraph import dtype as dt
from irgraph.errors import ExecutionError, ModelImportError, ShapeError
from irgraph.ops.evaluate import MAX_KNOWN_ELEMENTS
from irgraph.types import is_static_dim

from oprun import build, onnx_model, run, value_info

F32, I64 = dt.float32, dt.int64


def output(op, inputs, attrs=None, const=()):
    """The node's one output Value; as in the importer, its meta holds the value known at compile
    time, if any."""
    return build(op, inputs, attrs, const=const).outputs[0]


# ---- shape / size ------------------------------------------------------------------------------
@pytest.mark.parametrize("start,end,want", [(0, None, (2, 3, 4, 5)), (1, 3, (3, 4)), (-1, None, (5,)),
                                            (-10, 2, (2, 3)), (3, 1, ()), (2, 100, (4, 5))])
def test_shape_slices(start, end, want):
    x = np.zeros((2, 3, 4, 5), np.float32)
    got = run("shape", [x], {"start": start, "end": end})
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.array(want, np.int64))
    y = output("shape", [TensorType((2, 3, 4, 5), F32)], {"start": start, "end": end})
    np.testing.assert_array_equal(y.meta["value"], np.array(want, np.int64))


def test_shape_of_symbolic_input_has_no_value():
    y = output("shape", [TensorType(("n", 3), F32)])
    assert y.type == TensorType((2,), I64) and "value" not in y.meta


def test_size_reference_and_known_value():
    assert run("size", [np.zeros((3, 4, 5), np.float32)]) == 60
    assert run("size", [np.zeros((3, 0), np.float32)]).dtype == np.int64
    y = output("size", [TensorType((6, 7), F32)])
    assert y.type == TensorType((), I64) and int(y.meta["value"]) == 42
    y = output("size", [TensorType(("n", 7), F32)])
    assert "value" not in y.meta


# ---- constant_of_shape -------------------------------------------------------------------------
def test_constant_of_shape_reference():
    got = run("constant_of_shape", [np.array([2, 3], np.int64)])
    assert got.dtype == np.float32 and got.shape == (2, 3) and not got.any()  # default: float32 zero
    got = run("constant_of_shape", [np.array([4], np.int64)], {"value": np.array([7], np.int8)})
    np.testing.assert_array_equal(got, np.array([7, 7, 7, 7], np.int8))
    got = run("constant_of_shape", [np.array([], np.int64)], {"value": np.array([1.5], np.float64)})
    assert got.shape == () and got == 1.5


def test_constant_of_shape_infer_and_values():
    y = output("constant_of_shape", [np.array([2, 0, 3], np.int64)], const=(0,))
    assert y.type == TensorType((2, 0, 3), F32) and y.meta["value"].shape == (2, 0, 3)
    y = output("constant_of_shape", [TensorType((3,), I64)], {"value": np.array([1], np.int32)})
    assert y.type.dtype is dt.int32 and len(y.type.shape) == 3
    assert not any(is_static_dim(d) for d in y.type.shape)
    y = output("constant_of_shape", [TensorType(("r",), I64)])
    assert y.type.shape is None
    # a huge known shape is typed but never materialized at compile time
    y = output("constant_of_shape", [np.array([10 ** 6, 10 ** 6], np.int64)], const=(0,))
    assert y.type.shape == (10 ** 6, 10 ** 6) and "value" not in y.meta


def test_constant_of_shape_errors():
    with pytest.raises(ShapeError, match="negative dimension") as e:
        build("constant_of_shape", [np.array([2, -1], np.int64)], const=(0,))
    assert e.value.op == "constant_of_shape"
    with pytest.raises(ExecutionError, match="negative dimension"):
        run("constant_of_shape", [np.array([2, -1], np.int64)])
    with pytest.raises(ShapeError, match="int64"):
        build("constant_of_shape", [TensorType((2,), dt.int32)])
    with pytest.raises(ShapeError, match="exactly one element"):
        build("constant_of_shape", [TensorType((2,), I64)], {"value": np.array([1, 2], np.float32)})


# ---- range -------------------------------------------------------------------------------------
@pytest.mark.parametrize("start,limit,delta,dtype,want", [
    (3, 9, 3, np.int32, [3, 6]),
    (10, 4, -2, np.int64, [10, 8, 6]),
    (10, 6, -3, np.int32, [10, 7]),
    (1, 5, 2, np.float32, [1, 3]),
    (0, 1, 0.25, np.float64, [0, 0.25, 0.5, 0.75]),
    (5, 1, 1, np.int16, []),
    (-30000, 30000, 20000, np.int16, [-30000, -10000, 10000]),  # i * delta leaves int16
    (1, 5, 2, np.float16, [1, 3]),
])
def test_range_reference(start, limit, delta, dtype, want):
    ins = [np.array(v, dtype) for v in (start, limit, delta)]
    got = run("range", ins)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.array(want, dtype))


def test_range_length_is_ceil_of_the_span():
    for start, limit, delta in [(0.0, 1.0, 0.3), (2.5, -1.0, -0.5), (0.0, 10.0, 3.0)]:
        got = run("range", [np.array(v, np.float64) for v in (start, limit, delta)])
        n = max(int(np.ceil((limit - start) / delta)), 0)
        np.testing.assert_allclose(got, [start + i * delta for i in range(n)])


def test_range_infer_and_known_values():
    ins = [np.array(v, np.int64) for v in (2, 11, 3)]
    y = output("range", ins, const=(0, 1, 2))
    assert y.type == TensorType((3,), I64)
    np.testing.assert_array_equal(y.meta["value"], [2, 5, 8])
    y = output("range", [TensorType((), F32)] * 3)
    assert y.type.dtype is F32 and len(y.type.shape) == 1 and not is_static_dim(y.type.shape[0])
    big = [np.array(v, np.int64) for v in (0, MAX_KNOWN_ELEMENTS * 1000, 1)]
    y = output("range", big, const=(0, 1, 2))
    assert y.type.shape == (MAX_KNOWN_ELEMENTS * 1000,) and "value" not in y.meta


def test_range_errors():
    with pytest.raises(ShapeError, match="delta must not be zero"):
        build("range", [np.array(v, np.int32) for v in (0, 5, 0)], const=(0, 1, 2))
    with pytest.raises(ExecutionError, match="delta must not be zero"):
        run("range", [np.array(v, np.int32) for v in (0, 5, 0)])
    with pytest.raises(ShapeError, match="share one dtype"):
        build("range", [TensorType((), F32), TensorType((), I64), TensorType((), F32)])
    with pytest.raises(ShapeError, match="scalar"):
        build("range", [TensorType((2,), F32), TensorType((), F32), TensorType((), F32)])
    with pytest.raises(ShapeError, match="unsupported dtype"):
        build("range", [TensorType((), dt.bool_)] * 3)


# ---- eye_like ----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [-3, -1, 0, 2, 5])
def test_eye_like_diagonals(k):
    got = run("eye_like", [np.zeros((3, 4), np.int32)], {"k": k})
    want = np.array([[1 if j - i == k else 0 for j in range(4)] for i in range(3)], np.int32)
    np.testing.assert_array_equal(got, want)


def test_eye_like_dtype_and_known_value():
    got = run("eye_like", [np.zeros((2, 2), np.float32)], {"dtype": dt.bool_})
    np.testing.assert_array_equal(got, [[True, False], [False, True]])
    y = output("eye_like", [TensorType((2, 3), F32)], {"k": 1, "dtype": dt.float64})
    assert y.type == TensorType((2, 3), dt.float64)
    np.testing.assert_array_equal(y.meta["value"], [[0, 1, 0], [0, 0, 1]])
    y = output("eye_like", [TensorType(("n", 3), F32)])
    assert y.type == TensorType(("n", 3), F32) and "value" not in y.meta
    with pytest.raises(ShapeError, match="2-D"):
        build("eye_like", [TensorType((2, 2, 2), F32)])


# ---- ONNX converters: Shape, Constant ----------------------------------------------------------
def _import_and_run(node, inputs=(), opset=21):
    from irgraph.frontends.onnx import backend
    ins = [value_info(n, onnx.TensorProto.FLOAT, a.shape) for n, a in zip(node.input, inputs)]
    outs = [value_info(o, onnx.TensorProto.UNDEFINED) for o in node.output]
    return backend.prepare(onnx_model(node, ins, outs, opset)).run(list(inputs))[0]


def test_onnx_shape_start_end_only_from_opset_15():
    x = np.zeros((2, 3, 4), np.float32)
    node = helper.make_node("Shape", ["x"], ["y"], start=1, end=-1)
    np.testing.assert_array_equal(_import_and_run(node, [x], opset=15), [3])
    node = helper.make_node("Shape", ["x"], ["y"])
    np.testing.assert_array_equal(_import_and_run(node, [x], opset=13), [2, 3, 4])


@pytest.mark.parametrize("attr,value,want", [
    ("value", numpy_helper.from_array(np.array([[1, 2]], np.int32)), np.array([[1, 2]], np.int32)),
    ("value_float", 1.5, np.array(1.5, np.float32)),
    ("value_floats", [1.0, 2.5], np.array([1.0, 2.5], np.float32)),
    ("value_int", 7, np.array(7, np.int64)),
    ("value_ints", [3, -4], np.array([3, -4], np.int64)),
    ("value_string", "abc", np.array("abc", dtype=object)),
    ("value_strings", ["a", "bc"], np.array(["a", "bc"], dtype=object)),
])
def test_onnx_constant_value_kinds(attr, value, want):
    got = _import_and_run(helper.make_node("Constant", [], ["y"], **{attr: value}))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def _sparse(values, indices, dims):
    return helper.make_sparse_tensor(numpy_helper.from_array(np.asarray(values), "v"),
                                     numpy_helper.from_array(np.asarray(indices, np.int64), "i"), dims)


def test_onnx_constant_sparse_value():
    coo = _sparse(np.array([5.0, 6.0], np.float32), [[0, 1], [2, 0]], [3, 2])
    got = _import_and_run(helper.make_node("Constant", [], ["y"], sparse_value=coo))
    np.testing.assert_array_equal(got, np.array([[0, 5], [0, 0], [6, 0]], np.float32))
    linear = _sparse(np.array([1, 2], np.int64), [1, 4], [5])
    got = _import_and_run(helper.make_node("Constant", [], ["y"], sparse_value=linear))
    np.testing.assert_array_equal(got, [0, 1, 0, 0, 2])


@pytest.mark.parametrize("indices,dims", [([[0, 2]], [3, 2]), ([[-1, 0]], [3, 2]), ([6], [5]), ([-1], [5])])
def test_onnx_constant_sparse_indices_are_checked(indices, dims):
    sp = _sparse(np.array([1.0], np.float32), indices, dims)
    with pytest.raises(ModelImportError, match="out of range"):
        _import_and_run(helper.make_node("Constant", [], ["y"], sparse_value=sp))
