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


def _const_case(kind, direction, attrs, dtype=np.float32, layout=0, with_lens=False, seed=1):
    """Weights, biases and peepholes as graph constants (as ONNX models hold them), so the CPU
    backend packs them for its GEMM at compile time; sizes that are no vector-width multiple.
    R is scaled as usual initializations do (1/sqrt(hid)): a relu RNN with larger recurrent
    weights grows ~20x in 5 steps and float32 rounding alone then exceeds the tolerance."""
    rng = np.random.default_rng(seed)
    seq, batch, width, hid = 5, 10, 9, 19    # 10 rows: a full and a partial block of STEP_ROWS
    nd = 2 if direction == "bidirectional" else 1
    G = GATES[kind]
    d = dt.DType.from_numpy(np.dtype(dtype))
    g = Graph()
    feeds = []

    def inp(name, shape):
        feeds.append((rng.standard_normal(shape) * 0.5).astype(dtype))
        return g.add_input(name, TensorType(shape, d))

    def const(name, shape, scale=0.5):
        return g.add_const((rng.standard_normal(shape) * scale).astype(dtype), name)
    x = inp("X", (batch, seq, width) if layout else (seq, batch, width))
    ins = [x, const("W", (nd, G * hid, width)), const("R", (nd, G * hid, hid), hid ** -0.5), const("B", (nd, 2 * G * hid))]
    if with_lens:
        feeds.append(np.array([5, 0, 3, 1, 5, 2, 4, 5, 1, 3], np.int32))
        ins.append(g.add_input("lens", TensorType((batch,), dt.int32)))
    else:
        ins.append(None)
    st = (batch, nd, hid) if layout else (nd, batch, hid)
    ins.append(inp("h0", st))
    if kind == "lstm":
        ins += [inp("c0", st), const("P", (nd, 3 * hid))]
    attrs = {"direction": direction, "layout": layout, "hidden_size": hid, **attrs}
    g.set_outputs(list(g.op(kind, ins, attrs, num_outputs=3 if kind == "lstm" else 2)))
    return g, feeds


def _check(g, feeds, rtol, atol):
    ref = irgraph.compile(g).run(*feeds)
    got = irgraph.compile(g, target="cpu", num_threads=1).run(*feeds)
    for r, o in zip(ref, got):
        assert r.dtype == o.dtype and r.shape == o.shape
        np.testing.assert_allclose(o.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol)


@pytest.mark.parametrize("kind,direction,attrs,layout,with_lens", [
    ("lstm", "bidirectional", {}, 1, True),
    ("lstm", "forward", {"input_forget": 1, "clip": 0.8}, 0, False),
    ("gru", "bidirectional", {}, 0, True),
    ("gru", "reverse", {"linear_before_reset": 1}, 1, True),
    ("rnn", "bidirectional", {"activations": ["relu", "tanh"]}, 0, False),
])
def test_recurrent_const_weights_match_interpreter(kind, direction, attrs, layout, with_lens):
    _check(*_const_case(kind, direction, attrs, layout=layout, with_lens=with_lens), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,attrs", [("lstm", {}), ("gru", {}), ("gru", {"linear_before_reset": 1})])
def test_recurrent_float64_loop_nests(kind, attrs):
    # float64 has no GEMM template: both projections are the vectorized loop nests
    _check(*_const_case(kind, "bidirectional", attrs, dtype=np.float64, with_lens=True), rtol=1e-12, atol=1e-13)


def test_recurrent_float16_computes_in_float32():
    _check(*_const_case("lstm", "forward", {}, dtype=np.float16), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("path", ["template", "loop_nest"])
def test_recurrent_step_matmul_paths(monkeypatch, path):
    # batches above STEP_MAX_ROWS take the GEMM template for h R^T; a backend whose templates may
    # not sit inside a loop (CUDA) takes the plain loop nest over a compile-time transposed R
    from irgraph.backends import lower_rnn_parts
    monkeypatch.setattr(lower_rnn_parts, "STEP_MAX_ROWS", 0)
    if path == "loop_nest":
        monkeypatch.setattr(lower_rnn_parts, "templates_in_loops", lambda templates: False)
    _check(*_const_case("gru", "bidirectional", {}, with_lens=True, seed=5), rtol=1e-5, atol=1e-6)
