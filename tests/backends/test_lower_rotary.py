"""rotary_embedding lowered natively (backends/lower_rotary.py) against the numpy interpreter."""
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


def _run(x, cos, sin, pos, attrs, d):
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, d)), g.add_input("cos", TensorType(cos.shape, d)),
           g.add_input("sin", TensorType(sin.shape, d))]
    feeds = [x, cos, sin]
    if pos is not None:
        ins.append(g.add_input("pos", TensorType(pos.shape, dt.int64)))
        feeds.append(pos)
    g.set_outputs([g.op("rotary_embedding", ins, attrs)])
    lower_node(g.nodes[-1])   # lowers natively (raises LoweringError otherwise)
    return irgraph.compile(g).run(*feeds)[0], irgraph.compile(g, target="cpu").run(*feeds)[0]


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("with_pos", [False, True])
@pytest.mark.parametrize("rot_dim", [0, 6])
@pytest.mark.parametrize("d", [dt.float32, dt.float16])
def test_rotary_matches_interpreter(interleaved, rank, with_pos, rot_dim, d):
    rng = np.random.default_rng(rank * 10 + rot_dim)
    B, H, S, D = 2, 3, 5, 10               # head size 10, rotary dim 6: not vector-width multiples
    x = rng.standard_normal((B, H, S, D) if rank == 4 else (B, S, H * D)).astype(d.np)
    half = (rot_dim or D) // 2
    if with_pos:
        cos = rng.uniform(-1, 1, (11, half)).astype(d.np)
        pos = rng.integers(0, 11, (B, S)).astype(np.int64)
    else:
        cos = rng.uniform(-1, 1, (B, S, half)).astype(d.np)
        pos = None
    sin = rng.uniform(-1, 1, cos.shape).astype(d.np)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rot_dim,
             "num_heads": H if rank == 3 else 0}
    ref, got = _run(x, cos, sin, pos, attrs, d)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    tol = 1e-5 if d is dt.float32 else 2e-3
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=tol, atol=tol)
    # features past the rotary dim pass through unchanged
    if rot_dim and rank == 4:
        np.testing.assert_array_equal(got[..., rot_dim:], x[..., rot_dim:])
