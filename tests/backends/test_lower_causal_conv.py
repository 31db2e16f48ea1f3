"""causal_conv_with_state lowered natively (backends/lower_causal_conv.py) against the interpreter."""
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


@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("bias,past", [(False, False), (True, False), (True, True), (False, True)])
@pytest.mark.parametrize("act", ["none", "silu"])
@pytest.mark.parametrize("d", [dt.float32, dt.float16])
def test_causal_conv_matches_interpreter(k, bias, past, act, d):
    rng = np.random.default_rng(k * 4 + bias * 2 + past)
    B, C, L = 2, 5, 7
    g = Graph()
    ins = [g.add_input("x", TensorType((B, C, L), d)), g.add_input("w", TensorType((C, 1, k), d))]
    feeds = [rng.standard_normal((B, C, L)).astype(d.np), rng.standard_normal((C, 1, k)).astype(d.np)]
    if bias or past:
        ins.append(g.add_input("b", TensorType((C,), d)) if bias else None)
        feeds += [rng.standard_normal(C).astype(d.np)] if bias else []
    if past:
        ins.append(g.add_input("s", TensorType((B, C, k - 1), d)))
        feeds.append(rng.standard_normal((B, C, k - 1)).astype(d.np))
    g.set_outputs(list(g.op("causal_conv_with_state", ins, {"activation": act}, num_outputs=2)))
    lower_node(g.nodes[-1])   # native lowering exists
    ref = irgraph.compile(g).run(*feeds)
    got = irgraph.compile(g, target="cpu").run(*feeds)
    tol = 1e-5 if d is dt.float32 else 3e-3
    for r, o in zip(ref, got):
        assert r.dtype == o.dtype and r.shape == o.shape
        np.testing.assert_allclose(o.astype(np.float64), r.astype(np.float64), rtol=tol, atol=tol)
