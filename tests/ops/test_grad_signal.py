"""Gradients of dft (forward/inverse, one-sided, padded and cropped dft_length, any axis) and
stft (real and complex signals, windows, overlapping frames) against central finite
differences in float64."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case

R = np.random.default_rng(5)


def f64(*shape):
    return R.standard_normal(shape)


_L = np.array(6, np.int64)
_ax1 = np.array(1, np.int64)

GRAD_CASES = {
    "dft": [
        case(f64(2, 5, 2), id="complex"),
        case(f64(2, 5, 1), id="real"),
        case(f64(2, 5, 2), attrs={"inverse": True}, id="inverse"),
        case(f64(2, 5, 1), attrs={"onesided": True}, id="onesided"),
        case(f64(2, 6, 1), attrs={"onesided": True}, id="onesided-even"),
        case(f64(2, 4, 2), attrs={"inverse": True, "onesided": True}, id="irfft-even"),
        case(f64(2, 4, 2), np.array(7, np.int64), attrs={"inverse": True, "onesided": True}, const=(1,),
             id="irfft-odd-length"),
        case(f64(2, 3, 2), np.array(8, np.int64), attrs={"inverse": True, "onesided": True}, const=(1,),
             id="irfft-padded-bins"),
        case(f64(2, 4, 2), _L, const=(1,), id="zero-padded"),
        case(f64(3, 8, 1), np.array(5, np.int64), const=(1,), attrs={"onesided": True}, id="cropped-onesided"),
        case(f64(3, 2, 2), _L, _ax1, const=(1, 2), attrs={"inverse": True}, id="axis0-inverse-padded"),
        case(f64(3, 4, 2, 1), None, np.array(0, np.int64), const=(2,), id="axis0-real"),
    ],
    "stft": [
        case(f64(2, 10, 1), np.array(3, np.int64), f64(4), const=(1,), id="real-window-overlap"),
        case(f64(1, 9, 2), np.array(2, np.int64), f64(5), const=(1,), attrs={"onesided": False},
             id="complex-window"),
        case(f64(2, 9, 1), np.array(4, np.int64), None, np.array(4, np.int64), const=(1, 3),
             id="no-window-frame-length"),
        case(f64(1, 11, 1), np.array(5, np.int64), f64(3), const=(1,), attrs={"onesided": False},
             id="gaps-between-frames"),
    ],
}

_ALL = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _ALL, ids=[f"{op}-{c.id}" for op, c in _ALL])
def test_gradient(op, c):
    check_case(op, c)
