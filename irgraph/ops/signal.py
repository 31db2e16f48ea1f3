"""Signal ops: dft, stft, the hann/hamming/blackman windows and mel_weight_matrix.

Complex values are carried as a trailing dimension of 2 (real, imaginary), real ones as a
trailing dimension of 1, as in ONNX.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..types import is_static_dim
from .declare import FLOAT_TYPES
from .evaluate import known_value
from .registry import Attr, OpDef, register
from .shapes import check_dtype, out

_INDEX_TYPES = (dt.int32, dt.int64)


def _scalar_input(ctx, i: int, what: str, allowed=_INDEX_TYPES):
    """Check that input ``i`` is a scalar (or a one-element vector); return its value if known."""
    t = check_dtype(ctx, i, allowed, what)
    if t is not None and t.shape is not None and not (
            t.rank == 0 or (t.rank == 1 and (not is_static_dim(t.shape[0]) or t.shape[0] == 1))):
        ctx.fail(f"{what} must be a scalar", input=i, expected="shape ()", actual=t)
    v = ctx.const(i)
    return None if v is None else np.asarray(v).ravel()[0]


def _to_complex(x: np.ndarray) -> np.ndarray:
    # single-precision inputs are transformed in single precision (numpy >= 2 keeps it), so
    # results carry the rounding of a float32 FFT, as other runtimes' do
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32)
    return x[..., 0] if x.shape[-1] == 1 else x[..., 0] + 1j * x[..., 1]


def _from_complex(z: np.ndarray, dtype) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1).astype(dtype)


# ---- dft -------------------------------------------------------------------------------------
def _dft_out_len(n, length, inverse, onesided):
    """Length of the transformed axis: ``n`` the input's, ``length`` the dft_length (or None)."""
    if length is None:
        if not is_static_dim(n):
            return None
        length = 2 * (n - 1) if inverse and onesided else n
    if onesided and not inverse:
        return length // 2 + 1
    return length


def _dft_infer(ctx):
    x = check_dtype(ctx, 0, FLOAT_TYPES, "input")
    inverse, onesided = ctx.attrs["inverse"], ctx.attrs["onesided"]
    length = _scalar_input(ctx, 1, "dft_length") if ctx.has(1) else None
    if length is not None and length < 1:
        ctx.fail("dft_length must be positive", input=1, actual=int(length))
    axis = _scalar_input(ctx, 2, "axis") if ctx.has(2) else -2
    if x.shape is None:
        return [out(None, x.dtype)]
    r = x.rank
    if r < 2:
        ctx.fail("input must be [..., 1] (real) or [..., 2] (complex)", input=0, expected="rank >= 2", actual=x)
    c = x.shape[-1]
    if is_static_dim(c) and c not in (1, 2):
        ctx.fail("the last dim holds (real[, imaginary]) and must be 1 or 2", input=0, expected="1 | 2", actual=c)
    if inverse and onesided and c == 1:
        ctx.fail("an inverse one-sided DFT takes a complex input", input=0, expected="[..., 2]", actual=x)
    if onesided and not inverse and c == 2:
        ctx.fail("a one-sided forward DFT takes a real input", input=0, expected="[..., 1]", actual=x)
    last = 1 if inverse and onesided else 2
    if axis is None:
        return [out(tuple(ctx.fresh("dft") for _ in range(r - 1)) + (last,), x.dtype)]
    axis = int(axis)
    if not (-r <= axis <= -2 or 0 <= axis <= r - 2):
        ctx.fail(f"axis {axis} out of range (the last dim holds complex parts)",
                 expected=f"[{-r}, -2] or [0, {r - 2}]", actual=axis)
    axis %= r
    shape = list(x.shape)
    n = _dft_out_len(shape[axis], None if length is None else int(length), inverse, onesided)
    shape[axis] = ctx.fresh("dft") if n is None else n
    shape[-1] = last
    return [out(shape, x.dtype)]


def _dft_ref(ins, a):
    ins = list(ins) + [None] * (3 - len(ins))
    x, length, axis = ins[:3]
    axis = -2 if axis is None else int(np.asarray(axis).ravel()[0])
    axis %= x.ndim
    inverse, onesided = a["inverse"], a["onesided"]
    z = _to_complex(x)
    n = z.shape[axis]
    if length is None:
        length = 2 * (n - 1) if inverse and onesided else n
    else:
        length = int(np.asarray(length).ravel()[0])
    if inverse and onesided:
        # one-sided spectrum in, full real signal out
        return np.fft.irfft(z, n=length, axis=axis)[..., None].astype(x.dtype)
    y = np.fft.ifft(z, n=length, axis=axis) if inverse else np.fft.fft(z, n=length, axis=axis)
    if onesided:
        y = np.take(y, np.arange(length // 2 + 1), axis=axis)
    return _from_complex(y, x.dtype)


# ---- gradients -------------------------------------------------------------------------------
# The DFT is linear: the gradient of a real loss through y = A z (complex A, values as
# (real, imag) pairs) is A^H applied to dy. For the forward transform A^H is L times the inverse
# DFT, for the inverse one 1/L times the forward DFT; zero-padding and cropping of the input to
# dft_length transpose into cropping and zero-padding, and a real input keeps the real part.
def _known_scalar(v):
    """``v``'s compile-time value as a scalar (its first element), else None."""
    k = known_value(v)
    return None if k is None else np.asarray(k).ravel()[0]


def _fit(ctx, v, axis: int, cur: int, n: int):
    """``v`` (length ``cur`` along ``axis``) cropped or zero-padded at the end to length ``n``.
    (Lengths are passed in: gradients may carry fresh symbolic dims.)"""
    if cur == n:
        return v
    return ctx.op("pad", [v, ctx.i64([0, n - cur]), None, ctx.i64([axis])])


def _scaled(ctx, v, k: float):
    return v if k == 1 else ctx.op("mul", [v, ctx.const(k, like=v)])


def _real(ctx, v):
    return ctx.op("slice", [v, ctx.i64([0]), ctx.i64([1]), ctx.i64([-1])])


def _dft_grad(ctx):
    x = ctx.inputs[0]
    inverse, onesided = ctx.attrs["inverse"], ctx.attrs["onesided"]
    ins = list(ctx.inputs) + [None] * (3 - len(ctx.inputs))
    axis = -2 if ins[2] is None else _known_scalar(ins[2])
    length = None if ins[1] is None else _known_scalar(ins[1])
    if axis is None or (ins[1] is not None and length is None) or x.shape is None or not x.type.is_static:
        raise ctx.fail("the dft gradient needs static shapes and a compile-time axis and dft_length",
                       actual=str(x.type))
    r = len(x.shape)
    axis = int(axis) % r
    n = x.shape[axis]
    length = int(length) if length is not None else (2 * (n - 1) if inverse and onesided else n)
    dy = ctx.dy()
    ax = ctx.i64(axis)
    if inverse and onesided:
        # y = irfft(z): dz_k = w_k / L * rfft(dy)_k with w = 2 except for the DC and Nyquist bins
        bins = length // 2 + 1
        f = ctx.op("dft", [dy, None, ax], {"onesided": True})
        w = np.full(bins, 2.0 / length)
        w[0] = 1.0 / length
        if length % 2 == 0:
            w[-1] = 1.0 / length
        shape = [1] * r
        shape[axis] = bins
        g = ctx.op("mul", [f, ctx.const(w.reshape(shape), like=x)])
        return [_fit(ctx, g, axis, bins, n)]
    if inverse:
        g = _scaled(ctx, ctx.op("dft", [dy, None, ax]), 1.0 / length)
    else:
        if onesided:   # the dropped bins get zero gradient
            dy = _fit(ctx, dy, axis, length // 2 + 1, length)
        g = _scaled(ctx, ctx.op("dft", [dy, None, ax], {"inverse": True}), float(length))
    g = _fit(ctx, g, axis, length, n)
    return [_real(ctx, g) if x.shape[-1] == 1 else g]


register(OpDef(
    "dft", infer=_dft_infer, reference=_dft_ref, inputs=(1, 3), kind="other", differentiable=True,
    grad=_dft_grad,
    attrs={"inverse": Attr("bool", False), "onesided": Attr("bool", False,
                                                            "forward: real in, half spectrum out; "
                                                            "inverse: half spectrum in, real out")},
    doc="dft(x[..., 1|2], dft_length?, axis? = -2): discrete Fourier transform along one axis",
))


# ---- stft ------------------------------------------------------------------------------------
def _stft_infer(ctx):
    x = check_dtype(ctx, 0, FLOAT_TYPES, "signal")
    step = _scalar_input(ctx, 1, "frame_step")
    if step is not None and step < 1:
        ctx.fail("frame_step must be positive", input=1, actual=int(step))
    win_len = None
    if ctx.has(2):
        w = check_dtype(ctx, 2, FLOAT_TYPES, "window")
        if w.shape is not None and w.rank != 1:
            ctx.fail("window must be 1-D", input=2, actual=w)
        if w.shape is not None:
            win_len = w.shape[0]
    frame = _scalar_input(ctx, 3, "frame_length") if ctx.has(3) else None
    if frame is not None:
        frame = int(frame)
        if frame < 1:
            ctx.fail("frame_length must be positive", input=3, actual=frame)
        if is_static_dim(win_len) and win_len != frame:
            ctx.fail("the window's length must equal frame_length", input=2, expected=frame, actual=win_len)
    if x.shape is None:
        return [out(None, x.dtype)]
    if x.rank != 3 or (is_static_dim(x.shape[2]) and x.shape[2] not in (1, 2)):
        ctx.fail("signal must be [batch, length, 1 | 2]", input=0, actual=x)
    if frame is None and not ctx.has(3):
        frame = win_len if ctx.has(2) else x.shape[1]
    onesided = ctx.attrs["onesided"]
    if onesided and x.shape[2] == 2:
        ctx.fail("a one-sided STFT takes a real signal", input=0, expected="[batch, length, 1]", actual=x)
    frames, bins = ctx.fresh("frames"), ctx.fresh("bins")
    if frame is not None and is_static_dim(frame):
        bins = frame // 2 + 1 if onesided else frame
        if is_static_dim(x.shape[1]):
            if frame > x.shape[1]:
                ctx.fail("frame_length is longer than the signal", input=0, expected=f"length >= {frame}",
                         actual=x.shape[1])
            if step is not None:
                frames = 1 + (x.shape[1] - frame) // int(step)
    return [out((x.shape[0], frames, bins, 2), x.dtype)]


def _stft_ref(ins, a):
    ins = list(ins) + [None] * (4 - len(ins))
    x, step, window, frame = ins[:4]
    step = int(np.asarray(step).ravel()[0])
    if frame is not None:
        frame = int(np.asarray(frame).ravel()[0])
    elif window is not None:
        frame = window.shape[0]
    else:
        frame = x.shape[1]
    z = _to_complex(x)                                            # (batch, length)
    count = 1 + (z.shape[1] - frame) // step
    idx = np.arange(count)[:, None] * step + np.arange(frame)[None, :]
    frames = z[:, idx]                                            # (batch, frames, frame)
    if window is not None:
        frames = frames * window.astype(frames.real.dtype)
    y = np.fft.fft(frames, axis=-1)
    if a["onesided"]:
        y = y[..., : frame // 2 + 1]
    return _from_complex(y, x.dtype)


def _stft_grad(ctx):
    """Each frame's windowed samples get the inverse transform of their bins' gradient; frames
    overlap-add back into the signal (col2im), and the window gets the frames' dot products."""
    ins = list(ctx.inputs) + [None] * (4 - len(ctx.inputs))
    x, step, window, frame = ins[:4]
    step = _known_scalar(step)
    frame = _known_scalar(frame) if frame is not None else (window.shape[0] if window is not None else
                                                      (x.shape[1] if x.shape is not None else None))
    if step is None or frame is None or x.shape is None or not x.type.is_static or (
            window is not None and not window.type.is_static):
        raise ctx.fail("the stft gradient needs static shapes and a compile-time frame_step and "
                       "frame_length", actual=str(x.type))
    step, frame = int(step), int(frame)
    b, length, c = x.shape
    dy = ctx.dy()                                                   # (B, F, bins, 2)
    count = 1 + (length - frame) // step
    if ctx.attrs["onesided"]:
        dy = _fit(ctx, dy, 2, frame // 2 + 1, frame)
    g = _scaled(ctx, ctx.op("dft", [dy, None, ctx.i64(2)], {"inverse": True}), float(frame))
    if c == 1:
        g = _real(ctx, g)                                          # (B, F, N, c)
    dw = None
    if window is not None:
        idx = np.arange(count)[:, None] * step + np.arange(frame)[None, :]
        frames = ctx.op("gather", [x, ctx.i64(idx)], {"axis": 1})    # (B, F, N, c)
        dw = ctx.op("reduce_sum", [ctx.op("mul", [g, frames]), ctx.i64([0, 1, 3])], {"keepdims": 0})
        dw = ctx.cast_like(dw, window)
        w4 = ctx.op("reshape", [window, ctx.i64([1, 1, frame, 1])])
        g = ctx.op("mul", [g, ctx.cast_like(w4, g)])
    cols = ctx.op("reshape", [ctx.op("transpose", [g], {"perm": (0, 3, 2, 1)}), ctx.i64([b, c * frame, count])])
    span = (count - 1) * step + frame
    img = ctx.op("col2im", [cols, ctx.i64([span]), ctx.i64([frame])], {"strides": (step,)})   # (B, c, span)
    dx = ctx.op("transpose", [_fit(ctx, img, 2, span, length)], {"perm": (0, 2, 1)})
    return [dx, None, dw, None][:len(ctx.inputs)]


register(OpDef(
    "stft", infer=_stft_infer, reference=_stft_ref, inputs=(2, 4), kind="other", differentiable=True,
    grad=_stft_grad,
    attrs={"onesided": Attr("bool", True, "return only the frame_length // 2 + 1 unique bins")},
    doc="stft(signal[B, L, 1|2], frame_step, window?, frame_length?) -> [B, frames, bins, 2]",
))


# ---- windows ---------------------------------------------------------------------------------
def _window_infer(ctx):
    n = _scalar_input(ctx, 0, "size")
    if n is not None and n < 0:
        ctx.fail("size must be non-negative", input=0, actual=int(n))
    odt = ctx.attrs["dtype"]
    if odt not in FLOAT_TYPES:
        ctx.fail("windows are float", expected=" | ".join(d.name for d in FLOAT_TYPES), actual=odt.name)
    return [out((ctx.fresh("window") if n is None else int(n),), odt)]


def _window(name: str, formula, doc: str) -> None:
    def ref(ins, a):
        size = int(np.asarray(ins[0]).ravel()[0])
        # a periodic window is one period of a window of size + 1 with the last sample dropped
        period = size if a["periodic"] else size - 1
        if period <= 0:
            return np.ones(size, a["dtype"].np)
        phase = 2 * np.pi * np.arange(size, dtype=np.float64) / period
        return formula(phase).astype(a["dtype"].np)

    register(OpDef(
        name, infer=_window_infer, reference=ref, inputs=(1, 1), kind="other", differentiable=False,
        attrs={"periodic": Attr("bool", True, "periodic (for spectral analysis) or symmetric (filter design)"),
               "dtype": Attr("dtype", dt.float32)},
        doc=doc,
    ))


_window("hann_window", lambda p: 0.5 - 0.5 * np.cos(p), "hann_window(size): 0.5 - 0.5 cos(2 pi n / N)")
_window("hamming_window", lambda p: 25 / 46 - 21 / 46 * np.cos(p),
        "hamming_window(size): 25/46 - 21/46 cos(2 pi n / N)")
_window("blackman_window", lambda p: 0.42 - 0.5 * np.cos(p) + 0.08 * np.cos(2 * p),
        "blackman_window(size): 0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)")


# ---- mel_weight_matrix -----------------------------------------------------------------------
def _mel_infer(ctx):
    mels = _scalar_input(ctx, 0, "num_mel_bins")
    length = _scalar_input(ctx, 1, "dft_length")
    _scalar_input(ctx, 2, "sample_rate")
    _scalar_input(ctx, 3, "lower_edge_hertz", FLOAT_TYPES)
    _scalar_input(ctx, 4, "upper_edge_hertz", FLOAT_TYPES)
    if mels is not None and mels < 1:
        ctx.fail("num_mel_bins must be positive", input=0, actual=int(mels))
    if length is not None and length < 1:
        ctx.fail("dft_length must be positive", input=1, actual=int(length))
    odt = ctx.attrs["dtype"]
    if odt not in FLOAT_TYPES:
        ctx.fail("the matrix is float", expected=" | ".join(d.name for d in FLOAT_TYPES), actual=odt.name)
    rows = ctx.fresh("bins") if length is None else int(length) // 2 + 1
    cols = ctx.fresh("mels") if mels is None else int(mels)
    return [out((rows, cols), odt)]


def _hz_to_mel(hz):
    return 2595 * np.log1p(hz / 700) / np.log(10)


def _mel_ref(ins, a):
    mels, length, rate = (int(np.asarray(v).ravel()[0]) for v in ins[:3])
    lo, hi = (np.asarray(v).reshape(()) for v in ins[3:5])
    lo_mel, hi_mel = _hz_to_mel(lo), _hz_to_mel(hi)
    # mels + 2 equally spaced points on the mel scale, mapped back to FFT bin indices
    step = (hi_mel - lo_mel) / (mels + 2)
    points = np.arange(mels + 2) * step + lo_mel
    hz = 700 * np.expm1(points / 2595 * np.log(10))
    edges = (((length + 1) * hz) // rate).astype(np.int64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    j = np.arange(length // 2 + 1)[:, None]
    rise_width = np.maximum(center - left, 1)
    fall_width = np.maximum(right - center, 1)
    rise = np.where((j >= left) & (j <= center),
                    np.where(center == left, (j == center).astype(np.float64), (j - left) / rise_width), 0.0)
    fall = np.where((j >= center) & (j < right), (right - j) / fall_width, 0.0)
    # the falling edge starts at the peak (where both are 1), so it wins where it is defined
    res = np.where((j >= center) & (j < right), fall, rise)
    return res.astype(a["dtype"].np)


register(OpDef(
    "mel_weight_matrix", infer=_mel_infer, reference=_mel_ref, inputs=(5, 5), kind="other",
    differentiable=False,
    attrs={"dtype": Attr("dtype", dt.float32)},
    doc="mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_hz, upper_hz) -> "
        "[dft_length // 2 + 1, num_mel_bins] triangular filters",
))
