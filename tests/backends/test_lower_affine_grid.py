"""affine_grid lowered natively (backends/lower_affine_grid.py) against the interpreter and a
hand-written expectation."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import dtype as dt
from irgraph.backends.lower import lower_node
from irgraph.graph import Graph
from irgraph.types import TensorType


@pytest.fixture(scope="module", autouse=True)
def _private_object_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("irgraph_cache")))
        yield


def _graph(theta_shape, size):
    g = Graph()
    t = g.add_input("theta", TensorType(theta_shape, dt.float32))
    s = g.add_const(np.array(size, np.int64))
    return g, t, s


@pytest.mark.parametrize("size", [(2, 3, 5, 7), (1, 2, 3, 4, 5), (2, 1, 1, 6)])
@pytest.mark.parametrize("align", [False, True])
def test_affine_grid_matches_interpreter(size, align):
    r = len(size) - 2
    theta = np.random.default_rng(r).standard_normal((size[0], r, r + 1)).astype(np.float32)
    g, t, s = _graph(theta.shape, size)
    g.set_outputs([g.op("affine_grid", [t, s], {"align_corners": align})])
    lower_node(g.nodes[-1])   # native lowering exists
    ref = irgraph.compile(g).run(theta)[0]
    got = irgraph.compile(g, target="cpu").run(theta)[0]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_identity_theta_gives_pixel_centers():
    theta = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)
    g, t, s = _graph(theta.shape, (1, 1, 2, 4))
    g.set_outputs([g.op("affine_grid", [t, s], {"align_corners": False})])
    got = irgraph.compile(g, target="cpu").run(theta)[0]
    xs = np.array([-0.75, -0.25, 0.25, 0.75], np.float32)   # (2i + 1) / W - 1
    ys = np.array([-0.5, 0.5], np.float32)
    np.testing.assert_allclose(got[0, :, :, 0], np.broadcast_to(xs, (2, 4)))
    np.testing.assert_allclose(got[0, :, :, 1], np.broadcast_to(ys[:, None], (2, 4)))
