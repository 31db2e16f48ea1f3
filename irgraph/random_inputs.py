"""Seeded random arrays that fit a model's declared input types (for ``irgraph run`` and tests)."""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .types import TensorType


def random_array(t: TensorType, rng: np.random.Generator, dims: dict[str, int] | None = None,
                 name: str = "") -> np.ndarray:
    dims = dims or {}
    if t.shape is None:
        raise InputError("input has unknown rank; give it with --inputs", input=name)
    shape = []
    for d in t.shape:
        if isinstance(d, int):
            shape.append(d)
        elif d in dims:
            shape.append(int(dims[d]))
        else:
            shape.append(1)  # symbolic dims default to 1; --dim NAME=SIZE overrides
    dt = t.dtype
    if dt.is_float:
        return rng.standard_normal(shape).astype(dt.np)
    if dt.is_bool:
        return rng.random(shape) < 0.5
    if dt.is_int:
        lo = 0 if dt.kind == "u" else -8
        return rng.integers(lo, 8, size=shape).astype(dt.np)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt.np)
    raise InputError(f"cannot make random inputs of dtype {dt.name}", input=name)


def random_inputs(types: dict[str, TensorType], seed: int = 0, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: random_array(t, rng, dims, n) for n, t in types.items()}
