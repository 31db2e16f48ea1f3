"""DSL models through ``irgraph.compile``: the interpreter (the oracle) and the native cpu target
agree, for inference graphs (parameters as constants, -O2) and for training traces (parameters,
buffers and dropout masks as inputs, running statistics as outputs)."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph.frontends import dsl

rng = np.random.default_rng(11)


class TinyEncoder(dsl.Module):
    def __init__(self):
        super().__init__()
        self.emb = dsl.Embedding(13, 8)
        self.enc = dsl.TransformerEncoderLayer(8, 2, 16, dropout=0.1)
        self.rnn = dsl.GRU(6, return_sequences=True)
        self.lstm = dsl.LSTM(5)
        self.head = dsl.Dense(3)

    def forward(self, ids):
        return self.head(self.lstm(self.rnn(self.enc(self.emb(ids)))))


def cnn():
    return dsl.Sequential(dsl.Conv2D(4, 3, padding="same"), dsl.BatchNorm(), dsl.ReLU(), dsl.MaxPool2D(),
                          dsl.Conv2D(6, 3), dsl.ReLU(), dsl.AvgPool2D(2, strides=1), dsl.Flatten(),
                          dsl.Dropout(0.3), dsl.Dense(16, activation="gelu"), dsl.LayerNorm(), dsl.Dense(4),
                          dsl.Softmax())


MODELS = {
    "cnn": (cnn, [(None, 2, 8, 8)], lambda n: rng.standard_normal((n, 2, 8, 8)).astype(np.float32)),
    "encoder": (TinyEncoder, [((None, 5), "int64")], lambda n: rng.integers(0, 13, (n, 5))),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inference_interp_and_cpu_agree(name):
    make, specs, data = MODELS[name]
    m = make()
    m.initialize(seed=4, input_specs=specs)
    ref = irgraph.compile(m, target="interp", input_specs=specs)
    cpu = irgraph.compile(m, target="cpu", input_specs=specs)
    assert cpu.pass_report is not None           # -O2 ran on the traced graph
    for n in (3, 1):                            # the batch dim is symbolic: two sizes, one model
        x = data(n)
        want = ref(x)
        np.testing.assert_allclose(m(x), want, rtol=1e-6, atol=1e-6)
        if n == 3:   # (the cpu target compiles once per batch size; one is enough here)
            np.testing.assert_allclose(cpu(x), want, rtol=1e-4, atol=1e-5)
    assert not cpu._run.report.fallback


@pytest.mark.parametrize("random", ["counter", "inputs"])
def test_training_trace_interp_and_cpu_agree(random):
    m = cnn()
    t = m.trace([(None, 2, 8, 8)], params="inputs", training=True, seed=9, random=random)
    assert bool(t.random_inputs) == (random == "inputs")
    assert ("8.rng_state" in t.state_outputs) == (random == "counter")
    ref = irgraph.compile(t, target="interp")
    cpu = irgraph.compile(t, target="cpu")
    x = rng.standard_normal((4, 2, 8, 8)).astype(np.float32)
    feeds = t.feeds(x, rng=np.random.default_rng(0))
    want = ref.run(**feeds)
    got = cpu.run(**feeds)
    assert len(want) == 3 + (random == "counter") and want[0].shape == (4, 4)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not cpu._run.report.fallback   # every node runs natively, dropout masks included
    # the graph takes parameters by name: other values give other outputs
    feeds2 = t.feeds(x, rng=np.random.default_rng(0),
                     params={"9.weight": np.zeros_like(t.initial["9.weight"])})
    assert not np.allclose(cpu.run(**feeds2)[0], got[0])


def test_compile_accepts_a_traced_model_and_keeps_output_names():
    t = dsl.Sequential(dsl.Dense(2, in_features=3)).trace([(None, 3)], output_names=["scores"])
    m = irgraph.compile(t, target="cpu")
    assert m.output_names == ["scores"] and m.input_names == ["x"]
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(m(x), t.run(x)[0], rtol=1e-6)
