"""Activation layers (ReLU, Sigmoid, Tanh, GELU, Softmax, LeakyReLU) and activations by name.

Each maps onto one registry op, which the backends fuse into the producing matmul/conv's
epilogue or lower from its scalar formula.
"""
from __future__ import annotations

from typing import Callable

from irgraph.errors import IrgraphError

from .. import functional as F
from ..module import Module


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class GELU(Module):
    """``approximate="none"`` (erf form) or ``"tanh"``."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise IrgraphError("GELU approximate must be 'none' or 'tanh'", actual=approximate)
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x):
        return F.softmax(x, axis=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class LeakyReLU(Module):
    """``x`` for x >= 0, ``alpha * x`` below (PyTorch's default slope, 0.01)."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x):
        return F.leaky_relu(x, alpha=self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Identity(Module):
    def forward(self, x):
        return x


ACTIVATIONS: dict[str, Callable] = {
    "linear": lambda x: x, "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh,
    "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "softmax": F.softmax, "leaky_relu": F.leaky_relu, "elu": F.elu, "selu": F.selu,
    "softplus": F.softplus, "swish": F.swish, "silu": F.swish, "mish": F.mish,
    "hard_sigmoid": F.hard_sigmoid, "hard_swish": F.hard_swish,
}


def get_activation(act) -> Callable | None:
    """An activation function from a name, a callable or a Module; None for none."""
    if act is None:
        return None
    if callable(act):
        return act
    try:
        return ACTIVATIONS[act]
    except (KeyError, TypeError):
        raise IrgraphError(f"unknown activation {act!r}",
                           expected="one of " + ", ".join(sorted(ACTIVATIONS))) from None
