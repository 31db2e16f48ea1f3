"""DSL modules under the training API (``__irgraph_trainable__``): the Trainable's graphs and name
maps, a few optimizer steps giving the same losses on the interpreter and the cpu target
(dropout masks and running statistics included), and the trained model exported to standard
ONNX predicting what the trainer predicts, in onnxruntime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from irgraph.frontends import dsl
from irgraph.training.trainable import as_trainable
from irgraph.training.trainer import Trainer

SPECS = [(None, 1, 6, 6)]


def cnn():
    # no conv bias before BatchNorm: its true gradient is 0, so Adam would amplify rounding noise
    return dsl.Sequential(dsl.Conv2D(4, 3, padding="same", use_bias=False), dsl.BatchNorm(), dsl.ReLU(), dsl.MaxPool2D(),
                          dsl.Flatten(), dsl.Dropout(0.25), dsl.Dense(2))


def data(n=48):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    return x, (x[:, 0, :3].mean(axis=(1, 2)) > 0).astype(np.int64)


def test_trainable_from_a_module():
    tm = as_trainable(cnn(), SPECS)
    assert tm.data_inputs == ["x"]
    assert set(tm.params) == {"0.weight", "1.weight", "1.bias", "6.weight", "6.bias"}
    assert set(tm.buffers) == {"1.running_mean", "1.running_var", "5.rng_state"}
    outs = {v.name for v in tm.train_graph.outputs}
    assert set(tm.buffer_updates) == set(tm.buffers) and set(tm.buffer_updates.values()) <= outs
    for g in (tm.train_graph, tm.eval_graph):
        assert tm.prediction in {v.name for v in g.all_values()}
        assert {"x", *tm.params, *tm.buffers} <= {v.name for v in g.inputs}
    assert "batch_norm_training" in tm.train_graph.op_histogram()
    assert "batch_norm" in tm.eval_graph.op_histogram()


def test_training_steps_agree_across_targets_and_export_to_onnxruntime():
    x, y = data()
    runs = {}
    for target in ("interp", "cpu"):
        tr = Trainer(cnn(), "sparse_cross_entropy", "adam", target=target, input_specs=SPECS, lr=0.02)
        hist = tr.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=False)
        runs[target] = (tr, hist["loss"])
    (ti, li), (tc, lc) = runs["interp"], runs["cpu"]
    np.testing.assert_allclose(lc, li, rtol=1e-5)
    assert li[-1] < li[0]
    # the buffers were carried: six steps advanced dropout's counter and moved the statistics
    start = as_trainable(cnn(), SPECS).buffers
    np.testing.assert_array_equal(ti.buffers["5.rng_state"], start["5.rng_state"] + 6)
    assert not np.allclose(ti.buffers["1.running_mean"], 0)
    for k in ti.params:
        np.testing.assert_allclose(tc.params[k], ti.params[k], rtol=1e-4, atol=1e-5)
    # the trained parameters back in the module, exported as standard ONNX
    model = cnn().build(SPECS)
    model.load_state_dict({**ti.params, **ti.buffers})
    proto = model.export_onnx(None, SPECS)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"x": x})
    want = ti.predict(x)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(logits.argmax(1), want.argmax(1))
