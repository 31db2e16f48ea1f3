"""Data-movement ops: references against independent expectations, inference (static and
symbolic shapes, dtypes), and errors that name the op."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import irgraph
from irgraph import Graph, ShapeError, TensorType, run_graph
from irgraph.types import is_static_dim

I64_MAX = np.iinfo(np.int64).max
I64_MIN = np.iinfo(np.int64).min


def _build(op, inputs, attrs=None, num_outputs=None):
    """A graph with one node: arrays become constants, TensorTypes graph inputs, None is absent."""
    g = Graph()
    vals = []
    for i, x in enumerate(inputs):
        if x is None:
            vals.append(None)
        elif isinstance(x, TensorType):
            vals.append(g.add_input(f"in{i}", x))
        else:
            vals.append(g.add_const(np.asarray(x), f"c{i}"))
    res = g.op(op, vals, attrs or {}, num_outputs=num_outputs)
    outs = list(res) if isinstance(res, tuple) else [res]
    g.set_outputs(outs)
    return g, outs


def infer(op, inputs, attrs=None, num_outputs=None):
    _, outs = _build(op, inputs, attrs, num_outputs)
    return [v.type for v in outs] if len(outs) > 1 or num_outputs else outs[0].type


def run(op, x, *params, attrs=None, num_outputs=None):
    """Run ``op`` with ``x`` as a graph input (static shape) and ``params`` as constants.

    The interpreter checks the result against the inferred type, so this checks inference too.
    """
    x = np.asarray(x)
    g, outs = _build(op, [TensorType.of(x)] + list(params), attrs, num_outputs)
    res = run_graph(g, [x])
    for v, r in zip(outs, res):
        assert v.type.shape == r.shape and v.type.dtype.np == r.dtype
    return res if len(res) > 1 or num_outputs else res[0]


def i64(*v):
    return np.array(v, dtype=np.int64)


def sym(*dims):
    return TensorType(dims, "float32")


def is_fresh(d, *not_these):
    return isinstance(d, str) and d not in not_these


def raises(op_name, fn, match=None):
    with pytest.raises(ShapeError, match=match) as e:
        fn()
    assert e.value.op == op_name, f"error does not name the op: {e.value}"
    return e.value


X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)


# ---- reshape ----------------------------------------------------------------------------
def test_reshape_values_and_zero_copy():
    np.testing.assert_array_equal(run("reshape", X, i64(0, -1)), X.reshape(2, 12))
    np.testing.assert_array_equal(run("reshape", X, i64(4, 0, 2)), X.reshape(4, 3, 2))
    z = np.zeros((0, 3), np.float32)
    assert run("reshape", z, i64(3, 0), attrs={"allowzero": 1}).shape == (3, 0)


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
    y = run("transpose", X)
    assert y.shape == (4, 3, 2) and y[3, 2, 1] == X[1, 2, 3]
    y = run("transpose", X, attrs={"perm": (1, 2, 0)})
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
    y = run("slice", X, i64(*starts), i64(*ends), None if axes is None else i64(*axes),
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
    g, (v,) = _build("concat", [TensorType.of(a), TensorType.of(b)], {"axis": -1})
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
    parts = run("split", x, i64(2, 0, 8), num_outputs=3)
    assert [p.tolist() for p in parts] == [[0, 1], [], list(range(2, 10))]
    parts = run("split", x, attrs={"num_outputs": 4}, num_outputs=4)
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    parts = run("split", X, attrs={"axis": -1, "num_outputs": 2}, num_outputs=2)
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
    parts = run("split", np.arange(5, dtype=np.float32), attrs={"num_outputs": 4}, num_outputs=4)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4], []]


# ---- squeeze / unsqueeze --------------------------------------------------------------------
def test_squeeze():
    x = np.arange(6, dtype=np.float32).reshape(1, 3, 1, 2)
    assert run("squeeze", x).shape == (3, 2)
    assert run("squeeze", x, i64(-2)).shape == (1, 3, 2)
    assert infer("squeeze", [sym("N", 1, 4), i64(1)]).shape == ("N", 4)
    assert infer("squeeze", [sym("N", 1, 4)]).shape is None  # N may be 1 too
    raises("squeeze", lambda: infer("squeeze", [sym(2, 3), i64(0)]), "cannot squeeze")


def test_unsqueeze():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = run("unsqueeze", x, i64(2, 0))
    assert y.shape == (1, 3, 1, 4) and y[0, 2, 0, 3] == x[2, 3]
    assert run("unsqueeze", x, i64(-1)).shape == (3, 4, 1)
    assert infer("unsqueeze", [sym("N"), i64(0, 2)]).shape == (1, "N", 1)
    raises("unsqueeze", lambda: infer("unsqueeze", [sym(3), i64(0, 0)]), "repeated")
    raises("unsqueeze", lambda: infer("unsqueeze", [sym(3), i64(5)]), "out of range")


# ---- pad ----------------------------------------------------------------------------------
def test_pad_modes_by_hand():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    pads = i64(0, 2, 0, 1)  # two before and one after along axis 1
    assert run("pad", x, pads, np.float32(9)).tolist() == [[9, 9, 1, 2, 3, 9], [9, 9, 4, 5, 6, 9]]
    assert run("pad", x, pads, attrs={"mode": "reflect"}).tolist() == [[3, 2, 1, 2, 3, 2], [6, 5, 4, 5, 6, 5]]
    assert run("pad", x, pads, attrs={"mode": "edge"}).tolist() == [[1, 1, 1, 2, 3, 3], [4, 4, 4, 5, 6, 6]]
    assert run("pad", x, pads, attrs={"mode": "wrap"}).tolist() == [[2, 3, 1, 2, 3, 1], [5, 6, 4, 5, 6, 4]]


def test_pad_axes_negative_pads_and_dtypes():
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    y = run("pad", x, i64(1, -1), None, i64(-1))  # one before, crop one at the end, along axis 1
    assert y.tolist() == [[0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10]]
    b = np.array([True, False])
    assert run("pad", b, i64(1, 0)).tolist() == [False, True, False]


def test_pad_inference_and_errors():
    assert infer("pad", [sym("N", 4), i64(0, 1, 0, 2)]).shape == ("N", 7)
    t = infer("pad", [sym("N", 4), i64(1, 0, 0, 0)]).shape
    assert is_fresh(t[0], "N") and t[1] == 4
    raises("pad", lambda: infer("pad", [sym(2, 3), i64(0, 1)]), "per padded axis")
    raises("pad", lambda: infer("pad", [sym(2), i64(-2, -1)]), "remove more")
    raises("pad", lambda: infer("pad", [sym(2), i64(1, 1)], {"mode": "mirror"}), "mode")
    raises("pad", lambda: infer("pad", [sym(2), i64(1, 1), np.float64(1)]), "dtype")


# ---- expand / tile -----------------------------------------------------------------------
def test_expand():
    x = np.array([[1], [2], [3]], np.float32)
    y = run("expand", x, i64(2, 1, 4))
    assert y.shape == (2, 3, 4) and (y[1, 2] == 3).all()
    assert run("expand", x, i64(1)).shape == (3, 1)  # the target may be smaller
    assert infer("expand", [sym("N", 1), i64(1, 5)]).shape == ("N", 5)
    t = infer("expand", [sym(3, 1), TensorType((3,), "int64")]).shape
    assert t[1] == 3 and is_fresh(t[0]) and is_fresh(t[2])
    raises("expand", lambda: infer("expand", [sym(3, 2), i64(4, 4)]), "broadcast")


def test_tile():
    x = np.array([[1, 2], [3, 4]], np.int32)
    assert run("tile", x, i64(1, 2)).tolist() == [[1, 2, 1, 2], [3, 4, 3, 4]]
    assert run("tile", x, i64(2, 1)).tolist() == [[1, 2], [3, 4], [1, 2], [3, 4]]
    t = infer("tile", [sym("N", 3, "C"), i64(1, 2, 3)]).shape
    assert t[:2] == ("N", 6) and is_fresh(t[2], "C")
    raises("tile", lambda: infer("tile", [sym(2, 2), i64(2)]), "one entry per")


# ---- depth_to_space / space_to_depth -------------------------------------------------------
def _d2s_loops(x, bs, mode):
    n, c, h, w = x.shape
    oc = c // (bs * bs)
    y = np.empty((n, oc, h * bs, w * bs), x.dtype)
    for ci, i, j, yy, xx in itertools.product(range(oc), range(bs), range(bs), range(h), range(w)):
        src = (i * bs + j) * oc + ci if mode == "DCR" else ci * bs * bs + i * bs + j
        y[:, ci, yy * bs + i, xx * bs + j] = x[:, src, yy, xx]
    return y


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_and_back(mode):
    x = np.arange(2 * 8 * 2 * 3, dtype=np.float32).reshape(2, 8, 2, 3)
    y = run("depth_to_space", x, attrs={"blocksize": 2, "mode": mode})
    np.testing.assert_array_equal(y, _d2s_loops(x, 2, mode))
    back = run("space_to_depth", y, attrs={"blocksize": 2, "mode": mode})
    np.testing.assert_array_equal(back, x)


def test_block_ops_inference_and_errors():
    assert infer("depth_to_space", [sym("N", 12, 3, 5)], {"blocksize": 2}).shape == ("N", 3, 6, 10)
    assert infer("space_to_depth", [sym("N", 3, 4, 6)], {"blocksize": 2}).shape == ("N", 12, 2, 3)
    raises("depth_to_space", lambda: infer("depth_to_space", [sym(1, 6, 2, 2)], {"blocksize": 2}), "multiple")
    raises("space_to_depth", lambda: infer("space_to_depth", [sym(1, 1, 3, 4)], {"blocksize": 2}), "multiple")
    raises("depth_to_space", lambda: infer("depth_to_space", [sym(1, 4, 2, 2)],
                                           {"blocksize": 2, "mode": "RCD"}), "mode")


# ---- reverse_sequence --------------------------------------------------------------------
def test_reverse_sequence_spec_example():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    y = run("reverse_sequence", x, i64(1, 2, 3, 4), attrs={"batch_axis": 0, "time_axis": 1})
    assert y.tolist() == [[0, 1, 2, 3], [5, 4, 6, 7], [10, 9, 8, 11], [15, 14, 13, 12]]
    y = run("reverse_sequence", x.T.copy(), i64(1, 2, 3, 4))  # time on axis 0, batch on axis 1
    assert y.T.tolist() == [[0, 1, 2, 3], [5, 4, 6, 7], [10, 9, 8, 11], [15, 14, 13, 12]]


def test_reverse_sequence_errors():
    raises("reverse_sequence", lambda: infer("reverse_sequence", [sym(3, 4), i64(1, 2)]), "one length")
    raises("reverse_sequence", lambda: infer("reverse_sequence", [sym(3, 4), i64(1, 2, 3)],
                                             {"batch_axis": 0, "time_axis": 0}), "differ")


# ---- trilu --------------------------------------------------------------------------------
@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [-7, -1, 0, 2, 9])
def test_trilu_against_index_test(upper, k):
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5) + 1
    y = run("trilu", x, np.array(k, np.int64), attrs={"upper": upper})
    for b, i, j in itertools.product(range(2), range(3), range(5)):
        keep = (j - i >= k) if upper else (j - i <= k)
        assert y[b, i, j] == (x[b, i, j] if keep else 0)


def test_trilu_errors():
    raises("trilu", lambda: infer("trilu", [sym(3)]), "rank")
    raises("trilu", lambda: infer("trilu", [sym(3, 3), np.array([1, 2], np.int64)]), "one int64")


# ---- col2im -------------------------------------------------------------------------------
def _col2im_loops(x, image, block, dil, strides, pads):
    n, ck, _ = x.shape
    c = ck // int(np.prod(block))
    padded = [s + pads[i] + pads[i + len(image)] for i, s in enumerate(image)]
    counts = [(padded[i] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(len(image))]
    y = np.zeros((n, c) + tuple(padded), x.dtype)
    for l, pos in enumerate(itertools.product(*[range(m) for m in counts])):
        for k, off in enumerate(itertools.product(*[range(b) for b in block])):
            at = tuple(pos[i] * strides[i] + off[i] * dil[i] for i in range(len(image)))
            for ci in range(c):
                y[(slice(None), ci) + at] += x[:, ci * int(np.prod(block)) + k, l]
    return y[(slice(None), slice(None)) + tuple(slice(pads[i], pads[i] + s) for i, s in enumerate(image))]


@pytest.mark.parametrize("image,block,dil,strides,pads", [
    ((5, 5), (2, 2), (1, 1), (1, 1), (0, 0, 0, 0)),
    ((5, 6), (2, 3), (1, 1), (2, 1), (1, 0, 1, 2)),
    ((6, 5), (2, 2), (2, 1), (1, 2), (0, 1, 0, 1)),
    ((4, 3, 5), (2, 1, 2), (1, 1, 1), (1, 1, 2), (0, 0, 0, 0, 0, 0)),
])
def test_col2im_against_loops(image, block, dil, strides, pads):
    padded = [s + pads[i] + pads[i + len(image)] for i, s in enumerate(image)]
    nl = int(np.prod([(padded[i] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(len(image))]))
    x = np.random.default_rng(0).standard_normal((2, 3 * int(np.prod(block)), nl)).astype(np.float32)
    y = run("col2im", x, i64(*image), i64(*block),
            attrs={"dilations": dil, "strides": strides, "pads": pads})
    np.testing.assert_allclose(y, _col2im_loops(x, image, block, dil, strides, pads), rtol=1e-5, atol=1e-5)


def test_col2im_inference_and_errors():
    t = infer("col2im", [sym("N", 12, 16), i64(5, 5), i64(2, 2)])
    assert t.shape == ("N", 3, 5, 5)
    raises("col2im", lambda: infer("col2im", [sym(1, 12, 15), i64(5, 5), i64(2, 2)]), "block positions")
    raises("col2im", lambda: infer("col2im", [sym(1, 10, 16), i64(5, 5), i64(2, 2)]), "multiple")


# ---- ONNX conversions that build several core ops -------------------------------------------
def _onnx_model(node, inputs, outputs, opset):
    from onnx import helper
    graph = helper.make_graph([node], "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_flatten_with_symbolic_dims_uses_shape_arithmetic():
    from onnx import TensorProto, helper
    from irgraph.frontends.onnx.importer import import_model
    node = helper.make_node("Flatten", ["x"], ["y"], axis=2)
    model = _onnx_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b", "c", 2])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], 13)
    g = import_model(model)
    assert all(n.op != "flatten" for n in g.nodes) and g.nodes[-1].op == "reshape"
    x = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    np.testing.assert_array_equal(run_graph(g, [x])[0], x.reshape(6, 8))
    # with a static tail the target shape is a constant
    model = _onnx_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 3, 4, 2])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], 13)
    g = import_model(model)
    assert [n.op for n in g.nodes] == ["reshape"] and g.outputs[0].type.shape[1] == 8


def test_center_crop_pad_static_and_runtime_target():
    from onnx import TensorProto, helper
    from irgraph.frontends.onnx.importer import import_model
    x = np.arange(5 * 4 * 2, dtype=np.float32).reshape(5, 4, 2)
    want = np.zeros((2, 7, 2), np.float32)
    want[:, 1:5] = x[1:3]  # crop 5 -> 2 starting at 1; pad 4 -> 7 as 1 before, 2 after
    node = helper.make_node("CenterCropPad", ["x", "s"], ["y"], axes=[0, 1])
    xin = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 4, 2])
    yout = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    # target as a graph input: computed in the graph
    sin = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    g = import_model(_onnx_model(node, [xin, sin], [yout], 18))
    np.testing.assert_array_equal(run_graph(g, [x, i64(2, 7)])[0], want)
    # target as an initializer: a constant slice and pad
    model = _onnx_model(node, [xin], [yout], 18)
    model.graph.initializer.append(helper.make_tensor("s", TensorProto.INT64, [2], [2, 7]))
    g = import_model(model)
    assert [n.op for n in g.nodes] == ["slice", "pad"] and g.outputs[0].type.shape == (2, 7, 2)
    np.testing.assert_array_equal(run_graph(g, [x])[0], want)


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
        g = import_model(_onnx_model(node, [xin], outs, opset))
        np.testing.assert_array_equal(run_graph(g, [inp])[0], want, err_msg=node.op_type)
