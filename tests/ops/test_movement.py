"""Data-movement ops: references against independent expectations, inference (static and
symbolic shapes, dtypes), and errors that name the op."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from irgraph import TensorType, run_graph

import oprun
from oprun import ALL, build, i64, is_fresh, onnx_model, raises, run_on, sym

I64_MAX = np.iinfo(np.int64).max
I64_MIN = np.iinfo(np.int64).min
infer = partial(oprun.infer, const=ALL)  # array operands are constants

X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)


# ---- reshape ----------------------------------------------------------------------------
def test_reshape_values_and_zero_copy():
    np.testing.assert_array_equal(run_on("reshape", X, i64(0, -1)), X.reshape(2, 12))
    np.testing.assert_array_equal(run_on("reshape", X, i64(4, 0, 2)), X.reshape(4, 3, 2))
    z = np.zeros((0, 3), np.float32)
    assert run_on("reshape", z, i64(3, 0), attrs={"allowzero": 1}).shape == (3, 0)


def test_reshape_keeps_symbols_it_can_cancel():
    assert infer("reshape", [sym("N", 3, 4), i64(-1, 12)]).shape == ("N", 12)
    assert infer("reshape", [sym("N", 3, 4), i64(0, -1)]).shape == ("N", 12)
    t = infer("reshape", [sym("N", 3, 4), i64(-1, 6)]).shape
    assert t[1] == 6 and is_fresh(t[0], "N")
    assert infer("reshape", [TensorType(None, "float32"), i64(2, -1)]).shape[0] == 2


def test_reshape_errors():
    raises("reshape", lambda: infer("reshape", [sym(2, 3), i64(4, 2)]), "cannot reshape")
    raises("reshape", lambda: infer("reshape", [sym(2, 3), i64(-1, -1)]), "more than one")
    raises("reshape", lambda: infer("reshape", [sym(2, 3), i64(5, -1)]), "cannot reshape")


# ---- transpose ----------------------------------------------------------------------------
def test_transpose():
    y = run_on("transpose", X)
    assert y.shape == (4, 3, 2) and y[3, 2, 1] == X[1, 2, 3]
    y = run_on("transpose", X, attrs={"perm": (1, 2, 0)})
    assert y.shape == (3, 4, 2) and y[2, 3, 1] == X[1, 2, 3]
    assert infer("transpose", [sym("N", 3, "C")], {"perm": (2, 0, 1)}).shape == ("C", "N", 3)
    raises("transpose", lambda: infer("transpose", [sym(2, 3)], {"perm": (0, 0)}), "permutation")


# ---- slice --------------------------------------------------------------------------------
SLICE_CASES = [
    # (starts, ends, axes, steps, the same slice written with python indexing)
    ((0, 1), (2, 3), None, None, np.s_[0:2, 1:3]),
    ((1,), (I64_MAX,), (2,), None, np.s_[:, :, 1:]),
    ((-1,), (I64_MIN,), (-1,), (-1,), np.s_[:, :, ::-1]),
    ((20,), (1000,), (1,), (1,), np.s_[:, 3:3]),
    ((-100,), (2,), (2,), (1,), np.s_[:, :, 0:2]),
    ((3, 2), (0, 0), (2, 1), (-2, -1), np.s_[:, 2:0:-1, 3:0:-2]),
    ((0,), (-1,), (0,), (1,), np.s_[0:1]),
    ((10,), (-10,), (2,), (-3,), np.s_[:, :, 3::-3]),
]


@pytest.mark.parametrize("starts,ends,axes,steps,expect", SLICE_CASES)
def test_slice_matches_python_slicing(starts, ends, axes, steps, expect):
    y = run_on("slice", X, i64(*starts), i64(*ends), None if axes is None else i64(*axes),
            None if steps is None else i64(*steps))
    np.testing.assert_array_equal(y, X[expect])


def test_slice_symbolic_dims():
    t = infer("slice", [sym("N", 5), i64(0, 1), i64(I64_MAX, 3)])
    assert t.shape == ("N", 2)
    t = infer("slice", [sym("N", 5), i64(1), i64(3), i64(0)])
    assert is_fresh(t.shape[0], "N") and t.shape[1] == 5
    t = infer("slice", [sym("N", 5), i64(-1), i64(I64_MIN), i64(0), i64(-1)])
    assert t.shape == ("N", 5)
    # bounds known only at run time: only the sliced axis loses its size
    t = infer("slice", [sym(4, 5), TensorType((1,), "int64"), i64(3), i64(1)])
    assert t.shape[0] == 4 and is_fresh(t.shape[1])


def test_slice_errors():
    raises("slice", lambda: infer("slice", [sym(4), i64(0), i64(2), i64(0), i64(0)]), "steps")
    raises("slice", lambda: infer("slice", [sym(4), i64(0), i64(2), i64(3)]), "out of range")
    raises("slice", lambda: infer("slice", [sym(4), i64(0, 1), i64(2)]), "differ")
    raises("slice", lambda: infer("slice", [sym(4), np.array([0], np.int32), i64(2)]), "int64")


# ---- concat -------------------------------------------------------------------------------
def test_concat_values_and_shapes():
    a, b = np.ones((2, 1), np.int32), np.full((2, 3), 7, np.int32)
    g, (v,), _ = build("concat", [TensorType.of(a), TensorType.of(b)], {"axis": -1})
    y = run_graph(g, [a, b])[0]
    assert v.type.shape == (2, 4)
    assert y.tolist() == [[1, 7, 7, 7], [1, 7, 7, 7]]
    assert infer("concat", [sym("N", 3), sym("N", 4)], {"axis": 1}).shape == ("N", 7)
    t = infer("concat", [sym("N", 3), sym("M", 3)], {"axis": 0})
    assert is_fresh(t.shape[0], "N", "M") and t.shape[1] == 3


def test_concat_errors():
    raises("concat", lambda: infer("concat", [sym(2, 3), sym(3, 3)], {"axis": 1}), "differ")
    raises("concat", lambda: infer("concat", [sym(2, 3), TensorType((2, 3), "int64")], {"axis": 0}), "dtype")
    raises("concat", lambda: infer("concat", [sym(2, 3), sym(2)], {"axis": 0}), "rank")


# ---- split --------------------------------------------------------------------------------
def test_split_sizes_and_equal_parts():
    x = np.arange(10, dtype=np.float32)
    parts = run_on("split", x, i64(2, 0, 8), num_outputs=3)
    assert [p.tolist() for p in parts] == [[0, 1], [], list(range(2, 10))]
    parts = run_on("split", x, attrs={"num_outputs": 4}, num_outputs=4)
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    parts = run_on("split", X, attrs={"axis": -1, "num_outputs": 2}, num_outputs=2)
    np.testing.assert_array_equal(parts[1], X[:, :, 2:])


def test_split_inference():
    ts = infer("split", [sym("N", 6), i64(2, 4)], {"axis": 1}, num_outputs=2)
    assert [t.shape for t in ts] == [("N", 2), ("N", 4)]
    ts = infer("split", [sym("N", 6)], {"num_outputs": 3}, num_outputs=3)
    assert all(is_fresh(t.shape[0], "N") and t.shape[1] == 6 for t in ts)


def test_split_errors():
    raises("split", lambda: infer("split", [sym(6), i64(2, 3)], num_outputs=2), "add up")
    raises("split", lambda: infer("split", [sym(6), i64(3, 3)], num_outputs=3), "outputs")
    raises("split", lambda: infer("split", [sym(6)], num_outputs=2), "num_outputs")
    raises("split", lambda: infer("split", [sym(5)], {"num_outputs": 0}, num_outputs=0), "parts")


def test_split_uneven_parts_take_what_is_left():
    # ceil(5 / 4) = 2 per part: the third part gets the last element and the fourth is empty
    parts = run_on("split", np.arange(5, dtype=np.float32), attrs={"num_outputs": 4}, num_outputs=4)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4], []]


# ---- squeeze / unsqueeze --------------------------------------------------------------------
def test_squeeze():
    x = np.arange(6, dtype=np.float32).reshape(1, 3, 1, 2)
    assert run_on("squeeze", x).shape == (3, 2)
    assert run_on("squeeze", x, i64(-2)).shape == (1, 3, 2)
    assert infer("squeeze", [sym("N", 1, 4), i64(1)]).shape == ("N", 4)
    assert infer("squeeze", [sym("N", 1, 4)]).shape is None  # N may be 1 too
    raises("squeeze", lambda: infer("squeeze", [sym(2, 3), i64(0)]), "cannot squeeze")


def test_unsqueeze():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = run_on("unsqueeze", x, i64(2, 0))
    assert y.shape == (1, 3, 1, 4) and y[0, 2, 0, 3] == x[2, 3]
    assert run_on("unsqueeze", x, i64(-1)).shape == (3, 4, 1)
    assert infer("unsqueeze", [sym("N"), i64(0, 2)]).shape == (1, "N", 1)
    raises("unsqueeze", lambda: infer("unsqueeze", [sym(3), i64(0, 0)]), "repeated")
    raises("unsqueeze", lambda: infer("unsqueeze", [sym(3), i64(5)]), "out of range")


# ---- expand / tile -----------------------------------------------------------------------
def test_expand():
    x = np.array([[1], [2], [3]], np.float32)
    y = run_on("expand", x, i64(2, 1, 4))
    assert y.shape == (2, 3, 4) and (y[1, 2] == 3).all()
    assert run_on("expand", x, i64(1)).shape == (3, 1)  # the target may be smaller
    assert infer("expand", [sym("N", 1), i64(1, 5)]).shape == ("N", 5)
    t = infer("expand", [sym(3, 1), TensorType((3,), "int64")]).shape
    assert t[1] == 3 and is_fresh(t[0]) and is_fresh(t[2])
    raises("expand", lambda: infer("expand", [sym(3, 2), i64(4, 4)]), "broadcast")


def test_tile():
    x = np.array([[1, 2], [3, 4]], np.int32)
    assert run_on("tile", x, i64(1, 2)).tolist() == [[1, 2, 1, 2], [3, 4, 3, 4]]
    assert run_on("tile", x, i64(2, 1)).tolist() == [[1, 2], [3, 4], [1, 2], [3, 4]]
    t = infer("tile", [sym("N", 3, "C"), i64(1, 2, 3)]).shape
    assert t[:2] == ("N", 6) and is_fresh(t[2], "C")
    raises("tile", lambda: infer("tile", [sym(2, 2), i64(2)]), "one entry per")


# ---- ONNX conversions that build several core ops -------------------------------------------
def test_flatten_with_symbolic_dims_uses_shape_arithmetic():
    from onnx import TensorProto, helper
    from irgraph.frontends.onnx.importer import import_model
    node = helper.make_node("Flatten", ["x"], ["y"], axis=2)
    model = onnx_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b", "c", 2])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], 13)
    g = import_model(model)
    assert all(n.op != "flatten" for n in g.nodes) and g.nodes[-1].op == "reshape"
    x = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    np.testing.assert_array_equal(run_graph(g, [x])[0], x.reshape(6, 8))
    # with a static tail the target shape is a constant
    model = onnx_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 3, 4, 2])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], 13)
    g = import_model(model)
    assert [n.op for n in g.nodes] == ["reshape"] and g.outputs[0].type.shape[1] == 8


def test_old_opset_attribute_forms():
    from onnx import TensorProto, helper
    from irgraph.frontends.onnx.importer import import_model
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x1 = x.reshape(2, 1, 3, 1, 4)
    cases = [
        (helper.make_node("Slice", ["x"], ["y"], starts=[1, -1], ends=[3, 0], axes=[1, 2]), 9, x, x[:, 1:3, 3:0]),
        (helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 0, 0, 0], value=2.0), 2, x,
         np.pad(x, [(0, 0), (0, 0), (1, 0)], constant_values=2)),
        (helper.make_node("Squeeze", ["x"], ["y"]), 11, x1, x),
        (helper.make_node("Squeeze", ["x"], ["y"], axes=[-2]), 11, x1, x.reshape(2, 1, 3, 4)),
        (helper.make_node("Unsqueeze", ["x"], ["y"], axes=[0, 4]), 11, x, x[None, :, :, :, None]),
        (helper.make_node("Split", ["x"], ["y", "z"], axis=2, split=[1, 3]), 11, x, x[:, :, :1]),
        (helper.make_node("Split", ["x"], ["y", "z"], axis=2), 11, x, x[:, :, :2]),
        (helper.make_node("Concat", ["x", "x"], ["y"]), 1, x, np.concatenate([x, x], 1)),
        (helper.make_node("Reshape", ["x"], ["y"], shape=[4, -1]), 4, x, x.reshape(4, 6)),
    ]
    for node, opset, inp, want in cases:
        xin = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(inp.shape))
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output]
        g = import_model(onnx_model(node, [xin], outs, opset))
        np.testing.assert_array_equal(run_graph(g, [inp])[0], want, err_msg=node.op_type)
