"""Learning-rate schedules: the rate as a function of the step number (counted from 0).

The rate is a scalar input of the compiled train step, so a schedule costs nothing at run time
and never forces a recompile.

    Constant(0.1)                      0.1 at every step
    StepDecay(0.1, step_size=100, gamma=0.5)     halves every 100 steps
    Cosine(0.1, total_steps=1000, min_lr=0.0)    cosine from 0.1 down to min_lr, then flat
    Warmup(Cosine(...), warmup_steps=50)         linear ramp from 0 over 50 steps, then the inner schedule
"""
from __future__ import annotations

import math

from ..errors import IrgraphError


class Schedule:
    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def config(self) -> dict:
        out = {"name": type(self).__name__}
        for k, v in vars(self).items():
            out[k] = v.config() if isinstance(v, Schedule) else v
        return out


def _positive(name: str, value, integer: bool = False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        raise IrgraphError(f"schedule parameter {name} must be a positive {'integer' if integer else 'number'}",
                           expected="> 0", actual=repr(value))
    return value


class Constant(Schedule):
    def __init__(self, lr: float):
        self.lr = float(_positive("lr", lr))

    def __call__(self, step):
        return self.lr


class StepDecay(Schedule):
    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        self.lr = float(_positive("lr", lr))
        self.step_size = _positive("step_size", step_size, integer=True)
        self.gamma = float(_positive("gamma", gamma))

    def __call__(self, step):
        return self.lr * self.gamma ** (step // self.step_size)


class Cosine(Schedule):
    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0):
        self.lr = float(_positive("lr", lr))
        self.total_steps = _positive("total_steps", total_steps, integer=True)
        if not 0 <= min_lr <= self.lr:
            raise IrgraphError("Cosine: min_lr must lie in [0, lr]", expected=f"[0, {self.lr}]", actual=min_lr)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        p = min(step, self.total_steps) / self.total_steps
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * p))


class Warmup(Schedule):
    def __init__(self, schedule: Schedule | float, warmup_steps: int):
        self.schedule = as_schedule(schedule)
        self.warmup_steps = _positive("warmup_steps", warmup_steps, integer=True)

    def __call__(self, step):
        if step < self.warmup_steps:
            return self.schedule(0) * (step + 1) / self.warmup_steps
        return self.schedule(step - self.warmup_steps)


def as_schedule(lr) -> Schedule:
    if isinstance(lr, Schedule):
        return lr
    if callable(lr):
        fn = lr

        class _Fn(Schedule):
            def __call__(self, step):
                return float(fn(step))

            def config(self):
                return {"name": getattr(fn, "__name__", "callable")}
        return _Fn()
    return Constant(lr)
