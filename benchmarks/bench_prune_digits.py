"""Pruning the digits CNN: accuracy, parameters, bytes, FLOPs and latency before/after.

The issue's pruning criterion, measured end to end: the CNN of ``examples/digits_cnn.py``
(Conv2D 16 - MaxPool - Conv2D 32 - Flatten - Dense 10) is trained on the examples' digits split
(``examples/digits_data.py``: seeded 80/20, 1,438 training and 359 test images) with the training
API, pruned (``irgraph.training.prune``), fine-tuned briefly, and both inference models are
compiled for ``cpu`` and timed interleaved in one process (medians; batch 1 and the whole test
set). ``tests/passes/test_prune_digits.py`` asserts the accuracy and bytes; time is only reported.

    .venv/bin/python benchmarks/bench_prune_digits.py                       # channels:0.3, :0.3:16
    .venv/bin/python benchmarks/bench_prune_digits.py --spec magnitude:0.9 --spec channels:0.5
    .venv/bin/python benchmarks/bench_prune_digits.py --onnx digits.onnx    # also write the baseline,
    irgraph bench digits.onnx --prune channels:0.3 --threads 1              # for the CLI's own timing
"""
from __future__ import annotations

import argparse
import sys


def train_baseline(xtr, ytr, epochs: int = 10):
    """The example's CNN trained as the pruning test trains it (Adam 3e-3, batch 32, seed 0)."""
    from digits_common import example
    from irgraph.training import Adam, Trainer
    digits_cnn = example("digits_cnn")
    trainer = Trainer(digits_cnn.build_model(0), "sparse_cross_entropy", Adam(3e-3), target="cpu",
                      metrics=["accuracy"], input_specs=digits_cnn.INPUT, seed=0)
    trainer.fit(xtr, ytr, epochs=epochs, batch_size=32, verbose=False)
    return trainer.inference_graph()


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
    from digits_common import accuracy, latency_ms, load_split
    xtr, ytr, xte, yte = load_split()
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
        lat1 = latency_ms({"baseline": base, "pruned": tuned}, xte[:1])
        latn = latency_ms({"baseline": base, "pruned": tuned}, xte)
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
