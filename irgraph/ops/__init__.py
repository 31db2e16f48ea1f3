"""The op registry and every core op. Importing this package registers all ops once.

Each family module defines its ops with ``register``/``elementwise``; see ``registry.py`` for
what an entry holds and ``declare.py`` for the helpers.
"""
from .registry import Attr, OpDef, InferCtx, register, get_op, has_op, all_ops  # noqa: F401

# one module per op family; order does not matter
from . import (  # noqa: F401,E402
    elementwise,
    cast,
    reduction,
    normalization,
    linalg,
    conv,
    pooling,
    movement,
    rearrange,
    index,
    scatter,
    shape,
    control,
    rnn,
    quant,
    qlinear,
    sparse,
    image,
    image_codecs,
    signal,
    random,
    loss,
    training,
    text,
    ml,
    attention,
    fused,
)
