"""Conv2D: 2-D convolution over NCHW inputs (ONNX's layout) with the ``conv`` op.

``weight`` is (filters, in_channels / groups, kh, kw) as in ONNX and PyTorch; defaults are
Keras's (Glorot-uniform kernel over fans kh*kw*in and kh*kw*filters, zero bias).
``padding``: ``"valid"`` (none), ``"same"`` (output size ceil(in / stride), extra padding at the
end as TensorFlow does), an int or (ph, pw) for symmetric padding, or ONNX's 4-tuple
(top, left, bottom, right).
"""
from __future__ import annotations

from irgraph.errors import IrgraphError

from .. import functional as F
from ..module import Module
from ..parameter import Parameter
from ..specs import as_dtype
from .activations import get_activation


def pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(e) for e in v)
    if len(t) != 2:
        raise IrgraphError(f"{what} must be an int or a pair", actual=v)
    return t


def window_pads(padding, x, kernel, strides, dilations, layer: str):
    """(pads, auto_pad) for ``padding`` given the input ``x`` (NCHW)."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0), None
        if mode != "same":
            raise IrgraphError(f"{layer}: unknown padding {padding!r}", expected="'valid', 'same', an int or a tuple")
        spatial = x.shape[2:] if x.shape is not None else (None, None)
        begins, ends = [], []
        for n, k, s, d in zip(spatial, kernel, strides, dilations):
            span = (k - 1) * d + 1
            if s == 1:
                total = span - 1
            elif isinstance(n, int):
                out = -(-n // s)
                total = max((out - 1) * s + span - n, 0)
            else:
                return None, "SAME_UPPER"   # depends on a size only known at run time
            begins.append(total // 2)
            ends.append(total - total // 2)
        return tuple(begins + ends), None
    if isinstance(padding, int):
        return (padding,) * 4, None
    p = tuple(int(e) for e in padding)
    if len(p) == 2:
        return p + p, None
    if len(p) == 4:
        return (p[0], p[1], p[2], p[3]), None
    raise IrgraphError(f"{layer}: padding must be 'valid', 'same', an int, a pair or 4 values", actual=padding)


class Conv2D(Module):
    """``Conv2D(filters, kernel_size, strides=1, padding="valid")`` on (N, C, H, W) inputs."""

    def __init__(self, filters: int, kernel_size, strides=1, padding="valid", *, dilation=1,
                 groups: int = 1, use_bias: bool = True, activation=None, in_channels: int | None = None,
                 kernel_init="glorot_uniform", bias_init="zeros", dtype="float32") -> None:
        super().__init__()
        self.filters = int(filters)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.dilation = pair(dilation, "dilation")
        self.padding = padding
        self.groups = int(groups)
        self.use_bias = bool(use_bias)
        self.activation = get_activation(activation)
        self.kernel_init, self.bias_init = kernel_init, bias_init
        self.dtype = as_dtype(dtype)
        if self.filters % self.groups:
            raise IrgraphError(f"Conv2D: {self.filters} filters do not split into {self.groups} groups")
        self.in_channels = None
        if in_channels is not None:
            self._build(int(in_channels))

    def _build(self, c: int) -> None:
        if c % self.groups:
            raise IrgraphError(f"Conv2D: {c} input channels do not split into {self.groups} groups")
        self.in_channels = c
        kh, kw = self.kernel_size
        cg = c // self.groups
        fans = (cg * kh * kw, self.filters * kh * kw)
        self.weight = Parameter((self.filters, cg, kh, kw), self.dtype, self.kernel_init, fans=fans)
        if self.use_bias:
            self.bias = Parameter((self.filters,), self.dtype, self.bias_init, fans=fans)

    def forward(self, x):
        if self.in_channels is None:
            self._build(self.static_dim(x, 1, "Conv2D", "the input channels"))
        pads, auto = window_pads(self.padding, x, self.kernel_size, self.strides, self.dilation, "Conv2D")
        attrs = {"strides": self.strides, "dilations": self.dilation, "group": self.groups}
        if auto:
            attrs["auto_pad"] = auto
        else:
            attrs["pads"] = pads
        y = F.conv(x, self.weight, self.bias if self.use_bias else None, **attrs)
        return y if self.activation is None else self.activation(y)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.filters}, kernel_size={self.kernel_size}, "
                f"strides={self.strides}, padding={self.padding!r}")
