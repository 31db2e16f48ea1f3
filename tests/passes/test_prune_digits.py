"""The issue's done criterion for pruning: a small digits CNN trained with the training API, pruned
by 30% of its channels and fine-tuned briefly, stays within 1 point of test accuracy and has fewer
parameter bytes; magnitude pruning survives fine-tuning (the zeros stay). Latency is measured by
benchmarks/bench_prune_digits.py, never asserted here."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph.frontends import dsl
from irgraph.training import Adam, Trainer
from irgraph.training.prune import finetune, prune

SPECS = [(None, 1, 8, 8)]


@pytest.fixture(scope="module")
def digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    d = sklearn.load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(x))   # the fixed 80/20 split
    cut = int(0.8 * len(x))
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]


@pytest.fixture(scope="module")
def trained(digits):
    xtr, ytr, xte, yte = digits
    model = dsl.Sequential(dsl.Conv2D(16, 3, padding="same", activation="relu"), dsl.MaxPool2D(),
                           dsl.Conv2D(32, 3, padding="same", activation="relu"), dsl.Flatten(), dsl.Dense(10))
    model.initialize(seed=0, input_specs=SPECS)
    trainer = Trainer(model, "sparse_cross_entropy", Adam(3e-3), target="cpu", metrics=["accuracy"],
                      input_specs=SPECS, seed=0)
    trainer.fit(xtr, ytr, epochs=10, batch_size=32, verbose=False)
    acc = trainer.evaluate(xte, yte)["accuracy"]
    assert acc > 0.95, f"the baseline did not learn ({acc})"
    return trainer.inference_graph(), acc


def accuracy(graph, x, y) -> float:
    """Test accuracy by the interpreter (the oracle the compiled training steps are checked by)."""
    return float(np.mean(np.argmax(irgraph.run_graph(graph, [x])[0], axis=1) == y))


# exact counts, and counts rounded to multiples of 16 (the AVX-512 lanes the dense conv kernels
# vectorize output channels over: the variant that is also faster, see bench_prune_digits.py)
@pytest.mark.parametrize("spec,convs", [("channels:0.3", [(11, 1, 3, 3), (22, 11, 3, 3)]),
                                        ("channels:0.3:16", [(16, 1, 3, 3), (16, 16, 3, 3)])])
def test_channel_pruning_30_percent_then_finetune(digits, trained, spec, convs):
    xtr, ytr, xte, yte = digits
    graph, base = trained
    pruned, report = prune(graph, spec)
    assert [n.inputs[1].const.shape for n in pruned.nodes if n.op == "conv"] == convs
    tuner = finetune(pruned, xtr, ytr, epochs=5, optimizer=Adam(1e-3))
    tuned = tuner.inference_graph()
    acc = accuracy(tuned, xte, yte)
    assert acc == pytest.approx(tuner.evaluate(xte, yte)["accuracy"])
    assert acc >= base - 0.01, f"pruned + fine-tuned {acc:.4f} vs baseline {base:.4f}"
    assert report.total("bytes") < 0.65 * report.total("bytes", "before")
    assert report.total("flops") < 0.6 * report.total("flops", "before")
    weight_bytes = [sum(c.const.nbytes for c in g.constants.values() if c.const.dtype.kind == "f")
                    for g in (graph, tuned)]
    assert weight_bytes[1] < 0.65 * weight_bytes[0]


def test_magnitude_zeros_survive_finetuning(digits, trained):
    xtr, ytr, xte, yte = digits
    graph, base = trained
    pruned, report = prune(graph, "magnitude:0.7")
    assert report.total("nonzero") < 0.4 * report.total("nonzero", "before")
    tuner = finetune(pruned, xtr[:512], ytr[:512], epochs=1)
    for name, value in tuner.params.items():
        if np.asarray(value).ndim >= 2:
            assert np.mean(np.asarray(value) == 0) == pytest.approx(0.7, abs=0.01), name
    assert tuner.evaluate(xte, yte)["accuracy"] > 0.9
