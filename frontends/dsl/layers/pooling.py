"""Pooling and reshaping layers: MaxPool2D, AvgPool2D, GlobalAvgPool, GlobalMaxPool, Flatten.

Windows follow Keras: ``strides`` default to ``pool_size``; ``padding="same"`` pads at the end
as TensorFlow does and average pooling leaves padding out of the divisor.
"""
from __future__ import annotations

from .. import functional as F
from ..module import Module
from .conv import pair, window_pads


class _Pool2D(Module):
    op = ""

    def __init__(self, pool_size=2, strides=None, padding="valid") -> None:
        super().__init__()
        self.pool_size = pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else pair(strides, "strides")
        self.padding = padding

    def _attrs(self, x) -> dict:
        pads, auto = window_pads(self.padding, x, self.pool_size, self.strides, (1, 1), type(self).__name__)
        attrs = {"kernel_shape": self.pool_size, "strides": self.strides}
        if auto:
            attrs["auto_pad"] = auto
        else:
            attrs["pads"] = pads
        return attrs

    def forward(self, x):
        return getattr(F, self.op)(x, **self._attrs(x))

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, strides={self.strides}, padding={self.padding!r}"


class MaxPool2D(_Pool2D):
    """Max over ``pool_size`` windows of (N, C, H, W) inputs."""
    op = "max_pool"


class AvgPool2D(_Pool2D):
    """Mean over ``pool_size`` windows of (N, C, H, W) inputs (padding excluded from the mean)."""
    op = "avg_pool"


class GlobalAvgPool(Module):
    """Mean over all spatial axes: (N, C, ...) -> (N, C), or (N, C, 1, ...) with ``keepdims``."""

    mode = "avg"

    def __init__(self, keepdims: bool = False) -> None:
        super().__init__()
        self.keepdims = bool(keepdims)

    def forward(self, x):
        y = F.global_pool(x, mode=self.mode)
        return y if self.keepdims else F.flatten(y, 1)


class GlobalMaxPool(GlobalAvgPool):
    """Max over all spatial axes."""
    mode = "max"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...): every axis from ``start_axis`` on is merged."""

    def __init__(self, start_axis: int = 1) -> None:
        super().__init__()
        self.start_axis = start_axis

    def forward(self, x):
        return F.flatten(x, self.start_axis)
