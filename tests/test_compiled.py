"""CompiledModel's input binding: the exact-signature fast path (numpy arrays of the declared
dtype and static shape) must accept and refuse exactly what the general checks do."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from onnx import TensorProto, helper

import irgraph
from irgraph.compiled import _exact_signature
from irgraph.errors import InputError
from irgraph.types import TensorType

TARGETS = ["interp", "cpu"]


def _static_model(shape=(2, 3)):
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"], name="add"),
                           helper.make_node("Relu", ["c"], ["y"], name="relu")], "m",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(shape)),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _inputs(shape=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]


def test_exact_signature_only_for_static_numeric_inputs():
    assert _exact_signature([TensorType((2, 3), "float32"), TensorType((), "int64")]) == [
        (np.dtype(np.float32), (2, 3)), (np.dtype(np.int64), ())]
    assert _exact_signature([TensorType((2, 3), "float32"), TensorType(("n", 3), "float32")]) is None
    assert _exact_signature([TensorType(None, "float32")]) is None
    assert _exact_signature([TensorType((2,), "string")]) is None


@pytest.mark.parametrize("target", TARGETS)
def test_matching_arrays_run_and_give_fresh_outputs(target):
    model = irgraph.compile(_static_model(), target=target)
    a, b = _inputs()
    y1 = model(a, b)
    np.testing.assert_array_equal(y1, np.maximum(a + b, 0))
    keep = y1.copy()
    y2 = model(b, a)
    assert y2 is not y1 and not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, keep)          # the second call did not write into the first result
    np.testing.assert_array_equal(y2, np.maximum(a + b, 0))


@pytest.mark.parametrize("target", TARGETS)
def test_non_contiguous_and_subclass_inputs(target):
    model = irgraph.compile(_static_model(), target=target)
    a, b = _inputs()
    want = np.maximum(a + b, 0)
    np.testing.assert_array_equal(model(np.asfortranarray(a), b), want)
    wide = np.zeros((2, 6), np.float32)
    wide[:, ::2] = a
    np.testing.assert_array_equal(model(wide[:, ::2], b), want)

    class Sub(np.ndarray):
        pass
    np.testing.assert_array_equal(model(a.view(Sub), b), want)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("call,match", [
    (lambda m, a: m(a), "missing input"),
    (lambda m, a: m(a, a, a), "takes 2 inputs"),
    (lambda m, a: m(a, c=a), "unknown input name 'c'"),
    (lambda m, a: m(a, a.astype(np.float64)), "wrong dtype"),
    (lambda m, a: m(a, a.astype(">f4")), "unsupported array dtype >f4"),
    (lambda m, a: m(a, a[:, :2]), "wrong shape"),
    (lambda m, a: m(a, a.T), "wrong shape"),
    (lambda m, a: m(a, a[0]), "wrong rank"),
    (lambda m, a: m(a, object()), "expected an array"),
])
def test_mismatches_still_raise_naming_the_input(target, call, match):
    model = irgraph.compile(_static_model(), target=target)
    a = np.ones((2, 3), np.float32)
    with pytest.raises(InputError, match=match) as e:
        call(model, a)
    if "input" not in match and "inputs" not in match and "name" not in match:
        assert "input 'b'" in str(e.value)


def test_calls_from_several_python_threads():
    model = irgraph.compile(_static_model((64, 64)), target="cpu")
    pairs = [_inputs((64, 64), seed) for seed in range(8)]
    errors = []

    def work(a, b):
        try:
            for _ in range(50):
                np.testing.assert_array_equal(model(a, b), np.maximum(a + b, 0))
        except Exception as e:           # reported below: a thread's assert does not fail the test
            errors.append(e)
    ts = [threading.Thread(target=work, args=p) for p in pairs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]
