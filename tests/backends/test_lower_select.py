"""top_k lowered natively (backends/lower_select.py) against the numpy interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import dtype as dt
from irgraph.backends.kernel_ir import If, walk_stmts
from irgraph.backends.lower import lower_node
from irgraph.graph import Graph
from irgraph.types import TensorType


@pytest.fixture(scope="module", autouse=True)
def _private_object_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("irgraph_cache")))
        yield


def _top_k_graph(shape, d, k, axis, largest):
    g = Graph()
    x = g.add_input("x", TensorType(shape, d))
    kk = g.add_const(np.array([k], np.int64))
    outs = g.op("top_k", [x, kk], {"axis": axis, "largest": largest, "sorted": True}, num_outputs=2)
    g.set_outputs(list(outs))
    return g


@pytest.mark.parametrize("shape,k,axis", [((5, 13), 4, -1), ((3, 17, 2), 17, 1), ((19,), 1, 0),
                                          ((5, 3, 7), 3, 0)])
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("d", [dt.float32, dt.float16, dt.int32, dt.float64])
def test_top_k_matches_interpreter(shape, k, axis, largest, d):
    rng = np.random.default_rng(len(shape) * 7 + k)
    if d.is_int:
        x = rng.integers(-4, 5, shape).astype(d.np)       # many ties: lower index first
    else:
        x = rng.standard_normal(shape).astype(d.np)
        x.reshape(-1)[::5] = x.reshape(-1)[1]             # ties in floats too
    g = _top_k_graph(shape, d, k, axis, largest)
    ref = irgraph.compile(g).run(x)
    got = irgraph.compile(g, target="cpu").run(x)
    for r, o in zip(ref, got):
        assert r.dtype == o.dtype and r.shape == o.shape
        np.testing.assert_array_equal(o, r)


def test_top_k_nan_sorts_like_numpy():
    x = np.array([[1.0, np.nan, 3.0, -2.0, np.nan, 0.5, 7.0]], np.float32)
    for largest in (True, False):
        g = _top_k_graph(x.shape, dt.float32, 4, 1, largest)
        ref = irgraph.compile(g).run(x)
        got = irgraph.compile(g, target="cpu").run(x)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[0], ref[0])


def test_top_k_lowers_to_a_rank_count_without_fallback():
    g = _top_k_graph((4, 9), dt.float32, 3, 1, True)
    k = lower_node(g.nodes[-1]).kernel
    assert any(isinstance(s, If) for s in walk_stmts(k.body))   # store only ranks below k
