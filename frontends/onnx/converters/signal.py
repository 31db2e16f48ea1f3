"""ONNX converters for the signal family: DFT, STFT, Hann/Hamming/BlackmanWindow, MelWeightMatrix."""
from __future__ import annotations

import numpy as np

from irgraph.dtype import DType

from .registry import converter


@converter("DFT", since=17)
def dft_17(ctx):
    # opset 17 has the axis as an attribute (default 1); opset 20 made it an input (default -2)
    axis = ctx.constant(np.array(ctx.attr("axis", 1), np.int64))
    return ctx.op("dft", [ctx.input(0), ctx.input(1), axis], _dft_attrs(ctx))


@converter("DFT", since=20)
def dft(ctx):
    axis = ctx.input(2) if ctx.has_input(2) else ctx.constant(np.array(-2, np.int64))
    return ctx.op("dft", [ctx.input(0), ctx.input(1), axis], _dft_attrs(ctx))


def _dft_attrs(ctx) -> dict:
    return {"inverse": ctx.attr("inverse", 0), "onesided": ctx.attr("onesided", 0)}


@converter("STFT", since=17)
def stft(ctx):
    return ctx.op("stft", [ctx.input(i) for i in range(min(ctx.num_inputs, 4))],
                  {"onesided": ctx.attr("onesided", 1)})


def _window(onnx_op: str, core_op: str) -> None:
    @converter(onnx_op, since=17)
    def conv(ctx):
        return ctx.op(core_op, [ctx.input(0)],
                      {"periodic": ctx.attr("periodic", 1),
                       "dtype": DType.from_onnx(ctx.attr("output_datatype", 1))})
    conv.__name__ = f"convert_{onnx_op}"


_window("HannWindow", "hann_window")
_window("HammingWindow", "hamming_window")
_window("BlackmanWindow", "blackman_window")


@converter("MelWeightMatrix", since=17)
def mel_weight_matrix(ctx):
    return ctx.op("mel_weight_matrix", [ctx.input(i) for i in range(5)],
                  {"dtype": DType.from_onnx(ctx.attr("output_datatype", 1))})
