"""Losses and regularizers: values against numpy formulas, stability for large logits, errors."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import Graph, IrgraphError, TensorType, run_graph
from irgraph.training import losses


def _run(fn, pred, target):
    g = Graph()
    p = g.add_input("p", TensorType.of(pred))
    t = g.add_input("t", TensorType.of(target))
    out = fn(g, p, t)
    assert out.shape == ()
    g.set_outputs([out])
    return float(run_graph(g, [pred, target])[0])


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


rng = np.random.default_rng(0)
LOGITS = rng.standard_normal((6, 4))
LABELS = np.array([0, 3, 1, 2, 3, 0])


def test_mse():
    p, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    assert _run(losses.mse, p, t) == pytest.approx(np.mean((p - t) ** 2), rel=1e-12)


def test_cross_entropy_one_hot_and_sparse_agree():
    onehot = np.eye(4)[LABELS]
    want = -np.mean(_log_softmax(LOGITS)[np.arange(6), LABELS])
    assert _run(losses.cross_entropy, LOGITS, onehot) == pytest.approx(want, rel=1e-12)
    assert _run(losses.sparse_cross_entropy, LOGITS, LABELS) == pytest.approx(want, rel=1e-12)


def test_cross_entropy_is_stable_for_large_logits():
    big = np.array([[1000.0, 0.0], [0.0, -1000.0]], np.float32)
    got = _run(losses.sparse_cross_entropy, big, np.array([1, 0]))
    assert np.isfinite(got) and got == pytest.approx(500.0, rel=1e-6)


def test_binary_cross_entropy_from_logits():
    x = np.array([[-800.0], [-2.0], [0.5], [900.0]])
    t = np.array([[0.0], [1.0], [0.0], [1.0]])
    p = 1 / (1 + np.exp(-np.clip(x, -30, 30)))
    want_small = -(t * np.log(p) + (1 - t) * np.log(1 - p))[1:3].mean()
    got = _run(losses.binary_cross_entropy, x[1:3], t[1:3])
    assert got == pytest.approx(want_small, rel=1e-12)
    assert _run(losses.binary_cross_entropy, x[[0, 3]], t[[0, 3]]) == pytest.approx(0.0, abs=1e-12)


def test_hinge_maps_zero_one_labels():
    p = np.array([0.3, -2.0, 1.5, 0.9])
    pm = np.array([1.0, -1.0, -1.0, 1.0])
    want = np.mean(np.maximum(0, 1 - pm * p))
    assert _run(losses.hinge, p, pm) == pytest.approx(want)
    assert _run(losses.hinge, p, ((pm + 1) / 2).astype(np.int64)) == pytest.approx(want)


def test_regularizers():
    g = Graph()
    ws = [g.add_input(f"w{i}", TensorType((3,), "float64")) for i in range(2)]
    g.set_outputs([losses.l1(g, ws, 0.5), losses.l2(g, ws, 0.25)])
    a, b = np.array([1.0, -2.0, 3.0]), np.array([-0.5, 0.0, 4.0])
    l1, l2 = run_graph(g, [a, b])
    assert float(l1) == pytest.approx(0.5 * (6 + 4.5))
    assert float(l2) == pytest.approx(0.25 * (14 + 16.25))


def test_errors_name_the_problem():
    with pytest.raises(IrgraphError, match="unknown loss 'nope'"):
        losses.get_loss("nope")
    with pytest.raises(IrgraphError, match="class indices"):
        _run(losses.sparse_cross_entropy, LOGITS, LABELS.astype(np.float64))
    with pytest.raises(IrgraphError, match="same rank"):
        _run(losses.mse, LOGITS, LABELS.astype(np.float64))
