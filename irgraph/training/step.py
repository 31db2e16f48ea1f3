"""The train step and the eval step as graphs: forward, loss, backward and optimizer update.

    step = build_train_step(trainable, loss, optimizer, target_type)
    step.graph        inputs:  data..., target, params..., optimizer state..., buffers..., lr, step
                      outputs: loss, prediction, new params..., new state..., new buffers...

Everything is in one graph, so ``irgraph.compile(step.graph, target="cpu")`` turns a whole
training step into one native program; the host only feeds the batch, the learning rate and
the step number, and carries parameters and state from one call to the next.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import IrgraphError
from ..graph import Graph, Value
from ..types import TensorType
from .optimizers import Optimizer
from .trainable import Trainable


@dataclass
class StepGraph:
    graph: Graph
    data: list[str]                         # step input names, in the trainable's data order
    target: str
    params: dict[str, str] = field(default_factory=dict)        # param -> new-param output
    state: dict[tuple, tuple] = field(default_factory=dict)     # (param, slot) -> (input, output)
    buffers: dict[str, tuple] = field(default_factory=dict)     # buffer -> (input, output)
    lr: str | None = None
    step: str | None = None
    loss: str = "loss"
    prediction: str = "prediction"


def _named(g: Graph, v: Value, name: str) -> Value:
    return g.op("identity", [v], name=name, output_names=[name])


def _set_outputs(g: Graph, outs: list[Value]) -> None:
    """Make ``outs`` the step's outputs. A display-name list the forward graph carried (an
    imported or traced model's ``meta["output_names"]``) named the old outputs; compiled models
    label outputs by it, so it is rewritten to the step's own names."""
    g.set_outputs(outs)
    if "output_names" in g.meta:
        g.meta["output_names"] = [v.name for v in outs]


def _add_loss(g: Graph, tm: Trainable, loss_fn: Callable, target_type: TensorType,
              regularization: Callable | None, params: list[Value]):
    by_name = {v.name: v for v in g.all_values()}
    if tm.prediction not in by_name:
        raise IrgraphError(f"the model has no output named {tm.prediction!r}", actual=tm.prediction)
    pred = by_name[tm.prediction]
    target = g.add_input("target", target_type)
    loss = loss_fn(g, pred, target)
    if not isinstance(loss, Value) or (loss.shape is not None and len(loss.shape) != 0):
        raise IrgraphError("the loss must be a scalar", expected="shape ()",
                           actual=getattr(loss, "shape", type(loss).__name__))
    if regularization is not None:
        loss = g.op("add", [loss, regularization(g, params)], name="loss_total")
    return pred, target, loss


def build_train_step(tm: Trainable, loss_fn: Callable, optimizer: Optimizer, target_type: TensorType,
                     regularization: Callable | None = None) -> StepGraph:
    from irgraph.passes.autodiff import gradients   # the training API sits above the passes
    g = tm.train_graph.copy()
    g.name = "train_step"
    inputs = {v.name: v for v in g.inputs}
    params = [inputs[n] for n in tm.params]
    pred, target, loss = _add_loss(g, tm, loss_fn, target_type, regularization, params)
    grads = gradients(g, loss, params)
    unused = [n for n, gv in zip(tm.params, grads) if gv is None]
    if unused:
        raise IrgraphError(f"the loss does not depend on parameter {unused[0]!r}",
                           input=unused[0], hint="freeze it (trainable=...) or check the model")
    lr = g.add_input("lr", TensorType((), "float32"))
    step = g.add_input("step", TensorType((), "float32"))
    sg = StepGraph(g, list(tm.data_inputs), target.name, lr=lr.name, step=step.name)
    outs = [_named(g, loss, "loss"), _named(g, pred, "prediction")]
    new_vals = []
    for name, w, gw in zip(tm.params, params, grads):
        slots = optimizer.slots(tm.params[name])
        state_in = {s: g.add_input(f"{name}/{s}", w.type) for s in slots}
        new_w, new_state = optimizer.update(g, w, gw, state_in, lr, step)
        o = _named(g, new_w, f"{name}/next")
        new_vals.append(o)
        sg.params[name] = o.name
        for s, v in state_in.items():
            so = _named(g, new_state[s], f"{name}/{s}/next")
            new_vals.append(so)
            sg.state[(name, s)] = (v.name, so.name)
    by_out = {v.name: v for v in tm.train_graph.outputs}
    all_vals = {v.name: v for v in g.all_values()}
    for b, out_name in tm.buffer_updates.items():
        assert out_name in by_out
        o = _named(g, all_vals[out_name], f"{b}/next")
        new_vals.append(o)
        sg.buffers[b] = (b, o.name)
    _set_outputs(g, outs + new_vals)
    g.remove_unused()
    return sg


def build_eval_step(tm: Trainable, loss_fn: Callable, target_type: TensorType) -> StepGraph:
    g = tm.eval_graph.copy()
    g.name = "eval_step"
    pred, target, loss = _add_loss(g, tm, loss_fn, target_type, None, [])
    _set_outputs(g, [_named(g, loss, "loss"), _named(g, pred, "prediction")])
    g.remove_unused()
    return StepGraph(g, list(tm.data_inputs), target.name)
