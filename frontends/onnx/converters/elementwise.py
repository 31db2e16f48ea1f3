"""ONNX converters for elementwise operators."""
from __future__ import annotations

from irgraph.dtype import DType

from .registry import converter


def _simple(onnx_op: str, core_op: str, since: int = 1):
    @converter(onnx_op, since=since)
    def conv(ctx):
        return ctx.op(core_op, ctx.inputs)
    conv.__name__ = f"convert_{onnx_op}"
    return conv


for _onnx, _core in [("Add", "add"), ("Sub", "sub"), ("Mul", "mul"), ("Div", "div"),
                     ("Neg", "neg"), ("Exp", "exp"), ("Relu", "relu"), ("Equal", "equal"),
                     ("Where", "where")]:
    _simple(_onnx, _core)


@converter("Cast")
def cast(ctx):
    to = ctx.attr("to")
    if isinstance(to, str):  # opset 1 used type names
        to = DType.from_name(to.lower())
    else:
        to = DType.from_onnx(to)
    return ctx.op("cast", [ctx.input(0)], {"to": to})
