"""Text ops on string tensors and the simple ai.onnx.ml ops (LabelEncoder, Binarizer,
ArrayFeatureExtractor), checked against hand-written expectations."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from irgraph import Graph, TensorType, run_graph
from irgraph import dtype as dt
from irgraph.dtype import DType
from irgraph.errors import ShapeError
from irgraph.frontends.onnx import backend
from irgraph.types import is_static_dim

S, I64, F32 = dt.string, dt.int64, dt.float32


def strs(*values, shape=None):
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a.reshape(shape if shape is not None else (len(values),))


def build(op, inputs, attrs=None, num_outputs=None):
    g = Graph()
    vals = []
    for i, a in enumerate(inputs):
        t = a if isinstance(a, TensorType) else TensorType(np.shape(a), DType.from_numpy(np.asarray(a).dtype))
        vals.append(g.add_input(f"x{i}", t))
    res = g.op(op, vals, attrs, num_outputs=num_outputs)
    g.set_outputs(list(res) if isinstance(res, tuple) else [res])
    return g


def run(op, inputs, attrs=None, num_outputs=None):
    """Run through the interpreter, which checks the results against the inferred types."""
    outs = run_graph(build(op, inputs, attrs, num_outputs), list(inputs))
    return outs if len(outs) > 1 else outs[0]


def types(op, inputs, attrs=None, num_outputs=None):
    return [v.type for v in build(op, inputs, attrs, num_outputs).outputs]


# ---- string_concat ---------------------------------------------------------------------------
def test_string_concat_broadcasts():
    y = run("string_concat", [strs("cat", "dog", "的"), strs("s")])
    assert y.dtype == object and y.tolist() == ["cats", "dogs", "的s"]
    y = run("string_concat", [strs("a", "b", shape=(2, 1)), strs("x", "y", "z")])
    assert y.tolist() == [["ax", "ay", "az"], ["bx", "by", "bz"]]
    zero = run("string_concat", [np.array("ab", dtype=object), np.array("", dtype=object)])
    assert zero.shape == () and zero.item() == "ab"


def test_string_concat_errors():
    with pytest.raises(ShapeError, match="string_concat"):
        types("string_concat", [TensorType((2,), S), TensorType((2,), F32)])
    with pytest.raises(ShapeError, match="broadcast"):
        types("string_concat", [TensorType((2,), S), TensorType((3,), S)])


# ---- string_split ----------------------------------------------------------------------------
def test_string_split():
    y, n = run("string_split", [strs("a-b--c", "d")], {"delimiter": "-"}, num_outputs=2)
    assert y.tolist() == [["a", "b", "", "c"], ["d", "", "", ""]] and n.tolist() == [4, 1]
    # without a delimiter: runs of whitespace, no empty parts
    y, n = run("string_split", [strs(" a  b ", "c d e", shape=(1, 2))], {"maxsplit": 1}, num_outputs=2)
    assert y.tolist() == [[["a", "b "], ["c", "d e"]]] and n.tolist() == [[2, 2]]
    y, n = run("string_split", [strs()], num_outputs=2)
    assert y.shape == (0, 0) and n.shape == (0,) and n.dtype == np.int64


def test_string_split_inference():
    t = types("string_split", [TensorType((3, 2), S)], num_outputs=2)
    assert t[0].shape[:2] == (3, 2) and not is_static_dim(t[0].shape[2]) and t[1].shape == (3, 2)
    assert t[0].dtype is S and t[1].dtype is I64
    with pytest.raises(ShapeError, match="maxsplit"):
        types("string_split", [TensorType((3,), S)], {"maxsplit": -2}, num_outputs=2)


# ---- regex_full_match ------------------------------------------------------------------------
def test_regex_full_match():
    x = strs("www.google.com", "www.bbc.co.uk", "xwww.a.com", shape=(3, 1))
    y = run("regex_full_match", [x], {"pattern": r"www\.[\w.-]+\.\bcom\b"})
    assert y.dtype == np.bool_ and y.ravel().tolist() == [True, False, False]
    assert run("regex_full_match", [strs(shape=(2, 0))], {"pattern": "a"}).shape == (2, 0)
    with pytest.raises(ShapeError, match="regex_full_match") as e:
        types("regex_full_match", [TensorType((2,), S)], {"pattern": "(unclosed"})
    assert "invalid regular expression" in str(e.value)


# ---- string_normalizer -----------------------------------------------------------------------
def test_string_normalizer():
    x = strs("Monday", "tuesday", "MONDAY", "wed")
    y = run("string_normalizer", [x], {"stopwords": ["monday"], "case_change_action": "UPPER"})
    assert y.tolist() == ["TUESDAY", "WED"]
    y = run("string_normalizer", [x], {"stopwords": ["monday"], "is_case_sensitive": True})
    assert y.tolist() == ["Monday", "tuesday", "MONDAY", "wed"]
    y = run("string_normalizer", [x.reshape(1, 4)], {"case_change_action": "LOWER"})
    assert y.tolist() == [["monday", "tuesday", "monday", "wed"]]
    # everything removed leaves one empty string
    assert run("string_normalizer", [strs("a", "A")], {"stopwords": ["a"]}).tolist() == [""]
    assert run("string_normalizer", [strs("a", shape=(1, 1))], {"stopwords": ["a"]}).shape == (1, 1)


def test_string_normalizer_errors():
    with pytest.raises(ShapeError, match="string_normalizer"):
        types("string_normalizer", [TensorType((2, 3), S)])
    with pytest.raises(ShapeError, match="case_change_action"):
        types("string_normalizer", [TensorType((3,), S)], {"case_change_action": "TITLE"})


# ---- label_encoder ---------------------------------------------------------------------------
def test_label_encoder_core():
    attrs = {"keys": strs("a", "b"), "values": np.array([7, 8], np.int64), "default": np.array(-1, np.int64)}
    y = run("label_encoder", [strs("b", "z", "a", shape=(3, 1))], attrs)
    assert y.dtype == np.int64 and y.ravel().tolist() == [8, -1, 7]
    attrs = {"keys": np.array([1.5, np.nan, -2.0], np.float32), "values": strs("x", "nan", "y"),
             "default": np.array("?", dtype=object)}
    y = run("label_encoder", [np.array([-2.0, np.nan, 3.0, 1.5], np.float32)], attrs)
    assert y.tolist() == ["y", "nan", "?", "x"]
    with pytest.raises(ShapeError, match="label_encoder"):
        types("label_encoder", [TensorType((3,), I64)], {"keys": strs("a"), "values": np.array([1]),
                                                         "default": np.array(0)})


def _ml_model(node, inputs, out_type, ml_opset):
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype) if a.dtype != object
                                         else TensorProto.STRING, a.shape) for n, a in zip(node.input, inputs)]
    outs = [helper.make_tensor_value_info(node.output[0], out_type, None)]
    return helper.make_model(helper.make_graph([node], "g", ins, outs),
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", ml_opset)])


def _ml_run(node, inputs, out_type, ml_opset=3):
    return backend.prepare(_ml_model(node, inputs, out_type, ml_opset)).run(inputs)[0]


def test_onnx_label_encoder_attribute_forms():
    x = strs("a", "c", "q")
    n = helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", keys_strings=["a", "c"],
                         values_floats=[0.5, 1.5])
    y = _ml_run(n, [x], TensorProto.FLOAT, 2)
    assert y.dtype == np.float32 and y.tolist() == [0.5, 1.5, -0.0]
    n = helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", keys_int64s=[3, 5],
                         values_strings=["three", "five"], default_string="none")
    assert _ml_run(n, [np.array([5, 4, 3], np.int64)], TensorProto.STRING).tolist() == ["five", "none", "three"]
    # opset 1: classes_strings maps strings to their index and back
    n = helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", classes_strings=["a", "c"],
                         default_int64=9)
    assert _ml_run(n, [x], TensorProto.INT64, 1).tolist() == [0, 1, 9]


def test_onnx_binarizer_and_array_feature_extractor():
    x = np.array([[-1.0, 0.5, 2.0], [3.0, 1.0, 0.0]], np.float32)
    n = helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.5)
    y = _ml_run(n, [x], TensorProto.FLOAT)
    assert y.dtype == np.float32 and y.tolist() == [[0, 0, 1], [1, 1, 0]]
    n = helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain="ai.onnx.ml")
    y = _ml_run(n, [x, np.array([2, 0], np.int64)], TensorProto.FLOAT)
    assert y.tolist() == [[2.0, -1.0], [0.0, 3.0]]
    y = _ml_run(n, [np.array([4, 5, 6], np.int64), np.array([[1]], np.int64)], TensorProto.INT64)
    assert y.tolist() == [[5]]  # a 1-D input is one row
