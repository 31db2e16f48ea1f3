"""ONNX converters for RNN, GRU and LSTM (onto the core ops of the same names)."""
from __future__ import annotations

from irgraph.ops.rnn import ACTIVATIONS

from .registry import converter


def _activation_attrs(ctx) -> dict:
    """ONNX's activations and their alpha/beta lists, in the core op's aligned form.

    ONNX consumes ``activation_alpha``/``activation_beta`` in order, one value for each
    activation that takes that parameter; the core op wants one value per activation.
    """
    names = ctx.attr("activations", None)
    if not names:
        return {}
    names = [n.lower() for n in names]
    for n in names:
        if n not in ACTIVATIONS:
            ctx.fail(f"unknown activation {n!r}", expected="one of " + ", ".join(ACTIVATIONS))
    alphas = list(ctx.attr("activation_alpha", []))
    betas = list(ctx.attr("activation_beta", []))
    res_a, res_b = [], []
    for n in names:
        _, da, db = ACTIVATIONS[n]
        res_a.append(0.0 if da is None else (alphas.pop(0) if alphas else da))
        res_b.append(0.0 if db is None else (betas.pop(0) if betas else db))
    return {"activations": names, "activation_alpha": res_a, "activation_beta": res_b}


def _recurrent(ctx, kind: str, ninputs: int, extra: dict):
    attrs = {
        "hidden_size": ctx.attr("hidden_size", None),
        "direction": ctx.attr("direction", "forward"),
        "clip": ctx.attr("clip", None),
        "layout": ctx.attr("layout", 0),
    }
    attrs.update(_activation_attrs(ctx))
    attrs.update(extra)
    inputs = [ctx.input(i) for i in range(ninputs)]
    return ctx.op(kind, inputs, attrs, num_outputs=3 if kind == "lstm" else 2)


@converter("RNN")
def rnn(ctx):
    return _recurrent(ctx, "rnn", 6, {})


@converter("GRU")
def gru(ctx):
    return _recurrent(ctx, "gru", 6, {"linear_before_reset": ctx.attr("linear_before_reset", 0)})


@converter("LSTM")
def lstm(ctx):
    return _recurrent(ctx, "lstm", 8, {"input_forget": ctx.attr("input_forget", 0)})
