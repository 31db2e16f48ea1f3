"""What the digits benchmarks share: the examples' data split and CNN, test accuracy, latency.

``bench_prune_digits.py`` and ``bench_quantize_digits.py`` both measure the CNN of
``examples/digits_cnn.py`` on the split of ``examples/digits_data.py``, so their figures speak
of the same model and the same test images as the examples and as each other. Not an asv suite
(it defines no ``time_*``/``track_*``).
"""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))


def example(name: str):
    """An example script as a module, imported as when it runs as a script (``examples/`` on
    ``sys.path``, where ``digits_data`` is importable)."""
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    return importlib.import_module(name)


def load_split(seed: int = 0):
    """``(x_train, y_train, x_test, y_test)``: the examples' seeded 80/20 split, NCHW images."""
    return example("digits_data").load_split(seed=seed, images=True)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of a compiled model whose first output is the logits."""
    return float(np.mean(np.asarray(model.run(x)[0]).argmax(1) == y))


def latency_ms(models: dict, x: np.ndarray, budget_s: float = 1.0) -> dict[str, float]:
    """Median ms per call of each compiled model on ``x``, timed interleaved in this process."""
    from irgraph.bench import time_interleaved
    times, _ = time_interleaved({k: (lambda m=m: m.run(x)) for k, m in models.items()}, warmup=6,
                                budget_s=budget_s)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}
