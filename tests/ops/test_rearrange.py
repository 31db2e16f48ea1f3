"""Ops that fill, crop or rearrange elements (pad, depth_to_space, space_to_depth,
reverse_sequence, trilu, col2im, and ONNX CenterCropPad): references against independent
expectations, inference (static and symbolic shapes, dtypes), and errors that name the op."""
from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pytest

from irgraph import run_graph

import oprun
from oprun import ALL, i64, is_fresh, onnx_model, raises, run_on, sym

infer = partial(oprun.infer, const=ALL)  # array operands are constants


# ---- pad ----------------------------------------------------------------------------------
def test_pad_modes_by_hand():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    pads = i64(0, 2, 0, 1)  # two before and one after along axis 1
    assert run_on("pad", x, pads, np.float32(9)).tolist() == [[9, 9, 1, 2, 3, 9], [9, 9, 4, 5, 6, 9]]
    assert run_on("pad", x, pads, attrs={"mode": "reflect"}).tolist() == [[3, 2, 1, 2, 3, 2], [6, 5, 4, 5, 6, 5]]
    assert run_on("pad", x, pads, attrs={"mode": "edge"}).tolist() == [[1, 1, 1, 2, 3, 3], [4, 4, 4, 5, 6, 6]]
    assert run_on("pad", x, pads, attrs={"mode": "wrap"}).tolist() == [[2, 3, 1, 2, 3, 1], [5, 6, 4, 5, 6, 4]]


def test_pad_axes_negative_pads_and_dtypes():
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    y = run_on("pad", x, i64(1, -1), None, i64(-1))  # one before, crop one at the end, along axis 1
    assert y.tolist() == [[0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10]]
    b = np.array([True, False])
    assert run_on("pad", b, i64(1, 0)).tolist() == [False, True, False]


def test_pad_inference_and_errors():
    assert infer("pad", [sym("N", 4), i64(0, 1, 0, 2)]).shape == ("N", 7)
    t = infer("pad", [sym("N", 4), i64(1, 0, 0, 0)]).shape
    assert is_fresh(t[0], "N") and t[1] == 4
    raises("pad", lambda: infer("pad", [sym(2, 3), i64(0, 1)]), "per padded axis")
    raises("pad", lambda: infer("pad", [sym(2), i64(-2, -1)]), "remove more")
    raises("pad", lambda: infer("pad", [sym(2), i64(1, 1)], {"mode": "mirror"}), "mode")
    raises("pad", lambda: infer("pad", [sym(2), i64(1, 1), np.float64(1)]), "dtype")


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
    y = run_on("depth_to_space", x, attrs={"blocksize": 2, "mode": mode})
    np.testing.assert_array_equal(y, _d2s_loops(x, 2, mode))
    back = run_on("space_to_depth", y, attrs={"blocksize": 2, "mode": mode})
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
    y = run_on("reverse_sequence", x, i64(1, 2, 3, 4), attrs={"batch_axis": 0, "time_axis": 1})
    assert y.tolist() == [[0, 1, 2, 3], [5, 4, 6, 7], [10, 9, 8, 11], [15, 14, 13, 12]]
    y = run_on("reverse_sequence", x.T.copy(), i64(1, 2, 3, 4))  # time on axis 0, batch on axis 1
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
    y = run_on("trilu", x, np.array(k, np.int64), attrs={"upper": upper})
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
    y = run_on("col2im", x, i64(*image), i64(*block),
            attrs={"dilations": dil, "strides": strides, "pads": pads})
    np.testing.assert_allclose(y, _col2im_loops(x, image, block, dil, strides, pads), rtol=1e-5, atol=1e-5)


def test_col2im_inference_and_errors():
    t = infer("col2im", [sym("N", 12, 16), i64(5, 5), i64(2, 2)])
    assert t.shape == ("N", 3, 5, 5)
    raises("col2im", lambda: infer("col2im", [sym(1, 12, 15), i64(5, 5), i64(2, 2)]), "block positions")
    raises("col2im", lambda: infer("col2im", [sym(1, 10, 16), i64(5, 5), i64(2, 2)]), "multiple")


# ---- ONNX CenterCropPad (slice and pad) ---------------------------------------------------
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
    g = import_model(onnx_model(node, [xin, sin], [yout], 18))
    np.testing.assert_array_equal(run_graph(g, [x, i64(2, 7)])[0], want)
    # target as an initializer: a constant slice and pad
    model = onnx_model(node, [xin], [yout], 18)
    model.graph.initializer.append(helper.make_tensor("s", TensorProto.INT64, [2], [2, 7]))
    g = import_model(model)
    assert [n.op for n in g.nodes] == ["slice", "pad"] and g.outputs[0].type.shape == (2, 7, 2)
    np.testing.assert_array_equal(run_graph(g, [x])[0], want)
