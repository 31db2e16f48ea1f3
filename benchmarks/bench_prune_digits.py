"""Pruning the digits CNN: accuracy, parameters, bytes, FLOPs and latency before/after.

The issue's pruning criterion, measured end to end: a small CNN (Conv2D 16 - MaxPool - Conv2D 32 -
Flatten - Dense 10) is trained on scikit-learn's digits (fixed 80/20 split, seed 0) with the
training API, pruned (``irgraph.training.prune``), fine-tuned briefly, and both inference models
are compiled for ``cpu`` and timed interleaved in one process (medians; batch 1 and the whole test
set). ``tests/passes/test_prune_digits.py`` asserts the accuracy and bytes; time is only reported.

    .venv/bin/python benchmarks/bench_prune_digits.py                       # channels:0.3, :0.3:16
    .venv/bin/python benchmarks/bench_prune_digits.py --spec magnitude:0.9 --spec channels:0.5
    .venv/bin/python benchmarks/bench_prune_digits.py --onnx digits.onnx    # also write the baseline,
    irgraph bench digits.onnx --prune channels:0.3 --threads 1              # for the CLI's own timing
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

SPECS = [(None, 1, 8, 8)]


def data():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(x))
    cut = int(0.8 * len(x))
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]


def train_baseline(xtr, ytr, epochs: int = 10):
    from irgraph.frontends import dsl
    from irgraph.training import Adam, Trainer
    model = dsl.Sequential(dsl.Conv2D(16, 3, padding="same", activation="relu"), dsl.MaxPool2D(),
                           dsl.Conv2D(32, 3, padding="same", activation="relu"), dsl.Flatten(), dsl.Dense(10))
    model.initialize(seed=0, input_specs=SPECS)
    trainer = Trainer(model, "sparse_cross_entropy", Adam(3e-3), target="cpu", metrics=["accuracy"],
                      input_specs=SPECS, seed=0)
    trainer.fit(xtr, ytr, epochs=epochs, batch_size=32, verbose=False)
    return trainer.inference_graph()


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model(x), axis=1) == y))


def latency(models: dict, x, budget_s: float = 1.0) -> dict:
    """Median ms per call of each compiled model on ``x``, interleaved."""
    from irgraph.bench import time_interleaved
    times, _ = time_interleaved({k: (lambda m=m: m.run(x)) for k, m in models.items()}, warmup=6,
                                budget_s=budget_s)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", action="append",
                    help="pruning spec (repeatable; default channels:0.3 and channels:0.3:16)")
    ap.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (default 5)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--onnx", metavar="PATH", help="write the trained baseline as ONNX")
    args = ap.parse_args(argv)
    import irgraph
    from irgraph.training import Adam
    from irgraph.training.prune import finetune, prune
    xtr, ytr, xte, yte = data()
    base_graph = train_baseline(xtr, ytr)
    if args.onnx:
        from irgraph.frontends.onnx.export_standard import export_standard
        export_standard(base_graph, args.onnx)
        print(f"wrote {args.onnx}")
    base = irgraph.compile(base_graph, target="cpu", num_threads=args.threads)
    base_acc = accuracy(base, xte, yte)
    print(f"baseline: test accuracy {base_acc:.4f} ({len(yte)} samples), {args.threads} thread(s)")
    for spec in args.spec or ["channels:0.3", "channels:0.3:16"]:
        pruned, report = prune(base_graph, spec)
        tuner = finetune(pruned, xtr, ytr, epochs=args.epochs, optimizer=Adam(1e-3))
        tuned_graph = tuner.inference_graph()
        # magnitude-pruned weights run on CSR kernels where they pass the crossover
        kw = {"prune": spec} if spec.startswith("magnitude") else {}
        tuned = irgraph.compile(tuned_graph, target="cpu", num_threads=args.threads, **kw)
        acc = accuracy(tuned, xte, yte)
        lat1 = latency({"baseline": base, "pruned": tuned}, xte[:1])
        latn = latency({"baseline": base, "pruned": tuned}, xte)
        report.latency_ms = {"before": lat1["baseline"], "after": lat1["pruned"]}
        print(f"\n{spec} + {args.epochs} epochs of fine-tuning: test accuracy {base_acc:.4f} -> {acc:.4f} "
              f"({(acc - base_acc) * 100:+.2f} points)")
        print(f"  latency batch 1:   {lat1['baseline']:.4f} ms -> {lat1['pruned']:.4f} ms "
              f"({lat1['baseline'] / lat1['pruned']:.2f}x)")
        print(f"  latency batch {len(yte)}: {latn['baseline']:.4f} ms -> {latn['pruned']:.4f} ms "
              f"({latn['baseline'] / latn['pruned']:.2f}x)")
        print("  " + report.format().replace("\n", "\n  "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
