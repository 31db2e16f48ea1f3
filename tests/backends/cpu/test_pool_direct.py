"""The vectorized 2-D max pool (backends/cpu/pool_direct.py) on ``target="cpu"`` against the
numpy interpreter: strides, pads, dilations, ceil mode, rows shorter and longer than a vector,
NaN propagation, threads; and that it is the kernel lowering picks."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph.backends.cpu import pool_direct
from irgraph.graph import Graph
from irgraph.types import TensorType

from lowercheck import private_object_cache  # noqa: F401  (autouse fixture: a temporary object cache)


@pytest.fixture
def used(monkeypatch):
    seen = []
    lower = pool_direct.lower

    def counting(*a, **k):
        r = lower(*a, **k)
        seen.append(r)
        return r
    monkeypatch.setattr(pool_direct, "lower", counting)
    return seen


def _check(xshape, attrs, threads=1, nan=False, seed=0):
    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.add_input("x", TensorType(xshape, "float32"))
    g.set_outputs([g.op("max_pool", [x], attrs)])
    xv = rng.standard_normal(xshape).astype(np.float32)
    if nan:
        xv.reshape(-1)[rng.choice(xv.size, 5, replace=False)] = np.nan
    ref = irgraph.compile(g).run(xv)[0]
    got = irgraph.compile(g, target="cpu", num_threads=threads).run(xv)[0]
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("xshape,attrs", [
    ((1, 3, 23, 37), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),   # ResNet stem pool
    ((2, 2, 9, 5), {"kernel_shape": [2, 3], "pads": [0, 1, 1, 2]}),
    ((1, 2, 11, 40), {"kernel_shape": [3, 2], "strides": [3, 1], "pads": [1, 1, 1, 0]}),
    ((1, 2, 12, 35), {"kernel_shape": [3, 3], "strides": [1, 2], "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 1, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 4, 6, 70), {"kernel_shape": [5, 7], "strides": [1, 2], "pads": [2, 3, 2, 3]}),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_max_pool_matches_interpreter(used, xshape, attrs, threads):
    _check(xshape, attrs, threads)
    assert used == [True]


def test_nan_propagates():
    _check((1, 2, 15, 33), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, nan=True)


def test_column_stride_three_uses_the_loop_nest(used):
    _check((1, 2, 9, 20), {"kernel_shape": [3, 3], "strides": [3, 3]})
    assert used == [False]


@pytest.mark.parametrize("threads", [1, 2])
def test_built_kernel_on_numpy_arrays(threads):
    """``MaxPool2d.build()`` (the numpy wrapper benchmarks use) against the interpreter."""
    from irgraph.backends.cpu.llvm_target import host_cpu
    geom = pool_direct.PoolGeometry(planes=6, h=13, w=21, kh=3, kw=3, oh=7, ow=11, sh=2, sw=2, pt=1, pl=1)
    f = pool_direct.MaxPool2d(geom, lanes=host_cpu().f32_lanes, parallel_min_outputs=1).build()
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 13, 21), "float32"))
    g.set_outputs([g.op("max_pool", [x], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})])
    xv = np.random.default_rng(3).standard_normal((2, 3, 13, 21)).astype(np.float32)
    np.testing.assert_array_equal(f(xv, num_threads=threads), irgraph.compile(g).run(xv)[0])
