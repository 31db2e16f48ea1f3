"""Lowering rule for dropout wherever its result is deterministic.

The registry's dropout (training_mode, input 2, defaults to true) draws random numbers only in
training mode with 0 < ratio < 1. Otherwise it is deterministic and lowers natively:

- not training, or ratio <= 0:  (x, all true);
- training and ratio >= 1:      (zeros, all false).

ratio and training_mode are usually graph inputs. When the ratio is only known at run time
the rule says so ("only known at run time"), and the cpu target then compiles the graph
specialized on the small inputs' values (a scalar ratio is one). training_mode matters only
for 0 < ratio < 1, the random case, which stays on the reference (``fallback=True``).
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt

from . import lower_ops
from .kernel_ir import Const, LoweringError
from .lower_ops import _known
from .lower_tensor import Fill


def _scalar(a):
    return np.asarray(a).reshape(-1)[0]


def rule_dropout(ctx, n, ins):
    x = ins[0]
    has_t = len(n.inputs) > 2 and n.inputs[2] is not None
    training = _known(n.inputs[2]) if has_t else np.array(True)
    ratio = _known(n.inputs[1])
    keep_all = [x, Fill(Const(True, dt.bool_), x.shape, ctx)]
    if training is not None and not bool(_scalar(training)):
        return keep_all[:len(n.outputs)]
    if ratio is None:
        raise LoweringError("dropout ratio (input 1) is only known at run time; its value decides "
                            "whether dropout draws random numbers", op=n.op, node=n.name)
    r = float(_scalar(ratio))
    if r <= 0:
        return keep_all[:len(n.outputs)]
    if r >= 1:
        if training is None:
            raise LoweringError("dropout with ratio >= 1 drops everything in training mode only, and "
                                "training_mode (input 2) is known at run time alone", op=n.op, node=n.name)
        drop_all = [Fill(Const(0, x.dtype), x.shape, ctx), Fill(Const(False, dt.bool_), x.shape, ctx)]
        return drop_all[:len(n.outputs)]
    raise LoweringError("dropout in training mode draws random numbers", op=n.op, node=n.name)


RULES: dict = {"dropout": rule_dropout}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
