"""The Trainer's loop: a checkpoint saved mid-training and restored into a fresh Trainer gives the
same subsequent losses (parameters, Adam's moments, BatchNorm statistics, dropout's generator
state and the shuffling order all come back); early stopping; the validation split; metrics in
the history; the inference model's cache; standard-ONNX export; the step graphs' output names."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from irgraph import IrgraphError
from irgraph.frontends import dsl
from irgraph.frontends.onnx.export_standard import exported_ops
from irgraph.training import Adam, EarlyStopping, Trainer, build_eval_step, build_train_step
from irgraph.training.losses import sparse_cross_entropy
from irgraph.training.trainable import Trainable, as_trainable
from irgraph.types import TensorType

SPECS = [(None, 10)]


def model():
    return dsl.Sequential(dsl.Dense(16), dsl.BatchNorm(), dsl.ReLU(), dsl.Dropout(0.2),
                          dsl.Dense(3)).initialize(0, input_specs=SPECS)


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10)).astype(np.float32)
    y = (x[:, :3] + 0.3 * x[:, 3:6]).argmax(1).astype(np.int64)
    return x, y


def trainer(**kw):
    return Trainer(model(), "sparse_cross_entropy", Adam(0.01), input_specs=SPECS, seed=3, **kw)


def test_checkpoint_restores_the_run_mid_training(tmp_path):
    x, y = data()
    whole = trainer().fit(x, y, epochs=4, batch_size=16, verbose=False)["loss"]
    first = trainer()
    first.fit(x, y, epochs=2, batch_size=16, checkpoint=tmp_path / "ck", verbose=False)
    meta = json.loads((tmp_path / "ck" / "latest.json").read_text())
    assert meta["latest"] == "step-00000012"
    resumed = trainer()                     # a fresh model, parameters at their initial values
    info = resumed.restore(tmp_path / "ck")
    assert info["epoch"] == 2 and resumed.steps_done == 12
    for k, v in first.params.items():
        np.testing.assert_array_equal(resumed.params[k], v)
    assert set(resumed.buffers) == {"1.running_mean", "1.running_var", "3.rng_state"}
    rest = resumed.fit(x, y, epochs=2, batch_size=16, verbose=False)["loss"]
    np.testing.assert_allclose(rest, whole[2:], rtol=1e-6)
    # without the restore the same two epochs start elsewhere
    assert not np.allclose(trainer().fit(x, y, epochs=2, batch_size=16, verbose=False)["loss"], rest)


def test_checkpoint_step_by_step_on_cpu(tmp_path):
    x, y = data()
    a = trainer(target="cpu", num_threads=1)
    for i in range(3):
        a.train_step(x[16 * i:16 * i + 16], y[16 * i:16 * i + 16])
    a.save(tmp_path)
    after = [a.train_step(x[16 * i:16 * i + 16], y[16 * i:16 * i + 16])[0] for i in range(3, 6)]
    b = trainer(target="cpu", num_threads=1)
    b.restore(tmp_path)
    again = [b.train_step(x[16 * i:16 * i + 16], y[16 * i:16 * i + 16])[0] for i in range(3, 6)]
    assert again == after                   # same program, same inputs: bit for bit


def test_restore_refuses_another_model(tmp_path):
    x, y = data()
    t = trainer()
    t.train_step(x[:16], y[:16])
    t.save(tmp_path)
    other = Trainer(dsl.Sequential(dsl.Dense(3)).initialize(0, input_specs=SPECS), "sparse_cross_entropy",
                    Adam(0.01), input_specs=SPECS)
    with pytest.raises(IrgraphError, match="does not fit this model"):
        other.restore(tmp_path)


def test_validation_split_and_metrics_in_the_history():
    x, y = data()
    t = Trainer(model(), "sparse_cross_entropy", Adam(0.01), input_specs=SPECS,
                metrics=["accuracy", "precision", "recall", "f1"])
    h = t.fit(x, y, epochs=3, batch_size=16, validation=0.25, verbose=False)
    names = ["loss", "accuracy", "precision", "recall", "f1"]
    assert list(h.history) == names + [f"val_{n}" for n in names]
    assert h.epochs == 3 and all(len(v) == 3 for v in h.history.values())
    # the split is the last quarter, never trained on: 72 samples give 4 full batches a epoch
    assert t.steps_done == 3 * (72 // 16)
    last = t.evaluate(x[72:], y[72:])
    for k, v in last.items():
        assert h[f"val_{k}"][-1] == pytest.approx(v, rel=1e-6)
    pred = t.predict(x[72:]).argmax(1)
    assert last["accuracy"] == pytest.approx(np.mean(pred == y[72:]))
    assert all(0 <= a <= 1 for a in h["val_accuracy"])


def test_validation_data_given_explicitly():
    x, y = data()
    vx, vy = data(40, seed=1)
    t = Trainer(model(), "sparse_cross_entropy", Adam(0.01), input_specs=SPECS, metrics=["accuracy"])
    h = t.fit(x, y, epochs=2, batch_size=32, validation=(vx, vy), verbose=False)
    assert h["val_accuracy"][-1] == pytest.approx(t.evaluate(vx, vy)["accuracy"])
    assert t.steps_done == 2 * 3


def test_early_stopping_stops_and_restores_the_best_epoch():
    x, y = data()
    # nothing counts as an improvement after the first epoch: stop after 1 + patience epochs
    stop = EarlyStopping("val_loss", patience=2, min_delta=1e9)
    t = trainer()
    h = t.fit(x, y, epochs=10, batch_size=16, validation=0.25, early_stopping=stop, verbose=False)
    assert h.stopped_early and h.epochs == 3 and len(h["val_loss"]) == 3
    best = trainer()
    best.fit(x, y, epochs=1, batch_size=16, validation=0.25, verbose=False)
    for k, v in best.params.items():
        np.testing.assert_array_equal(t.params[k], v)
    assert t.evaluate(x[72:], y[72:])["loss"] == pytest.approx(h["val_loss"][0], rel=1e-6)


def test_early_stopping_on_accuracy_waits_for_no_improvement():
    x, y = data()
    stop = EarlyStopping("val_accuracy", patience=2, restore_best=False)
    assert stop.better(0.9, 0.8) and not stop.better(0.8, 0.9)     # "auto": accuracy is maximized
    t = Trainer(model(), "sparse_cross_entropy", Adam(0.05), input_specs=SPECS, metrics=["accuracy"])
    h = t.fit(x, y, epochs=40, batch_size=16, validation=0.25, early_stopping=stop, verbose=False)
    acc = h["val_accuracy"]
    assert h.stopped_early
    best_at = int(np.argmax(acc))           # the first best: later ties are no improvement
    assert len(acc) == best_at + 3 and max(acc[best_at + 1:]) <= acc[best_at]
    with pytest.raises(IrgraphError, match="not computed"):
        t.fit(x, y, epochs=1, batch_size=16, early_stopping=EarlyStopping("val_f1"), verbose=False)


def test_predict_follows_training_and_export_is_standard_onnx(tmp_path):
    x, y = data()
    t = trainer(target="cpu", num_threads=1)
    before = t.predict(x)
    assert t.inference_model() is t.inference_model()      # compiled once per parameter version
    t.fit(x, y, epochs=2, batch_size=16, verbose=False)
    after = t.predict(x)
    assert not np.allclose(before, after)
    proto = t.export_onnx(tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").is_file()
    assert set(exported_ops(proto)) == {""}                   # default domain only
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"x": x})
    np.testing.assert_allclose(got, after, rtol=1e-4, atol=1e-5)


def test_step_graphs_rename_the_models_display_outputs():
    traced = model().trace(SPECS, params="inputs")
    g = traced.graph
    assert g.meta.get("output_names") == ["output"]
    names = {v.name for v in g.inputs}
    tm = Trainable(g, g, ["x"], {k: traced.initial[k] for k in traced.params if traced.params[k] in names})
    tm.buffers = {}
    tt = TensorType(("batch",), "int64")
    for step in (build_train_step(tm, sparse_cross_entropy, Adam(0.01), tt),
                 build_eval_step(tm, sparse_cross_entropy, tt)):
        assert step.graph.meta["output_names"] == [v.name for v in step.graph.outputs]
        assert step.graph.meta["output_names"][:2] == ["loss", "prediction"]


def test_sequence_labels_and_logits():
    # per-position logits (batch, seq, classes) with labels (batch, seq): a sequence model's loss
    seq = dsl.Sequential(dsl.Embedding(7, 8), dsl.Dense(7))
    ids = np.random.default_rng(0).integers(0, 7, (32, 5))
    t = Trainer(seq, "sparse_cross_entropy", Adam(0.05), input_specs=[((None, 5), "int64")],
                metrics=["accuracy"])
    h = t.fit(ids, (ids + 1) % 7, epochs=8, batch_size=8, verbose=False)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    pred = t.predict(ids)
    assert pred.shape == (32, 5, 7)
    assert h["accuracy"][-1] == pytest.approx(1.0)


def test_bad_arguments_are_errors():
    x, y = data()
    t = trainer()
    with pytest.raises(IrgraphError, match="validation fraction"):
        t.fit(x, y, validation=1.5, verbose=False)
    with pytest.raises(IrgraphError, match="larger than"):
        t.fit(x, y, batch_size=1000, verbose=False)
    with pytest.raises(IrgraphError, match="different numbers of samples"):
        t.evaluate(x, y[:5])
    assert as_trainable(t.model) is t.model
