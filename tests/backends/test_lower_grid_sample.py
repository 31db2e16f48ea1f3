"""grid_sample lowered natively (backends/lower_grid_sample.py) against the numpy interpreter."""
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


# ONNX defines cubic sampling for 2-D data only, so (3, "cubic") is not a case
MODES = [(rank, mode) for rank in (2, 3) for mode in ("nearest", "linear", "cubic") if (rank, mode) != (3, "cubic")]


@pytest.mark.parametrize("rank,mode", MODES)
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [False, True])
def test_grid_sample_matches_interpreter(mode, padding, align, rank):
    rng = np.random.default_rng(rank)
    spatial = (5, 7) if rank == 2 else (3, 4, 5)
    out_sp = (3, 9) if rank == 2 else (2, 3, 5)
    x = rng.standard_normal((2, 3) + spatial).astype(np.float32)
    grid = rng.uniform(-1.6, 1.6, (2,) + out_sp + (rank,)).astype(np.float32)   # some points outside
    g = Graph()
    xi = g.add_input("x", TensorType(x.shape, dt.float32))
    gi = g.add_input("grid", TensorType(grid.shape, dt.float32))
    g.set_outputs([g.op("grid_sample", [xi, gi], {"mode": mode, "padding_mode": padding, "align_corners": align})])
    lower_node(g.nodes[-1])   # native lowering exists
    ref = irgraph.compile(g).run(x, grid)[0]
    got = irgraph.compile(g, target="cpu").run(x, grid)[0]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
