"""ONNX operator converters, one module per op family (mirroring ``irgraph/ops``)."""
from .registry import converter, find_converter, all_converters  # noqa: F401
from . import (  # noqa: F401,E402
    elementwise,
    reduction,
    normalization,
    linalg,
    conv,
    movement,
    index,
    shape,
    control,
    rnn,
    quant,
    image,
    signal,
    random,
    loss,
    training,
    text,
    attention,
    irgraph_domain,
)
