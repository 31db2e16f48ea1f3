"""Dense (Keras-style) and Linear (PyTorch-style): ``y = x @ weight + bias``.

``weight`` is stored as (in_features, out_features), the layout the matmul reads directly (no
transpose node), so both layers trace to one ``matmul`` + ``add`` that the backends fuse. They
differ only in their defaults: Dense draws Glorot-uniform weights and zero biases (Keras);
Linear draws both from U(-1/sqrt(in), 1/sqrt(in)) (PyTorch).
"""
from __future__ import annotations

from .. import functional as F
from ..module import Module
from ..parameter import Parameter
from ..specs import as_dtype
from .activations import get_activation


class Dense(Module):
    """``Dense(units, activation=None)``; the input size is taken from the first input traced
    unless ``in_features`` is given. Works on (..., in) inputs."""

    def __init__(self, units: int, activation=None, *, use_bias: bool = True,
                 in_features: int | None = None, kernel_init="glorot_uniform", bias_init="zeros",
                 dtype="float32") -> None:
        super().__init__()
        self.units = int(units)
        self.activation = get_activation(activation)
        self._act_name = activation if isinstance(activation, str) else None
        self.use_bias = bool(use_bias)
        self.kernel_init, self.bias_init = kernel_init, bias_init
        self.dtype = as_dtype(dtype)
        self.in_features = None
        if in_features is not None:
            self._build(int(in_features))

    def _build(self, n: int) -> None:
        self.in_features = n
        self.weight = Parameter((n, self.units), self.dtype, self.kernel_init, fans=(n, self.units))
        if self.use_bias:
            self.bias = Parameter((self.units,), self.dtype, self.bias_init, fans=(n, self.units))

    def forward(self, x):
        if self.in_features is None:
            self._build(self.static_dim(x, -1, type(self).__name__, "the input's last axis"))
        y = F.matmul(x, self.weight)
        if self.use_bias:
            y = F.add(y, self.bias)
        return y if self.activation is None else self.activation(y)

    def extra_repr(self) -> str:
        act = f", activation={self._act_name!r}" if self._act_name else ""
        return f"in_features={self.in_features}, units={self.units}{act}"


class Linear(Dense):
    """``Linear(in_features, out_features, bias=True)`` with PyTorch's default initialization."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype="float32") -> None:
        super().__init__(out_features, use_bias=bias, in_features=in_features,
                         kernel_init="torch_linear", bias_init="torch_linear", dtype=dtype)
