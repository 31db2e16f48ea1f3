"""Optimizer updates built as graph nodes, against numpy transcriptions of torch.optim's
formulas, over several steps; schedules; hyper-parameter errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from irgraph import Graph, IrgraphError, TensorType, run_graph
from irgraph.training import SGD, Adam, AdamW, Constant, Cosine, StepDecay, Warmup


def _steps(opt, w0, grads):
    """Run ``opt``'s update graph once per gradient, carrying parameter and state."""
    g = Graph()
    w = g.add_input("w", TensorType.of(w0))
    gr = g.add_input("g", TensorType.of(w0))
    slots = opt.slots(w0)
    st = {s: g.add_input(s, TensorType.of(w0)) for s in slots}
    lr = g.add_input("lr", TensorType((), "float32"))
    t = g.add_input("t", TensorType((), "float32"))
    nw, ns = opt.update(g, w, gr, st, lr, t)
    g.set_outputs([nw] + [ns[s] for s in slots])
    state = dict(slots)
    for i, gv in enumerate(grads):
        outs = run_graph(g, [w0, gv] + [state[s] for s in slots] + [np.float32(opt.lr_at(i)), np.float32(i + 1)])
        w0 = outs[0]
        state = dict(zip(slots, outs[1:]))
    return w0


W0 = np.array([0.5, -1.0, 2.0])
GRADS = [np.array([0.1, -0.2, 0.3]), np.array([-0.4, 0.5, 0.1]), np.array([0.2, 0.2, -0.6])]


def _sgd_ref(lr, mu=0.0, nesterov=False, wd=0.0):
    w, v = W0.copy(), None
    for g in GRADS:
        d = g + wd * w
        if mu:
            v = d if v is None else mu * v + d
            d = d + mu * v if nesterov else v
        w = w - lr * d
    return w


@pytest.mark.parametrize("mu,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.01)])
def test_sgd(mu, nesterov, wd):
    got = _steps(SGD(0.1, momentum=mu, nesterov=nesterov, weight_decay=wd), W0, GRADS)
    np.testing.assert_allclose(got, _sgd_ref(0.1, mu, nesterov, wd), rtol=1e-6)


def _adam_ref(lr, b1, b2, eps, wd, decoupled):
    w, m, v = W0.copy(), np.zeros(3), np.zeros(3)
    for t, g in enumerate(GRADS, 1):
        if wd and not decoupled:
            g = g + wd * w
        if wd and decoupled:
            w = w * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w


def test_adam_and_adamw():
    got = _steps(Adam(0.01, weight_decay=0.1), W0, GRADS)
    np.testing.assert_allclose(got, _adam_ref(0.01, 0.9, 0.999, 1e-8, 0.1, False), rtol=1e-5)
    got = _steps(AdamW(0.01, weight_decay=0.1), W0, GRADS)
    # torch's AdamW decays before the Adam step: w(1 - lr wd) - lr adam; ours: w - lr (adam + wd w)
    np.testing.assert_allclose(got, _adam_ref(0.01, 0.9, 0.999, 1e-8, 0.1, True), rtol=1e-5)


def test_schedules():
    assert [StepDecay(1.0, 2, 0.5)(s) for s in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    c = Cosine(1.0, 10, 0.1)
    assert c(0) == pytest.approx(1.0) and c(10) == pytest.approx(0.1) and c(20) == pytest.approx(0.1)
    assert c(5) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    w = Warmup(Constant(0.4), 4)
    assert [w(s) for s in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert SGD(lr=StepDecay(0.1, 1, 0.1)).lr_at(2) == pytest.approx(0.001)


def test_bad_hyper_parameters():
    with pytest.raises(IrgraphError, match="momentum"):
        SGD(0.1, momentum=1.5)
    with pytest.raises(IrgraphError, match="Nesterov"):
        SGD(0.1, nesterov=True)
    with pytest.raises(IrgraphError, match="lr"):
        Adam(lr=-1.0)
    with pytest.raises(IrgraphError, match="min_lr"):
        Cosine(0.1, 10, min_lr=1.0)
