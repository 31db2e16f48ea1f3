"""Handwritten digits (scikit-learn's load_digits) with a small CNN, exported to ONNX.

    python examples/digits_cnn.py [--target interp|cpu] [--epochs N] [--out model.onnx] [--quiet]

Conv2D(16, 3x3) - ReLU - MaxPool(2) - Conv2D(32, 3x3) - ReLU - Flatten - Dense(10) on the 8x8
images, a fixed, seeded 80/20 split (examples/digits_data.py), Adam with a cosine learning-rate
schedule on sparse cross-entropy (>= 98% test accuracy). The trained model is then exported as standard ONNX and run in
onnxruntime (when installed), which must predict the same classes.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from digits_data import load_split
from train_args import target_options, training_parser

from irgraph.frontends import dsl
from irgraph.training import Adam, Cosine, Trainer

INPUT = [(None, 1, 8, 8)]


def build_model(seed: int = 0) -> dsl.Module:
    model = dsl.Sequential(
        dsl.Conv2D(16, 3, padding="same", activation="relu"), dsl.MaxPool2D(2),
        dsl.Conv2D(32, 3, padding="same", activation="relu"), dsl.Flatten(), dsl.Dense(10))
    return model.initialize(seed, input_specs=INPUT)


def train(x: np.ndarray, y: np.ndarray, *, epochs: int = 20, batch_size: int = 32, lr: float = 5e-3,
          seed: int = 0, target: str = "cpu", verbose: bool = False, **options):
    """The example's training, ``(trainer, history)``: Adam on sparse cross-entropy, its rate
    following a cosine from ``lr`` down to 0 over the run (a scalar input of the step)."""
    schedule = Cosine(lr, total_steps=epochs * (len(x) // batch_size))
    trainer = Trainer(build_model(seed), "sparse_cross_entropy", Adam(schedule), target=target,
                      metrics=["accuracy"], input_specs=INPUT, seed=seed, **options)
    history = trainer.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
    return trainer, history


def check_onnxruntime(path: str, x: np.ndarray, logits: np.ndarray) -> dict | None:
    """Run the exported model in onnxruntime; None when it is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (ort_logits,) = sess.run(None, {sess.get_inputs()[0].name: x})
    return {"same_predictions": bool(np.array_equal(ort_logits.argmax(1), logits.argmax(1))),
            "max_abs_diff": float(np.abs(ort_logits - logits).max())}


def main(argv=None) -> dict:
    ap = training_parser(__doc__, epochs=20, batch_size=32, lr=5e-3, quiet=True)
    ap.add_argument("--out", help="where to write the ONNX model (default: a temp folder)")
    args = ap.parse_args(argv)
    options = target_options(args)
    x_train, y_train, x_test, y_test = load_split(seed=0, images=True)

    t0 = time.perf_counter()
    trainer, history = train(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, target=args.target, verbose=not args.quiet, **options)
    seconds = time.perf_counter() - t0
    test = trainer.evaluate(x_test, y_test, batch_size=len(x_test))
    print(f"train loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f}")
    print(f"test accuracy {test['accuracy']:.4f} ({len(x_test)} images); "
          f"{args.epochs} epochs on target {args.target} in {seconds:.1f} s")

    path = args.out or os.path.join(tempfile.mkdtemp(prefix="irgraph-digits-"), "digits_cnn.onnx")
    trainer.export_onnx(path)
    logits = trainer.predict(x_test, batch_size=len(x_test))
    ort_check = check_onnxruntime(path, x_test, logits)
    if ort_check is None:
        print(f"wrote {path} (onnxruntime is not installed: not checked)")
    else:
        print(f"wrote {path}; onnxruntime predicts the same classes: {ort_check['same_predictions']} "
              f"(max |logit difference| {ort_check['max_abs_diff']:.2e})")
    return {"test": test, "history": history.history, "seconds": seconds, "onnx": path,
            "onnxruntime": ort_check, "logits": logits}


if __name__ == "__main__":
    main()
