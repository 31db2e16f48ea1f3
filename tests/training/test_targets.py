"""The same training run on target="interp" (the numpy oracle) and target="cpu" (native code):
same seed, same batches -> the same loss at every one of 20 steps, within float32 tolerance,
for an MLP and for a CNN with BatchNorm and Dropout (whose masks are drawn inside the graph, so
both targets draw the same ones); the carried buffers and final parameters agree too."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph.frontends import dsl
from irgraph.training import SGD, Adam, Trainer

STEPS = 20


def mlp():
    return dsl.Sequential(dsl.Dense(32, "relu"), dsl.Dropout(0.2), dsl.Dense(16, "tanh"), dsl.Dense(4))


def cnn():
    # no conv bias before BatchNorm: its gradient is exactly 0 in theory and rounding noise in
    # practice, which Adam's normalization would blow up into target-dependent steps
    return dsl.Sequential(dsl.Conv2D(6, 3, padding="same", use_bias=False), dsl.BatchNorm(), dsl.ReLU(),
                          dsl.MaxPool2D(), dsl.Conv2D(8, 3, padding="same", activation="relu"),
                          dsl.Flatten(), dsl.Dropout(0.25), dsl.Dense(3))


CASES = {
    "mlp": (mlp, [(None, 12)], (12,), 4, lambda: Adam(0.01)),
    "cnn_bn_dropout": (cnn, [(None, 2, 8, 8)], (2, 8, 8), 3, lambda: SGD(0.05, momentum=0.9)),
}


def batches(shape, classes, n=STEPS, batch=16, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        flat = x.reshape(batch, -1)
        y = (flat[:, :classes] + 0.5 * flat[:, classes:2 * classes]).argmax(1).astype(np.int64)
        yield x, y


def run(case, target):
    build, specs, shape, classes, opt = CASES[case]
    model = build().initialize(0, input_specs=specs)
    options = {"num_threads": 1} if target == "cpu" else {}
    tr = Trainer(model, "sparse_cross_entropy", opt(), target=target, input_specs=specs, **options)
    losses = [tr.train_step(x, y)[0] for x, y in batches(shape, classes)]
    return tr, np.array(losses)


@pytest.mark.parametrize("case", sorted(CASES))
def test_interp_and_cpu_give_the_same_losses_step_by_step(case):
    ti, li = run(case, "interp")
    tc, lc = run(case, "cpu")
    assert len(li) == STEPS
    np.testing.assert_allclose(lc, li, rtol=2e-5, atol=1e-6)
    assert li[-5:].mean() < li[:5].mean()          # and it is learning
    assert set(tc.buffers) == set(ti.buffers)
    for k in ti.buffers:
        np.testing.assert_allclose(tc.buffers[k], ti.buffers[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for k in ti.params:
        np.testing.assert_allclose(tc.params[k], ti.params[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # the dropout generators advanced once per step; BatchNorm's statistics moved
    start = model_buffers(case)
    gens = [k for k in start if k.endswith("rng_state")]
    assert gens
    for k in gens:
        assert int(ti.buffers[k][0]) == int(start[k][0]) + STEPS
    for k in (k for k in start if k.endswith("running_mean")):
        assert not np.allclose(ti.buffers[k], start[k])


def model_buffers(case):
    build, specs, *_ = CASES[case]
    return {k: v for k, v in build().initialize(0, input_specs=specs).state_dict().items()
            if k.endswith(("rng_state", "running_mean", "running_var"))}
