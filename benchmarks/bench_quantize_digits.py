"""Quantizing the digits CNN: float vs int8 test accuracy, the accuracy report and latency.

The issue's quantization criterion, measured end to end: the CNN of ``examples/digits_cnn.py``
(its model, schedule and defaults) is trained on ``cpu`` with the training API, exported to ONNX,
and compiled twice from that file for ``cpu``: float, and ``quantize="int8"`` calibrated on
training images. Both are timed interleaved in one process (medians; batch 1 and the whole test
set). ``tests/passes/test_quantize_digits.py`` asserts the accuracy; time is only reported.

    .venv/bin/python benchmarks/bench_quantize_digits.py                     # minmax observer
    .venv/bin/python benchmarks/bench_quantize_digits.py --observer entropy --calibration 512
    .venv/bin/python benchmarks/bench_quantize_digits.py --onnx digits.onnx  # keep the model, then
    irgraph bench digits.onnx --quantize int8 --calibrate calib.npz          # the CLI's own timing
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile


def train(epochs: int, seed: int, path: str):
    """Train the example's CNN on cpu and export it; returns (data split, trainer test accuracy)."""
    from digits_common import example, load_split
    xtr, ytr, xte, yte = load_split()
    trainer, _ = example("digits_cnn").train(xtr, ytr, epochs=epochs, seed=seed, target="cpu", num_threads=1)
    trainer.export_onnx(path)
    return (xtr, ytr, xte, yte), trainer.evaluate(xte, yte, batch_size=len(xte))["accuracy"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20, help="training epochs (the example's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--observer", default="minmax", help="minmax | percentile | entropy")
    ap.add_argument("--calibration", type=int, default=256, help="training images to calibrate on")
    ap.add_argument("--keep-float", default=None, help="auto | NAMES")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--onnx", metavar="PATH", help="where to write the trained model (default: a temp folder)")
    args = ap.parse_args(argv)
    import irgraph
    from digits_common import accuracy, latency_ms
    path = args.onnx or os.path.join(tempfile.mkdtemp(prefix="irgraph-qdigits-"), "digits_cnn.onnx")
    (xtr, _, xte, yte), trained_acc = train(args.epochs, args.seed, path)
    fp32 = irgraph.compile(path, target="cpu", num_threads=args.threads)
    name = fp32.input_names[0]
    int8 = irgraph.compile(path, target="cpu", num_threads=args.threads, quantize="int8",
                           observer=args.observer, keep_float=args.keep_float,
                           calibrate={name: xtr[:args.calibration]})
    acc = {k: accuracy(m, xte, yte) for k, m in (("fp32", fp32), ("int8", int8))}
    print(f"digits CNN, {args.epochs} epochs on cpu (trainer: test accuracy {trained_acc:.4f}); {path}")
    print(f"test accuracy ({len(yte)} images): float {acc['fp32']:.4f}  int8 {acc['int8']:.4f}  "
          f"({(acc['int8'] - acc['fp32']) * 100:+.2f} points; criterion: >= -0.50)")
    print(int8.quant_report.format())
    models = {"fp32": fp32, "int8": int8}
    for x in (xte[:1], xte):
        ms = latency_ms(models, x)
        print(f"latency batch {len(x)}: fp32 {ms['fp32']:.4f} ms  int8 {ms['int8']:.4f} ms  "
              f"({ms['fp32'] / ms['int8']:.2f}x)")
    return 0 if acc["int8"] >= acc["fp32"] - 0.005 else 1


if __name__ == "__main__":
    sys.exit(main())
