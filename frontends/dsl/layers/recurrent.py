"""LSTM and GRU over batch-first (batch, time, features) inputs, each one ``lstm``/``gru`` node.

Parameters are stored in the layout the ops read (ONNX's), so no node rearranges them:
``weight_ih`` (directions, gates * units, features), ``weight_hh`` (directions, gates * units,
units) and ``bias`` (directions, 2 * gates * units: input biases, then recurrent biases).
Gates are packed as ONNX packs them: LSTM ``i, o, f, c``; GRU ``z, r, h``. Defaults follow
Keras: Glorot-uniform input kernels, orthogonal recurrent kernels, zero biases with the LSTM
forget-gate bias set to 1, and GRU with ``reset_after=True`` (ONNX ``linear_before_reset=1``,
PyTorch's formulation).

Outputs: the last hidden state (batch, directions * units), or with ``return_sequences`` every
step's (batch, time, directions * units); ``return_state`` adds the final states (each
(batch, directions * units), directions concatenated as Keras's Bidirectional does).
"""
from __future__ import annotations

import numpy as np

from irgraph.errors import IrgraphError

from .. import functional as F
from ..module import Module
from ..parameter import Parameter
from ..specs import as_dtype


def _lstm_bias(rng, shape, fan_in, fan_out):
    b = np.zeros(shape)
    h = shape[-1] // 8
    b[..., 2 * h:3 * h] = 1.0   # forget gate (i, o, f, c) of the input-side bias
    return b


class _Recurrent(Module):
    op = ""
    gates = 1

    def __init__(self, units: int, *, input_size: int | None = None, return_sequences: bool = False,
                 return_state: bool = False, bidirectional: bool = False, kernel_init="glorot_uniform",
                 recurrent_init="orthogonal", bias_init="zeros", dtype="float32") -> None:
        super().__init__()
        self.units = int(units)
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.bidirectional = bool(bidirectional)
        self.kernel_init, self.recurrent_init, self.bias_init = kernel_init, recurrent_init, bias_init
        self.dtype = as_dtype(dtype)
        self.input_size = None
        if input_size is not None:
            self._build(int(input_size))

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _build(self, n: int) -> None:
        self.input_size = n
        d, gh, h = self.directions, self.gates * self.units, self.units
        self.weight_ih = Parameter((d, gh, n), self.dtype, self.kernel_init, fans=(n, gh))
        self.weight_hh = Parameter((d, gh, h), self.dtype, self.recurrent_init, fans=(h, gh))
        self.bias = Parameter((d, 2 * gh), self.dtype, self.bias_init, fans=(n, gh))

    def _attrs(self) -> dict:
        return {"hidden_size": self.units, "layout": 1,
                "direction": "bidirectional" if self.bidirectional else "forward"}

    def _state(self, s):
        """A (batch, directions * units) state as the op's (batch, directions, units)."""
        return None if s is None else F.reshape(s, [0, self.directions, self.units])

    def _outputs(self, y, states):
        width = self.directions * self.units
        out = F.reshape(y, [0, 0, width]) if self.return_sequences else F.reshape(states[0], [0, width])
        if not self.return_state:
            return out
        return (out,) + tuple(F.reshape(s, [0, width]) for s in states)

    def _initial(self, initial_state, n: int) -> list:
        if initial_state is None:
            return [None] * n
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        if len(initial_state) != n:
            raise IrgraphError(f"{type(self).__name__} takes {n} initial state(s)", actual=len(initial_state))
        return [self._state(s) for s in initial_state]

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.units}, return_sequences={self.return_sequences}, "
                f"bidirectional={self.bidirectional}")


class LSTM(_Recurrent):
    """``LSTM(units)`` on (batch, time, features); ``unit_forget_bias`` starts the forget gate at 1."""
    gates = 4

    def __init__(self, units: int, *, unit_forget_bias: bool = True, **kwargs) -> None:
        if unit_forget_bias and kwargs.get("bias_init", "zeros") == "zeros":
            kwargs["bias_init"] = _lstm_bias
        super().__init__(units, **kwargs)

    def forward(self, x, initial_state=None):
        if self.input_size is None:
            self._build(self.static_dim(x, -1, "LSTM", "the feature axis"))
        h0, c0 = self._initial(initial_state, 2)
        y, yh, yc = F.lstm(x, self.weight_ih, self.weight_hh, self.bias, None, h0, c0, **self._attrs())
        return self._outputs(y, (yh, yc))


class GRU(_Recurrent):
    """``GRU(units)`` on (batch, time, features); ``reset_after`` (default True) applies the reset
    gate after the recurrent matmul (PyTorch's and Keras 2's formulation)."""
    gates = 3

    def __init__(self, units: int, *, reset_after: bool = True, **kwargs) -> None:
        super().__init__(units, **kwargs)
        self.reset_after = bool(reset_after)

    def forward(self, x, initial_state=None):
        if self.input_size is None:
            self._build(self.static_dim(x, -1, "GRU", "the feature axis"))
        (h0,) = self._initial(initial_state, 1)
        y, yh = F.gru(x, self.weight_ih, self.weight_hh, self.bias, None, h0,
                      linear_before_reset=int(self.reset_after), **self._attrs())
        return self._outputs(y, (yh,))
