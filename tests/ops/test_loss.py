"""Losses: nll_loss against a loop-based expectation (weights, ignore_index, reductions),
inference and errors, and the ONNX NegativeLogLikelihoodLoss / SoftmaxCrossEntropyLoss
converters."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from irgraph import TensorType
from irgraph.errors import IrgraphError

import oprun
from oprun import onnx_run, raises

RNG = np.random.default_rng(0)


def run(x, target, weight=None, **attrs):
    r = oprun.run("nll_loss", [x, target, weight], attrs, static=True)
    assert r.dtype == x.dtype
    return r


def infer(types, **attrs):
    return oprun.infer("nll_loss", types, attrs)


def nll_loops(x, target, weight=None, reduction="mean", ignore_index=None):
    """An element-by-element NLL: the independent expectation."""
    n, c = x.shape[:2]
    rest = x.shape[2:]
    loss = np.zeros((n,) + rest, np.float64)
    wsum = 0.0
    for idx in np.ndindex(*((n,) + rest)):
        k = int(target[idx])
        if ignore_index is not None and k == ignore_index:
            continue
        w = 1.0 if weight is None else float(weight[k])
        loss[idx] = -float(x[(idx[0], k) + idx[1:]]) * w
        wsum += w
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / wsum


X = RNG.normal(size=(3, 5, 2)).astype(np.float32)
TGT = np.array([[0, 4], [2, 2], [1, 3]], np.int64)
W = RNG.uniform(0.2, 1.0, size=5).astype(np.float32)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 2, -1])
def test_nll_loss_against_loops(reduction, weighted, ignore_index):
    w = W if weighted else None
    tgt = TGT.copy()
    if ignore_index == -1:
        tgt[0, 1] = -1  # an ignored target may lie outside [0, C)
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    got = run(X, tgt, w, **attrs)
    want = nll_loops(X, tgt, w, reduction, ignore_index)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_nll_loss_int32_targets_and_2d_input():
    x = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], np.float64))
    got = run(x, np.array([0, 2], np.int32), reduction="sum")
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, -(np.log(0.5) + np.log(0.7)))


def test_nll_loss_out_of_range_target_is_an_error():
    with pytest.raises(IrgraphError, match="out of range"):
        run(X, np.array([[0, 5], [1, 1], [1, 1]], np.int64))


def test_nll_loss_inference():
    t = infer([TensorType(("N", 5, 7), "float32"), TensorType(("N", 7), "int64")], reduction="none")
    assert t.shape == ("N", 7)
    # a static target dim refines a symbolic input dim
    assert infer([TensorType(("N", 5), "float32"), TensorType((4,), "int64")], reduction="none").shape == (4,)
    assert infer([TensorType(("N", 5), "float16"), TensorType(("N",), "int32")]).shape == ()


def test_nll_loss_errors():
    f = TensorType((3, 5, 2), "float32")
    raises("nll_loss", lambda: infer([f, TensorType((3, 3), "int64")]), "class axis")
    raises("nll_loss", lambda: infer([f, TensorType((3, 2), "float32")]), "int32 or int64")
    raises("nll_loss", lambda: infer([f, TensorType((3, 2), "int64"), TensorType((4,), "float32")]), "per class")
    raises("nll_loss", lambda: infer([f, TensorType((3, 2), "int64"), TensorType((5,), "float64")]), "dtype")
    raises("nll_loss", lambda: infer([f, TensorType((3, 2), "int64")], reduction="avg"), "reduction")
    raises("nll_loss", lambda: infer([TensorType((3,), "float32"), TensorType((3,), "int64")]), "rank >= 2")


# ---- ONNX converters ------------------------------------------------------------------------------
def test_onnx_softmax_cross_entropy_with_log_prob():
    scores = RNG.normal(size=(3, 5, 2)).astype(np.float32)
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["x", "y", "w"], ["loss", "logp"],
                            reduction="mean", ignore_index=2)
    loss, logp = onnx_run(node, {"x": scores, "y": TGT, "w": W}, 13, n_out=2)
    s64 = scores.astype(np.float64)
    want_logp = s64 - np.log(np.exp(s64).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(logp, want_logp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, nll_loops(want_logp, TGT, W, "mean", 2), rtol=1e-5)
    assert loss.shape == ()


def test_onnx_nll_loss_default_reduction_is_mean():
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["loss"])
    (loss,) = onnx_run(node, {"x": X, "t": TGT}, 12)
    np.testing.assert_allclose(loss, nll_loops(X, TGT), rtol=1e-5)
