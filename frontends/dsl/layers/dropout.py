"""Dropout: in training, zero each element with probability ``rate`` and scale the rest by
1 / (1 - rate); in eval mode, the identity (no node at all).

How training-mode masks are drawn is the tracer's choice (``Tracer(random=...)``):

- ``"counter"`` (the default when parameters are graph inputs, i.e. for training): in the
  graph, by a counter-based hash of each element's index and the layer's ``rng_state`` buffer
  (a uint32 step counter), which the trace advances by one as a state output — like
  BatchNorm's running statistics. Plain integer elementwise ops, so every backend computes the
  same masks natively; a trainer that carries buffers gets a fresh mask every step, the same
  sequence on every target, resumable from a checkpoint.
- ``"inputs"``: the scaled mask is a graph input the caller draws every run
  (``TracedModel.random_inputs``).
- ``"op"``: the registry's ``dropout`` op (``seed`` fixes its draws; without one every run
  draws afresh, on the reference implementation).
"""
from __future__ import annotations

import numpy as np

from irgraph.errors import IrgraphError

from .. import functional as F
from ..module import Module
from ..parameter import Buffer

_U = np.uint32
# multiplicative constants of the murmur3 / lowbias32 finalizers and the golden ratio
_GOLDEN, _M1, _M2, _M3 = _U(0x9E3779B9), _U(0x7FEB352D), _U(0x846CA68B), _U(0x85EBCA6B)


def _mix(h):
    """lowbias32: a bijection on uint32 whose output bits all depend on every input bit."""
    h = F.bitwise_xor(h, F.shift_right(h, _U(16)))
    h = F.mul(h, _M1)
    h = F.bitwise_xor(h, F.shift_right(h, _U(15)))
    h = F.mul(h, _M2)
    return F.bitwise_xor(h, F.shift_right(h, _U(16)))


def counter_uniform(like, state, salt: int = 0):
    """Uniform [0, 1) values shaped like ``like`` (its float dtype), from uint32 ``state`` of shape
    (1,): element i gets mix(i * golden + mix(state * M3 + salt)) >> 8, scaled by 2**-24."""
    key = _mix(F.add(F.mul(state, _M3), _U(salt)))
    idx = F.cast(F.reshape(F.range(np.int64(0), F.size(like), np.int64(1)), F.shape(like)), to="uint32")
    h = _mix(F.add(F.mul(idx, _GOLDEN), key))
    u = F.cast(F.shift_right(h, _U(8)), to="float32")
    u = F.mul(u, np.float32(2.0 ** -24))
    return u if like.dtype.name == "float32" else F.cast(u, to=like.dtype)


def _state_init(seed):
    def init(rng, shape, fan_in, fan_out):
        return np.full(shape, seed, np.int64) if seed is not None else rng.integers(0, 2 ** 32, shape)
    return init


class Dropout(Module):
    def __init__(self, rate: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise IrgraphError("Dropout rate must be in [0, 1)", actual=rate)
        self.rate = float(rate)
        self.seed = seed
        # the counter-mode generator's state: drawn from the model seed and this layer's name
        # unless ``seed`` fixes it
        self.rng_state = Buffer((1,), "uint32", _state_init(None if seed is None else int(seed) % 2 ** 32))

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            return x
        from ..trace import current_tracer
        t = current_tracer()
        if t.random_mode == "inputs":
            return F.mul(x, t.random_mask(x, self.rate, self))
        if t.random_mode == "counter":
            state = self.rng_state
            call = t.count_call(state)
            u = counter_uniform(x, state, salt=call)
            if call == 0:
                t.update_state(state, F.add(state, _U(1)))
            scale = np.asarray(1.0 / (1.0 - self.rate), x.dtype.np)
            return F.mul(x, F.where(F.greater_equal(u, np.asarray(self.rate, x.dtype.np)), scale,
                                    np.zeros((), x.dtype.np)))
        y, _ = F.dropout(x, self.rate, True, seed=self.seed)
        return y

    def extra_repr(self) -> str:
        return f"rate={self.rate}"
