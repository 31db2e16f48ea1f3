"""Text ops on string tensors and the simple ai.onnx.ml ops (LabelEncoder, Binarizer,
ArrayFeatureExtractor), checked against hand-written expectations."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from irgraph import TensorType
from irgraph import dtype as dt
from irgraph.errors import ShapeError
from irgraph.frontends.onnx import backend
from irgraph.types import is_static_dim

from oprun import onnx_model, run, types, value_info

S, I64, F32 = dt.string, dt.int64, dt.float32


def strs(*values, shape=None):
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a.reshape(shape if shape is not None else (len(values),))


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
    ins = [value_info(n, a.dtype, a.shape) for n, a in zip(node.input, inputs)]
    return onnx_model(node, ins, [value_info(node.output[0], out_type)], 17, domains={"ai.onnx.ml": ml_opset})


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


# ---- tfidf_vectorizer ------------------------------------------------------------------------
def tfidf(x, pool, ngram_counts, ngram_indexes, lo, hi, skip, mode="TF", weights=None):
    attrs = {"mode": mode, "min_gram_length": lo, "max_gram_length": hi, "max_skip_count": skip,
             "ngram_counts": ngram_counts, "ngram_indexes": ngram_indexes, "pool": pool, "weights": weights}
    return run("tfidf_vectorizer", [x], attrs)


def tfidf_loops(row, pool, ngram_counts, ngram_indexes, lo, hi, skip, mode="TF", weights=None):
    """Every (start, gap) of every length looked up in a dict of the pool's n-grams, one at a time."""
    grams, i = {}, 0
    for level, start in enumerate(ngram_counts):
        n = level + 1
        end = ngram_counts[level + 1] if level + 1 < len(ngram_counts) else len(pool)
        for p in range(start, end, n):
            grams[tuple(pool[p:p + n])] = i
            i += 1
    counts = [0] * len(ngram_indexes)
    for n in range(lo, hi + 1):
        for gap in ([1] if n == 1 else range(1, skip + 2)):
            for s in range(len(row)):
                pos = [s + j * gap for j in range(n)]
                if pos[-1] < len(row) and tuple(row[q] for q in pos) in grams:
                    counts[grams[tuple(row[q] for q in pos)]] += 1
    w = weights or [1.0] * len(counts)
    vals = [c if mode == "TF" else min(c, 1) * wi if mode == "IDF" else c * wi for c, wi in zip(counts, w)]
    y = [0.0] * (max(ngram_indexes) + 1)
    for i, v in zip(ngram_indexes, vals):
        y[i] = v
    return y


def test_tfidf_vectorizer_spec_example_skips():
    # the spec's example: with 2 skips, [94, 17, 36, 12, 28] holds the 2-grams (94, 12) and (17, 28);
    # up to 2 skips, also (17, 36) (no skip) — and nothing else of the pool
    pool = np.array([94, 12, 17, 28, 17, 36, 36, 94], np.int64)
    x = np.array([94, 17, 36, 12, 28], np.int64)
    y = tfidf(x, pool, [0, 0], [0, 1, 2, 3], 2, 2, 2)
    assert y.dtype == np.float32 and y.tolist() == [1.0, 1.0, 1.0, 0.0]
    # without skips only the consecutive (17, 36) is found
    assert tfidf(x, pool, [0, 0], [0, 1, 2, 3], 2, 2, 0).tolist() == [0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("lo,hi,skip", [(1, 1, 0), (1, 2, 3), (2, 3, 1), (1, 3, 0)])
def test_tfidf_vectorizer_matches_loops(mode, lo, hi, skip):
    rng = np.random.default_rng(5)
    rows = rng.integers(0, 5, (3, 12))
    pool = [0, 1, 3, 4,  0, 1, 1, 1, 2, 3, 4, 0,  1, 1, 2, 0, 0, 0]  # 4 1-grams, 4 2-grams, 2 3-grams
    counts, idx = [0, 4, 12], [9, 0, 2, 4, 1, 3, 5, 7, 6, 8]
    weights = [0.5 + k for k in range(10)] if mode != "TF" else None
    got = tfidf(rows.astype(np.int32), np.array(pool, np.int64), counts, idx, lo, hi, skip, mode, weights)
    want = [tfidf_loops(r.tolist(), pool, counts, idx, lo, hi, skip, mode, weights) for r in rows]
    np.testing.assert_allclose(got, np.array(want, np.float32), rtol=1e-6)
    one = tfidf(rows[1], np.array(pool, np.int64), counts, idx, lo, hi, skip, mode, weights)  # 1-D input
    np.testing.assert_allclose(one, want[1], rtol=1e-6)


def test_tfidf_vectorizer_strings():
    x = strs("the", "cat", "sat", "on", "the", "cat", "mat", shape=(1, 7))
    pool = strs("cat", "dog", "the", "cat", "cat", "sat")
    y = tfidf(x, pool, [0, 2], [2, 0, 1, 3], 1, 2, 1)
    # "cat" twice, "dog" never; ("the", "cat") twice, ("cat", "sat") once without a skip
    assert y.shape == (1, 4) and y.tolist() == [[0.0, 2.0, 2.0, 1.0]]


def test_tfidf_vectorizer_inference_and_errors():
    pool, counts, idx = np.array([1, 2, 3, 1, 2], np.int64), [0, 3], [0, 1, 2, 5]
    base = {"mode": "TF", "min_gram_length": 1, "max_gram_length": 2, "max_skip_count": 0,
            "ngram_counts": counts, "ngram_indexes": idx, "pool": pool}
    t = types("tfidf_vectorizer", [TensorType(("n", "c"), I64)], base)[0]
    assert t == TensorType(("n", 6), F32)
    assert types("tfidf_vectorizer", [TensorType((9,), dt.int32)], base)[0] == TensorType((6,), F32)
    bad = [([TensorType((3,), S)], {}, "pool_strings"),
           ([TensorType((3,), I64)], {"mode": "BM25"}, "mode"),
           ([TensorType((3,), I64)], {"weights": [1.0]}, "weights"),
           ([TensorType((3,), I64)], {"ngram_counts": [0, 2]}, "whole 2-grams"),
           ([TensorType((3,), I64)], {"min_gram_length": 3}, "min_gram_length"),
           ([TensorType((2, 3, 4), I64)], {}, "rank 1 or 2")]
    for inputs, change, match in bad:
        with pytest.raises(ShapeError, match=match) as e:
            types("tfidf_vectorizer", inputs, {**base, **change})
        assert e.value.op == "tfidf_vectorizer"


def test_onnx_tfidf_vectorizer_pool_strings():
    n = helper.make_node("TfIdfVectorizer", ["x"], ["y"], mode="TFIDF", min_gram_length=1, max_gram_length=1,
                         max_skip_count=0, ngram_counts=[0], ngram_indexes=[1, 0], pool_strings=["a", "b"],
                         weights=[0.5, 2.0])
    x = strs("a", "b", "b", "c")
    m = onnx_model(n, [value_info("x", object, [4])], [value_info("y")], 9)
    assert backend.prepare(m).run([x])[0].tolist() == [4.0, 0.5]  # b: 2 x 2.0 in column 0, a: 0.5 in 1
