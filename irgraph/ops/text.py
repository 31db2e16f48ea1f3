"""Text ops on string tensors (numpy object arrays of ``str``): string_concat, string_split,
regex_full_match, string_normalizer, and the ai.onnx.ml label_encoder (a lookup table)."""
from __future__ import annotations

import re

import numpy as np

from .. import dtype as dt
from .registry import Attr, OpDef, register
from .shapes import broadcast_shapes, check_dtype, out

_STR = (dt.string,)


def _strings(x) -> np.ndarray:
    """An object array of ``str`` (bytes decoded as UTF-8)."""
    x = np.asarray(x, dtype=object)
    if x.size and any(isinstance(v, bytes) for v in x.flat):
        x = np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object])(x)
    return x


def _map_str(fn, x, dtype=object) -> np.ndarray:
    """Apply ``fn`` to every element of ``x``; keeps the shape, even for 0-d and empty arrays."""
    x = _strings(x)
    res = np.empty(x.shape, dtype=dtype)
    flat = res.reshape(-1)
    for i, v in enumerate(x.flat):
        flat[i] = fn(v)
    return res


# ---- string_concat ---------------------------------------------------------------------------
def _concat_infer(ctx):
    a = check_dtype(ctx, 0, _STR, "x")
    b = check_dtype(ctx, 1, _STR, "y")
    return [out(broadcast_shapes(a.shape, b.shape, ctx=ctx), dt.string)]


def _concat_ref(ins, a):
    x, y = np.broadcast_arrays(_strings(ins[0]), _strings(ins[1]))
    res = np.empty(x.shape, dtype=object)
    res.reshape(-1)[:] = [p + q for p, q in zip(x.flat, y.flat)]
    return res


register(OpDef(
    "string_concat", infer=_concat_infer, reference=_concat_ref, inputs=(2, 2), kind="other",
    differentiable=False, doc="string_concat(x, y): elementwise x + y with broadcasting",
))


# ---- string_split ----------------------------------------------------------------------------
def _split_infer(ctx):
    x = check_dtype(ctx, 0, _STR, "input")
    m = ctx.attrs["maxsplit"]
    if m is not None and m < 0:
        ctx.fail("maxsplit must be non-negative", actual=m)
    if x.shape is None:
        return [out(None, dt.string), out(None, dt.int64)]
    return [out(tuple(x.shape) + (ctx.fresh("substrings"),), dt.string), out(x.shape, dt.int64)]


def _split_ref(ins, a):
    x = _strings(ins[0])
    # no (or an empty) delimiter splits at runs of whitespace and drops empty parts, as str.split()
    delim = a["delimiter"] or None
    maxsplit = -1 if a["maxsplit"] is None else a["maxsplit"]
    parts = [v.split(delim, maxsplit) for v in x.flat]
    width = max((len(p) for p in parts), default=0)
    res = np.full((len(parts), width), "", dtype=object)
    for i, p in enumerate(parts):
        res[i, :len(p)] = p
    counts = np.array([len(p) for p in parts], dtype=np.int64).reshape(x.shape)
    return res.reshape(x.shape + (width,)), counts


register(OpDef(
    "string_split", infer=_split_infer, reference=_split_ref, inputs=(1, 1), kind="other",
    differentiable=False,
    attrs={"delimiter": Attr("str", None, "split at this string; whitespace runs when empty or absent"),
           "maxsplit": Attr("int", None, "at most this many splits per element")},
    doc="string_split(x) -> (substrings [..., max count] padded with '', count per element int64)",
))


# ---- regex_full_match ------------------------------------------------------------------------
def _regex_infer(ctx):
    x = check_dtype(ctx, 0, _STR, "input")
    try:
        re.compile(ctx.attrs["pattern"])
    except re.error as e:
        ctx.fail(f"invalid regular expression {ctx.attrs['pattern']!r}: {e}")
    return [out(x.shape, dt.bool_)]


def _regex_ref(ins, a):
    pat = re.compile(a["pattern"])
    return _map_str(lambda v: pat.fullmatch(v) is not None, ins[0], dtype=np.bool_)


register(OpDef(
    "regex_full_match", infer=_regex_infer, reference=_regex_ref, inputs=(1, 1), kind="other",
    differentiable=False,
    attrs={"pattern": Attr("str", "", "a regular expression (RE2 syntax; its common subset with Python's re)")},
    doc="regex_full_match(x): whether each whole string matches the pattern",
))


# ---- string_normalizer -----------------------------------------------------------------------
def _normalizer_infer(ctx):
    x = check_dtype(ctx, 0, _STR, "input")
    if ctx.attrs["case_change_action"] not in ("NONE", "LOWER", "UPPER"):
        ctx.fail("unknown case_change_action", expected="NONE | LOWER | UPPER",
                 actual=ctx.attrs["case_change_action"])
    if x.shape is None:
        return [out(None, dt.string)]
    if not (x.rank == 1 or (x.rank == 2 and x.shape[0] == 1)):
        ctx.fail("input must be [C] or [1, C]", input=0, actual=x)
    n = x.shape[-1] if not ctx.attrs["stopwords"] else ctx.fresh("kept")
    return [out(x.shape[:-1] + (n,), dt.string)]


def _normalizer_ref(ins, a):
    x = _strings(ins[0])
    words = list(x.reshape(-1))
    stop = a["stopwords"] or ()
    if a["is_case_sensitive"]:
        stop = set(stop)
        words = [w for w in words if w not in stop]
    else:
        stop = {s.casefold() for s in stop}
        words = [w for w in words if w.casefold() not in stop]
    action = a["case_change_action"]
    if action == "LOWER":
        words = [w.lower() for w in words]
    elif action == "UPPER":
        words = [w.upper() for w in words]
    if not words:
        words = [""]  # an all-stopword input gives one empty string, not an empty tensor
    res = np.empty(len(words), dtype=object)
    res[:] = words
    return res.reshape(x.shape[:-1] + (len(words),))


register(OpDef(
    "string_normalizer", infer=_normalizer_infer, reference=_normalizer_ref, inputs=(1, 1),
    kind="other", differentiable=False,
    attrs={"case_change_action": Attr("str", "NONE", "NONE | LOWER | UPPER"),
           "is_case_sensitive": Attr("bool", False, "match stopwords case-sensitively"),
           "locale": Attr("str", "", "accepted for ONNX compatibility; case rules are Unicode's"),
           "stopwords": Attr("strs", None, "words to remove")},
    doc="string_normalizer(x[C] or x[1, C]): drop stopwords, then change case",
))


# ---- label_encoder ---------------------------------------------------------------------------
def _encoder_infer(ctx):
    a = ctx.attrs
    keys, values, default = (np.asarray(a[k]) for k in ("keys", "values", "default"))
    if keys.ndim != 1 or values.ndim != 1 or keys.shape != values.shape:
        ctx.fail("keys and values must be 1-D and of one length", expected=keys.shape, actual=values.shape)
    if default.size != 1:
        ctx.fail("default must hold one value", actual=default.shape)
    x = ctx.type(0)
    kdt = dt.DType.from_numpy(keys.dtype)
    if x.dtype is not kdt:
        ctx.fail("the input's dtype must be the keys' dtype", input=0, expected=kdt.name, actual=x.dtype.name)
    vdt = dt.DType.from_numpy(values.dtype)
    if dt.DType.from_numpy(default.dtype) is not vdt:
        ctx.fail("default must have the values' dtype", expected=vdt.name,
                 actual=dt.DType.from_numpy(default.dtype).name)
    return [out(x.shape, vdt)]


def _encoder_ref(ins, a):
    x = ins[0]
    keys, values = np.asarray(a["keys"]), np.asarray(a["values"])
    default = np.asarray(a["default"]).reshape(-1)[0]
    if keys.dtype == object:
        table = dict(zip(_strings(keys).tolist(), values.tolist()))
        res = _map_str(lambda v: table.get(v, default), x, dtype=object)
        return res if values.dtype == object else res.astype(values.dtype)
    # numeric keys: binary search in the sorted keys; NaN keys match NaN inputs
    order = np.argsort(keys, kind="stable")
    sk, sv = keys[order], values[order]
    pos = np.clip(np.searchsorted(sk, x), 0, max(len(sk) - 1, 0))
    found = (sk[pos] == x) if len(sk) else np.zeros(x.shape, bool)
    res = np.where(found, sv[pos] if len(sk) else default, default)
    if keys.dtype.kind == "f":
        nan_keys = np.isnan(keys)
        if nan_keys.any():
            res = np.where(np.isnan(x), values[np.argmax(nan_keys)], res)
    return np.asarray(res, dtype=values.dtype).reshape(x.shape)


register(OpDef(
    "label_encoder", infer=_encoder_infer, reference=_encoder_ref, inputs=(1, 1), kind="other",
    differentiable=False,
    attrs={"keys": Attr("tensor"), "values": Attr("tensor"),
           "default": Attr("tensor", doc="the value of inputs that are not keys")},
    doc="label_encoder(x): maps each key to its value (ai.onnx.ml LabelEncoder), others to default",
))



# ---- tfidf_vectorizer ------------------------------------------------------------------------
_TFIDF_MODES = ("TF", "IDF", "TFIDF")


def _pool_ngrams(a) -> list[tuple[int, np.ndarray, int]]:
    """The pool as (n, its n-grams as an (m, n) array, index of the first of them), one per level.

    ``ngram_counts[k]`` is where the (k+1)-grams start in the flat pool; n-grams are numbered in
    pool order across the levels, which is the order ``ngram_indexes`` and ``weights`` follow.
    """
    pool, starts = np.asarray(a["pool"]).reshape(-1), list(a["ngram_counts"])
    levels, first = [], 0
    for k, start in enumerate(starts):
        n, end = k + 1, (starts[k + 1] if k + 1 < len(starts) else len(pool))
        if not 0 <= start <= end <= len(pool) or (end - start) % n:
            raise ValueError(f"pool entries [{start}, {end}) do not hold whole {n}-grams")
        grams = pool[start:end].reshape(-1, n)
        levels.append((n, grams, first))
        first += len(grams)
    if first != len(a["ngram_indexes"]):
        raise ValueError(f"the pool holds {first} n-grams but ngram_indexes has "
                         f"{len(a['ngram_indexes'])} entries")
    return levels


def _tfidf_infer(ctx):
    a = ctx.attrs
    x = check_dtype(ctx, 0, _STR + (dt.int32, dt.int64), "input")
    pool = np.asarray(a["pool"])
    if (pool.dtype == object) != (x.dtype is dt.string):
        ctx.fail("string inputs need pool_strings and integer inputs pool_int64s", input=0,
                 expected="string" if pool.dtype == object else "int32 | int64", actual=x.dtype.name)
    if a["mode"] not in _TFIDF_MODES:
        ctx.fail(f"unknown mode {a['mode']!r}", expected=" | ".join(_TFIDF_MODES), actual=a["mode"])
    lo, hi = a["min_gram_length"], a["max_gram_length"]
    if not 1 <= lo <= hi or a["max_skip_count"] < 0:
        ctx.fail("need 1 <= min_gram_length <= max_gram_length and max_skip_count >= 0",
                 actual=(lo, hi, a["max_skip_count"]))
    try:
        _pool_ngrams(a)
    except ValueError as e:
        ctx.fail(str(e))
    idx = a["ngram_indexes"]
    if any(i < 0 for i in idx):
        ctx.fail("ngram_indexes must be >= 0", actual=tuple(idx))
    if a["weights"] is not None and len(a["weights"]) != len(idx):
        ctx.fail("weights needs one entry per n-gram", expected=len(idx), actual=len(a["weights"]))
    size = max(idx, default=-1) + 1
    if x.shape is None:
        return [out(None, dt.float32)]
    if len(x.shape) not in (1, 2):
        ctx.fail("input must be 1-D (one sequence) or 2-D (a batch of rows)", input=0,
                 expected="rank 1 or 2", actual=x)
    return [out(tuple(x.shape[:-1]) + (size,), dt.float32)]


def _tfidf_ref(ins, a):
    x = ins[0]
    rows = (_strings(x) if x.dtype == object else np.asarray(x, np.int64)).reshape(-1, x.shape[-1])
    levels = _pool_ngrams(a)
    pool = np.concatenate([g.reshape(-1) for _, g, _ in levels]) if levels else np.zeros(0, rows.dtype)
    # tokens become ids into the pool's sorted vocabulary (-1 when absent), n-grams base-V numbers
    vocab = np.unique(pool.astype(np.int64) if rows.dtype != object else pool)
    v = max(len(vocab), 1)
    pos = np.clip(np.searchsorted(vocab, rows), 0, v - 1) if len(vocab) else np.zeros(rows.shape, np.int64)
    ids = np.where(vocab[pos] == rows, pos, -1) if len(vocab) else np.full(rows.shape, -1)
    counts = np.zeros((rows.shape[0], len(a["ngram_indexes"])), np.float64)
    width = rows.shape[1]
    for n, grams, first in levels:
        if not a["min_gram_length"] <= n <= a["max_gram_length"] or not len(grams):
            continue
        if v ** n >= 2 ** 62:
            raise ValueError(f"{n}-grams over a vocabulary of {v} do not fit int64 codes")
        weights = v ** np.arange(n - 1, -1, -1, dtype=np.int64)
        gram_codes = np.searchsorted(vocab, grams) @ weights
        order = np.argsort(gram_codes, kind="stable")
        sorted_codes = gram_codes[order]
        # a 1-gram is the same for every skip; longer ones take every skip up to max_skip_count
        for skip in range(a["max_skip_count"] + 1 if n > 1 else 1):
            step = skip + 1
            span = (n - 1) * step
            if span >= width:
                break
            taken = np.stack([ids[:, j * step:width - span + j * step] for j in range(n)], axis=-1)
            codes = taken @ weights
            hit = np.searchsorted(sorted_codes, codes).clip(0, len(sorted_codes) - 1)
            found = (taken >= 0).all(-1) & (sorted_codes[hit] == codes)
            r, c = np.nonzero(found)
            np.add.at(counts, (r, first + order[hit[r, c]]), 1)
    w = np.ones(counts.shape[1]) if a["weights"] is None else np.asarray(a["weights"], np.float64)
    if a["mode"] == "IDF":
        counts = np.minimum(counts, 1) * w
    elif a["mode"] == "TFIDF":
        counts = counts * w
    y = np.zeros((rows.shape[0], max(a["ngram_indexes"], default=-1) + 1), np.float32)
    y[:, list(a["ngram_indexes"])] = counts
    return y.reshape(x.shape[:-1] + y.shape[1:])


register(OpDef(
    "tfidf_vectorizer", infer=_tfidf_infer, reference=_tfidf_ref, inputs=(1, 1), kind="other",
    differentiable=False,
    attrs={"mode": Attr("str", doc="TF (counts) | IDF (found or not, times weights) | "
                                   "TFIDF (counts times weights)"),
           "min_gram_length": Attr("int"), "max_gram_length": Attr("int"),
           "max_skip_count": Attr("int", doc="n-grams are also taken with up to this many tokens skipped "
                                             "between their items"),
           "ngram_counts": Attr("ints", doc="where the 1-grams, 2-grams, ... start in pool"),
           "ngram_indexes": Attr("ints", doc="the output column of each n-gram of the pool"),
           "pool": Attr("tensor", doc="the n-grams counted, flat (int64, or strings for string inputs)"),
           "weights": Attr("floats", None, "per n-gram of the pool; all ones when absent")},
    doc="tfidf_vectorizer(x[C] or x[N, C]) -> float32[..., max(ngram_indexes) + 1]: counts of the pool's "
        "n-grams in each row (ONNX TfIdfVectorizer)",
))
