"""``F``: every registry op is a function (checked against the op's reference), operators and
tensor methods against numpy, indexing, literal conversion, and control flow from Python."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph.dtype import DType
from irgraph.errors import ShapeError
from irgraph.frontends import dsl
from irgraph.frontends.dsl import functional as F
from irgraph.frontends.dsl.opcall import python_name
from irgraph.ops.registry import all_ops, get_op
from op_cases import BODY_CASES, CASES

rng = np.random.default_rng(3)


def test_every_registry_op_has_a_function_and_a_case():
    ops = set(all_ops())
    assert ops == set(CASES) | set(BODY_CASES), "add a case in op_cases.py for new registry ops"
    for op in ops:
        f = getattr(F, python_name(op))
        assert callable(f) and f.__name__ == python_name(op)
    assert F.if_ is getattr(F, "if_") and "then_branch" in F.if_.__doc__


def _strip(ins):
    ins = list(ins)
    while ins and ins[-1] is None:
        ins.pop()
    return [None if a is None else np.asarray(a) for a in ins]


def _same(a, b, op):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (op, a.dtype, b.dtype, a.shape, b.shape)
    if a.dtype.kind in "fc":
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, equal_nan=True, err_msg=op)
    else:
        np.testing.assert_array_equal(a, b, err_msg=op)


@pytest.mark.parametrize("op", sorted(CASES))
def test_op_through_F_matches_its_reference(op):
    ins, attrs = CASES[op]
    opdef = get_op(op)
    got = getattr(F, python_name(op))(*ins, **attrs)
    got = list(got) if isinstance(got, tuple) else [got]
    want = opdef.run_reference(_strip(ins), opdef.normalize_attrs(attrs))
    assert 1 <= len(got) <= len(want), op   # references may give optional outputs too
    for a, b in zip(got, want):
        _same(a, b, op)


def test_op_inside_a_trace_has_the_traced_types():
    with dsl.Tracer() as t:
        x = t.input("x", (None, 3, 8, 8))
        w = t.constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
        y = F.conv(x, w, None, strides=(2, 2), pads=(1, 1, 1, 1))
        assert y.shape == ("batch", 4, 4, 4) and y.dtype is DType.from_name("float32")
        v, i = F.top_k(x, [2], axis=1)
        assert v.shape == ("batch", 2, 8, 8) and i.dtype.name == "int64"
        parts = F.split(x, axis=2, num_outputs=2)
        assert [p.shape for p in parts] == [("batch", 3, 4, 8)] * 2
        ln, mean, inv = F.layer_norm(x, np.ones(8, np.float32), num_outputs=3)
        assert mean.shape == ("batch", 3, 8, 1)


def test_control_flow_bodies_from_python_functions():
    assert F.if_(np.array(True), **BODY_CASES["if"][1])[0] == 1.0
    assert F.if_(np.array(False), **BODY_CASES["if"][1])[0] == 2.0
    assert F.loop(*BODY_CASES["loop"][0], **BODY_CASES["loop"][1])[0] == 8.0
    xs = BODY_CASES["scan"][0][1]
    final, running = F.scan(*BODY_CASES["scan"][0], **BODY_CASES["scan"][1])
    np.testing.assert_allclose(running, np.cumsum(xs), rtol=1e-6)
    a, b = BODY_CASES["fused"][0]
    np.testing.assert_allclose(F.fused(a, b, **BODY_CASES["fused"][1])[0], a * b + a, rtol=1e-6)
    # a traced condition, with branches reading the enclosing graph's tensors
    t = dsl.trace(lambda x: F.cond(F.sum(x) > 0, lambda: x * 2, lambda: -x)[0], [(3,)])
    pos = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(t.run(pos)[0], pos * 2)
    np.testing.assert_array_equal(t.run(-pos)[0], pos)


def _run(fn, *arrays):
    specs = [a for a in arrays]
    return dsl.trace(fn, specs).run(*arrays)


def test_operators_against_numpy():
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.uniform(0.5, 2, (3, 4)).astype(np.float32)
    m = rng.standard_normal((4, 2)).astype(np.float32)
    outs = _run(lambda x, y, w: (x + y, x - y, x * y, x / y, x @ w, y ** 2, -x, 2 - x, 1 / y, 3 * x + 1,
                                 abs(x), x // y, x % y, +x, 2 ** x), a, b, m)
    want = [a + b, a - b, a * b, a / b, a @ m, b ** 2, -a, 2 - a, 1 / b, 3 * a + 1, abs(a),
            np.floor(a / b), np.mod(a, b), a, 2 ** a]
    for i, (g, w) in enumerate(zip(outs, want)):
        assert g.dtype == np.float32, i
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=str(i))


def test_comparisons_and_logic():
    a = rng.standard_normal((5,)).astype(np.float32)
    b = rng.standard_normal((5,)).astype(np.float32)
    outs = _run(lambda x, y: (x < y, x <= y, x > y, x >= y, x == y, x != y, (x > 0) & (y > 0),
                              (x > 0) | (y > 0), (x > 0) ^ (y > 0), ~(x > 0)), a, b)
    want = [a < b, a <= b, a > b, a >= b, a == b, a != b, (a > 0) & (b > 0), (a > 0) | (b > 0),
            (a > 0) ^ (b > 0), ~(a > 0)]
    for g, w in zip(outs, want):
        np.testing.assert_array_equal(g, w)
    i = np.array([5, -3, 12], np.int32)
    j = np.array([3, 2, -5], np.int32)
    outs = _run(lambda x, y: (x & y, x | y, x ^ y, ~x, x // y, x % y), i, j)
    for g, w in zip(outs, [i & j, i | j, i ^ j, ~i, i // j, i % j]):
        assert g.dtype == np.int32
        np.testing.assert_array_equal(g, w)


INDEX_KEYS = [
    0, -1, (1, 2), slice(1, 3), (slice(None), 2), (Ellipsis, 1), (None, 0), (slice(None, None, -1),),
    (slice(None), slice(None, None, 2), None), (1, slice(2, None), -1), (slice(-3, -1), Ellipsis, None),
    ([2, 0],), (slice(None), [1, 1, 3]), (Ellipsis, np.array([[0, 1], [2, 3]])), (slice(None), slice(4, 1, -2)),
    (np.array([True, False, True, True]),),
]


@pytest.mark.parametrize("key", INDEX_KEYS, ids=[repr(k) for k in INDEX_KEYS])
def test_indexing_matches_numpy(key):
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    (got,) = _run(lambda t: t[key], x)
    np.testing.assert_array_equal(got, x[key])


def test_tensor_methods_against_numpy():
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    outs = _run(lambda t: (t.reshape(4, -1), t.reshape((6, 4)), t.transpose(2, 0, 1), t.T, t.flatten(),
                           t.flatten(1), t.sum(), t.sum(1), t.mean((0, 2), keepdims=True), t.max(-1),
                           t.min(0), t.prod(2), t.argmax(1), t.astype("int32"), t.clip(-0.5, 0.5),
                           t.clip(lo=0.0), t.unsqueeze(0).squeeze(0), t[None].squeeze(), t.exp(),
                           t.abs().sqrt(), t.softmax(0), t.tanh(), t.relu(), t.sigmoid()), x)
    e = np.exp(x - x.max(0))
    want = [x.reshape(4, -1), x.reshape(6, 4), x.transpose(2, 0, 1), x.T, x.reshape(-1), x.reshape(2, -1),
            x.sum(), x.sum(1), x.mean((0, 2), keepdims=True), x.max(-1), x.min(0), x.prod(2),
            x.argmax(1), x.astype(np.int32), np.clip(x, -0.5, 0.5), np.maximum(x, 0), x, x, np.exp(x),
            np.sqrt(np.abs(x)), e / e.sum(0), np.tanh(x), np.maximum(x, 0), 1 / (1 + np.exp(-x))]
    for i, (g, w) in enumerate(zip(outs, want)):
        assert g.shape == w.shape, i
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=str(i))


def test_flatten_with_symbolic_dims():
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    with dsl.Tracer() as t:
        v = t.input("x", ("n", 3, "h", 5))
        ys = [F.flatten(v, 1), F.flatten(v, 0, 1), F.flatten(v, 1, 2), F.flatten(v, 2)]
        tr = t.finish(ys)
    want = [x.reshape(2, -1), x.reshape(6, 4, 5), x.reshape(2, 12, 5), x.reshape(2, 3, 20)]
    for g, w in zip(tr.run(x), want):
        np.testing.assert_array_equal(g, w)


def test_literals_take_the_operands_dtype():
    with dsl.Tracer() as t:
        x = t.input("x", ((3,), "float64"))
        i = t.input("i", ((3,), "int32"))
        assert (x * 2).dtype.name == "float64" and (x + 0.5).dtype.name == "float64"
        assert (i + 1).dtype.name == "int32"
        with pytest.raises(ShapeError, match="share one dtype"):
            i * 2.5                                         # no silent int -> float promotion
        assert (x * np.float32(2)).dtype.name == "float64"   # numpy scalars are weak in elementwise ops
        assert F.where(x > 0, x, 0).dtype.name == "float64"
        s = F.cumsum(x, 0)                                  # a non-elementwise int input stays int64
        assert s.value.producer.inputs[1].dtype.name == "int64"
        r = F.reshape(x, [3, 1])                            # lists of ints are int64 shapes
        assert r.shape == (3, 1)
        z = F.linear(x[None], np.ones((3, 2)), np.zeros(2))
        assert z.shape == (1, 2)
        st = F.stack([x, x * 2], axis=1)
        assert st.shape == (3, 2)
        assert F.zeros((2, 2)).dtype.name == "float32" and F.full((2,), 7, "int64").shape == (2,)
        assert F.ones_like(i).dtype.name == "int32"
        tr = t.finish([st, F.zeros_like(x), F.amax(x)])
    a = np.array([1, -2, 3], np.float64)
    out = tr.run(a, np.zeros(3, np.int32))
    np.testing.assert_array_equal(out[0], np.stack([a, 2 * a], 1))
    np.testing.assert_array_equal(out[1], np.zeros(3))
    assert out[2] == 3


def test_eager_F_on_numpy_values():
    y = F.relu(np.array([-1.0, 2.0], np.float32))
    np.testing.assert_array_equal(y, [0.0, 2.0])
    assert F.add(np.float32(1.5), 2).dtype == np.float32
    y, mask = F.dropout(np.ones(4, np.float32), 0.5, False)
    np.testing.assert_array_equal(y, 1.0)


def test_nodes_are_named_after_modules_and_remember_the_source_line():
    m = dsl.Sequential(dsl.Dense(3, in_features=2), dsl.ReLU())
    g = m.to_graph([(None, 2)])
    assert [n.name for n in g.nodes] == ["0/matmul", "0/add", "1/relu"]
    assert all(n.meta["dsl_loc"].startswith("test_functional.py:") for n in g.nodes)
