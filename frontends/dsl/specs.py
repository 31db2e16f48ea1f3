"""Input specifications: what a traced model's data inputs look like (shape, dtype, name).

A spec may be written several ways; ``parse_specs`` turns any of them into ``(name, TensorType)``:

- ``InputSpec((None, 3, 28, 28), "float32", name="image")``
- a shape tuple ``(None, 4)`` (float32), or ``((None, 4), "int64")``
- an ``irgraph.TensorType``, or an example numpy array (its exact shape and dtype)
- a list of the above (one per input), or a dict ``{name: spec}``

``None`` in a shape is a symbolic size: the first axis becomes ``"batch"`` (shared by every input,
so a batch size binds once), any other axis ``"<input>_d<axis>"``. Strings are symbols as given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from irgraph.dtype import DType
from irgraph.errors import IrgraphError
from irgraph.types import TensorType

BATCH = "batch"


@dataclass(frozen=True)
class InputSpec:
    """One data input: ``shape`` (ints, symbol names or None), ``dtype`` and an optional name."""

    shape: tuple | None
    dtype: Any = "float32"
    name: str | None = None


def as_dtype(d, what: str = "dtype") -> DType:
    """A DType from a DType, a name (``"float32"``) or anything numpy reads as a dtype."""
    if isinstance(d, DType):
        return d
    if isinstance(d, str):
        return DType.from_name(d)
    try:
        return DType.from_numpy(np.dtype(d))
    except TypeError:
        raise IrgraphError(f"{what} {d!r} is not a dtype", expected="a DType, a name such as "
                           "'float32' or a numpy dtype") from None


def _is_dim(d) -> bool:
    if isinstance(d, str):
        return not _is_dtype_like(d)   # (3, "float32") is a mistake, not a symbol named float32
    return d is None or isinstance(d, (int, np.integer)) and not isinstance(d, bool)


def _is_shape(s) -> bool:
    return isinstance(s, (tuple, list)) and all(_is_dim(d) for d in s)


def _is_dtype_like(d) -> bool:
    if isinstance(d, (DType, type, np.dtype)):
        return True
    if isinstance(d, str):
        try:
            DType.from_name(d)
            return True
        except IrgraphError:
            return False
    return False


def _one(spec, name: str) -> tuple[str, TensorType]:
    if isinstance(spec, InputSpec):
        return spec.name or name, _type(spec.shape, as_dtype(spec.dtype), spec.name or name)
    if isinstance(spec, TensorType):
        return name, spec
    if isinstance(spec, np.ndarray):
        return name, TensorType(spec.shape, DType.from_numpy(spec.dtype))
    if _is_shape(spec):
        return name, _type(spec, DType.from_name("float32"), name)
    if (isinstance(spec, (tuple, list)) and len(spec) == 2 and (_is_shape(spec[0]) or spec[0] is None)
            and (_is_dtype_like(spec[1]) or isinstance(spec[1], str))):
        return name, _type(spec[0], as_dtype(spec[1]), name)   # an unknown dtype name fails here
    raise IrgraphError(f"cannot read the input spec {spec!r} for input {name!r}", input=name,
                       hint="give a shape tuple such as (None, 4), (shape, dtype), an InputSpec, "
                            "a TensorType or an example array")


def _type(shape, dtype: DType, name: str) -> TensorType:
    if shape is None:
        return TensorType(None, dtype)
    dims = []
    for i, d in enumerate(shape):
        if d is None:
            d = BATCH if i == 0 else f"{name}_d{i}"
        elif not isinstance(d, str):
            d = int(d)
            if d < 0:
                raise IrgraphError(f"negative size {d} in the shape of input {name!r}", input=name,
                                   actual=tuple(shape))
        dims.append(d)
    return TensorType(dims, dtype)


def _single(specs) -> bool:
    """Whether ``specs`` describes one input (rather than a list of them)."""
    if isinstance(specs, (InputSpec, TensorType, np.ndarray)) or _is_shape(specs):
        return True
    return (isinstance(specs, (tuple, list)) and len(specs) == 2
            and (_is_dtype_like(specs[1]) or isinstance(specs[1], str))
            and (_is_shape(specs[0]) or specs[0] is None))


def parse_specs(specs, default_names: Sequence[str]) -> list[tuple[str, TensorType]]:
    """``(name, TensorType)`` per data input; unnamed inputs take ``default_names`` in order."""
    if specs is None:
        raise IrgraphError("input specs are needed to trace this model",
                           hint="pass input_specs=, e.g. [(None, 4)] or {'x': ((None, 4), 'float32')}")
    if isinstance(specs, dict):
        out = [_one(s, str(k)) for k, s in specs.items()]
    else:
        items = [specs] if _single(specs) else list(specs)
        names = list(default_names) + [f"input_{i}" for i in range(len(default_names), len(items))]
        out = [_one(s, names[i]) for i, s in enumerate(items)]
    seen = set()
    for n, _ in out:
        if n in seen:
            raise IrgraphError(f"two inputs are named {n!r}", input=n)
        seen.add(n)
    return out
