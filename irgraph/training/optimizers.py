"""Optimizers whose updates are graph nodes, so a whole training step compiles as one program.

An optimizer says which state it keeps per parameter (``slots``: name -> initial array) and
builds, inside the step graph, the new parameter and state values from the parameter, its
gradient, its state, the learning rate and the step number (both scalar graph inputs, so a
schedule changes the rate without recompiling):

    new_w, new_state = opt.update(g, w, grad, state, lr, step)

The updates are elementwise, so the fusion passes merge each parameter's update into one
kernel. Formulas (``t`` counts steps from 1):

    SGD        v = mu v + g (+ wd w);  w -= lr v          (Nesterov: w -= lr (g + mu v))
    Adam       m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
               w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)    (weight_decay: L2 into g)
    AdamW      Adam with the decay decoupled: w -= lr (... + wd w)

as in PyTorch's ``torch.optim`` (same defaults), so runs can be compared step by step.
"""
from __future__ import annotations

import numpy as np

from ..errors import IrgraphError
from ..graph import Graph, Value
from .schedules import Schedule, as_schedule


class Optimizer:
    """Base class: a learning-rate schedule plus per-parameter state slots."""

    name = "optimizer"

    def __init__(self, lr: float | Schedule = 0.01):
        self.schedule = as_schedule(lr)

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (counted from 0)."""
        return float(self.schedule(step))

    def slots(self, param: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def update(self, g: Graph, w: Value, grad: Value, state: dict[str, Value], lr: Value,
               step: Value) -> tuple[Value, dict[str, Value]]:
        raise NotImplementedError

    def config(self) -> dict:
        """Hyper-parameters, saved in checkpoint metadata."""
        out = {"name": self.name, "schedule": self.schedule.config()}
        out.update({k: v for k, v in vars(self).items() if isinstance(v, (int, float, bool))})
        return out


def _c(g: Graph, value: float, like: Value) -> Value:
    return g.add_const(np.asarray(value, dtype=like.dtype.np), name="opt_c")


def _cast(g: Graph, x: Value, like: Value) -> Value:
    return x if x.dtype == like.dtype else g.op("cast", [x], {"to": like.dtype})


def _check_range(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> float:
    value = float(value)
    if not (lo < value if lo_open else lo <= value) or not value <= hi:
        raise IrgraphError(f"optimizer hyper-parameter {name} out of range",
                           expected=f"{'(' if lo_open else '['}{lo}, {hi}]", actual=value)
    return value


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, lr: float | Schedule = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr)
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0, float("inf"))
        if self.nesterov and self.momentum == 0:
            raise IrgraphError("Nesterov momentum needs momentum > 0", expected="momentum > 0", actual=0.0)

    def slots(self, param):
        return {"velocity": np.zeros_like(param)} if self.momentum else {}

    def update(self, g, w, grad, state, lr, step):
        lr = _cast(g, lr, w)
        d = grad
        if self.weight_decay:
            d = g.op("add", [d, g.op("mul", [w, _c(g, self.weight_decay, w)])])
        new_state = {}
        if self.momentum:
            v = g.op("add", [g.op("mul", [state["velocity"], _c(g, self.momentum, w)]), d])
            new_state["velocity"] = v
            d = g.op("add", [d, g.op("mul", [v, _c(g, self.momentum, w)])]) if self.nesterov else v
        return g.op("sub", [w, g.op("mul", [d, lr])]), new_state


class Adam(Optimizer):
    name = "adam"
    decoupled = False

    def __init__(self, lr: float | Schedule = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(lr)
        self.beta1 = _check_range("beta1", beta1, 0.0, 1.0)
        self.beta2 = _check_range("beta2", beta2, 0.0, 1.0)
        self.eps = _check_range("eps", eps, 0.0, 1.0, lo_open=True)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0, float("inf"))

    def slots(self, param):
        return {"m": np.zeros_like(param), "v": np.zeros_like(param)}

    def update(self, g, w, grad, state, lr, step):
        lr, t = _cast(g, lr, w), _cast(g, step, w)
        if self.weight_decay and not self.decoupled:
            grad = g.op("add", [grad, g.op("mul", [w, _c(g, self.weight_decay, w)])])
        b1, b2 = self.beta1, self.beta2
        m = g.op("add", [g.op("mul", [state["m"], _c(g, b1, w)]), g.op("mul", [grad, _c(g, 1 - b1, w)])])
        v = g.op("add", [g.op("mul", [state["v"], _c(g, b2, w)]),
                         g.op("mul", [g.op("mul", [grad, grad]), _c(g, 1 - b2, w)])])
        # bias corrections 1 - beta^t, computed in the graph from the step input
        c1 = g.op("sub", [_c(g, 1, w), g.op("pow", [_c(g, b1, w), t])])
        c2 = g.op("sub", [_c(g, 1, w), g.op("pow", [_c(g, b2, w), t])])
        denom = g.op("add", [g.op("sqrt", [g.op("div", [v, c2])]), _c(g, self.eps, w)])
        delta = g.op("div", [g.op("div", [m, c1]), denom])
        if self.weight_decay and self.decoupled:
            delta = g.op("add", [delta, g.op("mul", [w, _c(g, self.weight_decay, w)])])
        return g.op("sub", [w, g.op("mul", [delta, lr])]), {"m": m, "v": v}


class AdamW(Adam):
    name = "adamw"
    decoupled = True

    def __init__(self, lr: float | Schedule = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(lr, beta1, beta2, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(opt, lr: float | None = None) -> Optimizer:
    """An Optimizer instance, or one built from a name in ``OPTIMIZERS`` (with ``lr`` if given)."""
    if isinstance(opt, Optimizer):
        return opt
    if isinstance(opt, str) and opt.lower() in OPTIMIZERS:
        cls = OPTIMIZERS[opt.lower()]
        return cls() if lr is None else cls(lr=lr)
    raise IrgraphError(f"unknown optimizer {opt!r}", expected="an Optimizer or one of " +
                       ", ".join(sorted(OPTIMIZERS)), actual=repr(opt))
