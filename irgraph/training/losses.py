"""Loss functions and regularizers, built as graph nodes so they compile into the train step.

Each loss is ``loss(g, pred, target) -> Value`` (a scalar: the mean over the batch) written
with registry ops, so autodiff differentiates it like the model. ``get_loss(name)`` maps the
names the training API accepts:

    mse                     mean squared error
    cross_entropy           softmax cross-entropy from logits; targets one-hot (or soft) rows
    sparse_cross_entropy    the same with integer class labels
    binary_cross_entropy    sigmoid cross-entropy from logits; targets in {0, 1} (or in [0, 1])
    hinge                   mean(max(0, 1 - t * pred)); targets in {-1, 1} or {0, 1}

All are numerically stable for large logits: cross-entropy goes through ``log_softmax``, the
binary one through ``max(x, 0) - x t + log(1 + exp(-|x|))``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import IrgraphError
from ..graph import Graph, Value


def _const(g: Graph, value, like: Value) -> Value:
    return g.add_const(np.asarray(value, dtype=like.dtype.np), name="loss_c")


def _mean_all(g: Graph, x: Value) -> Value:
    return g.op("reduce_mean", [x], {"keepdims": 0}, name="loss_mean")


def _check_same_shape(pred: Value, target: Value, name: str) -> None:
    if pred.shape is not None and target.shape is not None and len(pred.shape) != len(target.shape):
        raise IrgraphError(f"{name}: predictions and targets must have the same rank",
                           input=target.name, expected=str(pred.shape), actual=str(target.shape))


def _as_float(g: Graph, target: Value, like: Value) -> Value:
    return target if target.dtype == like.dtype else g.op("cast", [target], {"to": like.dtype})


def mse(g: Graph, pred: Value, target: Value) -> Value:
    _check_same_shape(pred, target, "mse")
    d = g.op("sub", [pred, _as_float(g, target, pred)], name="mse_diff")
    return _mean_all(g, g.op("mul", [d, d], name="mse_sq"))


def cross_entropy(g: Graph, pred: Value, target: Value) -> Value:
    """Mean over rows of -sum(target * log_softmax(pred)) along the last axis."""
    _check_same_shape(pred, target, "cross_entropy")
    logp = g.op("log_softmax", [pred], {"axis": -1}, name="ce_logp")
    per_row = g.op("reduce_sum", [g.op("mul", [_as_float(g, target, pred), logp]),
                                  g.add_const(np.array([-1], np.int64), "ce_axis")],
                   {"keepdims": 0}, name="ce_rows")
    return g.op("neg", [_mean_all(g, per_row)], name="ce")


def sparse_cross_entropy(g: Graph, pred: Value, target: Value) -> Value:
    """Cross-entropy with integer labels: logits (N, C) and labels (N,), or per-position logits
    (N, T, ..., C) and labels (N, T, ...) (a sequence model's), averaged over every position."""
    if target.dtype.name not in ("int64", "int32"):
        raise IrgraphError("sparse_cross_entropy: labels must be int32 or int64 class indices",
                           input=target.name, expected="int64", actual=target.dtype.name)
    if pred.shape is not None and len(pred.shape) < 2:
        raise IrgraphError("sparse_cross_entropy: logits must be (batch, ..., classes)", input=pred.name,
                           expected="rank >= 2", actual=str(pred.shape))
    if pred.shape is not None and target.shape is not None and len(target.shape) != len(pred.shape) - 1:
        raise IrgraphError("sparse_cross_entropy: labels must have the logits' shape without the class axis",
                           input=target.name, expected=str(tuple(pred.shape[:-1])), actual=str(target.shape))
    if target.dtype.name != "int64":
        target = g.op("cast", [target], {"to": "int64"})
    if pred.shape is not None and len(pred.shape) > 2:
        # fold the positions into the batch: nll_loss reads (rows, classes) and (rows,)
        classes = pred.shape[-1]
        if not isinstance(classes, int):
            raise IrgraphError("sparse_cross_entropy: the class axis needs a static size", input=pred.name,
                               actual=str(pred.shape))
        pred = g.op("reshape", [pred, g.add_const(np.array([-1, classes], np.int64), "ce_rows_shape")],
                    name="ce_flat_logits")
        target = g.op("reshape", [target, g.add_const(np.array([-1], np.int64), "ce_flat_shape")],
                      name="ce_flat_labels")
    logp = g.op("log_softmax", [pred], {"axis": -1}, name="ce_logp")
    return g.op("nll_loss", [logp, target], {"reduction": "mean"}, name="sparse_ce")


def binary_cross_entropy(g: Graph, pred: Value, target: Value) -> Value:
    """Sigmoid cross-entropy from logits: mean(max(x, 0) - x t + log(1 + exp(-|x|)))."""
    _check_same_shape(pred, target, "binary_cross_entropy")
    t = _as_float(g, target, pred)
    pos = g.op("relu", [pred])
    xt = g.op("mul", [pred, t])
    soft = g.op("log", [g.op("add", [_const(g, 1, pred), g.op("exp", [g.op("neg", [g.op("abs", [pred])])])])])
    return _mean_all(g, g.op("add", [g.op("sub", [pos, xt]), soft], name="bce_terms"))


def hinge(g: Graph, pred: Value, target: Value) -> Value:
    """mean(max(0, 1 - t * pred)); targets 0/1 are mapped to -1/+1 (2t - 1) in the graph."""
    _check_same_shape(pred, target, "hinge")
    t = _as_float(g, target, pred)
    t = g.op("sub", [g.op("mul", [t, _const(g, 2, pred)]), _const(g, 1, pred)]) if _zero_one(target) else t
    margin = g.op("sub", [_const(g, 1, pred), g.op("mul", [t, pred])])
    return _mean_all(g, g.op("relu", [margin], name="hinge_terms"))


def _zero_one(target: Value) -> bool:
    # integer/bool targets are class labels 0/1; float targets are taken as given (-1/+1)
    return not target.dtype.is_float


LOSSES: dict[str, Callable] = {
    "mse": mse, "mean_squared_error": mse,
    "cross_entropy": cross_entropy, "categorical_cross_entropy": cross_entropy,
    "sparse_cross_entropy": sparse_cross_entropy, "sparse_categorical_cross_entropy": sparse_cross_entropy,
    "binary_cross_entropy": binary_cross_entropy, "bce": binary_cross_entropy,
    "hinge": hinge,
}


def get_loss(loss) -> Callable:
    """A loss function from a name in ``LOSSES`` or a callable ``(g, pred, target) -> Value``."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    raise IrgraphError(f"unknown loss {loss!r}", expected="one of " + ", ".join(sorted(LOSSES)) +
                       " or a callable (g, pred, target) -> Value", actual=repr(loss))


# ---- regularization ----------------------------------------------------------------------------
def l1(g: Graph, params: list[Value], scale: float) -> Value:
    """scale * sum(|w|) over every parameter."""
    return _penalty(g, params, scale, lambda w: g.op("abs", [w]))


def l2(g: Graph, params: list[Value], scale: float) -> Value:
    """scale * sum(w^2) over every parameter (weight decay of 2 * scale in plain SGD)."""
    return _penalty(g, params, scale, lambda w: g.op("mul", [w, w]))


def _penalty(g: Graph, params: list[Value], scale: float, term) -> Value:
    if not params:
        raise IrgraphError("regularization needs at least one parameter")
    total = None
    for w in params:
        s = g.op("reduce_sum", [term(w)], {"keepdims": 0}, name="reg")
        total = s if total is None else g.op("add", [total, s], name="reg_sum")
    return g.op("mul", [total, _const(g, scale, params[0])], name="reg_scaled")
