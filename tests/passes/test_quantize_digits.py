"""The issue's done criterion for quantization: the digits CNN of ``examples/digits_cnn.py``, trained
with the training API on ``cpu``, exported to ONNX and compiled with ``quantize="int8"`` (calibration
data from the training split), loses at most 0.5 points of test accuracy against the float model
compiled from the same file. The figures are printed by ``benchmarks/bench_quantize_digits.py``."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import irgraph

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
EPOCHS = 20          # the example's default (a few seconds on cpu)
CALIBRATION = 256    # training images the observers see


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("sklearn.datasets")
    sys.path.insert(0, os.path.abspath(EXAMPLES))
    try:
        import digits_cnn
        import digits_data
    finally:
        sys.path.pop(0)
    return digits_cnn, digits_data


@pytest.fixture(scope="module")
def trained(example, tmp_path_factory):
    """(onnx path, data split, trainer's test accuracy): the example's model, schedule and defaults."""
    digits_cnn, digits_data = example
    from irgraph.training import Adam, Cosine, Trainer
    xtr, ytr, xte, yte = split = digits_data.load_split(seed=0, images=True)
    schedule = Cosine(5e-3, total_steps=EPOCHS * (len(xtr) // 32))
    trainer = Trainer(digits_cnn.build_model(0), "sparse_cross_entropy", Adam(schedule), target="cpu",
                      metrics=["accuracy"], input_specs=digits_cnn.INPUT, seed=0, num_threads=1)
    trainer.fit(xtr, ytr, epochs=EPOCHS, batch_size=32, verbose=False)
    acc = trainer.evaluate(xte, yte, batch_size=len(xte))["accuracy"]
    assert acc >= 0.98, f"the float model did not reach the example's accuracy ({acc:.4f})"
    path = str(tmp_path_factory.mktemp("qdigits") / "digits_cnn.onnx")
    trainer.export_onnx(path)
    return path, split, acc


def predictions(model, x) -> np.ndarray:
    out = model(x)
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


@pytest.mark.parametrize("observer", ["minmax", "percentile", "entropy"])
def test_int8_digits_cnn_loses_at_most_half_a_point(trained, observer):
    path, (xtr, ytr, xte, yte), trained_acc = trained
    fp32 = irgraph.compile(path, target="cpu")
    name = fp32.input_names[0]
    int8 = irgraph.compile(path, target="cpu", quantize="int8", observer=observer,
                           calibrate={name: xtr[:CALIBRATION]})
    # every conv/matmul really runs as an int8 kernel (nothing kept float, no float fallback)
    ops = [n.op for n in int8.graph.nodes]
    assert ops.count("quant_conv") == 2 and ops.count("quant_matmul") == 1, ops
    assert not {"conv", "matmul", "gemm"} & set(ops), ops
    assert int8.quant_report.kept_float == []
    acc_fp32 = float(np.mean(predictions(fp32, xte).argmax(1) == yte))
    acc_int8 = float(np.mean(predictions(int8, xte).argmax(1) == yte))
    assert acc_fp32 == pytest.approx(trained_acc, abs=1e-9)      # the exported model is the trained one
    assert acc_int8 >= acc_fp32 - 0.005, (
        f"int8 ({observer}) {acc_int8:.4f} vs float {acc_fp32:.4f}\n{int8.quant_report.format()}")
    # the compiled int8 model is the quantized graph the report measured (no silent divergence)
    for row in int8.quant_report.compiled_outputs.values():
        assert row["sqnr_db"] > 30, int8.quant_report.format()
