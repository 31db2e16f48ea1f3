"""rnn / gru / lstm: references against a per-row, per-step formulation; inference; errors."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import irgraph
from irgraph import ShapeError, TensorType, run_graph
from irgraph.frontends.onnx.importer import import_model

import oprun
from oprun import build, onnx_model, run, value_info


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---- an independent formulation: one batch row and one time step at a time, float64 -----------
def _naive(kind, X, W, R, B=None, lens=None, h0=None, c0=None, P=None, direction="forward",  # noqa: C901
           clip=None, lbr=0, input_forget=0, f=_sig, g=np.tanh, hf=np.tanh):
    X, W, R = (np.asarray(a, np.float64) for a in (X, W, R))
    seq, batch, _ = X.shape
    nd, hid = W.shape[0], R.shape[2]
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    B = np.zeros((nd, 2 * gates * hid)) if B is None else np.asarray(B, np.float64)
    lens = [seq] * batch if lens is None else list(lens)
    cl = (lambda v: v) if clip is None else (lambda v: np.clip(v, -clip, clip))
    Y = np.zeros((seq, nd, batch, hid))
    Yh = np.zeros((nd, batch, hid))
    Yc = np.zeros((nd, batch, hid))
    for d in range(nd):
        rev = direction == "reverse" or d == 1
        Wd, Rd = W[d], R[d]
        wb, rb = B[d][:gates * hid], B[d][gates * hid:]
        for b in range(batch):
            h = np.zeros(hid) if h0 is None else np.asarray(h0[d, b], np.float64)
            c = np.zeros(hid) if c0 is None else np.asarray(c0[d, b], np.float64)
            times = range(lens[b] - 1, -1, -1) if rev else range(lens[b])
            for t in times:
                x = X[t, b]
                if kind == "rnn":
                    h = f(cl(Wd @ x + Rd @ h + wb + rb))
                elif kind == "gru":
                    sl = [slice(k * hid, (k + 1) * hid) for k in range(3)]
                    z = f(cl(Wd[sl[0]] @ x + Rd[sl[0]] @ h + wb[sl[0]] + rb[sl[0]]))
                    r = f(cl(Wd[sl[1]] @ x + Rd[sl[1]] @ h + wb[sl[1]] + rb[sl[1]]))
                    if lbr:
                        n = g(cl(Wd[sl[2]] @ x + r * (Rd[sl[2]] @ h + rb[sl[2]]) + wb[sl[2]]))
                    else:
                        n = g(cl(Wd[sl[2]] @ x + Rd[sl[2]] @ (r * h) + rb[sl[2]] + wb[sl[2]]))
                    h = (1 - z) * n + z * h
                else:
                    sl = {k: slice(j * hid, (j + 1) * hid) for j, k in enumerate("iofc")}
                    pre = {k: Wd[s] @ x + Rd[s] @ h + wb[s] + rb[s] for k, s in sl.items()}
                    p = np.zeros(3 * hid) if P is None else np.asarray(P[d], np.float64)
                    i = f(cl(pre["i"] + p[:hid] * c))
                    fg = 1 - i if input_forget else f(cl(pre["f"] + p[2 * hid:] * c))
                    c = fg * c + i * g(cl(pre["c"]))
                    o = f(cl(pre["o"] + p[hid:2 * hid] * c))
                    h = o * hf(c)
                Y[t, d, b] = h
            Yh[d, b] = h
            Yc[d, b] = c
    return Y, Yh, Yc


def _run(kind, arrays, attrs):
    return run(kind, arrays, attrs, num_outputs=3 if kind == "lstm" else 2)


def _run_against_naive(kind, arrays, attrs, **naive_kw):
    """Run the op and check every output against ``_naive`` on the same arrays; returns them."""
    got = _run(kind, arrays, attrs)
    for gv, wv in zip(got, _naive(kind, *arrays, **naive_kw)):
        np.testing.assert_allclose(gv, wv, rtol=1e-4, atol=1e-5)
    return got


def _weights(rng, kind, nd, hid, inp, scale=0.5):
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    W = (rng.standard_normal((nd, gates * hid, inp)) * scale).astype(np.float32)
    R = (rng.standard_normal((nd, gates * hid, hid)) * scale).astype(np.float32)
    B = (rng.standard_normal((nd, 2 * gates * hid)) * scale).astype(np.float32)
    return W, R, B


# ---- references ------------------------------------------------------------------------------
def test_rnn_hand_computed():
    # hidden 1, W = 1, R = 0.5, no bias: h1 = tanh(1), h2 = tanh(2 + 0.5 h1)
    X = np.array([[[1.0]], [[2.0]]], np.float32)
    W = np.ones((1, 1, 1), np.float32)
    R = np.full((1, 1, 1), 0.5, np.float32)
    Y, Yh = _run("rnn", [X, W, R], {"hidden_size": 1})
    h1 = np.tanh(1.0)
    h2 = np.tanh(2.0 + 0.5 * h1)
    np.testing.assert_allclose(Y.reshape(-1), [h1, h2], rtol=1e-6)
    np.testing.assert_allclose(Yh.reshape(-1), [h2], rtol=1e-6)
    assert Y.dtype == np.float32 and Y.shape == (2, 1, 1, 1)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_matches_per_row_formulation(kind, direction):
    rng = np.random.default_rng(1)
    seq, batch, inp, hid = 5, 3, 4, 6
    nd = 2 if direction == "bidirectional" else 1
    X = rng.standard_normal((seq, batch, inp)).astype(np.float32)
    W, R, B = _weights(rng, kind, nd, hid, inp)
    lens = np.array([5, 2, 4], np.int32)
    h0 = rng.standard_normal((nd, batch, hid)).astype(np.float32)
    arrays = [X, W, R, B, lens, h0]
    if kind == "lstm":
        c0 = rng.standard_normal((nd, batch, hid)).astype(np.float32)
        P = rng.standard_normal((nd, 3 * hid)).astype(np.float32)
        arrays += [c0, P]
    got = _run_against_naive(kind, arrays, {"direction": direction, "hidden_size": hid, "clip": 1.5},
                             direction=direction, clip=1.5, f=_sig if kind != "rnn" else np.tanh)
    # past each row's length Y is zero
    assert not got[0][2:, :, 1].any() and not got[0][4:, :, 2].any()


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset(lbr):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((4, 2, 3)).astype(np.float32)
    W, R, B = _weights(rng, "gru", 1, 5, 3)
    got = _run("gru", [X, W, R, B], {"linear_before_reset": lbr})
    want = _naive("gru", X, W, R, B, lbr=lbr)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
    other = _naive("gru", X, W, R, B, lbr=1 - lbr)
    assert not np.allclose(got[0], other[0], atol=1e-4), "linear_before_reset made no difference"


def test_lstm_input_forget():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3, 2, 3)).astype(np.float32)
    W, R, B = _weights(rng, "lstm", 1, 4, 3)
    _run_against_naive("lstm", [X, W, R, B], {"input_forget": 1}, input_forget=1)


def test_activations_with_alpha_beta():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3, 2, 3)).astype(np.float32)
    W, R, B = _weights(rng, "lstm", 1, 4, 3)
    attrs = {"activations": ["hardsigmoid", "leakyrelu", "scaledtanh"],
             "activation_alpha": [0.3, 0.05, 0.8], "activation_beta": [0.4, 0.0, 1.3]}
    _run_against_naive("lstm", [X, W, R, B], attrs, f=lambda v: np.clip(0.3 * v + 0.4, 0, 1),
                       g=lambda v: np.where(v >= 0, v, 0.05 * v), hf=lambda v: 0.8 * np.tanh(1.3 * v))


def test_layout_1_is_batch_major():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((4, 2, 3)).astype(np.float32)
    W, R, B = _weights(rng, "lstm", 2, 3, 3)
    h0 = rng.standard_normal((2, 2, 3)).astype(np.float32)
    a = _run("lstm", [X, W, R, B, None, h0], {"direction": "bidirectional"})
    b = _run("lstm", [X.swapaxes(0, 1).copy(), W, R, B, None, h0.swapaxes(0, 1).copy()],
             {"direction": "bidirectional", "layout": 1})
    np.testing.assert_allclose(b[0], a[0].transpose(2, 0, 1, 3), rtol=1e-6)
    np.testing.assert_allclose(b[1], a[1].swapaxes(0, 1), rtol=1e-6)
    np.testing.assert_allclose(b[2], a[2].swapaxes(0, 1), rtol=1e-6)


def test_float16_and_float64_keep_their_dtype():
    rng = np.random.default_rng(6)
    for npdt in (np.float16, np.float64):
        X = rng.standard_normal((2, 1, 2)).astype(npdt)
        W, R, B = (a.astype(npdt) for a in _weights(rng, "gru", 1, 2, 2))
        Y, Yh = _run("gru", [X, W, R, B], {})
        assert Y.dtype == npdt and Yh.dtype == npdt
        np.testing.assert_allclose(Y.astype(np.float64), _naive("gru", X, W, R, B)[0],
                                   rtol=1e-2 if npdt == np.float16 else 1e-10, atol=1e-3 if npdt == np.float16 else 0)


def test_bad_sequence_lens_at_run_time():
    X = np.zeros((2, 1, 1), np.float32)
    W = np.zeros((1, 1, 1), np.float32)
    g, _, feeds = build("rnn", [X, W, W, None, np.array([3], np.int32)], num_outputs=2)
    with pytest.raises(irgraph.IrgraphError, match="sequence_lens"):
        run_graph(g, feeds)


# ---- inference -------------------------------------------------------------------------------
def _infer(kind, in_types, attrs=None, nout=None):
    return oprun.types(kind, in_types, attrs, num_outputs=nout or (3 if kind == "lstm" else 2))


F = irgraph.dtype.float32


def test_infer_symbolic_dims_and_hidden_from_R():
    types = [TensorType(("S", "N", 3), F), TensorType((1, 12, 3), F), TensorType((1, 12, 3), F)]
    y, yh, yc = _infer("lstm", types)
    assert y.shape == ("S", 1, "N", 3) and yh.shape == (1, "N", 3) and yc.shape == (1, "N", 3)
    assert y.dtype is F


def test_infer_layout_1_bidirectional():
    types = [TensorType((2, 7, 3), F), TensorType((2, 15, 3), F), TensorType((2, 15, 5), F)]
    y, yh = _infer("gru", types, {"direction": "bidirectional", "layout": 1, "hidden_size": 5})
    assert y.shape == (2, 7, 2, 5) and yh.shape == (2, 2, 5)


def test_infer_unknown_rank_gives_fresh_dims():
    types = [TensorType(None, F), TensorType(None, F), TensorType(None, F)]
    y, yh = _infer("rnn", types, {"hidden_size": 4})
    assert len(y.shape) == 4 and y.shape[3] == 4 and isinstance(y.shape[0], str)


@pytest.mark.parametrize("types,attrs,match", [
    ([(5, 2, 3), (1, 16, 4), (1, 16, 4)], {}, "W has the wrong shape"),           # input size 4 != 3
    ([(5, 2, 3), (1, 15, 3), (1, 15, 4)], {}, "W has the wrong shape"),           # 15 != 4 gates * 4
    ([(5, 2, 3), (1, 16, 3), (1, 16, 4)], {"direction": "bidirectional"}, "wrong shape"),
    ([(5, 2, 3), (1, 16, 3), (1, 16, 4)], {"direction": "sideways"}, "unknown direction"),
    ([(5, 2, 3), (1, 16, 3), (1, 16, 4)], {"activations": ["sigmoid", "tanh"]}, "activations per direction"),
    ([(5, 2, 3), (1, 16, 3), (1, 16, 4)], {"activations": ["sigmoid", "tanh", "cube"]}, "unknown activation"),
    ([(5, 2), (1, 16, 3), (1, 16, 4)], {}, "rank 3"),
])
def test_infer_errors_name_the_op(types, attrs, match):
    with pytest.raises(ShapeError, match=match) as e:
        _infer("lstm", [TensorType(s, F) for s in types], attrs)
    assert "lstm" in str(e.value)


def test_infer_dtype_mismatch():
    with pytest.raises(ShapeError, match="dtype") as e:
        _infer("gru", [TensorType((2, 1, 3), F), TensorType((1, 6, 3), irgraph.dtype.float64),
                       TensorType((1, 6, 2), F)])
    assert "gru" in str(e.value)


def test_infer_initial_state_shape():
    types = [TensorType((2, 4, 3), F), TensorType((1, 2, 3), F), TensorType((1, 2, 2), F),
             None, None, TensorType((1, 5, 2), F)]
    with pytest.raises(ShapeError, match="initial_h"):
        _infer("rnn", types)


# ---- the ONNX frontend: ONNX's alpha/beta lists are consumed in order -------------------------
def test_onnx_activation_alpha_consumed_in_order():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((3, 2, 3)).astype(np.float32)
    W, R, B = _weights(rng, "gru", 1, 4, 3)
    node = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=4,
                            activations=["HardSigmoid", "LeakyRelu"],
                            activation_alpha=[0.25, 0.1], activation_beta=[0.45])
    ins = [value_info(n, TensorProto.FLOAT, a.shape) for n, a in (("X", X), ("W", W), ("R", R), ("B", B))]
    g = import_model(onnx_model(node, ins, [value_info("Y"), value_info("Y_h")], 14))
    node_attrs = g.nodes[0].attrs
    assert node_attrs["activation_alpha"] == pytest.approx((0.25, 0.1))
    assert node_attrs["activation_beta"] == pytest.approx((0.45, 0.0))
    Y, _ = run_graph(g, [X, W, R, B])
    want = _naive("gru", X, W, R, B, f=lambda v: np.clip(0.25 * v + 0.45, 0, 1),
                  g=lambda v: np.where(v >= 0, v, 0.1 * v))[0]
    np.testing.assert_allclose(Y, want, rtol=1e-4, atol=1e-5)
