"""linear_attention lowered natively (backends/lower_linear_attention.py) against the interpreter."""
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


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2)])
@pytest.mark.parametrize("past", [False, True])
@pytest.mark.parametrize("per_head", [False, True])
def test_linear_attention_matches_interpreter(rule, hq, hkv, past, per_head):
    rng = np.random.default_rng(hq * 3 + past)
    B, T, dk, dv = 2, 5, 3, 7
    d = dt.float32
    shapes = [("q", (B, T, hq * dk)), ("k", (B, T, hkv * dk)), ("v", (B, T, hkv * dv))]
    g = Graph()
    ins, feeds = [], []
    for name, s in shapes:
        ins.append(g.add_input(name, TensorType(s, d)))
        feeds.append((rng.standard_normal(s) * 0.5).astype(np.float32))
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    extra = [("s", (B, hkv, dk, dv)) if past else None,
             ("g", (B, T, hkv if per_head else hkv * dk)) if gated else None,
             ("beta", (B, T, hkv if per_head else 1)) if delta else None]
    while extra and extra[-1] is None:
        extra.pop()
    for e in extra:
        if e is None:
            ins.append(None)
            continue
        ins.append(g.add_input(e[0], TensorType(e[1], d)))
        a = rng.standard_normal(e[1]).astype(np.float32)
        feeds.append(-np.abs(a) * 0.3 if e[0] == "g" else (1 / (1 + np.exp(-a)) if e[0] == "beta" else a))
    attrs = {"update_rule": rule, "q_num_heads": hq, "kv_num_heads": hkv, "scale": 0.0}
    g.set_outputs(list(g.op("linear_attention", ins, attrs, num_outputs=2)))
    lower_node(g.nodes[-1])   # native lowering exists
    ref = irgraph.compile(g).run(*feeds)
    got = irgraph.compile(g, target="cpu").run(*feeds)
    for r, o in zip(ref, got):
        assert r.dtype == o.dtype and r.shape == o.shape
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5)
