"""Finite-difference checks of the rearranging ops' gradients (rearrange.py): pad in every mode
(with crops, axes and a fill value), depth/space blocks in both modes, reverse_sequence, trilu
and col2im."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case
from test_grad_conv import check_symbolic_batch

_rng = np.random.default_rng(3)


def _r(*shape):
    return _rng.standard_normal(shape)


def _i(*v):
    return np.array(v, np.int64)


GRAD_CASES = {
    "pad": [
        case(_r(2, 3), _i(1, 0, 2, 1), const=(1,), id="constant"),
        case(_r(2, 4), _i(-1, 2, 1, -1), np.array(0.5), const=(1,), id="crop_and_fill_value"),
        case(_r(2, 3, 4), _i(1, 2, 0, 1), None, _i(2, 0), const=(1, 3), id="axes"),
        case(_r(3, 4), _i(2, 1, 1, 3), attrs={"mode": "reflect"}, const=(1,), id="reflect"),
        case(_r(2, 3), _i(1, 3, 2, 4), attrs={"mode": "edge"}, const=(1,), id="edge"),
        case(_r(2, 3), _i(0, 4, 1, 5), attrs={"mode": "wrap"}, const=(1,), id="wrap_past_size"),
        case(_r(3, 5), _i(-1, 2, 1, -2), attrs={"mode": "reflect"}, const=(1,), id="reflect_crop"),
    ],
    "depth_to_space": [
        case(_r(1, 8, 2, 3), attrs={"blocksize": 2}, id="dcr"),
        case(_r(2, 9, 1, 2), attrs={"blocksize": 3, "mode": "CRD"}, id="crd"),
    ],
    "space_to_depth": [
        case(_r(1, 2, 4, 2), attrs={"blocksize": 2}, id="dcr"),
        case(_r(1, 1, 6, 3), attrs={"blocksize": 3, "mode": "CRD"}, id="crd"),
    ],
    "reverse_sequence": [
        case(_r(4, 3, 2), _i(4, 0, 2), const=(1,), id="time_major"),
        case(_r(2, 5), _i(3, 5), attrs={"batch_axis": 0, "time_axis": 1}, const=(1,), id="batch_major"),
    ],
    "trilu": [
        case(_r(3, 4), id="upper"),
        case(_r(2, 3, 4), _i(-1), attrs={"upper": 0}, const=(1,), id="lower_k"),
    ],
    "col2im": [
        case(_r(2, 8, 6), _i(3, 4), _i(2, 2), const=(1, 2), id="2x2"),
        case(_r(1, 6, 6), _i(5, 5), _i(3, 2),
             attrs={"strides": (2, 3), "dilations": (1, 2), "pads": (1, 0, 1, 1)}, const=(1, 2),
             id="strided_dilated_pads"),
        case(_r(1, 3, 3), _i(6), _i(3), attrs={"strides": (2,), "pads": (1, 0)}, const=(1, 2), id="1d"),
    ],
}


@pytest.mark.parametrize("op,c", [(op, c) for op, cs in GRAD_CASES.items() for c in cs],
                         ids=lambda v: v if isinstance(v, str) else v.id)
def test_grad(op, c):
    check_case(op, c)


def test_pads_computed_at_run_time_are_refused_by_name():
    from oprun import build

    from irgraph import IrgraphError
    from irgraph.passes.autodiff import gradients
    g, outs, _ = build("pad", [_r(2, 3), _i(1, 0, 0, 1)], {"mode": "edge"})
    with pytest.raises(IrgraphError, match="known at compile time") as e:
        gradients(g, outs[0], [g.inputs[0]])
    assert e.value.op == "pad"


# edge/reflect/wrap padding of axis 0 needs its size: those cases pad axis 0 and are refused
@pytest.mark.parametrize("op,c", [(op, c) for op, cs in GRAD_CASES.items() for c in cs
                                  if op != "pad" or (c.attrs or {}).get("mode", "constant") == "constant"],
                         ids=lambda v: v if isinstance(v, str) else v.id)
def test_symbolic_batch(op, c):
    check_symbolic_batch(op, c)
