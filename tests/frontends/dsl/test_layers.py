"""Every layer's output against an independent numpy computation (npref.py), on the reference
interpreter (eager calls) — train and eval modes where they differ."""
from __future__ import annotations

import numpy as np
import pytest

import npref
from irgraph.frontends import dsl

rng = np.random.default_rng(42)
TOL = dict(rtol=1e-5, atol=1e-5)


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def params(layer):
    return {k: v.astype(np.float64) for k, v in layer.state_dict().items()}


def test_dense_and_linear():
    x = rand(4, 3)
    d = dsl.Dense(5, activation="relu")
    y = d(x)
    p = params(d)
    np.testing.assert_allclose(y, np.maximum(x @ p["weight"] + p["bias"], 0), **TOL)
    lin = dsl.Linear(3, 2, bias=False)
    np.testing.assert_allclose(lin(rand(2, 5, 3).astype(np.float32)).shape, (2, 5, 2))
    x3 = rand(2, 5, 3)
    np.testing.assert_allclose(lin(x3), x3 @ params(lin)["weight"], **TOL)


@pytest.mark.parametrize("kw,pads", [
    (dict(strides=1, padding="valid"), (0, 0, 0, 0)),
    (dict(strides=1, padding="same"), (1, 1, 1, 1)),
    (dict(strides=2, padding="same"), (0, 0, 1, 1)),    # 6 -> 3: 1 pad, at the end (TensorFlow's SAME)
    (dict(strides=(2, 1), padding=(1, 0)), (1, 0, 1, 0)),
])
def test_conv2d(kw, pads):
    x = rand(2, 3, 6, 6)
    conv = dsl.Conv2D(4, 3, **kw)
    y = conv(x)
    p = params(conv)
    s = kw["strides"] if isinstance(kw["strides"], tuple) else (kw["strides"],) * 2
    np.testing.assert_allclose(y, npref.conv2d(x, p["weight"], p["bias"], s, pads), **TOL)


def test_conv2d_groups_and_activation():
    x = rand(1, 4, 5, 5)
    conv = dsl.Conv2D(6, (3, 2), groups=2, activation="tanh", use_bias=False)
    p = params(conv) if conv.in_channels else None
    y = conv(x)
    p = params(conv)
    assert p["weight"].shape == (6, 2, 3, 2) and "bias" not in p
    np.testing.assert_allclose(y, np.tanh(npref.conv2d(x, p["weight"], None, groups=2)), **TOL)


@pytest.mark.parametrize("layer,kind,k,s,pads", [
    (dsl.MaxPool2D(2), "max", (2, 2), (2, 2), (0, 0, 0, 0)),
    (dsl.MaxPool2D(3, strides=2, padding="same"), "max", (3, 3), (2, 2), (1, 1, 1, 1)),
    (dsl.AvgPool2D(2), "avg", (2, 2), (2, 2), (0, 0, 0, 0)),
    (dsl.AvgPool2D(2, padding="same"), "avg", (2, 2), (2, 2), (0, 0, 1, 1)),
    (dsl.AvgPool2D(3, strides=1, padding=1), "avg", (3, 3), (1, 1), (1, 1, 1, 1)),
])
def test_pools(layer, kind, k, s, pads):
    x = rand(2, 3, 5, 5)
    np.testing.assert_allclose(layer(x), npref.pool2d(x, k, s, pads, kind), **TOL)


def test_global_pools_and_flatten():
    x = rand(2, 3, 4, 5)
    np.testing.assert_allclose(dsl.GlobalAvgPool()(x), x.mean(axis=(2, 3)), **TOL)
    np.testing.assert_allclose(dsl.GlobalAvgPool(keepdims=True)(x), x.mean(axis=(2, 3), keepdims=True), **TOL)
    np.testing.assert_allclose(dsl.GlobalMaxPool()(x), x.max(axis=(2, 3)), **TOL)
    np.testing.assert_array_equal(dsl.Flatten()(x), x.reshape(2, -1))
    np.testing.assert_array_equal(dsl.Flatten(2)(x), x.reshape(2, 3, -1))


def test_activations():
    x = rand(3, 7) * 3
    cases = [(dsl.ReLU(), np.maximum(x, 0)), (dsl.Sigmoid(), npref.sigmoid(x)), (dsl.Tanh(), np.tanh(x)),
             (dsl.GELU(), npref.gelu(x)), (dsl.GELU("tanh"), npref.gelu(x, "tanh")),
             (dsl.Softmax(), npref.softmax(x)), (dsl.Softmax(axis=0), npref.softmax(x, axis=0)),
             (dsl.LeakyReLU(), np.where(x >= 0, x, 0.01 * x)),
             (dsl.LeakyReLU(0.2), np.where(x >= 0, x, 0.2 * x))]
    for layer, want in cases:
        np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-6, err_msg=type(layer).__name__)


def test_dropout_eval_is_identity_and_adds_no_node():
    x = rand(4, 8)
    d = dsl.Dropout(0.5)
    np.testing.assert_array_equal(d(x), x)
    g = dsl.Sequential(dsl.Dense(3), dsl.Dropout(0.3)).to_graph([(None, 8)])
    assert "dropout" not in g.op_histogram() and "mul" not in g.op_histogram()


def test_dropout_training_with_mask_inputs():
    m = dsl.Sequential(dsl.Dropout(0.25))
    t = m.trace([(None, 1000)], params="inputs", training=True, random="inputs")
    (name, r), = t.random_inputs.items()
    assert name == "0.mask" and r.rate == 0.25
    x = rand(3, 1000)
    feeds = t.feeds(x, rng=np.random.default_rng(7))
    mask = feeds[name]
    assert set(np.unique(mask)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((mask == 0).mean() - 0.25) < 0.03
    (y,) = t.run(x, rng=np.random.default_rng(7))
    np.testing.assert_allclose(y, x * mask, rtol=1e-6)


def test_dropout_training_with_the_counter_generator():
    m = dsl.Sequential(dsl.Dense(4, in_features=4), dsl.Dropout(0.3))
    t = m.trace([(None, 4)], params="inputs", training=True)   # "counter" is the training default
    assert not t.random_inputs and t.buffers["1.rng_state"] == "1.rng_state"
    assert list(t.state_outputs) == ["1.rng_state"]
    assert t.initial["1.rng_state"].dtype == np.uint32
    x = rand(500, 4)
    y, state = t.run(x)
    np.testing.assert_array_equal(state, t.initial["1.rng_state"] + 1)   # the counter advances
    h = x @ t.initial["0.weight"] + t.initial["0.bias"]
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.03
    np.testing.assert_allclose(y[kept], h[kept] / 0.7, rtol=1e-5)
    y_same, _ = t.run(x)
    np.testing.assert_array_equal(y_same, y)                              # a function of the state
    y_next, _ = t.run(x, params={"1.rng_state": state})
    assert 0.3 < ((y_next != 0) != kept).mean() < 0.5                     # the next step draws anew
    # a fixed seed fixes the state; a layer called twice draws two masks
    d = dsl.Dropout(0.5, seed=7)
    assert d.state_dict()["rng_state"][0] == 7
    d.train()
    with dsl.Tracer(params="inputs") as tr:
        v = tr.input("v", (1000,))
        traced = tr.finish([d(v), d(v)])
    a, b, _ = traced.run(np.ones(1000, np.float32))
    assert not np.array_equal(a, b) and list(traced.state_outputs) == ["rng_state"]


def test_dropout_training_with_the_op():
    d = dsl.Dropout(0.5, seed=3).train()
    x = np.ones((50, 40), np.float32)
    y = d(x)
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6
    np.testing.assert_array_equal(d(x), y)  # a fixed seed draws the same mask each run


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 4, 4)])
def test_batch_norm_eval_and_train(shape):
    x = rand(*shape) * 2 + 1
    bn = dsl.BatchNorm(momentum=0.8, epsilon=1e-3)
    bn(x)  # builds
    st = {k: rand(3) if k != "running_var" else np.abs(rand(3)) + 0.5 for k in bn.state_dict()}
    bn.load_state_dict(st)
    axes = (0,) + tuple(range(2, len(shape)))
    bc = (1, 3) + (1,) * (len(shape) - 2)
    w, b, rm, rv = (st[k].reshape(bc) for k in ("weight", "bias", "running_mean", "running_var"))
    np.testing.assert_allclose(bn(x), (x - rm) / np.sqrt(rv + 1e-3) * w + b, **TOL)
    bn.train()
    y = bn(x)
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    np.testing.assert_allclose(y, (x - mu.reshape(bc)) / np.sqrt(var.reshape(bc) + 1e-3) * w + b, rtol=1e-4, atol=1e-4)
    # the eager training call stored the running statistics' updates
    np.testing.assert_allclose(bn.running_mean.value, st["running_mean"] * 0.8 + mu * 0.2, **TOL)
    np.testing.assert_allclose(bn.running_var.value, st["running_var"] * 0.8 + var * 0.2, **TOL)


def test_batch_norm_training_trace_exposes_running_stats():
    m = dsl.Sequential(dsl.Conv2D(2, 1, in_channels=1), dsl.BatchNorm())
    t = m.trace([(None, 1, 3, 3)], params="inputs", training=True)
    assert t.buffers == {"1.running_mean": "1.running_mean", "1.running_var": "1.running_var"}
    assert list(t.state_outputs) == ["1.running_mean", "1.running_var"]
    assert t.graph.meta["output_names"] == ["output", "1.running_mean.next", "1.running_var.next"]
    assert t.graph.op_histogram()["batch_norm_training"] == 1
    x = rand(4, 1, 3, 3)
    y, rm, rv = t.run(x)
    z = npref.conv2d(x, t.initial["0.weight"], t.initial["0.bias"])
    np.testing.assert_allclose(rm, 0.1 * z.mean(axis=(0, 2, 3)), **TOL)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * z.var(axis=(0, 2, 3)), **TOL)


def test_layer_norm():
    x = rand(2, 3, 4)
    ln = dsl.LayerNorm()
    ln(x)
    st = {"weight": rand(4), "bias": rand(4)}
    ln.load_state_dict(st)
    np.testing.assert_allclose(ln(x), npref.layer_norm(x, st["weight"], st["bias"]), **TOL)
    ln2 = dsl.LayerNorm((3, 4), epsilon=1e-3, affine=False)
    np.testing.assert_allclose(ln2(x), npref.layer_norm(x, 1, 0, 1e-3, naxes=2), **TOL)


def test_embedding():
    emb = dsl.Embedding(7, 3)
    ids = np.array([[0, 6, 2], [2, 2, 1]], np.int64)
    y = emb(ids)
    np.testing.assert_array_equal(y, emb.weight.value[ids])
    assert np.abs(emb.weight.value).max() <= 0.05


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm(bidirectional):
    x = rand(2, 4, 3)
    layer = dsl.LSTM(5, return_sequences=True, return_state=True, bidirectional=bidirectional)
    y, h, c = layer(x)
    p = params(layer)
    nd = 2 if bidirectional else 1
    ys, hs, cs = [], [], []
    for d in range(nd):
        yd, hd, cd = npref.lstm(x, p["weight_ih"][d], p["weight_hh"][d], p["bias"][d], reverse=d == 1)
        ys.append(yd)
        hs.append(hd)
        cs.append(cd)
    np.testing.assert_allclose(y, np.concatenate(ys, axis=-1), **TOL)
    np.testing.assert_allclose(h, np.concatenate(hs, axis=-1), **TOL)
    np.testing.assert_allclose(c, np.concatenate(cs, axis=-1), **TOL)
    last = dsl.LSTM(5, input_size=3)
    last.load_state_dict({k: v[:1] for k, v in p.items()})
    np.testing.assert_allclose(last(x), npref.lstm(x, p["weight_ih"][0], p["weight_hh"][0], p["bias"][0])[1], **TOL)


def test_lstm_initial_state_and_defaults():
    x = rand(2, 3, 4)
    layer = dsl.LSTM(3, input_size=4)
    layer.initialize(seed=0)
    p = params(layer)
    b = p["bias"][0]
    np.testing.assert_array_equal(b[6:9], 1.0)  # forget gate (i, o, f, c) starts at 1 (Keras)
    assert np.count_nonzero(b) == 3
    r = p["weight_hh"][0]                       # orthogonal columns
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-5)
    h0, c0 = rand(2, 3), rand(2, 3)
    from irgraph.frontends.dsl import Tracer
    with Tracer() as t:
        xs, hs, cs = t.input("x", (2, 3, 4)), t.input("h", (2, 3)), t.input("c", (2, 3))
        traced = t.finish(layer(xs, initial_state=(hs, cs)))
    (got,) = traced.run(x, h0, c0)
    want = npref.lstm(x, p["weight_ih"][0], p["weight_hh"][0], p["bias"][0], h0, c0)[1]
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru(bidirectional):
    x = rand(3, 4, 2)
    layer = dsl.GRU(4, return_sequences=True, bidirectional=bidirectional)
    y = layer(x)
    p = params(layer)
    nd = 2 if bidirectional else 1
    ys = [npref.gru(x, p["weight_ih"][d], p["weight_hh"][d], p["bias"][d], reverse=d == 1)[0]
          for d in range(nd)]
    np.testing.assert_allclose(y, np.concatenate(ys, axis=-1), **TOL)


def _mha_params(m):
    sd = params(m)
    return {k: (sd[f"{k}.weight"], sd[f"{k}.bias"]) for k in ("q_proj", "k_proj", "v_proj", "out_proj")}


def test_multi_head_attention():
    q, kv = rand(2, 3, 8), rand(2, 5, 8)
    m = dsl.MultiHeadAttention(8, 2)
    m.initialize(seed=1)
    sd = m.state_dict()
    m.load_state_dict({k: rand(*v.shape) for k, v in sd.items()})   # non-zero biases
    np.testing.assert_allclose(m(q, kv), npref.mha(q, kv, kv, _mha_params(m), 2), **TOL)
    np.testing.assert_allclose(m(q), npref.mha(q, q, q, _mha_params(m), 2), **TOL)
    from irgraph.frontends.dsl import Tracer
    mask = rng.random((2, 1, 3, 5)) > 0.3
    mask[..., 0] = True
    with Tracer() as t:
        a, b, mk = t.input("q", (2, 3, 8)), t.input("kv", (2, 5, 8)), t.input("mask", ((2, 1, 3, 5), "bool"))
        tr = t.finish([m(a, b, b, attn_mask=mk), m(a, is_causal=True)])
    y_mask, y_causal = tr.run(q, kv, mask)
    np.testing.assert_allclose(y_mask, npref.mha(q, kv, kv, _mha_params(m), 2, mask=mask), **TOL)
    np.testing.assert_allclose(y_causal, npref.mha(q, q, q, _mha_params(m), 2, causal=True), **TOL)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer(norm_first):
    x = rand(2, 4, 8)
    layer = dsl.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation="gelu", norm_first=norm_first)
    layer.initialize(seed=2)
    layer.load_state_dict({k: v + 0.1 * rand(*v.shape) for k, v in layer.state_dict().items()})
    sd = params(layer)
    attn = {k: (sd[f"self_attn.{k}.weight"], sd[f"self_attn.{k}.bias"])
            for k in ("q_proj", "k_proj", "v_proj", "out_proj")}

    def ln(v, i):
        return npref.layer_norm(v, sd[f"norm{i}.weight"], sd[f"norm{i}.bias"])

    def ff(v):
        h = npref.gelu(v @ sd["linear1.weight"] + sd["linear1.bias"])
        return h @ sd["linear2.weight"] + sd["linear2.bias"]
    xd = x.astype(np.float64)
    if norm_first:
        h = xd + npref.mha(ln(xd, 1), ln(xd, 1), ln(xd, 1), attn, 2)
        want = h + ff(ln(h, 2))
    else:
        h = ln(xd + npref.mha(xd, xd, xd, attn, 2), 1)
        want = ln(h + ff(h), 2)
    np.testing.assert_allclose(layer(x), want, rtol=1e-4, atol=1e-4)   # eval: dropout is off
    g = layer.to_graph([(None, 4, 8)], params="inputs", training=True, random="inputs")
    assert len(g.meta["dsl"]["random_inputs"]) == 3   # dropout, dropout1, dropout2
