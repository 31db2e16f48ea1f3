"""rnn / gru / lstm lowered natively (backends/lower_rnn.py) against the numpy interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import dtype as dt
from irgraph.backends.lower import lower_node
from irgraph.graph import Graph
from irgraph.types import TensorType

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


@pytest.fixture(scope="module", autouse=True)
def _private_object_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("irgraph_cache")))
        yield


def _case(kind, direction, layout, with_lens, extra_attrs, seed=0):
    rng = np.random.default_rng(seed)
    seq, batch, width, hid = 4, 3, 5, 7          # odd sizes: no vector-width multiples
    nd = 2 if direction == "bidirectional" else 1
    G = GATES[kind]
    xs = (batch, seq, width) if layout else (seq, batch, width)
    st = (batch, nd, hid) if layout else (nd, batch, hid)
    specs = [("X", xs, dt.float32), ("W", (nd, G * hid, width), dt.float32),
             ("R", (nd, G * hid, hid), dt.float32), ("B", (nd, 2 * G * hid), dt.float32),
             ("lens", (batch,), dt.int32) if with_lens else None, ("h0", st, dt.float32)]
    if kind == "lstm":
        specs += [("c0", st, dt.float32), ("P", (nd, 3 * hid), dt.float32)]
    g = Graph()
    ins, feeds = [], []
    for s in specs:
        if s is None:
            ins.append(None)
            continue
        ins.append(g.add_input(s[0], TensorType(s[1], s[2])))
        feeds.append(np.array([4, 0, 2], np.int32) if s[0] == "lens"
                     else (rng.standard_normal(s[1]) * 0.5).astype(np.float32))
    attrs = {"direction": direction, "layout": layout, "hidden_size": hid, **extra_attrs}
    g.set_outputs(list(g.op(kind, ins, attrs, num_outputs=3 if kind == "lstm" else 2)))
    return g, feeds


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("with_lens", [False, True])
def test_recurrent_matches_interpreter(kind, direction, layout, with_lens):
    g, feeds = _case(kind, direction, layout, with_lens, {})
    lower_node(g.nodes[-1])   # native lowering exists
    ref = irgraph.compile(g).run(*feeds)
    got = irgraph.compile(g, target="cpu").run(*feeds)
    for r, o in zip(ref, got):
        assert r.dtype == o.dtype and r.shape == o.shape
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,attrs", [
    ("gru", {"linear_before_reset": 1}), ("lstm", {"input_forget": 1}), ("rnn", {"clip": 0.3}),
    ("rnn", {"activations": ["leakyrelu"], "activation_alpha": [0.2]}),
    ("gru", {"activations": ["hardsigmoid", "softsign"]}),
])
def test_recurrent_options_match_interpreter(kind, attrs):
    g, feeds = _case(kind, "forward", 0, False, attrs, seed=3)
    ref = irgraph.compile(g).run(*feeds)
    got = irgraph.compile(g, target="cpu").run(*feeds)
    for r, o in zip(ref, got):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)
