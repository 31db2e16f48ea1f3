"""BatchNorm and LayerNorm.

BatchNorm normalizes over every axis but the channel axis 1 of (N, C, ...) inputs (1-D, 2-D
and 3-D alike). In eval mode it uses its running statistics (``batch_norm``; the -O2 pipeline
folds it into a preceding conv). In training mode it uses the batch's mean and biased variance
(``batch_norm_training``) and records the updated running statistics as extra outputs of the
trace (``TracedModel.state_outputs``):
``running = running * momentum + batch * (1 - momentum)``, so ``momentum=0.9`` here is
PyTorch's ``momentum=0.1`` and Keras's convention.
"""
from __future__ import annotations

from irgraph import dtype as dt

from .. import functional as F
from ..module import Module
from ..parameter import Buffer, Parameter
from ..specs import as_dtype


class BatchNorm(Module):
    def __init__(self, num_features: int | None = None, *, momentum: float = 0.9, epsilon: float = 1e-5,
                 affine: bool = True, dtype="float32") -> None:
        super().__init__()
        self.momentum, self.epsilon, self.affine = float(momentum), float(epsilon), bool(affine)
        self.dtype = as_dtype(dtype)
        self.num_features = None
        if num_features is not None:
            self._build(int(num_features))

    def _build(self, c: int) -> None:
        self.num_features = c
        if self.affine:
            self.weight = Parameter((c,), self.dtype, "ones")
            self.bias = Parameter((c,), self.dtype, "zeros")
        self.running_mean = Buffer((c,), self.dtype, "zeros")
        self.running_var = Buffer((c,), self.dtype, "ones")

    def forward(self, x):
        if self.num_features is None:
            self._build(self.static_dim(x, 1, "BatchNorm", "the channel axis"))
        c = self.num_features
        w = self.weight if self.affine else F.ones((c,), self.dtype)
        b = self.bias if self.affine else F.zeros((c,), self.dtype)
        if not self.training:
            return F.batch_norm(x, w, b, self.running_mean, self.running_var, epsilon=self.epsilon)
        y, mean, var = F.batch_norm_training(x, w, b, self.running_mean, self.running_var,
                                             epsilon=self.epsilon, momentum=self.momentum, num_outputs=3)
        from ..trace import current_tracer
        t = current_tracer()
        t.update_state(self.running_mean, mean)
        t.update_state(self.running_var, var)
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, epsilon={self.epsilon}"


class LayerNorm(Module):
    """Normalize over the trailing ``normalized_shape`` axes (the last axis when not given),
    then scale and shift elementwise; one ``layer_norm`` node."""

    def __init__(self, normalized_shape=None, *, epsilon: float = 1e-5, affine: bool = True,
                 dtype="float32") -> None:
        super().__init__()
        self.epsilon, self.affine = float(epsilon), bool(affine)
        self.dtype = as_dtype(dtype)
        self.normalized_shape = None
        if normalized_shape is not None:
            self._build(normalized_shape)

    def _build(self, shape) -> None:
        shape = (int(shape),) if isinstance(shape, int) else tuple(int(d) for d in shape)
        self.normalized_shape = shape
        if self.affine:
            self.weight = Parameter(shape, self.dtype, "ones")
            self.bias = Parameter(shape, self.dtype, "zeros")

    def forward(self, x):
        if self.normalized_shape is None:
            self._build(self.static_dim(x, -1, "LayerNorm", "the last axis"))
        shape = self.normalized_shape
        w = self.weight if self.affine else F.ones(shape, self.dtype)
        b = self.bias if self.affine else F.zeros(shape, self.dtype)
        # statistics in float32, or in float64 for float64 models (gradient checks)
        stash = dt.float64 if x.dtype is dt.float64 else dt.float32
        return F.layer_norm(x, w, b, axis=-len(shape), epsilon=self.epsilon, stash_type=stash)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, epsilon={self.epsilon}"
