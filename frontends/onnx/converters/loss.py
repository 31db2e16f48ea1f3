"""ONNX converters for the loss family: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

SoftmaxCrossEntropyLoss is log_softmax over the class axis followed by nll_loss, so the
log-probabilities it may also output come for free.
"""
from __future__ import annotations

from .registry import converter


def _loss_attrs(ctx) -> dict:
    return {"reduction": ctx.attr("reduction", "mean"), "ignore_index": ctx.attr("ignore_index", None)}


def _nll_inputs(ctx, first):
    return [first, ctx.input(1)] + ([ctx.input(2)] if ctx.has_input(2) else [])


@converter("NegativeLogLikelihoodLoss", since=12)
def nll_loss(ctx):
    return ctx.op("nll_loss", _nll_inputs(ctx, ctx.input(0)), _loss_attrs(ctx))


@converter("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(ctx):
    log_prob = ctx.op("log_softmax", [ctx.input(0)], {"axis": 1})
    loss = ctx.op("nll_loss", _nll_inputs(ctx, log_prob), _loss_attrs(ctx))
    return [loss, log_prob]
