"""Metrics against hand-counted confusion matrices, accumulated over batches."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import IrgraphError
from irgraph.training import get_metric


def _eval(name, batches):
    m = get_metric(name)
    m.reset()
    for p, t in batches:
        m.update(p, t)
    return m.result()


# predictions (argmax): [0, 1, 1, 2, 2, 0]; labels: [0, 1, 2, 2, 1, 0]
LOGITS = np.eye(3)[[0, 1, 1, 2, 2, 0]] * 3.0
LABELS = np.array([0, 1, 2, 2, 1, 0])


def test_multiclass_over_two_batches():
    batches = [(LOGITS[:4], LABELS[:4]), (LOGITS[4:], LABELS[4:])]
    assert _eval("accuracy", batches) == pytest.approx(4 / 6)
    # per class precision: c0 2/2, c1 1/2, c2 1/2 ; recall: c0 2/2, c1 1/2, c2 1/2
    assert _eval("precision", batches) == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert _eval("recall", batches) == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert _eval("f1", batches) == pytest.approx((1 + 0.5 + 0.5) / 3)
    onehot = np.eye(3)[LABELS].astype(np.float32)
    assert _eval("accuracy", [(LOGITS, onehot)]) == pytest.approx(4 / 6)


def test_binary_from_logits():
    logits = np.array([[2.0], [-1.0], [0.5], [-3.0]])
    labels = np.array([[1.0], [1.0], [0.0], [0.0]])
    assert _eval("accuracy", [(logits, labels)]) == pytest.approx(0.5)
    # class 1: tp 1, fp 1, fn 1 -> p = r = 0.5; class 0: tp 1, fp 1, fn 1 -> 0.5
    assert _eval("f1", [(logits, labels)]) == pytest.approx(0.5)


def test_unknown_metric():
    with pytest.raises(IrgraphError, match="unknown metric"):
        get_metric("auc-roc")
