"""The scikit-learn ``load_digits`` set (1,797 8x8 grey images of digits, shipped inside
scikit-learn: nothing is downloaded) with a fixed, seeded 80/20 train/test split.

Shared by ``digits_mlp.py`` and ``digits_cnn.py``.
"""
from __future__ import annotations

import numpy as np


def load_split(seed: int = 0, images: bool = False):
    """``(x_train, y_train, x_test, y_test)``: pixels scaled to [0, 1] as float32, labels int64.
    ``images=False`` gives rows of 64 features, ``True`` gives (N, 1, 8, 8) images (NCHW)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    x = x[:, None] if images else x.reshape(len(x), -1)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(round(0.8 * len(x)))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]
