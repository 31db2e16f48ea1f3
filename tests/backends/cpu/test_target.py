"""``target="cpu"`` against the numpy interpreter: every elementwise op of the registry (each
dtype it supports), casts, reductions, movement/index ops, templates, composites, fused groups,
whole models, fallbacks and errors.

Tolerances: integer and bool results are exact. Floats: float32 rtol 1e-5 (ops whose formula
uses exp/log/tanh/erf/pow or trig also atol 1e-6: our float32 polynomials are within ~1-3 ulp,
and formulas such as gelu's 1 + erf(x) cancel); float64 rtol 1e-13; float16 rtol/atol 1e-3 and
bfloat16 1e-2 (one unit in the last place, where float32 intermediates round the other way).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import irgraph
import models
from irgraph import dtype as dt
from irgraph.backends.kernel_ir import IRBuilder, Op, Var, walk_expr
from irgraph.errors import CompileError, InputError
from irgraph.graph import Graph
from irgraph.ops.registry import all_ops, get_op
from irgraph.passes.group import make_group
from irgraph.types import TensorType

DTYPES = [dt.float32, dt.float64, dt.float16, dt.bfloat16, dt.int32, dt.int64, dt.int8, dt.uint8, dt.bool_]
_TRANSCENDENTAL = {"exp", "log", "tanh", "erf", "pow", "sin", "cos", "tan", "asin", "acos", "atan",
                   "sinh", "cosh", "asinh", "acosh", "atanh", "sqrt", "rsqrt", "div"}
# input ranges where an op is defined (and numpy does not warn)
_DOMAIN = {"log": (0.01, 10), "sqrt": (0, 10), "acosh": (1, 10), "atanh": (-0.99, 0.99),
           "asin": (-1, 1), "acos": (-1, 1), "reciprocal": (0.1, 5), "pow": (0.1, 3)}


@pytest.fixture(scope="module", autouse=True)
def _private_object_cache(tmp_path_factory):
    """Compiled modules go to a temporary object cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("irgraph_cache")))
        yield


def _elementwise_ops():
    out = []
    for name, op in sorted(all_ops().items()):
        if op.kind != "elementwise" or op.scalar is None or name in ("cast", "full_like"):
            continue
        for d in DTYPES:
            if name == "where" or (d in op.dtypes if op.dtypes else d.is_float):
                out.append((name, d))
    return out


ELEMENTWISE = _elementwise_ops()


def _data(rng, op: str, d, i: int, shape):
    if d.is_bool:
        return rng.random(shape) < 0.5
    if d.is_int:
        lo, hi = (-50, 50) if d.kind == "i" else (0, 100)
        if op in ("shift_left", "shift_right") and i == 1:
            lo, hi = 0, d.bits
        if op == "pow":
            lo, hi = 0, 5
        a = rng.integers(lo, hi, shape).astype(d.np)
        if op in ("div", "mod") and i == 1:
            a[a == 0] = 3
        return a
    lo, hi = _DOMAIN.get(op, (-4, 4))
    return rng.uniform(lo, hi, shape).astype(d.np)


def _uses_transcendental(name: str, d) -> bool:
    op = get_op(name)
    args = [Var(f"a{i}", dt.bool_ if name == "where" and i == 0 else d) for i in range(op.inputs[0])]
    e = op.scalar(IRBuilder(), *args, **{k: a.default for k, a in op.attrs.items()})
    return any(isinstance(x, Op) and x.op in _TRANSCENDENTAL for x in walk_expr(e))


@pytest.fixture(scope="module")
def elementwise_results():
    """All elementwise ops of one dtype in one graph: one compile per dtype, not per op."""
    rng = np.random.default_rng(0)
    results = {}
    for d in DTYPES:
        g = Graph()
        outs, names, feeds = [], [], []
        for name, dd in ELEMENTWISE:
            if dd is not d:
                continue
            op = get_op(name)
            ins = []
            for i in range(op.inputs[0]):
                di = dt.bool_ if (name == "where" and i == 0) else d
                shape = (3, 37) if (i == 0 or name == "swiglu") else (37,)
                ins.append(g.add_input(f"{name}_{i}", TensorType(shape, di)))
                feeds.append(_data(rng, name, di, i, shape))
            outs.append(g.op(name, ins))
            names.append(name)
        g.set_outputs(outs)
        ref = irgraph.compile(g).run(*feeds)
        got = irgraph.compile(g, target="cpu", opt_level=0).run(*feeds)
        for n, r, x in zip(names, ref, got):
            results[(n, d.name)] = (r, x)
    return results


@pytest.mark.parametrize("name,d", ELEMENTWISE, ids=[f"{n}-{d.name}" for n, d in ELEMENTWISE])
def test_elementwise_op_matches_interpreter(elementwise_results, name, d):
    ref, got = elementwise_results[(name, d.name)]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if not (d.is_float and ref.dtype != np.bool_):
        np.testing.assert_array_equal(got, ref)
        return
    if ref.dtype == np.bool_:
        np.testing.assert_array_equal(got, ref)
        return
    heavy = _uses_transcendental(name, d)
    rtol, atol = {dt.float32: (1e-5, 1e-6 if heavy else 0), dt.float64: (1e-13, 1e-15 if heavy else 0),
                  dt.float16: (1e-3, 1e-3), dt.bfloat16: (1e-2, 1e-2)}[d]
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol)


def _run_both(g: Graph, feeds, **options):
    ref = irgraph.compile(g).run(*feeds)
    got = irgraph.compile(g, target="cpu", **options).run(*feeds)
    assert len(ref) == len(got)
    return ref, got


def _close(ref, got, rtol=1e-5, atol=1e-6):
    for r, x in zip(ref, got):
        assert r.dtype == x.dtype and r.shape == x.shape
        if r.dtype.kind in "fV":
            np.testing.assert_allclose(x.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(x, r)


def test_every_cast_between_supported_dtypes():
    rng = np.random.default_rng(1)
    g = Graph()
    feeds = []
    kinds = [dt.bool_, dt.int8, dt.int16, dt.int32, dt.int64, dt.uint8, dt.uint16, dt.uint32, dt.uint64,
             dt.float16, dt.bfloat16, dt.float32, dt.float64]
    outs = []
    for s in kinds:
        if s.is_bool:
            a = rng.random(64) < 0.5
        elif s.is_int:
            a = rng.integers(0 if s.kind == "u" else -100, 100, 64).astype(s.np)
        else:
            a = (rng.standard_normal(64) * 50).astype(s.np)
        x = g.add_input(f"x_{s.name}", TensorType((64,), s))
        feeds.append(a)
        outs += [g.op("cast", [x], {"to": t}) for t in kinds]
    g.set_outputs(outs)
    ref, got = _run_both(g, feeds, opt_level=0)
    for r, x in zip(ref, got):
        assert r.dtype == x.dtype
        np.testing.assert_array_equal(x.astype(np.float64) if r.dtype.kind == "V" else x,
                                      r.astype(np.float64) if r.dtype.kind == "V" else r)


REDUCE_AXES = [(0,), (1,), (2,), (0, 2), (1, 2), (0, 1, 2)]


@pytest.mark.parametrize("d", [dt.float32, dt.int32, dt.float16])
def test_reductions_over_each_axis_with_keepdims(d):
    rng = np.random.default_rng(2)
    g = Graph()
    x = g.add_input("x", TensorType((5, 6, 7), d))
    outs = []
    for op in ("reduce_sum", "reduce_mean", "reduce_prod", "reduce_max", "reduce_min"):
        for axes in REDUCE_AXES:
            for keep in (0, 1):
                ax = g.add_const(np.array(axes, np.int64))
                outs.append(g.op(op, [x, ax], {"keepdims": keep}))
        outs.append(g.op(op, [x], {"keepdims": 0}))       # no axes: all of them
    g.set_outputs(outs)
    a = (rng.uniform(0.5, 1.5, (5, 6, 7)) if d.is_float else rng.integers(-3, 4, (5, 6, 7))).astype(d.np)
    ref, got = _run_both(g, [a], opt_level=0)
    _close(ref, got, rtol=1e-5 if d is not dt.float16 else 2e-3, atol=1e-6 if d is not dt.float16 else 1e-3)


def test_reductions_of_empty_sets_give_the_identity():
    g = Graph()
    x = g.add_input("x", TensorType((3, 0), "float32"))
    ax = g.add_const(np.array([1], np.int64))
    g.set_outputs([g.op(op, [x, ax], {"keepdims": 0}) for op in ("reduce_sum", "reduce_prod", "reduce_max", "reduce_min")])
    ref, got = _run_both(g, [np.zeros((3, 0), np.float32)], opt_level=0)
    _close(ref, got)


def test_arg_reductions_and_cumulative_sums():
    rng = np.random.default_rng(3)
    g = Graph()
    x = g.add_input("x", TensorType((4, 5, 6), "float32"))
    outs = []
    for op in ("argmax", "argmin"):
        for axis in (0, 1, 2, -1):
            for keep in (0, 1):
                for last in (0, 1):
                    outs.append(g.op(op, [x], {"axis": axis, "keepdims": keep, "select_last_index": last}))
    for op in ("cumsum", "cumprod"):
        for axis in (0, 2):
            for excl in (0, 1):
                for rev in (0, 1):
                    outs.append(g.op(op, [x, g.add_const(np.array(axis, np.int64))], {"exclusive": excl, "reverse": rev}))
    g.set_outputs(outs)
    a = rng.integers(-3, 4, (4, 5, 6)).astype(np.float32)   # ties exercise select_last_index
    ref, got = _run_both(g, [a], opt_level=0)
    _close(ref, got)


def test_cumsum_with_an_axis_given_at_run_time():
    rng = np.random.default_rng(11)
    g = Graph()
    x = g.add_input("x", TensorType((3, 4, 5), "float32"))
    ax = g.add_input("axis", TensorType((), "int64"))
    g.set_outputs([g.op("cumsum", [x, ax], {"reverse": 1}), g.op("cumprod", [x, ax], {"exclusive": 1})])
    cm = irgraph.compile(g, target="cpu", opt_level=0)
    a = rng.uniform(0.5, 1.5, (3, 4, 5)).astype(np.float32)
    for axis in (0, 1, 2, -1, -3):
        ref = irgraph.compile(g).run(a, np.array(axis))
        _close(ref, cm.run(a, np.array(axis)))


def test_movement_and_index_ops():
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.add_input("x", TensorType((2, 8, 6, 4), "float32"))
    i64 = lambda *v: g.add_const(np.array(v, np.int64))  # noqa: E731
    outs = [
        g.op("transpose", [x], {"perm": [0, 2, 3, 1]}),
        g.op("transpose", [x]),
        g.op("reshape", [g.op("transpose", [x], {"perm": [0, 2, 1, 3]}), i64(2, 6, 32)]),
        g.op("slice", [x, i64(1, -1), i64(7, -5), i64(1, 2), i64(2, -2)]),
        g.op("slice", [x, i64(-1), i64(-100), i64(3), i64(-1)]),
        g.op("concat", [x, g.op("neg", [x]), x], {"axis": 2}),
        g.op("expand", [g.op("slice", [x, i64(0), i64(1), i64(1)]), i64(3, 2, 5, 6, 4)]),
        g.op("tile", [x, i64(1, 2, 1, 3)]),
        g.op("squeeze", [g.op("unsqueeze", [x, i64(0, 3)]), i64(0)]),
        g.op("depth_to_space", [x], {"blocksize": 2, "mode": "DCR"}),
        g.op("depth_to_space", [x], {"blocksize": 2, "mode": "CRD"}),
        g.op("space_to_depth", [x], {"blocksize": 2}),
        g.op("gather", [x, g.add_const(np.array([[1, -1], [0, 3]], np.int64))], {"axis": 2}),
        g.op("gather_elements", [x, g.add_const(rng.integers(-8, 8, (2, 3, 6, 4)).astype(np.int64))], {"axis": 1}),
        g.op("trilu", [x, i64(1)], {"upper": 0}),
    ]
    for mode in ("constant", "reflect", "edge", "wrap"):
        outs.append(g.op("pad", [x, i64(0, 1, 2, 0, 0, 2, 1, 0)], {"mode": mode}))
    outs.append(g.op("pad", [x, i64(0, -1, 2, 0, 0, 2, -1, 0), g.add_const(np.float32(7.5))], {"mode": "constant"}))
    parts = g.op("split", [x, i64(3, 5)], {"axis": 1}, num_outputs=2)
    outs += list(parts)
    g.set_outputs(outs)
    ref, got = _run_both(g, [rng.standard_normal((2, 8, 6, 4)).astype(np.float32)], opt_level=0)
    _close(ref, got, rtol=0, atol=0)


@pytest.mark.parametrize("sa,sb,d", [((7, 13), (13, 5), "float32"), ((13,), (13, 5), "float32"),
                                     ((3, 7, 13), (13,), "float32"), ((2, 1, 4, 8), (3, 8, 6), "float32"),
                                     ((5, 9), (9, 4), "float64"), ((5, 9), (9, 4), "float16"),
                                     ((5, 9), (9, 4), "int32")])
def test_matmul(sa, sb, d):
    rng = np.random.default_rng(5)
    g = Graph()
    a = g.add_input("a", TensorType(sa, d))
    b = g.add_input("b", TensorType(sb, d))
    g.set_outputs([g.op("matmul", [a, b])])
    if d == "int32":
        fa, fb = rng.integers(-5, 5, sa).astype(np.int32), rng.integers(-5, 5, sb).astype(np.int32)
    else:
        fa, fb = rng.standard_normal(sa).astype(d), rng.standard_normal(sb).astype(d)
    ref, got = _run_both(g, [fa, fb], opt_level=0)
    _close(ref, got, rtol=2e-3 if d == "float16" else 1e-5, atol=2e-3 if d == "float16" else 1e-5)


@pytest.mark.parametrize("attrs", [
    {"pads": [1, 1, 1, 1]}, {"strides": [2, 2], "pads": [1, 0, 2, 1]}, {"dilations": [2, 1]},
    {"group": 2, "pads": [1, 1, 1, 1]}, {"group": 4}])
def test_conv(attrs):
    rng = np.random.default_rng(6)
    g = Graph()
    x = g.add_input("x", TensorType((2, 4, 9, 11), "float32"))
    w = g.add_const(rng.standard_normal((8, 4 // attrs.get("group", 1), 3, 3)).astype(np.float32))
    bias = g.add_const(rng.standard_normal(8).astype(np.float32))
    g.set_outputs([g.op("conv", [x, w, bias], attrs), g.op("conv", [x, w], attrs)])
    ref, got = _run_both(g, [rng.standard_normal((2, 4, 9, 11)).astype(np.float32)], opt_level=0)
    _close(ref, got, rtol=1e-4, atol=1e-5)


def test_pools():
    rng = np.random.default_rng(7)
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 9, 10), "float32"))
    k = {"kernel_shape": [3, 3]}
    g.set_outputs([
        g.op("max_pool", [x], {**k, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        g.op("max_pool", [x], {**k, "strides": [2, 2], "ceil_mode": True}),
        g.op("avg_pool", [x], {**k, "pads": [1, 1, 1, 1]}),
        g.op("avg_pool", [x], {**k, "pads": [1, 1, 1, 1], "count_include_pad": True, "strides": [2, 1]}),
        g.op("lp_pool", [x], {**k, "p": 2.0}),
        g.op("lp_pool", [x], {**k, "p": 3.0}),
        g.op("global_pool", [x], {"mode": "avg"}),
        g.op("global_pool", [x], {"mode": "max"}),
        g.op("global_pool", [x], {"mode": "lp", "p": 2.0}),
    ])
    ref, got = _run_both(g, [rng.standard_normal((2, 3, 9, 10)).astype(np.float32)], opt_level=0)
    _close(ref, got, rtol=1e-5, atol=1e-6)


def test_composites_lower_through_their_decompositions():
    rng = np.random.default_rng(8)
    g = Graph()
    x = g.add_input("x", TensorType((2, 6, 5, 4), "float32"))
    c = lambda n: g.add_const(rng.uniform(0.5, 1.5, n).astype(np.float32))  # noqa: E731
    g.set_outputs([
        g.op("softmax", [x], {"axis": 1}),
        g.op("log_softmax", [x], {"axis": -1}),
        g.op("layer_norm", [x, c(4), c(4)], {"axis": -1}),
        g.op("layer_norm", [x, c((5, 4))], {"axis": 2}),
        g.op("batch_norm", [x, c(6), c(6), c(6), c(6)]),
        g.op("instance_norm", [x, c(6), c(6)]),
        g.op("group_norm", [x, c(6), c(6)], {"num_groups": 3}),
        g.op("rms_norm", [x, c(4)]),
    ])
    ref, got = _run_both(g, [rng.standard_normal((2, 6, 5, 4)).astype(np.float32)], opt_level=0)
    _close(ref, got, rtol=1e-4, atol=1e-5)


def test_explicit_fused_group_runs_as_one_kernel():
    rng = np.random.default_rng(9)
    g = Graph()
    x = g.add_input("x", TensorType((8, 32), "float32"))
    b = g.add_const(rng.standard_normal(32).astype(np.float32))
    y = g.op("gelu", [g.op("add", [x, b])])
    s = g.op("reduce_sum", [y, g.add_const(np.array([1], np.int64))], {"keepdims": 1})
    z = g.op("div", [y, s])
    g.set_outputs([z, y])
    feeds = [rng.standard_normal((8, 32)).astype(np.float32)]
    want = irgraph.compile(g).run(*feeds)
    make_group(g, list(g.nodes), "reduction", "gelu_norm")
    cm = irgraph.compile(g, target="cpu", opt_level=0)
    _close(want, cm.run(*feeds), rtol=1e-5, atol=1e-6)
    rep = cm._run.report
    assert rep.native_count == 1 and rep.kernels[0]["name"] == "gelu_norm" and not rep.fallback


@pytest.mark.parametrize("name,dims", [("mlp", {"N": 3}), ("resnet", {"N": 2}), ("bert_layer", {"N": 2, "S": 7})])
@pytest.mark.parametrize("level", [0, 2])
def test_models_match_the_interpreter(name, dims, level):
    m = models.ALL[name]()
    feeds = models.feeds(m, dims, seed=1)
    want = irgraph.compile(m).run(**feeds)
    cm = irgraph.compile(m, target="cpu", opt_level=level)
    got = cm.run(**feeds)
    for w, x in zip(want, got):
        assert w.dtype == x.dtype and w.shape == x.shape
        np.testing.assert_allclose(x, w, rtol=1e-4, atol=1e-5)
    rep = cm._run.report
    assert not rep.fallback and rep.native_count >= 1


def test_symbolic_dims_compile_once_per_binding():
    m = models.mlp(sizes=(16, 8, 4))
    cm = irgraph.compile(m, target="cpu")
    for n in (1, 5, 1):
        x = np.random.default_rng(n).standard_normal((n, 16)).astype(np.float32)
        np.testing.assert_allclose(cm(x), irgraph.compile(m)(x), rtol=1e-5, atol=1e-6)
    assert len(cm._run.programs) == 2


def test_threads_do_not_change_results():
    m = models.resnet()
    feeds = models.feeds(m, {"N": 2}, seed=3)
    a = irgraph.compile(m, target="cpu", num_threads=1).run(**feeds)
    b = irgraph.compile(m, target="cpu", num_threads=2).run(**feeds)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def _graph_with_unlowerable_ops():
    # max_roi_pool has no cpu lowering: native exp/slice, fallback pool, native mul, fallback pool, native add
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, 4, 6), "float32"))
    sq = g.op("slice", [g.op("exp", [x]), g.add_const(np.array([0], np.int64)), g.add_const(np.array([5], np.int64)),
                        g.add_const(np.array([3], np.int64))])
    rois = g.add_const(np.array([[0, 0, 0, 4, 3]], np.float32))
    h = g.op("max_roi_pool", [sq, rois], {"pooled_shape": (4, 5)}, name="hm")
    d = g.op("max_roi_pool", [g.op("mul", [sq, h]), rois], {"pooled_shape": (4, 5)}, name="det1")
    g.set_outputs([g.op("add", [d, g.add_const(np.float32(1))]), h])
    return g


def test_missing_lowerings_are_listed_at_once():
    with pytest.raises(CompileError) as e:
        irgraph.compile(_graph_with_unlowerable_ops(), target="cpu", opt_level=0)
    msg = str(e.value)
    assert "2 node(s)" in msg and "'hm'" in msg and "'det1'" in msg and "fallback=True" in msg


def test_fallback_runs_the_reference_between_native_segments():
    g = _graph_with_unlowerable_ops()
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 6)).astype(np.float32)
    cm = irgraph.compile(g, target="cpu", opt_level=0, fallback=True)
    _close(irgraph.compile(g).run(x), cm.run(x), rtol=1e-5, atol=1e-6)
    rep = cm._run.report
    assert sorted(f["op"] for f in rep.fallback) == ["max_roi_pool", "max_roi_pool"]
    assert rep.native_count == 4
    assert "2 fallback nodes" in str(rep)
    kinds = [k for k, _ in cm._run.last.segments]
    assert kinds == ["native", "fallback", "native", "fallback", "native"]


def test_options_and_inputs_are_checked():
    m = models.mlp(sizes=(4, 3))
    with pytest.raises(CompileError, match="no option"):
        irgraph.compile(m, target="cpu", unroll=True)
    cm = irgraph.compile(m, target="cpu")
    with pytest.raises(InputError):
        cm(np.zeros((2, 5), np.float32))
    with pytest.raises(InputError):
        cm(np.zeros((2, 4), np.float64))


def test_half_precision_model_path():
    rng = np.random.default_rng(10)
    g = Graph()
    x = g.add_input("x", TensorType((4, 16), "bfloat16"))
    w = g.add_const(rng.standard_normal((16, 8)).astype(ml_dtypes.bfloat16))
    g.set_outputs([g.op("relu", [g.op("matmul", [x, w])])])
    ref, got = _run_both(g, [rng.standard_normal((4, 16)).astype(ml_dtypes.bfloat16)], opt_level=0)
    _close(ref, got, rtol=1e-2, atol=1e-2)


def test_other_ops_without_decompositions():
    """Losses, scatter/gather variants, quantization, einsum, conv_transpose, pools with indices,
    resize, LRN, one-hot: each has a rule in lower_misc.py / lower_contract.py."""
    rng = np.random.default_rng(12)
    g = Graph()
    x = g.add_input("x", TensorType((2, 4, 6, 6), "float32"))
    c = g.add_const
    i64 = lambda *v: c(np.array(v, np.int64))  # noqa: E731
    logp = g.op("log_softmax", [g.op("reshape", [x, i64(2, 4, 36)])], {"axis": 1})
    tgt = c(rng.integers(0, 4, (2, 36)).astype(np.int64))
    wts = c(rng.uniform(0.5, 2, 4).astype(np.float32))
    outs = [g.op("nll_loss", [logp, tgt, wts], {"reduction": r, "ignore_index": 1}) for r in ("none", "sum", "mean")]
    upd = c(rng.standard_normal((2, 2, 6, 6)).astype(np.float32))
    sidx = c(rng.integers(-4, 4, (2, 2, 6, 6)).astype(np.int64))
    outs += [g.op("scatter_elements", [x, sidx, upd], {"axis": 1, "reduction": r}) for r in ("none", "add", "max")]
    outs.append(g.op("scatter_nd", [x, c(np.array([[1, 2], [0, -1]], np.int64)),
                                    c(rng.standard_normal((2, 6, 6)).astype(np.float32))], {"reduction": "mul"}))
    outs.append(g.op("gather_nd", [x, c(np.array([[[0, 1]], [[1, 3]]], np.int64))], {"batch_dims": 0}))
    outs.append(g.op("einsum", [x, c(rng.standard_normal((6, 3)).astype(np.float32))], {"equation": "nchw,wk->nkc"}))
    wt = c(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    outs.append(g.op("conv_transpose", [x, wt, c(np.ones(3, np.float32))], {"strides": [2, 2], "pads": [1, 0, 0, 1]}))
    outs += list(g.op("max_pool", [x], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                        "indices": True}, num_outputs=2))
    outs.append(g.op("hardmax", [x], {"axis": 1}))
    outs.append(g.op("lrn", [x], {"size": 3}))
    for mode in ("nearest", "linear", "cubic"):
        outs.append(g.op("resize", [x, None, c(np.array([1, 1, 1.5, 0.5], np.float32))], {"mode": mode}))
    scale = c(np.array([0.05, 0.1, 0.02, 0.2], np.float32))
    q = g.op("quantize_linear", [x, scale, c(np.array([0, 3, -2, 1], np.int8))], {"axis": 1})
    outs += [q, g.op("dequantize_linear", [q, scale, c(np.array([0, 3, -2, 1], np.int8))], {"axis": 1})]
    q8 = g.op("quantize_linear", [x, scale], {"axis": 1, "dtype": dt.float8e4m3fn})
    outs += [q8, g.op("dequantize_linear", [q8, scale], {"axis": 1})]
    outs += list(g.op("dynamic_quantize_linear", [x], num_outputs=3))
    outs.append(g.op("cast", [g.op("cast", [x], {"to": dt.int4})], {"to": dt.float32}))
    outs.append(g.op("bitcast", [x], {"to": dt.int32}))
    outs.append(g.op("one_hot", [tgt, c(np.array(5, np.int64)), c(np.array([-1.0, 2.0], np.float32))], {"axis": 1}))
    g.set_outputs(outs)
    feeds = [rng.standard_normal((2, 4, 6, 6)).astype(np.float32)]
    ref, got = _run_both(g, feeds, opt_level=0)
    _close(ref, got, rtol=1e-5, atol=1e-5)


def test_shape_operands_given_at_run_time_are_compiled_in():
    """Inputs that decide shapes (axes, scales, repeats) specialize the program on their values."""
    rng = np.random.default_rng(13)
    g = Graph()
    x = g.add_input("x", TensorType((3, 4, 5), "float32"))
    axes = g.add_input("axes", TensorType((1,), "int64"))
    reps = g.add_input("reps", TensorType((3,), "int64"))
    g.set_outputs([g.op("reduce_sum", [x, axes], {"keepdims": 0}), g.op("tile", [x, reps])])
    cm = irgraph.compile(g, target="cpu", opt_level=0)
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for ax, rp in [([1], [1, 2, 1]), ([-1], [2, 1, 1]), ([1], [1, 2, 1])]:
        feeds = [a, np.array(ax, np.int64), np.array(rp, np.int64)]
        _close(irgraph.compile(g).run(*feeds), cm.run(*feeds))
    assert len(cm._run.programs) == 2
    assert not cm._run.report.fallback
