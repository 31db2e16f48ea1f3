"""irgraph.compile: accepts paths, ModelProtos and Graphs; the CompiledModel checks its inputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import irgraph
from irgraph.errors import CompileError, InputError


def _add_model():
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"], name="add"),
                           helper.make_node("Relu", ["c"], ["y"], name="relu")], "m",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_compile_from_proto_path_and_graph(tmp_path):
    m = _add_model()
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    a = np.array([[1, -2, 3]], np.float32)
    b = np.array([[-4, 1, 1]], np.float32)
    for src in (m, str(p), p, irgraph.to_graph(m)):
        model = irgraph.compile(src)
        np.testing.assert_array_equal(model(a, b), np.maximum(a + b, 0))
    assert model.input_names == ["a", "b"] and model.output_names == ["y"]


def test_call_by_name_and_mixed():
    model = irgraph.compile(_add_model())
    a = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(model(b=a, a=a), 2 * a)
    np.testing.assert_array_equal(model(a, b=-a), 0 * a)


def test_array_like_and_dlpack_inputs():
    model = irgraph.compile(_add_model())

    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return np.ones((1, 3), np.float32)

    a = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(model(ArrayLike(), a), 2 * a)

    class DLPackOnly:
        def __init__(self, arr):
            self.arr = arr

        def __dlpack__(self, **kw):
            return self.arr.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.arr.__dlpack_device__()

    np.testing.assert_array_equal(model(DLPackOnly(a), a), 2 * a)


@pytest.mark.parametrize("call,match", [
    (lambda m, a: m(a), "missing input"),
    (lambda m, a: m(a, a, a), "takes 2 inputs"),
    (lambda m, a: m(a, c=a), "unknown input name 'c'"),
    (lambda m, a: m(a, a.astype(np.float64)), "wrong dtype"),
    (lambda m, a: m(a, a[:, :2]), "wrong shape"),
    (lambda m, a: m(a, a[0]), "wrong rank"),
    (lambda m, a: m(a, np.ones((5, 3), np.float32)), "dimension 'n'"),
    (lambda m, a: m(a, object()), "expected an array"),
])
def test_input_errors_are_clear(call, match):
    model = irgraph.compile(_add_model())
    a = np.ones((2, 3), np.float32)
    with pytest.raises(InputError, match=match):
        call(model, a)


def test_dtype_error_names_input_and_suggests_fix():
    model = irgraph.compile(_add_model())
    a = np.ones((2, 3), np.float32)
    with pytest.raises(InputError) as e:
        model(a, a.astype(np.float64))
    assert "input 'b'" in str(e.value) and "float32" in str(e.value) and "astype" in str(e.value)


def test_unknown_target():
    with pytest.raises(CompileError, match="unknown target 'tpu'"):
        irgraph.compile(_add_model(), target="tpu")


def test_not_a_model():
    with pytest.raises(irgraph.IrgraphError, match="cannot compile a dict"):
        irgraph.compile({})
