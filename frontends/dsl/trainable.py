"""A DSL module as ``irgraph.training.Trainable``: what ``irgraph.train`` / ``Trainer`` train.

``Module.__irgraph_trainable__(input_specs)`` traces the module twice with parameters as graph
inputs: in training mode (dropout on, drawing masks with the in-graph counter generator;
BatchNorm on batch statistics) and in eval mode. Buffers — running statistics and each dropout
layer's generator state — are inputs of both graphs, with the training graph's state outputs
as their updates, so a trainer that carries buffers gets fresh dropout masks every step and
the same numbers on every target.
"""
from __future__ import annotations

from irgraph.errors import IrgraphError
from irgraph.graph import Graph


def _free_name(base: str, graphs: list[Graph]) -> str:
    name, k = base, 0
    while any(g._taken(name) for g in graphs):
        k += 1
        name = f"{base}_{k}"
    return name


def to_trainable(module, input_specs=None):
    """The ``Trainable`` for ``module`` (see the module docstring)."""
    from irgraph.training.trainable import Trainable
    tr = module.trace(input_specs, params="inputs", training=True)
    ev = module.trace(input_specs, params="inputs", training=False)
    if not tr.outputs:
        raise IrgraphError(f"{type(module).__name__} returns nothing to train")
    eval_names = {v.name for v in ev.graph.inputs}
    for v in tr.graph.inputs:
        if v.name not in eval_names and v.name not in tr.inputs:
            ev.graph.add_input(v.name, v.type)   # unused at inference, e.g. a dropout generator's state
    # the loss reads the prediction by name in both graphs: give it one name in both
    p_tr, p_ev = tr.graph.outputs[0], ev.graph.outputs[0]
    if p_tr.name != p_ev.name:
        name = _free_name(tr.outputs[0], [tr.graph, ev.graph])
        for g, v in ((tr.graph, p_tr), (ev.graph, p_ev)):
            g.outputs[0] = g.op("identity", [v], name=name, output_names=[name])
    for g in (tr.graph, ev.graph):
        # step builders replace the outputs; stale display names would mislabel theirs
        g.meta.pop("output_names", None)
    n = len(tr.outputs)
    updates = {tr.buffers[b]: tr.graph.outputs[n + i].name for i, b in enumerate(tr.state_outputs)}
    return Trainable(
        train_graph=tr.graph, eval_graph=ev.graph, data_inputs=list(tr.inputs),
        params={tr.params[k]: tr.initial[k] for k in tr.params},
        buffers={tr.buffers[k]: tr.initial[k] for k in tr.buffers},
        buffer_updates=updates, prediction=tr.graph.outputs[0].name)
