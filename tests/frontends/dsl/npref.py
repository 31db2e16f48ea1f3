"""Independent numpy implementations of the DSL layers, written from the textbook equations
(not from irgraph's op references): the oracles of test_layers.py."""
from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def conv2d(x, w, b, stride=(1, 1), pads=(0, 0, 0, 0), groups=1):
    """Direct convolution: every output pixel is a dot product of a window and a filter."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (xp.shape[2] - kh) // stride[0] + 1
    ow = (xp.shape[3] - kw) // stride[1] + 1
    out = np.zeros((n, m, oh, ow))
    mg = m // groups
    for o in range(m):
        g = o // mg
        for i in range(oh):
            for j in range(ow):
                win = xp[:, g * cg:(g + 1) * cg, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
                out[:, o, i, j] = (win * w[o]).sum(axis=(1, 2, 3))
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


def pool2d(x, k, s, pads, kind):
    """Max or mean over windows; padding never counts (max pads with -inf, mean divides by the
    number of real elements)."""
    n, c, h, w = x.shape
    oh = (h + pads[0] + pads[2] - k[0]) // s[0] + 1
    ow = (w + pads[1] + pads[3] - k[1]) // s[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s[0] - pads[0], j * s[1] - pads[1]
            rs = slice(max(r0, 0), min(r0 + k[0], h))
            cs = slice(max(c0, 0), min(c0 + k[1], w))
            win = x[:, :, rs, cs]
            out[:, :, i, j] = win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
    return out


def layer_norm(x, w, b, eps=1e-5, naxes=1):
    axes = tuple(range(x.ndim - naxes, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def lstm(x, W, R, B, h0=None, c0=None, reverse=False):
    """Batch-first LSTM for one direction; W (4H, F), R (4H, H), B (8H,), gates packed i, o, f, c."""
    bsz, t, _ = x.shape
    hid = R.shape[1]
    wi, wo, wf, wc = np.split(W, 4)
    ri, ro, rf, rc = np.split(R, 4)
    bw, br = np.split(B, 2)
    bi, bo, bf, bc = np.split(bw + br, 4)
    h = np.zeros((bsz, hid)) if h0 is None else h0
    c = np.zeros((bsz, hid)) if c0 is None else c0
    ys = [None] * t
    for step in (range(t - 1, -1, -1) if reverse else range(t)):
        xt = x[:, step]
        i = sigmoid(xt @ wi.T + h @ ri.T + bi)
        f = sigmoid(xt @ wf.T + h @ rf.T + bf)
        o = sigmoid(xt @ wo.T + h @ ro.T + bo)
        g = np.tanh(xt @ wc.T + h @ rc.T + bc)
        c = f * c + i * g
        h = o * np.tanh(c)
        ys[step] = h
    return np.stack(ys, axis=1), h, c


def gru(x, W, R, B, h0=None, reverse=False):
    """Batch-first GRU (reset gate applied after the recurrent matmul, as PyTorch does); gates z, r, n."""
    bsz, t, _ = x.shape
    hid = R.shape[1]
    wz, wr, wn = np.split(W, 3)
    rz, rr, rn = np.split(R, 3)
    bw, br = np.split(B, 2)
    bwz, bwr, bwn = np.split(bw, 3)
    brz, brr, brn = np.split(br, 3)
    h = np.zeros((bsz, hid)) if h0 is None else h0
    ys = [None] * t
    for step in (range(t - 1, -1, -1) if reverse else range(t)):
        xt = x[:, step]
        z = sigmoid(xt @ wz.T + bwz + h @ rz.T + brz)
        r = sigmoid(xt @ wr.T + bwr + h @ rr.T + brr)
        n = np.tanh(xt @ wn.T + bwn + r * (h @ rn.T + brn))
        h = (1 - z) * n + z * h
        ys[step] = h
    return np.stack(ys, axis=1), h


def mha(q_in, k_in, v_in, p, heads, mask=None, causal=False):
    """Multi-head attention with projections p[name] = (W (in, E), b)."""
    def proj(x, name):
        w, b = p[name]
        return x @ w + b
    q, k, v = proj(q_in, "q_proj"), proj(k_in, "k_proj"), proj(v_in, "v_proj")
    bsz, sq, e = q.shape
    d = e // heads

    def split(t):
        return t.reshape(bsz, t.shape[1], heads, d).transpose(0, 2, 1, 3)
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    if causal:
        sk = k.shape[2]
        scores = np.where(np.tril(np.ones((sq, sk), bool)), scores, -np.inf)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    y = softmax(scores) @ v
    y = y.transpose(0, 2, 1, 3).reshape(bsz, sq, e)
    return proj(y, "out_proj")
