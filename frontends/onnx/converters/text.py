"""ONNX converters for string ops (StringConcat, StringSplit, RegexFullMatch, StringNormalizer),
TfIdfVectorizer and the simple ai.onnx.ml ops (LabelEncoder, Binarizer, ArrayFeatureExtractor)."""
from __future__ import annotations

import numpy as np

from .registry import converter

ML = "ai.onnx.ml"


@converter("StringConcat", since=20)
def string_concat(ctx):
    return ctx.op("string_concat", [ctx.input(0), ctx.input(1)])


@converter("StringSplit", since=20)
def string_split(ctx):
    attrs = {k: ctx.attr(k) for k in ("delimiter", "maxsplit") if ctx.has_attr(k)}
    return ctx.op("string_split", [ctx.input(0)], attrs, num_outputs=2)


@converter("RegexFullMatch", since=20)
def regex_full_match(ctx):
    return ctx.op("regex_full_match", [ctx.input(0)], {"pattern": ctx.attr("pattern")})


@converter("StringNormalizer", since=10)
def string_normalizer(ctx):
    attrs = {k: ctx.attr(k) for k in ("case_change_action", "is_case_sensitive", "locale", "stopwords")
             if ctx.has_attr(k)}
    return ctx.op("string_normalizer", [ctx.input(0)], attrs)


@converter("TfIdfVectorizer", since=9)
def tfidf_vectorizer(ctx):
    if ctx.has_attr("pool_strings") == ctx.has_attr("pool_int64s"):
        ctx.fail("TfIdfVectorizer needs exactly one of pool_strings and pool_int64s")
    pool = (_strings(ctx.attr("pool_strings")) if ctx.has_attr("pool_strings")
            else np.array(ctx.attr("pool_int64s"), np.int64))
    attrs = {k: ctx.attr(k) for k in ("mode", "min_gram_length", "max_gram_length", "max_skip_count",
                                      "ngram_counts", "ngram_indexes")}
    attrs.update(pool=pool, weights=ctx.attr("weights", None))
    return ctx.op("tfidf_vectorizer", [ctx.input(0)], attrs)


# ---- ai.onnx.ml --------------------------------------------------------------------------------
def _strings(values) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    return arr


@converter("LabelEncoder", domain=ML, since=1)
def label_encoder_1(ctx):
    # opset 1 maps strings to their index in classes_strings, or indices back to the strings
    classes = _strings(ctx.attr("classes_strings", []))
    index = np.arange(len(classes), dtype=np.int64)
    if ctx.input(0).dtype.kind == "s":
        keys, values = classes, index
        default = np.array(ctx.attr("default_int64", -1), np.int64)
    else:
        keys, values = index, classes
        default = _strings([ctx.attr("default_string", "_Unused")]).reshape(())
    return ctx.op("label_encoder", [ctx.input(0)], {"keys": keys, "values": values, "default": default})


def _table(ctx, prefix: str) -> np.ndarray | None:
    if ctx.has_attr(prefix + "tensor"):
        t = np.asarray(ctx.attr(prefix + "tensor")).reshape(-1)
        return _strings(t.tolist()) if t.dtype.kind in "OSU" else t
    for suffix, dtype in (("strings", None), ("int64s", np.int64), ("floats", np.float32)):
        if ctx.has_attr(prefix + suffix):
            v = ctx.attr(prefix + suffix)
            return _strings(v) if dtype is None else np.array(v, dtype=dtype)
    return None


@converter("LabelEncoder", domain=ML, since=2)
def label_encoder(ctx):
    keys, values = _table(ctx, "keys_"), _table(ctx, "values_")
    if keys is None or values is None:
        ctx.fail("LabelEncoder needs keys_* and values_* attributes")
    x = ctx.input(0)
    if keys.dtype != object and x.dtype.kind != "s":
        keys = keys.astype(x.dtype.np)  # keys_int64s / keys_floats also serve narrower inputs
    if ctx.has_attr("default_tensor"):
        default = np.asarray(ctx.attr("default_tensor")).reshape(-1)[:1]
        default = _strings(default.tolist()) if default.dtype.kind in "OSU" else default.astype(values.dtype)
    elif values.dtype == object:
        default = _strings([ctx.attr("default_string", "_Unused")])
    elif values.dtype.kind == "f":
        default = np.array([ctx.attr("default_float", -0.0)], values.dtype)
    else:
        default = np.array([ctx.attr("default_int64", -1)], values.dtype)
    return ctx.op("label_encoder", [x], {"keys": keys, "values": values, "default": default.reshape(())})


@converter("Binarizer", domain=ML, since=1)
def binarizer(ctx):
    x = ctx.input(0)
    t = ctx.constant(np.array(ctx.attr("threshold", 0.0), dtype=x.dtype.np))
    one = ctx.constant(np.array(1, dtype=x.dtype.np))
    zero = ctx.constant(np.array(0, dtype=x.dtype.np))
    return ctx.op("where", [ctx.op("greater", [x, t]), one, zero])


@converter("ArrayFeatureExtractor", domain=ML, since=1)
def array_feature_extractor(ctx):
    x, idx = ctx.input(0), ctx.input(1)
    if x.shape is not None and len(x.shape) == 1:
        x = ctx.op("reshape", [x, ctx.constant(np.array([1, -1], np.int64))])  # a 1-D input is one row
    idx = ctx.op("reshape", [idx, ctx.constant(np.array([-1], np.int64))])
    return ctx.op("gather", [x, idx], {"axis": -1})
