"""Metrics computed on the host from a batch's predictions and targets.

Classification metrics read class decisions from the predictions: the argmax of the last axis
for several classes, ``pred > 0`` for one logit per sample (binary, as the loss takes logits),
and from the targets: integer labels, one-hot rows (argmax) or 0/1 values. ``recall``,
``precision`` and ``f1`` are macro averages over the classes present in targets or predictions.
Each metric accumulates over batches (``update``) and reports over the epoch (``result``).
"""
from __future__ import annotations

import numpy as np

from ..errors import IrgraphError


def _classes(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.ndim >= 2 and pred.shape[-1] > 1:
        p = pred.argmax(axis=-1)
    else:
        p = (pred.reshape(pred.shape[0], -1)[:, 0] > 0).astype(np.int64)
    if target.dtype.kind == "f" and target.ndim >= 2 and target.shape[-1] > 1:
        t = target.argmax(axis=-1)
    elif target.dtype.kind != "f" and target.shape == p.shape:
        t = target.astype(np.int64)   # labels per sample, or per position of a sequence model
    else:
        t = target.reshape(p.shape[0], -1)[:, 0]
        t = (t > 0).astype(np.int64) if target.dtype.kind == "f" else t.astype(np.int64)
    return p.reshape(-1), t.reshape(-1)


class Metric:
    name = "metric"

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError


class Accuracy(Metric):
    name = "accuracy"

    def reset(self):
        self.right = self.total = 0

    def update(self, pred, target):
        p, t = _classes(pred, target)
        self.right += int(np.sum(p == t))
        self.total += p.size

    def result(self):
        return self.right / self.total if self.total else float("nan")


class _Confusion(Metric):
    """Per-class true positive / false positive / false negative counts, macro-averaged."""

    def reset(self):
        self.tp: dict[int, int] = {}
        self.fp: dict[int, int] = {}
        self.fn: dict[int, int] = {}

    def update(self, pred, target):
        p, t = _classes(pred, target)
        for c in np.union1d(p, t).tolist():
            self.tp[c] = self.tp.get(c, 0) + int(np.sum((p == c) & (t == c)))
            self.fp[c] = self.fp.get(c, 0) + int(np.sum((p == c) & (t != c)))
            self.fn[c] = self.fn.get(c, 0) + int(np.sum((p != c) & (t == c)))

    def _per_class(self, c: int) -> tuple[float, float]:
        tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        return precision, recall

    def result(self):
        if not self.tp:
            return float("nan")
        vals = [self._score(*self._per_class(c)) for c in sorted(self.tp)]
        return float(np.mean(vals))


class Precision(_Confusion):
    name = "precision"

    def _score(self, p, r):
        return p


class Recall(_Confusion):
    name = "recall"

    def _score(self, p, r):
        return r


class F1(_Confusion):
    name = "f1"

    def _score(self, p, r):
        return 2 * p * r / (p + r) if p + r else 0.0


class MeanAbsoluteError(Metric):
    name = "mae"

    def reset(self):
        self.sum = 0.0
        self.n = 0

    def update(self, pred, target):
        d = np.abs(np.asarray(pred, np.float64) - np.asarray(target, np.float64).reshape(np.shape(pred)))
        self.sum += float(d.sum())
        self.n += d.size

    def result(self):
        return self.sum / self.n if self.n else float("nan")


METRICS = {"accuracy": Accuracy, "acc": Accuracy, "precision": Precision, "recall": Recall,
           "f1": F1, "mae": MeanAbsoluteError}


def get_metric(m) -> Metric:
    if isinstance(m, Metric):
        return m
    if isinstance(m, str) and m.lower() in METRICS:
        return METRICS[m.lower()]()
    raise IrgraphError(f"unknown metric {m!r}", expected="one of " + ", ".join(sorted(METRICS)),
                       actual=repr(m))
