"""Parameter initializers, by name, as Keras and PyTorch define them.

Every initializer is ``init(rng, shape, fan_in, fan_out) -> float64 array`` drawn from a
``numpy.random.Generator``; the parameter casts the result to its dtype. ``get(name_or_fn)``
looks one up; a float or an array given instead of a name is used as a constant fill.

``fan_in``/``fan_out`` are supplied by the layer that owns the parameter (a Dense weight
``(in, out)`` has fans ``(in, out)``; a conv weight ``(out, in/groups, kh, kw)`` has
``(in/groups * kh * kw, out * kh * kw)``), so one initializer serves every layout.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from irgraph.errors import IrgraphError

Initializer = Callable[[np.random.Generator, tuple, int, int], np.ndarray]


def zeros(rng, shape, fan_in, fan_out):
    return np.zeros(shape)


def ones(rng, shape, fan_in, fan_out):
    return np.ones(shape)


def glorot_uniform(rng, shape, fan_in, fan_out):
    """Keras's default kernel initializer: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    a = math.sqrt(6.0 / max(fan_in + fan_out, 1))
    return rng.uniform(-a, a, shape)


def glorot_normal(rng, shape, fan_in, fan_out):
    """Truncated at two standard deviations (as Keras does), std = sqrt(2 / (fan_in + fan_out))."""
    return _truncated_normal(rng, shape, math.sqrt(2.0 / max(fan_in + fan_out, 1)))


def he_uniform(rng, shape, fan_in, fan_out):
    a = math.sqrt(6.0 / max(fan_in, 1))
    return rng.uniform(-a, a, shape)


def he_normal(rng, shape, fan_in, fan_out):
    return _truncated_normal(rng, shape, math.sqrt(2.0 / max(fan_in, 1)))


def lecun_normal(rng, shape, fan_in, fan_out):
    return _truncated_normal(rng, shape, math.sqrt(1.0 / max(fan_in, 1)))


def torch_linear(rng, shape, fan_in, fan_out):
    """PyTorch's Linear/Conv default (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    also what it uses for their biases."""
    a = 1.0 / math.sqrt(max(fan_in, 1))
    return rng.uniform(-a, a, shape)


def small_uniform(rng, shape, fan_in, fan_out):
    """U(-0.05, 0.05): Keras's default for embeddings."""
    return rng.uniform(-0.05, 0.05, shape)


def normal(rng, shape, fan_in, fan_out):
    """N(0, 1): PyTorch's default for embeddings."""
    return rng.standard_normal(shape)


def orthogonal(rng, shape, fan_in, fan_out):
    """A (semi-)orthogonal matrix over the last two axes (Keras's recurrent-kernel default); each
    leading index (e.g. an RNN direction) gets its own draw."""
    if len(shape) < 2:
        raise IrgraphError("the orthogonal initializer needs a matrix", actual=tuple(shape))
    rows, cols = shape[-2], shape[-1]
    lead = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    mats = []
    for _ in range(lead):
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))  # makes the draw uniform over orthogonal matrices
        mats.append(q if rows >= cols else q.T)
    return np.stack(mats).reshape(shape)


def _truncated_normal(rng, shape, std):
    # redraw values beyond two standard deviations, as Keras's truncated normal does
    x = rng.standard_normal(shape)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2
    return x * (std / 0.87962566103423978)  # the std of a standard normal truncated at +-2


INITIALIZERS: dict[str, Initializer] = {
    "zeros": zeros, "ones": ones, "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform, "xavier_normal": glorot_normal, "he_uniform": he_uniform,
    "he_normal": he_normal, "kaiming_uniform": he_uniform, "kaiming_normal": he_normal,
    "lecun_normal": lecun_normal, "torch_linear": torch_linear, "small_uniform": small_uniform,
    "normal": normal, "orthogonal": orthogonal,
}


def constant(value) -> Initializer:
    """Fill with ``value`` (a scalar, or an array broadcast to the parameter's shape)."""
    def init(rng, shape, fan_in, fan_out):
        return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()
    return init


def get(init) -> Initializer:
    """An initializer from a name in ``INITIALIZERS``, a function, or a constant value."""
    if callable(init):
        return init
    if isinstance(init, str):
        try:
            return INITIALIZERS[init]
        except KeyError:
            raise IrgraphError(f"unknown initializer {init!r}",
                               expected="one of " + ", ".join(sorted(INITIALIZERS))) from None
    if isinstance(init, (int, float, np.ndarray, list, tuple)):
        return constant(init)
    raise IrgraphError(f"cannot use {init!r} as an initializer",
                       hint="give a name such as 'glorot_uniform', a function or a constant")
