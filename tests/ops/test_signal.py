"""Signal ops: dft, stft, windows, mel_weight_matrix. The transforms are checked against a
direct O(n^2) DFT sum (not numpy's FFT), windows against their textbook formulas and numpy's
symmetric windows, the mel matrix against a per-filter loop."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import TensorType
from irgraph import dtype as dt
from irgraph.errors import ShapeError
from irgraph.types import is_static_dim

from oprun import infer, run

rng = np.random.default_rng(0)
F32, I64 = dt.float32, dt.int64


def direct_dft(z, axis, n=None, inverse=False):
    """sum_k z[k] exp(-+2 pi i j k / n), zero-padding or truncating ``z`` to n along ``axis``."""
    z = np.moveaxis(z, axis, -1)
    m = z.shape[-1]
    n = m if n is None else n
    z = z[..., :n] if n <= m else np.concatenate([z, np.zeros(z.shape[:-1] + (n - m,))], axis=-1)
    k = np.arange(n)
    w = np.exp((2j if inverse else -2j) * np.pi * np.outer(k, k) / n)
    res = z @ w.T / (n if inverse else 1)
    return np.moveaxis(res, -1, axis)


def as_pair(z):
    return np.stack([z.real, z.imag], axis=-1)


def axis_const(a):
    return np.array(a, np.int64)


# ---- dft -------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, -2, -3])
def test_dft_real_matches_direct_sum(axis):
    x = rng.standard_normal((3, 5, 1))
    y = run("dft", [x, None, axis_const(axis)], const=(2,))
    np.testing.assert_allclose(y, as_pair(direct_dft(x[..., 0], axis % 3)), atol=1e-10)


def test_dft_complex_length_inverse_onesided():
    z = rng.standard_normal((2, 6)) + 1j * rng.standard_normal((2, 6))
    x = as_pair(z)
    # dft_length pads or truncates the signal
    for n in (4, 9):
        y = run("dft", [x, np.array(n, np.int64), axis_const(1)], const=(1, 2))
        np.testing.assert_allclose(y, as_pair(direct_dft(z, 1, n)), atol=1e-10)
    y = run("dft", [x, None, axis_const(1)], {"inverse": True}, const=(2,))
    np.testing.assert_allclose(y, as_pair(direct_dft(z, 1, inverse=True)), atol=1e-10)
    # one-sided forward keeps n // 2 + 1 bins of a real signal
    r = rng.standard_normal((2, 7, 1))
    y = run("dft", [r, None, axis_const(1)], {"onesided": True}, const=(2,))
    np.testing.assert_allclose(y, as_pair(direct_dft(r[..., 0], 1)[:, :4]), atol=1e-10)


def test_dft_irfft_inverts_rfft():
    r = rng.standard_normal((3, 8, 1)).astype(np.float32)
    spec = run("dft", [r, None, axis_const(1)], {"onesided": True}, const=(2,))
    assert spec.shape == (3, 5, 2)
    back = run("dft", [spec, None, axis_const(1)], {"onesided": True, "inverse": True}, const=(2,))
    assert back.shape == (3, 8, 1) and back.dtype == np.float32
    np.testing.assert_allclose(back, r, atol=1e-5)


def test_dft_inference():
    x = TensorType(("b", 10, 2), F32)
    assert infer("dft", [x, None, axis_const(1)], const=(2,)).shape == ("b", 10, 2)
    t = infer("dft", [x, np.array(16, np.int64), axis_const(1)], const=(1, 2))
    assert t.shape == ("b", 16, 2)
    r = TensorType(("b", 10, 1), F32)
    assert infer("dft", [r, None, axis_const(-2)], {"onesided": True}, const=(2,)).shape == ("b", 6, 2)
    t = infer("dft", [x, None, axis_const(1)], {"onesided": True, "inverse": True}, const=(2,))
    assert t.shape == ("b", 18, 1)
    t = infer("dft", [x, None, TensorType((), I64)])  # axis known only at run time
    assert t.shape[-1] == 2 and not any(is_static_dim(d) for d in t.shape[:-1])


@pytest.mark.parametrize("xt,axis,attrs,match", [
    (TensorType((4, 3), F32), 0, {}, "must be 1 or 2"),
    (TensorType((4, 2), F32), 1, {}, "out of range"),
    (TensorType((4, 2), F32), 0, {"onesided": True}, "real input"),
    (TensorType((4, 2), I64), 0, {}, "unsupported dtype"),
])
def test_dft_errors(xt, axis, attrs, match):
    with pytest.raises(ShapeError, match=match) as e:
        infer("dft", [xt, None, axis_const(axis)], attrs, const=(2,))
    assert "dft" in str(e.value)


# ---- stft ------------------------------------------------------------------------------------
def test_stft_matches_framewise_direct_dft():
    sig = rng.standard_normal((2, 40, 1))
    win = np.hanning(10)
    y = run("stft", [sig, np.array(6, np.int64), win, np.array(10, np.int64)], const=(1, 3))
    frames = 1 + (40 - 10) // 6
    assert y.shape == (2, frames, 6, 2)
    for f in range(frames):
        seg = sig[:, 6 * f: 6 * f + 10, 0] * win
        np.testing.assert_allclose(y[:, f], as_pair(direct_dft(seg, 1)[:, :6]), atol=1e-10)
    full = run("stft", [sig, np.array(6, np.int64), None, np.array(10, np.int64)], {"onesided": False},
               const=(1, 3))
    assert full.shape == (2, frames, 10, 2)
    np.testing.assert_allclose(full[:, 1], as_pair(direct_dft(sig[:, 6:16, 0], 1)), atol=1e-10)


def test_stft_inference_and_errors():
    t = infer("stft", [TensorType((1, 128, 1), F32), np.array(8, np.int64), None, np.array(16, np.int64)],
                const=(1, 3))
    assert t.shape == (1, 15, 9, 2)
    with pytest.raises(ShapeError, match="stft") as e:
        infer("stft", [TensorType((1, 128, 1), F32), np.array(8, np.int64), TensorType((12,), F32),
                         np.array(16, np.int64)], const=(1, 3))
    assert "frame_length" in str(e.value)


# ---- windows ---------------------------------------------------------------------------------
def window(op, n, **attrs):
    return run(op, [np.array(n, np.int32)], attrs, const=(0,))


def test_windows_against_formulas():
    n = 10
    # numpy's windows are the symmetric ones; periodic ones are the first n of n + 1 samples
    np.testing.assert_allclose(window("hann_window", n, periodic=False), np.hanning(n), atol=1e-7)
    np.testing.assert_allclose(window("hann_window", n), np.hanning(n + 1)[:-1], atol=1e-7)
    np.testing.assert_allclose(window("blackman_window", n, periodic=False), np.blackman(n), atol=1e-7)
    np.testing.assert_allclose(window("blackman_window", n), np.blackman(n + 1)[:-1], atol=1e-7)
    k = np.arange(n)
    np.testing.assert_allclose(window("hamming_window", n), 25 / 46 - 21 / 46 * np.cos(2 * np.pi * k / n),
                               atol=1e-7)
    w = window("hann_window", 4, dtype=dt.float64)
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, [0, 0.5, 1, 0.5], atol=1e-15)


def test_window_inference_and_errors():
    assert infer("hann_window", [np.array(7, np.int64)], const=(0,)).shape == (7,)
    assert not is_static_dim(infer("hann_window", [TensorType((), I64)]).shape[0])
    with pytest.raises(ShapeError, match="hamming_window"):
        infer("hamming_window", [np.array(7, np.int64)], {"dtype": dt.int32}, const=(0,))
    with pytest.raises(ShapeError, match="scalar"):
        infer("blackman_window", [TensorType((3,), I64)])


# ---- mel_weight_matrix -----------------------------------------------------------------------
def mel_loop(mels, length, rate, lo, hi):
    """One triangular filter at a time, rising then falling between FFT bin edges."""
    def to_mel(hz):
        return 2595 * np.log10(1 + hz / 700)
    pts = to_mel(lo) + np.arange(mels + 2) * (to_mel(hi) - to_mel(lo)) / (mels + 2)
    edges = [int((length + 1) * (700 * (10 ** (p / 2595) - 1)) // rate) for p in pts]
    res = np.zeros((length // 2 + 1, mels))
    for i in range(mels):
        left, center, right = edges[i:i + 3]
        if center == left:
            res[center, i] = 1
        for j in range(left, center + 1):
            if center > left:
                res[j, i] = (j - left) / (center - left)
        for j in range(center, right):
            res[j, i] = (right - j) / (right - center)
    return res


@pytest.mark.parametrize("args", [(8, 16, 8192, 0.0, 4096.0), (10, 64, 16000, 20.0, 7000.0),
                                  (3, 512, 22050, 0.0, 11025.0)])
def test_mel_weight_matrix_matches_loop(args):
    mels, length, rate, lo, hi = args
    ins = [np.array(mels, np.int32), np.array(length, np.int32), np.array(rate, np.int32),
           np.array(lo, np.float64), np.array(hi, np.float64)]
    y = run("mel_weight_matrix", ins, const=(0, 1, 2, 3, 4))
    assert y.dtype == np.float32 and y.shape == (length // 2 + 1, mels)
    np.testing.assert_allclose(y, mel_loop(*args), atol=1e-7)


def test_mel_weight_matrix_errors():
    with pytest.raises(ShapeError, match="mel_weight_matrix"):
        infer("mel_weight_matrix", [np.array(0, np.int32), np.array(16, np.int32), np.array(8000, np.int32),
                                      np.array(0, np.float32), np.array(10, np.float32)], const=(0, 1, 2, 3, 4))
