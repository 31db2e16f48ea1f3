"""Modules: parameter names, reproducible initialization, state dicts, modes, and traces with
parameters as constants or as graph inputs (what a trainer builds on)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import irgraph
from irgraph.errors import IrgraphError
from irgraph.frontends import dsl
from irgraph.frontends.dsl import functional as F
from irgraph.frontends.dsl.parameter import rng_for


def cnn():
    return dsl.Sequential(dsl.Conv2D(4, 3, padding="same"), dsl.BatchNorm(), dsl.ReLU(), dsl.MaxPool2D(),
                          dsl.Flatten(), dsl.Dropout(0.2), dsl.Dense(3))


class TwoTower(dsl.Module):
    def __init__(self):
        super().__init__()
        self.left = dsl.Dense(4, activation="relu")
        self.right = dsl.Sequential(dsl.Dense(4), dsl.LayerNorm())
        self.scale = dsl.Parameter((1,), init="ones")

    def forward(self, x, y):
        return self.left(x) + self.right(y) * self.scale, F.sum(self.left(x))


def test_parameter_names_follow_the_module_tree():
    m = cnn().build([(None, 1, 6, 6)])
    assert [n for n, _ in m.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias",
                                                    "6.weight", "6.bias"]
    assert [n for n, _ in m.named_buffers()] == ["1.running_mean", "1.running_var", "5.rng_state"]
    t = TwoTower().build([(None, 2), (None, 3)])
    assert [n for n, _ in t.named_parameters()] == ["scale", "left.weight", "left.bias", "right.0.weight",
                                                    "right.0.bias", "right.1.weight", "right.1.bias"]
    assert [n for n, _ in t.named_modules()] == ["", "left", "right", "right.0", "right.1"]
    assert t.num_parameters() == 1 + 2 * 4 + 4 + 3 * 4 + 4 + 4 + 4
    assert "Sequential(" in repr(m) and "(6): Dense(in_features=36, units=3)" in repr(m)


def test_initialization_is_reproducible_and_name_based():
    a = cnn().initialize(seed=5, input_specs=[(None, 1, 6, 6)]).state_dict()
    b = cnn().initialize(seed=5, input_specs=[(None, 1, 6, 6)]).state_dict()
    c = cnn().initialize(seed=6, input_specs=[(None, 1, 6, 6)]).state_dict()
    lazy = cnn()
    lazy.initialize(seed=5)           # no input specs: lazy layers are drawn when first traced
    d = lazy.trace([(None, 1, 6, 6)]).initial
    assert a.keys() == b.keys() == c.keys()
    assert set(d) == set(a) - {"5.rng_state"}   # an eval trace does not touch dropout's state
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        if k in d:
            np.testing.assert_array_equal(a[k], d[k])
    assert not np.array_equal(a["0.weight"], c["0.weight"])
    # a parameter's draw depends only on (seed, name): adding a layer leaves the others alone
    bigger = cnn().add(dsl.Dense(2)).initialize(seed=5, input_specs=[(None, 1, 6, 6)]).state_dict()
    np.testing.assert_array_equal(bigger["6.weight"], a["6.weight"])
    w = rng_for(5, "0.weight")
    fan_in, fan_out = 9, 36
    lim = math.sqrt(6 / (fan_in + fan_out))
    np.testing.assert_allclose(a["0.weight"], w.uniform(-lim, lim, (4, 1, 3, 3)).astype(np.float32))
    # a default trace draws with seed 0
    np.testing.assert_array_equal(cnn().trace([(None, 1, 6, 6)]).initial["0.weight"],
                                  cnn().initialize(0, [(None, 1, 6, 6)]).state_dict()["0.weight"])


@pytest.mark.parametrize("name,fans,check", [
    ("glorot_uniform", (300, 200), lambda w: np.abs(w).max() <= math.sqrt(6 / 500) and abs(w.std() - math.sqrt(2 / 500)) < 0.003),
    ("glorot_normal", (300, 200), lambda w: abs(w.std() - math.sqrt(2 / 500)) < 0.003 and np.abs(w).max() <= 2 * math.sqrt(2 / 500) / 0.8796 + 1e-6),
    ("he_uniform", (300, 200), lambda w: abs(w.std() - math.sqrt(2 / 300)) < 0.003),
    ("he_normal", (300, 200), lambda w: abs(w.std() - math.sqrt(2 / 300)) < 0.003),
    ("torch_linear", (300, 200), lambda w: np.abs(w).max() <= 1 / math.sqrt(300)),
    ("zeros", (3, 3), lambda w: not w.any()),
    ("ones", (3, 3), lambda w: (w == 1).all()),
    ("orthogonal", (300, 200), lambda w: np.allclose(w.T @ w, np.eye(200), atol=1e-5)),
    ("orthogonal", (200, 300), lambda w: np.allclose(w @ w.T, np.eye(200), atol=1e-5)),
])
def test_initializers(name, fans, check):
    p = dsl.Parameter(fans, init=name, fans=fans)
    w = p.initialize(0, "w").astype(np.float64)
    assert check(w)


def test_state_dict_round_trip_and_dtype():
    m = cnn().initialize(1, [(None, 1, 6, 6)])
    sd = {k: v + 1 for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    with pytest.raises(IrgraphError, match="does not match.*missing 0.bias, 1.weight"):
        m.load_state_dict({"0.weight": sd["0.weight"]})
    with pytest.raises(IrgraphError, match="unexpected 0.weight.*model.build"):
        cnn().load_state_dict(sd)
    with pytest.raises(IrgraphError, match="shape"):
        m.load_state_dict({**sd, "0.bias": np.zeros(5)})
    m.astype("float64")
    g = m.to_graph([((None, 1, 6, 6), "float64")])
    assert {v.dtype.name for v in g.constants.values() if v.dtype.is_float} == {"float64"}
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    assert m(x).dtype == np.float64


def test_modes_and_to_graph_restores_them():
    m = cnn()
    assert not m.training
    g = m.to_graph([(None, 1, 6, 6)], training=True)
    assert not m.training and not m[5].training
    assert "batch_norm_training" in g.op_histogram()
    m.train()
    assert all(x.training for x in m.modules())
    g = m.to_graph([(None, 1, 6, 6)])   # training=False by default
    assert "batch_norm" in g.op_histogram() and "dropout" not in g.op_histogram()
    assert m.training
    m.eval()
    assert not any(x.training for x in m.modules())


def test_trace_with_parameters_as_inputs():
    m = cnn()
    t = m.trace([(None, 1, 6, 6)], params="inputs", training=True)
    names = [v.name for v in t.graph.inputs]
    assert names[0] == "x" and t.inputs == ["x"]
    assert set(t.params) == {"0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias"}
    assert all(t.params[k] in names for k in t.params)
    assert set(t.buffers.values()) <= set(names) and not t.random_inputs
    assert list(t.state_outputs) == ["1.running_mean", "1.running_var", "5.rng_state"]
    assert not t.graph.constants.keys() & set(t.params)
    assert t.graph.meta["dsl"]["params"] == t.params and t.graph.meta["dsl"]["training"]
    x = np.random.default_rng(1).standard_normal((3, 1, 6, 6)).astype(np.float32)
    feeds = t.feeds(x)
    assert set(feeds) == set(names)
    # new parameter values flow in by name
    zero = {k: np.zeros_like(v) for k, v in t.initial.items() if k == "6.weight"}
    y = t.run(x, params=zero)[0]
    np.testing.assert_allclose(y, np.broadcast_to(t.initial["6.bias"], y.shape))
    # eval-mode inference trace: parameters are constants, no state outputs
    e = m.trace([(None, 1, 6, 6)])
    assert e.params_mode == "constants" and not e.state_outputs and [v.name for v in e.graph.inputs] == ["x"]


def test_frozen_parameters_stay_constants():
    m = dsl.Sequential(dsl.Dense(3, in_features=2), dsl.Dense(1, in_features=3))
    m[0].weight.trainable = False
    t = m.trace([(None, 2)], params="inputs")
    assert "0.weight" in t.frozen and "0.weight" not in t.params
    assert "0.weight" in t.graph.constants and "1.weight" in [v.name for v in t.graph.inputs]
    assert [n for n, p in m.named_parameters(include_frozen=False)] == ["0.bias", "1.weight", "1.bias"]


def test_multi_input_multi_output_models_and_specs():
    t = TwoTower().trace({"a": (None, 2), "b": ((None, 3), "float32")}, output_names=["y", "total"])
    assert t.inputs == ["a", "b"] and t.outputs == ["y", "total"]
    m = irgraph.compile(t)
    assert m.input_names == ["a", "b"] and m.output_names == ["y", "total"]
    y, total = m(np.ones((2, 2), np.float32), np.ones((2, 3), np.float32))
    assert y.shape == (2, 4) and total.shape == ()
    t2 = TwoTower().trace([dsl.InputSpec((None, 2), name="p"), np.zeros((1, 3), np.float32)])
    assert [v.name for v in t2.graph.inputs] == ["p", "y"]
    assert t2.graph.inputs[1].type.shape == (1, 3)


def test_a_model_and_a_loss_traced_together():
    # what a trainer does: trace model + loss in one graph, parameters as inputs
    m = dsl.Sequential(dsl.Dense(4, activation="tanh"), dsl.Dense(1))
    with dsl.Tracer("step", params="inputs") as t:
        x, y = t.input("x", (None, 3)), t.input("y", (None, 1))
        pred = m(x)
        loss = F.mean(F.square(pred - y))
        traced = t.finish({"loss": loss, "pred": pred})
    assert set(traced.params) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    xs = np.ones((5, 3), np.float32)
    ys = np.zeros((5, 1), np.float32)
    loss, pred = traced.run(xs, ys)
    np.testing.assert_allclose(loss, (pred ** 2).mean(), rtol=1e-6)


def test_eager_call_and_shared_layers():
    shared = dsl.Dense(2, in_features=2)
    m = dsl.Sequential(shared, dsl.ReLU(), shared)
    assert [n for n, _ in m.named_parameters()] == ["0.weight", "0.bias"]   # once each
    x = np.array([[1.0, -1.0]], np.float32)
    sd = m.state_dict()
    h = np.maximum(x @ sd["0.weight"] + sd["0.bias"], 0)
    np.testing.assert_allclose(m(x), h @ sd["0.weight"] + sd["0.bias"], rtol=1e-6)
