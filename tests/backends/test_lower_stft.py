"""stft lowered natively (backends/lower_stft.py) against the numpy interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)


@pytest.mark.parametrize("length,step,frame,window,onesided,cin", [
    (32, 8, 16, True, True, 1), (37, 5, 9, False, True, 1), (37, 5, 9, True, False, 2),
    (20, 3, None, True, False, 1), (13, 4, 13, False, False, 2), (25, 1, 7, True, True, 1)])
@pytest.mark.parametrize("d", [dt.float32, dt.float64])
def test_stft_matches_interpreter(length, step, frame, window, onesided, cin, d):
    rng = np.random.default_rng(length + step)
    x = rng.standard_normal((2, length, cin)).astype(d.np)
    win_len = frame or 6
    w = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_len) / win_len)).astype(d.np)
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, d)), g.add_const(np.array(step, np.int64)),
           g.add_input("w", TensorType(w.shape, d)) if window else None,
           g.add_const(np.array(frame, np.int64)) if frame else None]
    args = (x, w) if window else (x,)
    g.set_outputs([g.op("stft", ins, {"onesided": onesided})])
    tol = 1e-5 if d is dt.float32 else 1e-10
    _compare(g, *args, rtol=tol, atol=tol)


def test_stft_with_step_and_length_given_at_run_time():
    x = np.sin(np.arange(40, dtype=np.float32) / 3).reshape(1, 40, 1)
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, dt.float32)), g.add_input("step", TensorType((), dt.int64)), None,
           g.add_input("frame", TensorType((), dt.int64))]
    g.set_outputs([g.op("stft", ins, {"onesided": True})])
    args = (x, np.array(6, np.int64), np.array(10, np.int64))
    ref = irgraph.compile(g).run(*args)[0]
    got = irgraph.compile(g, target="cpu").run(*args)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
