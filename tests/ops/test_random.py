"""Random ops: shapes and dtypes, value ranges and moments on large draws, reproducibility with a
seed, and that nothing evaluates them at compile time."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from irgraph import TensorType, run_graph
from irgraph import dtype as dt
from irgraph.errors import ShapeError
from irgraph.frontends.onnx import backend
from irgraph.frontends.onnx.importer import import_model
from irgraph.ops.registry import get_op
from irgraph.types import is_static_dim

from oprun import build, infer, onnx_model, run, value_info

F32, I64 = dt.float32, dt.int64
SHAPE = np.array([200, 300], np.int64)


def test_all_random_ops_are_marked():
    for name in ("random_uniform", "random_normal", "bernoulli", "multinomial"):
        op = get_op(name)
        assert op.random and op.kind == "random" and not op.differentiable


def test_random_uniform_range_and_moments():
    y = run("random_uniform", [SHAPE], {"low": -2.0, "high": 3.0}, const=(0,))
    assert y.shape == (200, 300) and y.dtype == np.float32
    assert y.min() >= -2.0 and y.max() < 3.0
    assert abs(y.mean() - 0.5) < 0.05 and abs(y.var() - 25 / 12) < 0.1


def test_random_normal_moments_and_dtype():
    y = run("random_normal", [SHAPE], {"mean": 1.5, "scale": 2.0, "dtype": dt.float64}, const=(0,))
    assert y.dtype == np.float64
    assert abs(y.mean() - 1.5) < 0.05 and abs(y.std() - 2.0) < 0.05


@pytest.mark.parametrize("op", ["random_uniform", "random_normal"])
def test_seed_makes_runs_reproducible(op):
    g1 = build(op, [SHAPE], {"seed": 3.0}, const=(0,)).graph
    a, b = run_graph(g1, [])[0], run_graph(g1, [])[0]
    np.testing.assert_array_equal(a, b)
    other = run(op, [SHAPE], {"seed": 4.0}, const=(0,))
    assert not np.array_equal(a, other)
    g2 = build(op, [SHAPE], const=(0,)).graph
    assert not np.array_equal(run_graph(g2, [])[0], run_graph(g2, [])[0])


def test_bernoulli_extremes_mean_and_dtype():
    p = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    np.testing.assert_array_equal(run("bernoulli", [p]), p)
    y = run("bernoulli", [np.full((100, 100), 0.3)], {"dtype": dt.int32, "seed": 0.0})
    assert y.dtype == np.int32 and set(np.unique(y)) <= {0, 1}
    assert abs(y.mean() - 0.3) < 0.03
    np.testing.assert_array_equal(y, run("bernoulli", [np.full((100, 100), 0.3)], {"dtype": dt.int32, "seed": 0.0}))
    assert run("bernoulli", [p], {"dtype": dt.bool_}).dtype == np.bool_


def test_multinomial_distribution():
    logits = np.log(np.array([[0.2, 0.8], [1.0, 1e-9]], np.float32))
    y = run("multinomial", [logits], {"sample_size": 5000, "seed": 1.0})
    assert y.shape == (2, 5000) and y.dtype == np.int32
    assert abs(y[0].mean() - 0.8) < 0.03  # class 1 drawn with probability 0.8
    assert (y[1] == 0).all()
    y64 = run("multinomial", [logits], {"sample_size": 3, "dtype": dt.int64})
    assert y64.dtype == np.int64 and y64.shape == (2, 3)


def test_inference_from_shape_inputs():
    assert infer("random_uniform", [SHAPE], const=(0,)).shape == (200, 300)
    t = infer("random_normal", [TensorType((3,), I64)])
    assert len(t.shape) == 3 and not any(is_static_dim(d) for d in t.shape)
    assert infer("bernoulli", [TensorType(("n", 4), F32)]).shape == ("n", 4)
    assert infer("multinomial", [TensorType(("n", 4), F32)], {"sample_size": 7}).shape == ("n", 7)


@pytest.mark.parametrize("op,inputs,attrs,const", [
    ("random_uniform", [SHAPE], {"dtype": dt.int32}, (0,)),
    ("random_uniform", [np.array([2, -1], np.int64)], {}, (0,)),
    ("random_normal", [TensorType((2,), dt.int32)], {}, ()),
    ("bernoulli", [TensorType((3,), I64)], {}, ()),
    ("multinomial", [TensorType((3,), F32)], {}, ()),
    ("multinomial", [TensorType((2, 3), F32)], {"dtype": dt.float32}, ()),
])
def test_errors_name_the_op(op, inputs, attrs, const):
    with pytest.raises(ShapeError, match=op):
        infer(op, inputs, attrs, const=const)


def test_onnx_like_ops_and_no_compile_time_folding():
    nodes = [helper.make_node("RandomUniformLike", ["x"], ["y"], dtype=TensorProto.FLOAT, seed=2.0),
             helper.make_node("RandomNormalLike", ["x"], ["z"])]
    model = onnx_model(nodes, [value_info("x", TensorProto.DOUBLE, [3, 4])],
                       [value_info("y", TensorProto.FLOAT), value_info("z", TensorProto.DOUBLE)], 17)
    g = import_model(model)
    # the shape of x is known statically, but the draws must not become compile-time values
    assert all("value" not in v.meta for v in g.outputs)
    a, b = backend.prepare(model).run([np.zeros((3, 4))])
    assert a.shape == (3, 4) and a.dtype == np.float32 and b.dtype == np.float64
